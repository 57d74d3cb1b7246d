"""What the evaluation measures beside the whole test split: named slices (`evaluate:`), invariance under
perturbations (`robustness:`) and explanations of the served model (`explain:`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from components.config.base import Section

# The columns of the split CSVs a slice may select on: ingest keeps id, text, label and batch_id, plus the
# source's columns named in data.keep_columns (e.g. source, language); text has its own kinds.
SLICE_COLUMNS = ("label", "batch_id", "id")
SLICE_KINDS = ("column", "regex", "length")


class SliceSpec(Section):
    """One named group of test rows, of exactly one kind: `column` with `values` (a row whose column holds
    one of them; batch_id also matches by the batch's file name, e.g. new-reviews.csv), `regex` (searched
    in the text), or a text length band in characters (`min_chars` and/or `max_chars`, both inclusive)."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="The slice's name, used in MLflow metric names (slice_<name>_macro_f1) and the "
                                  "gate's check names. Required.")
    column: str | None = Field(default=None, description="Column kind: the split column selected on (label, "
                                                         "batch_id, id or one of data.keep_columns).")
    values: list[str] | None = Field(default=None, description="Column kind: the column values a row must hold "
                                                               "to belong to the slice.")
    regex: str | None = Field(default=None, description="Regex kind: a regular expression searched for in each "
                                                        "text.")
    min_chars: int | None = Field(default=None, ge=0, description="Length kind: the shortest text in the slice, "
                                                                  "in characters (inclusive).")
    max_chars: int | None = Field(default=None, ge=1, description="Length kind: the longest text in the slice, "
                                                                  "in characters (inclusive).")
    _pattern: re.Pattern | None = PrivateAttr(default=None)

    @field_validator("values", mode="before")
    @classmethod
    def _one_value_is_a_list(cls, value):
        return [str(value)] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> SliceSpec:
        kinds = self.kinds()
        if len(kinds) != 1:
            raise ValueError(f"slice {self.name!r} must have exactly one kind: `column` with `values`, `regex`, or "
                             f"`min_chars`/`max_chars` (found {' and '.join(kinds) or 'none'}); one slice per kind")
        if (self.column is None) != (self.values is None):
            raise ValueError(f"slice {self.name!r}: `column` and `values` go together "
                             "(e.g. column: batch_id, values: [new-reviews.csv])")
        # Whether the column reaches the split depends on data.keep_columns: Params checks it
        # (slice_columns_refusal).
        if self.column is not None and not self.values:
            raise ValueError(f"slice {self.name!r}: `values` is empty; name the {self.column} values it selects")
        if self.regex is not None:
            try:
                object.__setattr__(self, "_pattern", re.compile(self.regex))  # compiled once, here
            except re.error as error:
                raise ValueError(f"slice {self.name!r}: regex {self.regex!r} does not compile: {error}") from None
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"slice {self.name!r}: min_chars {self.min_chars} is above max_chars {self.max_chars}")
        return self

    def kinds(self) -> list[str]:
        present = {"column": self.column is not None or self.values is not None, "regex": self.regex is not None,
                   "length": self.min_chars is not None or self.max_chars is not None}
        return [kind for kind in SLICE_KINDS if present[kind]]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def pattern(self) -> re.Pattern:
        if self._pattern is None:
            raise ValueError(f"slice {self.name!r} is not a regex slice")
        return self._pattern

    def describe(self) -> str:
        """What the slice selects, for the model card and the gate."""
        if self.kind == "column":
            return f"{self.column} in {', '.join(self.values or [])}"
        if self.kind == "regex":
            return f"text matches /{self.regex}/"
        low, high = self.min_chars, self.max_chars
        return (f"{low}-{high} characters" if low is not None and high is not None
                else f">= {low} characters" if low is not None else f"<= {high} characters")


class EvaluateParams(Section):
    slices: list[SliceSpec] = Field(default_factory=list,
                                    description="Named slices of the test split, each measured on its own "
                                                "(metrics, model card, gate); left out, none.")
    min_slice_rows: int = Field(default=30, ge=1, description="A slice with fewer test rows than this is reported, "
                                                              "not gated: its figure would be noise.")

    @model_validator(mode="after")
    def _unique_names(self) -> EvaluateParams:
        names = [spec.name for spec in self.slices]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"evaluate.slices: the slice name(s) {', '.join(twice)} appear more than once; "
                             "give each slice its own name")
        return self


def slice_columns_refusal(evaluate: EvaluateParams, keep_columns: list[str]) -> str | None:
    """Why a column slice cannot be measured (its column does not reach the test split), or None."""
    available = [*SLICE_COLUMNS, *keep_columns]
    for spec in evaluate.slices:
        if spec.column is not None and spec.column not in available:
            return (f"evaluate.slices: slice {spec.name!r}: column {spec.column!r} is not in the test split, which "
                    f"holds {', '.join(available)} (and text: slice that with `regex` or `min_chars`/`max_chars`); "
                    f"to slice by a column of your data, add it to data.keep_columns")
    return None


class ExplainParams(Section):
    """Token attributions of the served model (components/explain): Shapley values over words."""

    enabled: bool = Field(default=True, description="Write the explanation report in every retrain; false writes "
                                                    "a page saying so (the CLI and /explain still work).")
    max_evals: int = Field(default=120, ge=10, le=20_000,
                           description="Model calls (masked texts scored) allowed per explanation: the cost bound "
                                       "of one explanation.")
    report_errors: int = Field(default=12, ge=0, description="The test split's most confident errors explained in "
                                                             "the report.")
    report_correct: int = Field(default=6, ge=0, description="Correct answers explained in the report, drawn with "
                                                             "explain.seed.")
    faithfulness_rows: int = Field(default=30, ge=0,
                                   description="Deletion test of faithfulness: test rows whose top-k attributed "
                                               "words are deleted, against k random words; 0 skips the test.")
    faithfulness_k: int = Field(default=2, ge=1, description="Deletion test: how many words are deleted per row.")
    seed: int = Field(default=0, description="Seed of the sampled rows and the random deletions.")


class RobustnessParams(Section):
    """Invariance checks in the style of CheckList (components/robustness): perturbed test texts whose
    label should not change, and the share of predictions that stay the same."""

    enabled: bool = Field(default=True, description="Measure invariance; false writes empty figures (a "
                                                    "gate.min_invariance above 0 then fails).")
    kinds: list[Literal["typo", "casing", "punctuation", "whitespace", "entity"]] = Field(
        default_factory=lambda: ["typo", "casing", "punctuation", "whitespace", "entity"],
        description="The perturbations applied (token classification measures typo, casing and entity only).")
    max_rows: int | None = Field(default=2000, ge=1, description="Test rows perturbed per kind, a seeded sample; "
                                                                 "null perturbs every test row.")
    seed: int = Field(default=0, description="Seed of the sample and of the perturbations (which word gets the typo, "
                                             "which name replaces which).")
