"""The settings of watching a model in production: scheduled monitoring of live traffic (`monitor:`)
and the slices the evaluation and the gate judge one by one (`evaluate:`). Kept apart from
components/config.py, which composes them into Params, so that each file stays one screenful of concerns."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import Field, PrivateAttr, field_validator, model_validator

from components.sections import Section

# The columns of the split CSVs a slice may select on: ingest keeps id, text, label and batch_id, plus the
# source's columns named in data.keep_columns (e.g. source, language); text has its own kinds.
SLICE_COLUMNS = ("label", "batch_id", "id")
SLICE_KINDS = ("column", "regex", "length")
# Columns of the dataset and split files that ingest fills itself; a kept source column may not take their names.
RESERVED_COLUMNS = ("id", "text", "label", "batch_id", "source_row", "split", "tokens", "tags", "rejected",
                    "check", "expectation", "reason")


class SliceSpec(Section):
    """One named group of test rows, of exactly one kind: `column` with `values` (a row whose column holds
    one of them; batch_id also matches by the batch's file name, e.g. new-reviews.csv), `regex` (searched
    in the text), or a text length band in characters (`min_chars` and/or `max_chars`, both inclusive)."""

    # The name goes into MLflow metric names (slice_<name>_macro_f1) and the gate's check names.
    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")
    column: str | None = None
    values: list[str] | None = None
    regex: str | None = None
    min_chars: int | None = Field(default=None, ge=0)
    max_chars: int | None = Field(default=None, ge=1)
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
    # Named slices of the test split, each measured on its own (metrics, model card, gate).
    slices: list[SliceSpec] = Field(default_factory=list)
    # A slice with fewer test rows than this is reported, not gated: its figure is noise.
    min_slice_rows: int = Field(default=30, ge=1)

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


def keep_columns_refusal(keep_columns: list[str], text_column: str, label_column: str) -> str | None:
    """Why data.keep_columns cannot be kept as given, or None (lives here to keep config.py short)."""
    twice = sorted({name for name in keep_columns if keep_columns.count(name) > 1})
    if twice:
        return f"data.keep_columns: {', '.join(twice)} appear(s) more than once"
    taken = [name for name in keep_columns if name in (text_column, label_column)]
    if taken:
        return (f"data.keep_columns: {', '.join(taken)} is the text or label column (data.text_column, "
                "data.label_column), which every row keeps already")
    # The dataset's own columns: a kept column of that name would overwrite them.
    reserved = [name for name in keep_columns if name in RESERVED_COLUMNS]
    if reserved:
        return (f"data.keep_columns: {', '.join(reserved)} is a column tunegate writes itself "
                f"({', '.join(RESERVED_COLUMNS)}); rename it in the source")
    return None


class DriftThresholds(Section):
    """A figure in [0, 1] above `warn` warns, above `fail` fails (inclusive limits): drift's checks
    (drift:) and monitoring's low-confidence share (monitor.low_confidence_share)."""

    warn: float = Field(ge=0, le=1)
    fail: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _warn_not_above_fail(self) -> DriftThresholds:
        if self.warn > self.fail:
            raise ValueError(f"warn ({self.warn}) is above fail ({self.fail})")
        return self


class MonitorParams(Section):
    """Scheduled monitoring of the service's prediction log: drift against the champion's training rows,
    the share of low-confidence answers, and the predicted-label shares (flows/monitor.py)."""

    deployment_name: str = "scheduled-monitor"
    cron: str = "0 * * * *"
    timezone: str = "UTC"
    # The newest N logged predictions are judged: a window of recent traffic, not all of history.
    last: int = Field(default=5000, ge=1)
    # Only predictions logged within this span before the run are read, e.g. "24h", "7d" (units m, h, d, w);
    # None reads the whole log. A partitioned log then opens only the window's hourly files.
    window: str | None = Field(default=None, pattern=r"^[1-9][0-9]*[mhdw]$")
    # An answer whose score is below this is a low-confidence one (NER: the mean entity score of a text;
    # texts without entities have no score and are not counted).
    low_confidence: float = Field(default=0.6, ge=0, le=1)
    # The share of low-confidence answers above `warn` warns, above `fail` fails (same rule as drift:).
    low_confidence_share: DriftThresholds = DriftThresholds(warn=0.2, fail=0.4)
    # Fewer scored answers than this: the share is reported, not judged (a handful of texts is noise).
    min_scored: int = Field(default=30, ge=1)
    # Texts in the labelling queue written when the status is warn or fail.
    queue_size: int = Field(default=200, ge=1)
    # On fail, run the retraining flow after the report. Off by default: retraining on unchanged labelled
    # data changes nothing; label the queue and ingest it as a batch instead (`tunegate ingest`).
    retrain_on_fail: bool = False

    def window_span(self) -> timedelta | None:
        """monitor.window as a timedelta (None: the whole log)."""
        return parse_window(self.window) if self.window else None


_WINDOW_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(text: str) -> timedelta:
    """A span like 30m, 24h, 7d or 2w."""
    match = re.fullmatch(r"([1-9][0-9]*)([mhdw])", text.strip())
    if match is None:
        raise ValueError(f"window {text!r}: a whole number and a unit (m, h, d, w), e.g. 24h or 7d")
    return timedelta(**{_WINDOW_UNITS[match.group(2)]: int(match.group(1))})
