"""train.peft and its settings: which parameters a fine-tuning run trains. A leaf module beside
components/config.py (which composes it into TrainParams), so that the training family can read its own
settings without the whole configuration."""

from __future__ import annotations

import warnings
from typing import Any, Literal

from pydantic import Field

from components.sections import Section

# none: every weight trains (full fine-tuning). lora: low-rank adapters, merged into the weights before
# saving. prefix: P-tuning v2 / prefix tuning, trained key/value vectors in front of every layer's
# attention. p-tuning: trained prompt embeddings in front of the input, made by a small encoder.
# prefix and p-tuning freeze the base model (its head still trains).
PeftMethod = Literal["none", "lora", "prefix", "p-tuning"]
PROMPT_METHODS = ("prefix", "p-tuning")


class LoraParams(Section):
    # Low-rank adapters through peft; merged into the base weights before export, so the served
    # model is a plain transformers model of the same shape.
    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    # Module names (suffixes of module paths) that get adapters: a list, or a list per model_type
    # ({bert: [...], mpnet: [...]}). None: the base model's attention and feed-forward projections
    # (components/model/train.py LORA_TARGETS; BERT query/key/value/dense, MPNet attn.q/k/v/o + dense).
    target_modules: list[str] | dict[str, list[str]] | None = None


class PromptParams(Section):
    """Soft prompts (train.peft prefix or p-tuning): `virtual_tokens` trained vectors in front of the
    text. prefix: per layer key/value pairs, optionally reparameterized through a two-layer MLP of
    `encoder_hidden_size` (`projection`, as in the prefix-tuning paper). p-tuning: prompt embeddings
    made by peft's prompt encoder (MLP or LSTM of `encoder_hidden_size`)."""

    virtual_tokens: int = Field(default=20, ge=1, le=256)
    encoder_hidden_size: int | None = Field(default=None, ge=1, description="None: the model's hidden size")
    projection: bool = False  # prefix only
    encoder: Literal["MLP", "LSTM"] = "MLP"  # p-tuning only


def migrate_lora_enabled(train: Any) -> Any:
    """params.yaml written before train.peft had `train.lora.enabled`; read it as train.peft, and refuse
    the one combination that cannot be meant (LoRA enabled with another method chosen)."""
    if not isinstance(train, dict) or not isinstance(train.get("lora"), dict) or "enabled" not in train["lora"]:
        return train
    train = dict(train)
    lora = dict(train["lora"])
    enabled = lora.pop("enabled")
    train["lora"] = lora
    chosen = train.get("peft")
    if enabled and chosen not in (None, "lora"):
        raise ValueError(f"train.lora.enabled: true and train.peft: {chosen} contradict each other: "
                         "train.lora.enabled is replaced by train.peft; remove `enabled` and keep train.peft")
    if enabled:
        train["peft"] = "lora"
    warnings.warn(f"params: train.lora.enabled is replaced by train.peft; write `train: {{peft: "
                  f"{train.get('peft', 'none')}}}` and drop `enabled` from train.lora", FutureWarning, stacklevel=2)
    return train
