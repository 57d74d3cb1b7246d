"""The `sweep:` section: a hyperparameter search run by the flow before training."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from components.config.base import Section
from components.config.model import TrainParams

# The distillation settings that shape only the student's loss, not the teacher nor its logits: a sweep
# varies them over the logits as the distill stage wrote them, and that stage reuses its logits when only
# they changed.
STUDENT_LOSS_KEYS = ("temperature", "alpha")
SWEEPABLE = "train.<setting>, distill.temperature or distill.alpha"


def is_sweepable(key: str) -> bool:
    """Whether a trial may set this dotted key: what the train stage alone reads."""
    section, _, name = key.partition(".")
    if section == "train":
        return name in TrainParams.model_fields
    return section == "distill" and name in STUDENT_LOSS_KEYS


class SweepParams(Section):
    """A hyperparameter search run by the flow before training; the best trial's values go on."""

    enabled: bool = Field(default=False, description="Search sweep.space before training; the best trial's "
                                                     "values (by validation metric) go on.")
    method: Literal["grid", "random"] = Field(default="grid", description="grid tries every combination of the "
                                                                          "space; random draws sweep.trials points.")
    trials: int = Field(default=4, ge=1, description="Random search: how many points to draw from the space.")
    max_concurrency: int = Field(default=2, ge=1, description="Trials training at once.")
    seed: int = Field(default=0, description="Seed of the random search's draws.")
    space: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Dotted keys to the values to try, e.g. {train.learning_rate: [5.0e-05, 1.0e-04]}: train.* "
                    "settings, and distill.temperature and distill.alpha when distillation is on.")
    runner: Literal["local", "dask"] = Field(
        default="local",
        description="Where the trials run: local (child processes of this one) or dask (one Dask task per trial, "
                    "on the scheduler at sweep.address or on a local cluster of max_concurrency workers).")
    address: str = Field(default="", description="runner dask: the scheduler's address, e.g. tcp://10.0.0.5:8786 "
                                                 "(its workers must see the project at the same path); empty "
                                                 "starts a local cluster.")

    @model_validator(mode="after")
    def _space_is_sweepable(self) -> "SweepParams":
        for key, values in self.space.items():
            if not is_sweepable(key):
                raise ValueError(f"sweep.space: {key!r} cannot be swept (only {SWEEPABLE})")
            if not values:
                raise ValueError(f"sweep.space: {key!r} has no values to try")
        if self.enabled and not self.space:
            raise ValueError("sweep.enabled is true but sweep.space is empty")
        if self.address and self.runner != "dask":
            raise ValueError(f"sweep.address is {self.address!r} but sweep.runner is {self.runner!r}: "
                             "set sweep.runner: dask, or empty sweep.address")
        if self.address:
            from urllib.parse import urlsplit

            parts = urlsplit(self.address)
            if not parts.scheme or not parts.hostname or parts.port is None:
                raise ValueError(f"sweep.address {self.address!r}: expected a Dask scheduler address "
                                 "scheme://host:port, e.g. tcp://10.0.0.5:8786 (what `dask scheduler` prints)")
        return self
