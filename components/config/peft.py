"""train.peft and its settings: which parameters a fine-tuning run trains."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from components.config.base import Section

# none: every weight trains (full fine-tuning). lora: low-rank adapters, merged into the weights before
# saving. prefix: P-tuning v2 / prefix tuning, trained key/value vectors in front of every layer's
# attention. p-tuning: trained prompt embeddings in front of the input, made by a small encoder.
# prefix and p-tuning freeze the base model (its head still trains).
PeftMethod = Literal["none", "lora", "prefix", "p-tuning"]
PROMPT_METHODS = ("prefix", "p-tuning")


class LoraParams(Section):
    """Low-rank adapters through peft, merged into the base weights before export, so that the served model is
    a plain transformers model of the same shape."""

    r: int = Field(default=8, ge=1, description="Rank of each low-rank adapter: the larger, the more parameters "
                                                "train.")
    alpha: int = Field(default=16, ge=1, description="Scaling factor: the adapters' update is scaled by alpha / r.")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout probability on the adapters' input.")
    target_modules: list[str] | dict[str, list[str]] | None = Field(
        default=None,
        description="Module names (suffixes of module paths) that get adapters, as a list or as a list per model "
                    "type ({bert: [...], mpnet: [...]}); left out, the base model's attention and feed-forward "
                    "projections get them.")


class PromptParams(Section):
    """Soft prompts (train.peft prefix or p-tuning): `virtual_tokens` trained vectors in front of the text.
    prefix: per layer key/value pairs, optionally reparameterized through a two-layer MLP (`projection`, as
    in the prefix-tuning paper). p-tuning: prompt embeddings made by peft's prompt encoder (MLP or LSTM)."""

    virtual_tokens: int = Field(default=20, ge=1, le=256,
                                description="Trained vectors placed in front of every text (they take room from "
                                            "model.max_length).")
    encoder_hidden_size: int | None = Field(
        default=None, ge=1,
        description="Hidden size of the prompt encoder or prefix projection; left out, the model's hidden size.")
    projection: bool = Field(default=False, description="prefix only: reparameterize the prefix through a "
                                                        "two-layer MLP while training.")
    encoder: Literal["MLP", "LSTM"] = Field(default="MLP", description="p-tuning only: the kind of prompt encoder.")


def refuse_lora_enabled(train: Any) -> Any:
    """train.lora.enabled was replaced by train.peft: name the new key instead of an unknown-field error."""
    if isinstance(train, dict) and isinstance(train.get("lora"), dict) and "enabled" in train["lora"]:
        method = "lora" if train["lora"]["enabled"] else "none"
        raise ValueError(f"train.lora.enabled was replaced by train.peft: write `train: {{peft: {method}}}` "
                         "and remove `enabled` from train.lora")
    return train
