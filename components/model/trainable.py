"""Which parameters train: frozen embeddings and lower layers (train.freeze_embeddings, train.freeze_layers)
and LoRA adapters (train.peft: lora), added before training and merged before saving."""

from __future__ import annotations

import torch

from components.config import TrainParams
from components.data.word_shapes import token_type_rows, uses_word_shapes
from components.model.shape_channel import ShapeChannel, keep_shapes_trainable


def freeze(model, *, embeddings: bool, layers: int) -> None:
    """Stop gradients to the embeddings and the lowest `layers` encoder layers."""
    encoder_model = model.base_model
    if (embeddings or layers) and not (hasattr(encoder_model, "embeddings") and hasattr(encoder_model, "encoder")):
        raise ValueError(f"train.freeze_embeddings / freeze_layers: a {model.config.model_type} model has no "
                         "embeddings + encoder.layer stack (BERT and MPNet do); set both off for this base model")
    if embeddings:
        encoder_model.embeddings.requires_grad_(False)
        # MPNet keeps its position information partly outside the embeddings: one relative-position
        # bias table in the encoder, shared by every layer. It is frozen with the embeddings.
        bias = getattr(encoder_model.encoder, "relative_attention_bias", None)
        if bias is not None:
            bias.requires_grad_(False)
        keep_shapes_trainable(model)
    if layers:
        stack = encoder_model.encoder.layer
        if layers > len(stack):
            raise ValueError(f"train.freeze_layers is {layers} but the model has only {len(stack)} layers")
        for layer in stack[:layers]:
            layer.requires_grad_(False)


# Where adapters go when train.lora.target_modules is not set: each architecture's attention and
# feed-forward projections, as suffixes of module paths (peft's matching). BERT: attention.self.query/
# key/value and every `dense` (attention output, intermediate, output, pooler). MPNet names its attention
# attn.q/k/v/o; its classification head has a `dense` of its own, which the head's full training covers.
LORA_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "dense"],
    "mpnet": ["attn.q", "attn.k", "attn.v", "attn.o", "intermediate.dense", "output.dense"],
}


def lora_targets(model, configured: list[str] | dict[str, list[str]] | None) -> list[str]:
    """The module names that get adapters on `model`: train.lora.target_modules (a list, or a list per
    model_type), else LORA_TARGETS for the model's type. A name that matches no module is refused:
    peft would quietly adapt only the names that match (with MPNet, BERT's list adapts only `dense`)."""
    from components.config import ConfigError

    model_type = model.config.model_type
    if isinstance(configured, dict):
        if model_type not in configured:
            raise ConfigError(f"train.lora.target_modules has lists for {sorted(configured)}, none for this base "
                              f"model's type {model_type!r}: add `{model_type}: [...]`")
        targets = configured[model_type]
    elif configured:
        targets = configured
    elif model_type in LORA_TARGETS:
        targets = LORA_TARGETS[model_type]
    else:
        targets = []
    names = [name for name, _ in model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched or not targets:
        linear = sorted({".".join(n.split(".")[-2:]) for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        what = f"{unmatched} match no module of" if unmatched else "there are no default targets for"
        raise ConfigError(f"train.lora.target_modules: {what} this {model_type} model; its linear layers end in "
                          f"{linear} (defaults exist for {sorted(LORA_TARGETS)})")
    return list(targets)


def add_lora(model, params: TrainParams, token_level: bool):
    from peft import LoraConfig, TaskType, get_peft_model

    if isinstance(model, ShapeChannel):  # adapters on the model inside; the channel's own shape table trains in full
        model.model = add_lora(model.model, params, token_level)
        return model
    # New weights train in full beside the adapters: the word-shape rows of a token type table (peft already
    # adds the head).
    extra = ["token_type_embeddings"] if uses_word_shapes(model.config) and token_type_rows(model.config) else None
    config = LoraConfig(task_type=TaskType.TOKEN_CLS if token_level else TaskType.SEQ_CLS, r=params.lora.r,
                        lora_alpha=params.lora.alpha, lora_dropout=params.lora.dropout,
                        target_modules=lora_targets(model, params.lora.target_modules), modules_to_save=extra)
    return get_peft_model(model, config)


def merge_lora(model):
    """The model with its LoRA adapters merged in: a plain model, which export and serving take without peft."""
    if isinstance(model, ShapeChannel):
        model.model = model.model.merge_and_unload()
        return model
    return model.merge_and_unload()
