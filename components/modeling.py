"""Loading a base model and its tokenizer from a built-in asset, a local directory or a hub id.

Weights load as safetensors only and remote code is never trusted: a model directory is data,
not a program.
"""

from __future__ import annotations

from pathlib import Path

from components.assets import builtin_model_dir, split_builtin
from components.config import ConfigError


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
            "Give an existing directory, a hub id such as 'org/name', or 'builtin:all-minilm-l6-v2' (offline)."
        )
    return base_model


def _hub_hint(source: str, error: Exception) -> ConfigError:
    return ConfigError(
        f"model.base_model: could not load {source!r} ({type(error).__name__}: {error}). "
        "If this machine is offline, use a local directory or 'builtin:all-minilm-l6-v2'."
    )


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except OSError as error:
        raise _hub_hint(source, error) from error


def load_classifier(source: str, labels: list[str], *, token_level: bool = False):
    """A sequence (or, token_level, a token) classifier with a head for `labels`; a fresh head when the
    base has none or was trained on other labels."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    model_class = AutoModelForTokenClassification if token_level else AutoModelForSequenceClassification
    try:
        return model_class.from_pretrained(
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
