"""A transformers classifier inside a module of ours (a soft prompt in front, a word-shape table beside):
what downstream code reads off a model, passed through to the one inside."""

from __future__ import annotations

import torch

# Model types that number a sequence's positions from pad_token_id + 1 (padding itself gets pad_token_id).
POSITIONS_AFTER_PADDING = ("mpnet", "roberta", "xlm-roberta")


def position_limit(config) -> int:
    """How many positions a sequence may have: max_position_embeddings, less the padding offset of
    models that number positions from pad_token_id + 1 (MPNet, RoBERTa)."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    if config.model_type in POSITIONS_AFTER_PADDING:
        limit -= int(config.pad_token_id or 0) + 1
    return limit


def is_token_classifier(model) -> bool:
    return type(model).__name__.endswith("ForTokenClassification")


class WrappedModel(torch.nn.Module):
    """Holds the transformers model as `self.model`; config, device and task are its."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def token_level(self) -> bool:
        return is_token_classifier(self.model)
