"""A transformers classifier inside a module of ours (a soft prompt in front, a word-shape table beside):
what downstream code reads off a model, passed through to the one inside."""

from __future__ import annotations

import torch


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
