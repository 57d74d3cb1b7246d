"""The `model:`, `train:` and `adapt:` sections: the base model, how it is fine-tuned, and the optional
domain-adaptive pretraining before."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from components.config.base import Section
from components.config.peft import LoraParams, PeftMethod, PromptParams, refuse_lora_enabled


class ModelParams(Section):
    base_model: str = Field(description="The model fine-tuned: 'builtin:<name>' for a built-in model, a local "
                                        "directory, or a model hub id. Required.")
    max_length: int = Field(default=64, ge=8, le=512,
                            description="Tokens per text (word pieces); longer texts are truncated, in training and "
                                        "serving alike.")
    word_shapes: bool = Field(default=False,
                              description="Token classification: feed each word's capitalization "
                                          "(lower/title/upper/mixed) to the model, for base models whose tokenizer "
                                          "lowercases.")
    keep_layers: list[int] | None = Field(
        default=None,
        description="A smaller, faster model: keep only these encoder layers of the base model (0-based, "
                    "ascending, e.g. [1, 3, 5] of a 6-layer MiniLM) and drop the others before fine-tuning; "
                    "left out, all layers. A start from the champion keeps the champion's layers.")

    @field_validator("keep_layers")
    @classmethod
    def _layers_in_order(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("model.keep_layers is empty: name at least one layer, or leave it out for all")
        if any(index < 0 for index in value):
            raise ValueError(f"model.keep_layers {value}: layer indices start at 0")
        if any(later <= earlier for earlier, later in zip(value, value[1:])):
            raise ValueError(f"model.keep_layers {value}: indices must be unique and ascending")
        return value


# train.batch_size's default; train.learning_rate is read as tuned for it when train.auto_batch_lr scales it.
DEFAULT_BATCH_SIZE = 32


class TrainParams(Section):
    epochs: int = Field(default=2, ge=1, description="Passes over the training split.")
    batch_size: int | Literal["auto"] = Field(
        default=DEFAULT_BATCH_SIZE, description="Training examples per optimizer step (per process); auto: the largest power of two "
                                "whose trial steps on the longest batch stay within train.memory_budget, found once "
                                "before training and recorded in the training history.")
    eval_batch_size: int | Literal["auto"] = Field(
        default=128, description="Examples per forward pass when scoring the validation and test splits; auto: "
                                 "found like batch_size, from forward passes alone.")
    memory_budget: str | None = Field(
        default=None, description="What batch_size: auto may use, as '6GiB', '800MB' or bytes: GPU memory on CUDA, "
                                  "the process's resident memory on CPU. Left out: 90% of the GPU's memory, or on "
                                  "CPU the resident memory at the start plus 80% of the memory available then.")
    auto_batch_lr: Literal["unchanged", "sqrt", "linear"] = Field(
        default="unchanged", description="With batch_size: auto, the learning rate is left as train.learning_rate "
                                         "(unchanged) or scaled by sqrt(picked / 32) or picked / 32 (linear).")
    max_steps: int | None = Field(
        default=None, ge=1, description="Train for this many optimizer steps (per process) instead of train.epochs "
                                        "passes, for corpora where an epoch takes days: the last pass is cut short "
                                        "or more passes run. The schedule decays over them and a validation pass "
                                        "follows the last step. Left out, train.epochs full passes.")
    learning_rate: float = Field(default=1e-4, ge=0, description="Peak learning rate of the AdamW optimizer, "
                                                                 "reached after warmup.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1, description="Share of the optimizer steps over which the "
                                                                     "learning rate rises from zero to its peak.")
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="How the learning rate decays after warmup: linearly or along a cosine to "
                                      "zero, or not at all.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradients are clipped to this global norm.")
    seed: int = Field(default=42, description="Seed of the weights' initialization, data order and dropout: the "
                                              "same seed on the same machine gives the same model.")
    max_train_examples: int | None = Field(default=None, ge=1,
                                           description="Train on at most this many rows, for quick runs; left "
                                                       "out, the whole training split.")
    num_threads: int | None = Field(default=None, ge=1,
                                    description="CPU threads PyTorch uses; left out, PyTorch's own choice.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto",
                                                   description="Where to train; auto uses a CUDA GPU when there "
                                                               "is one.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="Arithmetic precision of training; auto picks bf16 where it is faster (a GPU with bf16, a CPU "
                    "with AMX), fp32 gives the same figures on every machine.")
    processes: int = Field(default=1, ge=1, description="Data-parallel training processes on this machine "
                                                        "(DDP under torchrun).")
    freeze_embeddings: bool = Field(default=False, description="Keep the embedding weights as they are (no "
                                                               "gradient).")
    freeze_layers: int = Field(default=0, ge=0, description="Keep the lowest N encoder layers as they are (no "
                                                            "gradient); 0 trains them all.")
    peft: PeftMethod = Field(default="none",
                             description="What trains: none (every weight), lora (low-rank adapters), prefix or "
                                         "p-tuning (soft prompts).")
    lora: LoraParams = Field(default=LoraParams(), description="The adapters' settings when train.peft is lora.")
    prompt: PromptParams = Field(default=PromptParams(),
                                 description="The soft prompts' settings when train.peft is prefix or p-tuning.")
    class_weights: Literal["none", "balanced"] = Field(
        default="none", description="balanced weighs each class's loss by n / (k * count), so that rare classes "
                                    "count as much as common ones; none weighs every example alike.")
    validate_every: int = Field(default=1, ge=1,
                                description="Score the validation split (which also picks the best weights) after "
                                            "every N epochs and after the last.")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="Stop after this many validation passes without a better validation "
                                        "metric; left out, training runs every epoch.")
    checkpoint_every_steps: int | None = Field(
        default=100, ge=1,
        description="Save a checkpoint (model, optimizer, scheduler, random state) every K optimizer steps as well "
                    "as after every epoch, so that a killed run resumes from the last one; null saves after epochs "
                    "only.")
    init_from: Literal["base", "champion"] = Field(
        default="base", description="Start from the base model, or from the current champion's weights "
                                    "(continual learning).")
    replay_fraction: float = Field(default=1.0, ge=0, le=1,
                                   description="With init_from champion: the share of the earlier batches' rows "
                                               "trained on again beside the new batches.")

    @model_validator(mode="before")
    @classmethod
    def _lora_enabled_was_replaced(cls, data: Any) -> Any:
        return refuse_lora_enabled(data)

    @field_validator("batch_size", "eval_batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{value}: a batch holds at least 1 example (or say auto)")
        return value

    @field_validator("memory_budget")
    @classmethod
    def _readable_budget(cls, value: str | None) -> str | None:
        if value is not None:
            memory_bytes(value)
        return value

    def scoring_batch_size(self, picked: int | None = None) -> int:
        """eval_batch_size; with auto, the size training picked (`picked`, from its history) or else 128."""
        if self.eval_batch_size != "auto":
            return self.eval_batch_size
        return picked or 128

    @property
    def memory_budget_bytes(self) -> int | None:
        return None if self.memory_budget is None else memory_bytes(self.memory_budget)


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def memory_bytes(text: str | int) -> int:
    """'6GiB', '800 MB', '1.5GB' or a count of bytes, in bytes."""
    import re

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not an amount of memory: write it as 6GiB, 800MB or a count of bytes")
    amount = int(float(match.group(1)) * _UNITS[unit])
    if amount <= 0:
        raise ValueError(f"{text!r}: a memory budget must be above zero")
    return amount


class AdaptParams(Section):
    """Domain-adaptive pretraining: masked-language-model training of the base model on the dataset's own
    (training split) text before fine-tuning, cached as its own DVC stage."""

    enabled: bool = Field(default=False, description="Run masked-language-model training on the training split's "
                                                     "text before fine-tuning.")
    epochs: int = Field(default=1, ge=1, description="Passes over the training split's text.")
    batch_size: int = Field(default=32, ge=1, description="Texts per optimizer step.")
    learning_rate: float = Field(default=5e-5, ge=0, description="Peak learning rate.")
    mlm_probability: float = Field(default=0.15, gt=0, lt=1, description="Share of word pieces masked for the "
                                                                         "model to predict.")
    max_examples: int | None = Field(default=None, ge=1, description="Train on at most this many texts; left out, "
                                                                     "the whole training split.")
    seed: int = Field(default=42, description="Seed of the masking and the data order.")
