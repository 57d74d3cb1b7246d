"""The `curve:` section: `tunegate curve`'s learning curves (components/model/curve.py, flows/curve.py).
A leaf module beside components/config.py, which composes it into Params."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from components.errors import ConfigError
from components.sections import Section

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

    # Training rows per point; "all" is the whole training split. A size at or above the split's row
    # count is the same point as "all" and is run once.
    sizes: list[int | Literal["all"]] = Field(default_factory=lambda: [64, 256, 1024, ALL])
    # Method name -> dotted train.* overrides applied on top of params.yaml's train section.
    methods: dict[str, dict[str, Any]] = Field(default_factory=default_methods)
    # Each seed draws its own subsets (the 256 of a seed contain its 64) and seeds training (train.seed).
    seeds: list[int] = Field(default_factory=lambda: [42, 1])
    # Small subsets train at least this many optimizer steps: epochs = max(train.epochs,
    # ceil(min_steps / steps per epoch)). With train.epochs alone, 64 rows at batch size 32 would get 4
    # steps, and the curve would measure an unfinished run rather than what 64 labels can teach.
    min_steps: int = Field(default=100, ge=0)
    # Points training at once (each in its own process, sharing this machine's cores).
    max_concurrency: int = Field(default=2, ge=1)

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
