"""A model trained with a soft prompt (train.peft prefix or p-tuning), at inference: a plain transformers
classifier plus the trained prompt as constant tensors.

Neither method can be merged into the weights (a prompt is extra sequence positions or extra attention
keys/values, not a change of a weight), so the saved model directory is the plain transformers model
(loads as such, without its prompt) plus `prompt.safetensors` and `prompt.json`, and the ONNX export
traces PromptedModel.forward, which carries the prompt as graph constants. The graph's inputs and
outputs stay those of the plain model, so the predictor, the service and the MLflow pyfunc are unchanged.

- p-tuning: `prompt` [virtual_tokens, hidden] is put in front of the input's word embeddings (before
  [CLS], as peft's P-tuning does), the attention mask gets ones in front and the token type ids zeros;
  a token classifier's logits at the virtual positions are cut off.
- prefix (P-tuning v2): `keys`/`values` [layers, heads, virtual_tokens, head_dim] are put in front of
  every layer's attention keys and values through a registered attention function (transformers'
  AttentionInterface): the text's positions, and so the logits' shape, do not change. peft's own
  PrefixTuning needs the model to take past_key_values, which BERT no longer does in transformers 5.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from components.model.wrapped import WrappedModel, position_limit

PROMPT_WEIGHTS = "prompt.safetensors"
PROMPT_CARD = "prompt.json"
# The attention implementation a prefix-tuned model runs with: sdpa with the layer's prefix keys and
# values in front. The saved config keeps a plain implementation, so the directory loads anywhere.
PREFIX_ATTENTION = "tunegate_prefix"
PREFIX_KWARG = "tunegate_prefix"  # how the prefix travels to the attention function (transformers' **kwargs)


def _prefixed_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa attention with this layer's prefix keys/values [heads, n, head_dim] in front of the text's,
    every query allowed to attend to them (the mask, in sdpa form, gets n attending columns)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = kwargs.pop(PREFIX_KWARG, None)
    if prefix is not None:
        keys, values = prefix
        batch = query.shape[0]
        prefix_key = keys[module.layer_idx].unsqueeze(0).expand(batch, -1, -1, -1).to(key.dtype)
        prefix_value = values[module.layer_idx].unsqueeze(0).expand(batch, -1, -1, -1).to(value.dtype)
        key, value = torch.cat([prefix_key, key], 2), torch.cat([prefix_value, value], 2)
        if attention_mask is not None:
            n = prefix_key.shape[2]
            shape = (*attention_mask.shape[:-1], n)
            attend = (torch.ones(shape, dtype=torch.bool, device=attention_mask.device)
                      if attention_mask.dtype == torch.bool
                      else torch.zeros(shape, dtype=attention_mask.dtype, device=attention_mask.device))
            attention_mask = torch.cat([attend, attention_mask], -1)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def use_prefix_attention(model) -> None:
    """Switch `model` (a transformers model whose attention goes through AttentionInterface) to the
    prefixed attention; registering it is idempotent and happens here, not at import time."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(PREFIX_ATTENTION, _prefixed_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)
    model.set_attn_implementation(PREFIX_ATTENTION)


class PromptedModel(WrappedModel):
    """`model` with a soft prompt in front; forward(input_ids, attention_mask, token_type_ids) returns an
    object with `.logits` shaped like the plain model's. Subclassed at training time
    (components/model/prompts.py), where the prompt comes from a trainable encoder instead of constants."""

    def __init__(self, model, method: str, virtual_tokens: int, constants: dict[str, torch.Tensor] | None = None):
        super().__init__(model)
        if method not in ("prefix", "p-tuning"):
            raise ValueError(f"unknown prompt method {method!r} (prefix or p-tuning)")
        self.method = method
        self.virtual_tokens = virtual_tokens
        for name, tensor in (constants or {}).items():
            self.register_buffer(name, tensor)
        if method == "prefix":
            use_prefix_attention(model)

    def prompt_tensors(self) -> dict[str, torch.Tensor]:
        """The prompt tensors: {"prompt"} for p-tuning, {"keys", "values"} for prefix."""
        names = ("prompt",) if self.method == "p-tuning" else ("keys", "values")
        return {name: getattr(self, name) for name in names}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> SimpleNamespace:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        prompt = self.prompt_tensors()
        if self.method == "prefix":
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                **{PREFIX_KWARG: (prompt["keys"], prompt["values"])}).logits
            return SimpleNamespace(logits=logits)
        batch, n = input_ids.shape[0], self.virtual_tokens
        limit = position_limit(self.config)
        if limit and input_ids.shape[1] + n > limit:  # else an index error deep in the embeddings
            raise ValueError(f"p-tuning: {n} virtual tokens + {input_ids.shape[1]} tokens exceed the model's {limit} "
                             f"positions: truncate texts to {limit - n} tokens")
        embeddings = self.model.get_input_embeddings()(input_ids)
        virtual = prompt["prompt"].to(embeddings.dtype).unsqueeze(0).expand(batch, -1, -1)
        kwargs = {"inputs_embeds": torch.cat([virtual, embeddings], 1),
                  "attention_mask": torch.cat([attention_mask.new_ones(batch, n), attention_mask], 1)}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = torch.cat([token_type_ids.new_zeros(batch, n), token_type_ids], 1)
        logits = self.model(**kwargs).logits
        return SimpleNamespace(logits=logits[:, n:] if self.token_level else logits)

    def save_pretrained(self, output_dir: Path | str) -> None:
        """The plain model (safetensors, a normal attention implementation in its config) and the prompt
        beside it: prompt.safetensors (tensors only) and prompt.json."""
        from safetensors.torch import save_file

        output_dir = Path(output_dir)
        if self.method == "prefix":
            self.model.set_attn_implementation("sdpa")  # the saved config must load without our registration
        try:
            self.model.save_pretrained(output_dir)
        finally:
            if self.method == "prefix":
                use_prefix_attention(self.model)
        tensors = {name: t.detach().cpu().float().contiguous() for name, t in self.prompt_tensors().items()}
        save_file(tensors, str(output_dir / PROMPT_WEIGHTS))
        card = {"method": self.method, "virtual_tokens": self.virtual_tokens,
                "shapes": {name: list(t.shape) for name, t in tensors.items()}}
        (output_dir / PROMPT_CARD).write_text(json.dumps(card, indent=2) + "\n")


def read_prompt_card(model_dir: Path) -> dict | None:
    path = Path(model_dir) / PROMPT_CARD
    return json.loads(path.read_text()) if path.is_file() else None


def load_prompted(model, model_dir: Path) -> PromptedModel:
    """`model` (loaded from `model_dir`) with the prompt saved beside it."""
    from safetensors.torch import load_file

    card = read_prompt_card(model_dir)
    tensors = load_file(str(Path(model_dir) / PROMPT_WEIGHTS))
    expected = {name: list(t.shape) for name, t in tensors.items()}
    if card.get("shapes") != expected:
        raise ValueError(f"{model_dir}: {PROMPT_WEIGHTS} holds {expected} but {PROMPT_CARD} says {card.get('shapes')}")
    return PromptedModel(model, card["method"], int(card["virtual_tokens"]), tensors).eval()
