"""Loading models: a base model and its tokenizer from a built-in asset, a local directory or a hub id,
and a fine-tuned model saved by training (for evaluation, export and the parity check).

Weights load as safetensors only and remote code is never trusted: a model directory is data,
not a program.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.assets import builtin_model_dir, split_builtin
from components.config import (
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    ConfigError,
    Task,
)


def resolve_model_source(base_model: str) -> str:
    """Turn params' model.base_model into something `from_pretrained` takes, or say what to fix."""
    builtin = split_builtin(base_model)
    if builtin is not None:
        return str(builtin_model_dir(builtin))
    path = Path(base_model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.base_model: {path} has no config.json; is it a saved transformers model?")
        return str(path)
    # 'org/name' is a hub id; '/x', './x', '~/x' or 'a/b/c' can only be a path, and it is missing.
    if base_model.startswith((".", "/", "~")) or base_model.count("/") > 1 or path.exists():
        raise ConfigError(
            f"model.base_model: local model directory {path} does not exist. "
            f"Give an existing directory, a hub id such as 'org/name', or one of {_builtin_names()} (offline)."
        )
    return base_model


def _hub_hint(source: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"model.base_model: could not load {source!r} ({type(error).__name__}: {error}). "
        f"If this machine is offline, use a local directory or one of {_builtin_names()}."
    )


def _builtin_names() -> str:
    from components.assets import BUILTIN_MODELS, BUILTIN_PREFIX

    return ", ".join(f"'{BUILTIN_PREFIX}{name}'" for name in BUILTIN_MODELS)


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except OSError as error:
        raise _hub_hint(source, error) from error


def load_classifier(source: str, labels: list[str], *, token_level: bool = False,
                    keep_layers: list[int] | None = None):
    """A sequence (or, token_level, a token) classifier with a head for `labels`; a fresh head when the
    base has none or was trained on other labels. keep_layers: model.keep_layers, the base's encoder
    layers to keep (keep_encoder_layers); only for a base model, never a fine-tuned model to go on from."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from components.model.prompted import PROMPT_CARD

    if (Path(source) / PROMPT_CARD).is_file():
        # Its head was trained to read the text behind a soft prompt that a plain start would drop, and
        # a p-tuning prompt keeps only its encoder's output, not the encoder: there is nothing to go on from.
        raise ConfigError(f"{source} was trained with a soft prompt (train.peft prefix or p-tuning, {PROMPT_CARD}); "
                          "fine-tuning cannot start from it: set train.init_from: base")
    model_class = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    try:
        model = model_class.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,  # a base fine-tuned on other labels gets a new head
            trust_remote_code=False,
            use_safetensors=True,
        )
    except OSError as error:
        raise _hub_hint(source, error) from error
    if keep_layers is not None:
        keep_encoder_layers(model, keep_layers)
    return model


# The saved config's record of which of the base model's encoder layers a model kept (model.keep_layers).
KEPT_LAYERS_ATTRIBUTE = "tunegate_kept_layers"


def keep_encoder_layers(model, keep: list[int]) -> None:
    """Drop every encoder layer of `model` but `keep` (0-based, ascending), in place; the config's
    num_hidden_layers follows, and its tunegate_kept_layers names the base model's layers kept (composed
    with an earlier record when the base was itself cut down)."""
    import torch

    encoder = getattr(model.base_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise ConfigError(f"model.keep_layers: a {model.config.model_type} model has no encoder.layer stack "
                          "(BERT and MPNet do); leave model.keep_layers out for this base model")
    if not keep or any(index < 0 or index >= len(stack) for index in keep) or sorted(set(keep)) != list(keep):
        raise ConfigError(f"model.keep_layers is {list(keep)} but the base model has {len(stack)} layers: give "
                          f"unique ascending indices from 0 to {len(stack) - 1}")
    earlier = getattr(model.config, KEPT_LAYERS_ATTRIBUTE, None) or list(range(len(stack)))
    encoder.layer = torch.nn.ModuleList(stack[index] for index in keep)
    model.config.num_hidden_layers = len(keep)
    setattr(model.config, KEPT_LAYERS_ATTRIBUTE, [int(earlier[index]) for index in keep])


def kept_layers_of(config) -> tuple[int | None, list[int] | None]:
    """The model's encoder layers and which of its base model's layers they are (None: all of them)."""
    layers = getattr(config, "num_hidden_layers", None)
    kept = getattr(config, KEPT_LAYERS_ATTRIBUTE, None)
    return layers, (list(kept) if kept is not None else None)


# --- fine-tuned models, as training saved them ---------------------------------------------------

def saved_model_task(model_dir: Path) -> Task:
    """The task of a model saved with save_pretrained, from its config's architectures
    (e.g. BertForTokenClassification); a config that names none is taken for a sequence classifier."""
    path = Path(model_dir) / "config.json"
    try:
        architectures = json.loads(path.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{model_dir}: cannot read config.json ({error}); is it a saved transformers model?") from None
    if any(str(name).endswith("ForTokenClassification") for name in architectures):
        return TOKEN_CLASSIFICATION
    return SEQUENCE_CLASSIFICATION


def load_torch_model(model_dir: Path, task: Task | None = None):
    """The saved model (AutoModelForSequenceClassification or AutoModelForTokenClassification, by
    `task` or else by its config) and its tokenizer, in eval mode.

    Eager attention: onnxruntime's BERT optimizer recognises (and fuses) only the eager attention graph.

    A model trained with a soft prompt (prompt.json beside it) comes back as a PromptedModel
    (components/model/prompted.py): the plain model with its prompt in front, called like the plain one.
    One without token types that reads word shapes comes back as a ShapeChannel
    (components/model/shape_channel.py), its shape table beside it.
    """
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    from components.data.word_shapes import token_type_rows, uses_word_shapes
    from components.model.prompted import load_prompted, read_prompt_card
    from components.model.shape_channel import load_shape_channel
    from components.model.wrapped import position_limit

    task = task or saved_model_task(model_dir)
    auto = AutoModelForTokenClassification if task == TOKEN_CLASSIFICATION else AutoModelForSequenceClassification
    model = auto.from_pretrained(
        str(model_dir), use_safetensors=True, trust_remote_code=False, attn_implementation="eager"
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    if uses_word_shapes(model.config) and not token_type_rows(model.config):
        model = load_shape_channel(model, Path(model_dir)).eval()
    if read_prompt_card(model_dir) is not None:
        model = load_prompted(model, Path(model_dir))
        if model.method == "p-tuning" and position_limit(model.config):
            # The virtual tokens take positions too: texts are cut to what is left (the export's default
            # max_length and its saved tokenizer follow).
            room = position_limit(model.config) - model.virtual_tokens
            tokenizer.model_max_length = min(tokenizer.model_max_length, room)
    return model, tokenizer


def model_task(model) -> Task:
    from components.model.wrapped import WrappedModel, is_token_classifier

    token_level = model.token_level if isinstance(model, WrappedModel) else is_token_classifier(model)
    return TOKEN_CLASSIFICATION if token_level else SEQUENCE_CLASSIFICATION


def labels_in_id_order(model) -> list[str]:
    id2label = model.config.id2label
    return [str(id2label[i]) for i in range(model.config.num_labels)]
