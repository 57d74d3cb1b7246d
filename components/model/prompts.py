"""Prompt learning at training time (train.peft prefix or p-tuning): the base model frozen, a soft prompt
made by peft's own encoders in front of it, and, after training, the prompt taken out as constants
(components/model/prompted.py PromptedModel), which is what is saved, evaluated, exported and served.

The prompt's parameterization is peft's: PrefixEncoder (an embedding of per-layer keys and values,
optionally through the prefix-tuning paper's two-layer MLP, train.prompt.projection) and PromptEncoder
(P-tuning's MLP or LSTM encoder). Where the prompt goes is PromptedModel's, the same code in training
and at inference: p-tuning exactly as peft's PeftModel puts it (before [CLS], ones in the attention mask,
zeros in the token type ids); prefix through a registered attention function, because peft's
PrefixTuning hands the prefix to the model as past_key_values, which BERT no longer takes in transformers 5.
"""

from __future__ import annotations

import torch

from components.config.peft import PromptParams
from components.errors import ConfigError
from components.model.prompted import PromptedModel
from components.model.wrapped import is_token_classifier, position_limit


class PromptTrainingModel(PromptedModel):
    """PromptedModel whose prompt comes from a trainable peft encoder; `frozen()` gives the constants."""

    def __init__(self, model, method: str, settings: PromptParams):
        from peft import PrefixTuningConfig, PromptEncoderConfig, TaskType
        from peft.tuners.p_tuning import PromptEncoder
        from peft.tuners.prefix_tuning import PrefixEncoder

        super().__init__(model, method, settings.virtual_tokens)
        config = model.config
        hidden, heads, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
        task = TaskType.TOKEN_CLS if is_token_classifier(model) else TaskType.SEQ_CLS
        shared = {"task_type": task, "num_virtual_tokens": settings.virtual_tokens, "token_dim": hidden,
                  "num_transformer_submodules": 1, "num_attention_heads": heads, "num_layers": layers,
                  "encoder_hidden_size": settings.encoder_hidden_size or hidden}
        if method == "prefix":
            self.encoder = PrefixEncoder(PrefixTuningConfig(**shared, prefix_projection=settings.projection))
        else:
            self.encoder = PromptEncoder(PromptEncoderConfig(**shared,
                                                             encoder_reparameterization_type=settings.encoder))
        self.register_buffer("indices", torch.arange(settings.virtual_tokens).unsqueeze(0), persistent=False)
        self._heads, self._layers = heads, layers

    def prompt_tensors(self) -> dict[str, torch.Tensor]:
        out = self.encoder(self.indices)[0]  # [n, hidden] (p-tuning) or [n, layers * 2 * hidden] (prefix)
        if self.method == "p-tuning":
            return {"prompt": out}
        n = self.virtual_tokens
        # peft's layout (PeftModel.get_prompt): [n, layers*2, heads, head_dim] -> [layers*2, heads, n, head_dim],
        # and per layer its key then its value.
        out = out.view(n, self._layers * 2, self._heads, -1).permute(1, 2, 0, 3)
        return {"keys": out[0::2], "values": out[1::2]}

    @torch.no_grad()
    def frozen(self) -> PromptedModel:
        """The trained prompt as constants on the plain model: what is saved and served."""
        self.eval()
        constants = {name: tensor.detach().clone() for name, tensor in self.prompt_tensors().items()}
        return PromptedModel(self.model, self.method, self.virtual_tokens, constants).eval()


def trainable_head(model) -> list[str]:
    """Names of the parameters outside the base model (the classification head): they train."""
    prefix = f"{model.base_model_prefix}."
    return [name for name, _ in model.named_parameters() if not name.startswith(prefix)]


def add_prompt(model, method: str, settings: PromptParams, longest: int) -> PromptTrainingModel:
    """`model` frozen but for its head (and its word-shape token types, which are new rows), with a
    trainable prompt in front. `longest`: the longest tokenized row it will see."""
    from components.model.shape_channel import ShapeChannel, keep_shapes_trainable

    model_type = model.config.model_type
    if isinstance(model, ShapeChannel):
        raise ConfigError(f"train.peft: {method} with model.word_shapes on a {model_type} model: its word shapes ride "
                          "on the word embeddings (it has no token type ids), and a soft prompt does too; use "
                          "train.peft: lora (or none), or model.word_shapes: false")
    if method == "prefix" and not getattr(model, "_supports_attention_backend", False):
        raise ConfigError(f"train.peft: prefix puts trained keys/values into every attention layer through "
                          f"transformers' attention interface, which {model_type} attention does not use; use "
                          "train.peft: p-tuning (or lora) with this base model")
    limit = position_limit(model.config)
    if method == "p-tuning" and limit and longest + settings.virtual_tokens > limit:
        raise ConfigError(f"train.peft: p-tuning puts {settings.virtual_tokens} virtual tokens in front of rows of up "
                          f"to {longest} tokens, beyond this {model_type} model's {limit} positions: lower "
                          f"model.max_length to {limit - settings.virtual_tokens} or train.prompt.virtual_tokens")
    model.requires_grad_(False)
    head = set(trainable_head(model))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in head)
    keep_shapes_trainable(model)
    return PromptTrainingModel(model, method, settings)
