"""The `curve:` section: `tunegate curve`'s learning curves (components/model/curve.py, flows/curve.py)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from components.config.base import Section
from components.errors import ConfigError

ALL = "all"
# What the curve itself sets for every point: the rows (its own nested subsets, not max_train_examples),
# the seed (the point's), and how it runs (threads per point).
CURVE_OWNED_KEYS = ("train.seed", "train.max_train_examples", "train.num_threads")
METHOD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def default_methods() -> dict[str, dict[str, Any]]:
    # Prompt learning needs a far larger learning rate than full fine-tuning (its few vectors start random).
    return {"full": {"train.peft": "none"},
            "lora": {"train.peft": "lora", "train.learning_rate": 5.0e-4},
            "prefix": {"train.peft": "prefix", "train.learning_rate": 1.0e-2}}


class CurveParams(Section):
    """Learning curves: each method trained on nested, stratified subsets of the training split of each
    size, once per seed, scored on the same validation and test rows."""

    sizes: list[int | Literal["all"]] = Field(
        default_factory=lambda: [64, 256, 1024, ALL],
        description="Training rows per point; 'all' is the whole training split (a size at or above its row count "
                    "is the same point, run once).")
    methods: dict[str, dict[str, Any]] = Field(
        default_factory=default_methods,
        description="Method name -> dotted train.* settings applied on top of the train section, e.g. "
                    "{lora: {train.peft: lora, train.learning_rate: 5.0e-04}}.")
    seeds: list[int] = Field(default_factory=lambda: [42, 1],
                             description="One run per seed and point: each seed draws its own nested subsets and "
                                         "seeds training.")
    min_steps: int = Field(default=100, ge=0,
                           description="Small subsets train at least this many optimizer steps (more epochs than "
                                       "train.epochs), so that a point measures a finished run.")
    max_concurrency: int = Field(default=2, ge=1, description="Points training at once, each in its own process.")

    @model_validator(mode="after")
    def _settings_make_a_curve(self) -> CurveParams:
        if not self.sizes:
            raise ValueError("curve.sizes is empty: give training-set sizes such as [64, 256, 1024, all]")
        numbers = [s for s in self.sizes if s != ALL]
        if any(n < 1 for n in numbers):
            raise ValueError(f"curve.sizes {self.sizes}: sizes are positive row counts (or 'all')")
        if len(set(map(str, self.sizes))) != len(self.sizes):
            raise ValueError(f"curve.sizes {self.sizes} has duplicates")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"curve.seeds {self.seeds}: give one or more distinct seeds")
        if not self.methods:
            raise ValueError("curve.methods is empty: name at least one method, e.g. {full: {train.peft: none}}")
        for name, overrides in self.methods.items():
            if not METHOD_NAME.match(name):
                raise ValueError(f"curve.methods: {name!r} is not a usable name (letters, digits, '_' and '-')")
            for key in overrides:
                section, _, setting = key.partition(".")
                if section != "train" or not setting or "." in setting:
                    raise ValueError(f"curve.methods.{name}: {key!r} is not a train.<setting> key")
                if key in CURVE_OWNED_KEYS:
                    raise ValueError(f"curve.methods.{name}: {key} is set by the curve itself for every point "
                                     "(rows, seed, threads); remove it")
        return self

    def choose(self, methods: list[str] | None = None, sizes: list[int | str] | None = None,
               seeds: list[int] | None = None) -> CurveParams:
        """A copy narrowed to the named methods and with other sizes or seeds (the CLI's options), validated."""
        values = self.model_dump()
        if methods:
            unknown = [m for m in methods if m not in self.methods]
            if unknown:
                raise ConfigError(f"curve methods {unknown} are not in params.yaml's curve.methods "
                                  f"({', '.join(self.methods)}); add them there first")
            values["methods"] = {m: self.methods[m] for m in methods}
        if sizes:
            values["sizes"] = sizes
        if seeds:
            values["seeds"] = seeds
        try:
            return CurveParams.model_validate(values)
        except ValidationError as error:
            raise ConfigError("; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())) from None
