"""The base of every params.yaml section: a leaf module, so that each group of settings can live in its own
module without importing the whole configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)
