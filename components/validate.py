"""Validate the dataset frame with a Great Expectations suite before any training.

The frame has columns id (hash of the normalized text), text, label (already mapped through
data.label_map), batch_id and source_row. The suite checks what a person would check by eye:
enough rows, real texts of a sane length, only known labels and all of them, few duplicates, and
no text labelled two ways. Two of those checks need a group-by, which GX has no expectation for:
they become boolean helper columns computed in pandas, each expected to be all False, so that they
appear in GX's results and in the report like every other check.

GX is imported inside `validate_dataset` only: importing it costs about two seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from components.config import DataParams

REQUIRED_COLUMNS = ("text", "label")
# Helper columns added to the frame for the group-by checks.
DUPLICATE_FLAG = "is_duplicate_text"
CONFLICT_FLAG = "has_conflicting_label"
EXAMPLE_COLUMNS = ("source_row", "batch_id", "id", "text", "label")
MAX_EXAMPLES = 5
EXAMPLE_TEXT_CHARS = 200
SUMMARY_EXAMPLES = 3
SUMMARY_VALUE_CHARS = 60
# Every character Python calls whitespace, written literally inside one character class: the
# same pattern means the same thing to RE2 (pandas' pyarrow strings) and to Python's re.
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
BLANK_TEXT_REGEX = f"^[{_WHITESPACE}]*$"


class FailedExpectation(BaseModel):
    check: str = Field(description="tunegate's name for the check, e.g. 'label_in_labels'")
    expectation: str = Field(description="GX expectation type, e.g. 'expect_column_values_to_be_in_set'")
    column: str | None = None
    description: str = Field(description="what was expected, in plain words")
    observed: str = Field(description="what was found, in plain words")
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list, description="up to 5 offending rows")


class ValidationReport(BaseModel):
    success: bool
    source: str
    rows: int
    checked: int = Field(description="number of expectations run")
    failures: list[FailedExpectation] = Field(default_factory=list)

    def summary(self) -> str:
        if self.success:
            return f"Data validation of {self.source} passed: {self.checked} expectations on {self.rows} rows."
        lines = [
            f"Data validation of {self.source} failed: {len(self.failures)} of {self.checked} expectations "
            f"failed on {self.rows} rows."
        ]
        lines.extend(_summary_line(failure) for failure in self.failures)
        return "\n".join(lines)

    def write(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> "ValidationReport":
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


class DataValidationError(RuntimeError):
    """The dataset failed validation; `.report` holds the details, the message is its summary."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


def assert_valid(report: ValidationReport) -> ValidationReport:
    if not report.success:
        raise DataValidationError(report)
    return report


@dataclass(frozen=True)
class _Check:
    name: str
    description: str
    expectation: Any  # a GX Expectation; typed loosely because GX is imported lazily


def validate_dataset(frame: pd.DataFrame, data: DataParams, *, source: str) -> ValidationReport:
    """Run the suite over `frame` and return what failed, with example rows; raises nothing on bad data."""
    import great_expectations as gx

    given_columns = [str(c) for c in frame.columns]
    frame = _with_helper_columns(frame.reset_index(drop=True))
    checks = _checks(gx, data, set(frame.columns))
    result = _run_suite(gx, frame, checks)
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    failures = [
        _failure(check, by_name[check.name], frame, given_columns)
        for check in checks
        if not by_name[check.name].success
    ]
    return ValidationReport(
        success=bool(result.success),
        source=source,
        rows=len(frame),
        checked=int(result.statistics["evaluated_expectations"]),
        failures=failures,
    )


# --- the suite ------------------------------------------------------------------------------------


def _duplicate_key(frame: pd.DataFrame) -> pd.Series | None:
    # The id is the hash of the normalized text: texts that differ only in case or spacing collide.
    if "id" in frame.columns:
        return frame["id"]
    return frame["text"] if "text" in frame.columns else None


def _with_helper_columns(frame: pd.DataFrame) -> pd.DataFrame:
    key = _duplicate_key(frame)
    if key is None:
        return frame
    helpers = {DUPLICATE_FLAG: key.duplicated(keep="first")}  # the first occurrence is not a duplicate
    if "label" in frame.columns:
        helpers[CONFLICT_FLAG] = _conflicting_label_flags(key, frame["label"])
    return frame.assign(**helpers)


def _conflicting_label_flags(key: pd.Series, labels: pd.Series) -> pd.Series:
    """True on every row whose text also appears with another label (all rows of the group)."""
    pairs = pd.DataFrame({"key": key, "label": labels}).dropna(subset=["label"]).drop_duplicates()
    conflicting_keys = pairs.loc[pairs["key"].duplicated(keep=False), "key"]
    # drop_duplicates + isin is about twice as fast as groupby().transform("nunique") on 1M rows.
    return key.isin(conflicting_keys.unique())


def _checks(gx: Any, data: DataParams, columns: set[str]) -> list[_Check]:
    """The checks that can run on these columns; a missing column fails the first check instead of
    making every check on it raise."""
    E = gx.expectations
    labels = list(data.labels)
    checks = [
        _Check("required_columns", f"the columns {list(REQUIRED_COLUMNS)} are present",
               E.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False)),
        _Check("min_rows", f"at least {data.min_rows} rows (data.min_rows)",
               E.ExpectTableRowCountToBeBetween(min_value=data.min_rows)),
    ]
    if "text" in columns:
        checks += [
            _Check("text_not_null", "every row has a text",
                   E.ExpectColumnValuesToNotBeNull(column="text")),
            _Check("text_not_blank", "no text is empty or whitespace only",
                   E.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK_TEXT_REGEX)),
            _Check("text_length", f"every text is {data.min_chars} to {data.max_chars} characters long "
                                  "(data.min_chars, data.max_chars)",
                   E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=data.min_chars,
                                                         max_value=data.max_chars)),
        ]
    if "label" in columns:
        checks += [
            _Check("label_not_null", "every row has a label",
                   E.ExpectColumnValuesToNotBeNull(column="label")),
            _Check("label_in_labels", f"every label is one of {labels} (data.labels)",
                   E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
            _Check("all_labels_present", f"each of {labels} appears at least once",
                   E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels)),
        ]
    if DUPLICATE_FLAG in columns:
        # "mostly" is the fraction of rows that must pass. The epsilon keeps the limit inclusive:
        # 1 - 0.18 is 0.8200000000000001 in floats, above the 41/50 = 0.82 GX compares it with.
        mostly = max(0.0, 1.0 - data.max_duplicate_fraction - 1e-12)
        checks.append(_Check(
            "duplicate_texts",
            f"at most {data.max_duplicate_fraction:.2%} of rows repeat an earlier text (same id; "
            "data.max_duplicate_fraction)",
            E.ExpectColumnValuesToBeInSet(column=DUPLICATE_FLAG, value_set=[False], mostly=mostly)))
    if CONFLICT_FLAG in columns:
        checks.append(_Check(
            "conflicting_labels", "no text appears with two different labels (same id)",
            E.ExpectColumnValuesToBeInSet(column=CONFLICT_FLAG, value_set=[False])))
    for check in checks:
        check.expectation.meta = {"check": check.name}
    return checks


def _run_suite(gx: Any, frame: pd.DataFrame, checks: list[_Check]) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Without this every run draws a "Calculating Metrics" tqdm bar on stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas("tunegate")
        .add_dataframe_asset("dataset")
        .add_batch_definition_whole_dataframe("whole dataset")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="tunegate dataset"))
    for check in checks:
        suite.add_expectation(check.expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="tunegate dataset", data=batch_definition, suite=suite)
    )
    with _quiet_gx_logging():
        return validation.run(
            batch_parameters={"dataframe": frame},
            # SUMMARY keeps only the first few unexpected row indices: enough for examples, and
            # cheap when a million rows fail.
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
        )


class _quiet_gx_logging:
    """Raise GX's logger to ERROR for the run: its INFO/WARNING chatter is not for our users."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("great_expectations")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


# --- turning GX results into the report -----------------------------------------------------------


def _failure(check: _Check, result: Any, frame: pd.DataFrame, given_columns: list[str]) -> FailedExpectation:
    config = result.expectation_config
    details = result.result or {}
    indices = details.get("partial_unexpected_index_list") or []
    return FailedExpectation(
        check=check.name,
        expectation=config.type,
        column=config.kwargs.get("column"),
        description=check.description,
        observed=_observed(check, result, given_columns),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        examples=_examples(check, frame, [int(i) for i in indices[:MAX_EXAMPLES]]),
    )


def _observed(check: _Check, result: Any, given_columns: list[str]) -> str:
    details = result.result or {}
    problem = _exception_message(result.exception_info or {})
    if problem:
        return f"the check could not run: {problem}"
    if check.name == "required_columns":
        missing = [c for c in REQUIRED_COLUMNS if c not in given_columns]
        return f"missing columns {missing}; columns found: {given_columns}"
    if check.name == "min_rows":
        return f"{details.get('observed_value')} rows"
    if check.name == "all_labels_present":
        return f"no rows for {details.get('partial_missing_list')}"
    count, percent = details.get("unexpected_count"), details.get("unexpected_percent")
    if count is None:  # some GX failures carry only a flag; say so rather than invent numbers
        return "failed (GX gave no count)"
    return f"{count} row(s) ({percent or 0:.2f}%) that do not"


def _exception_message(info: dict[str, Any]) -> str | None:
    # GX gives either {"raised_exception": ..., "exception_message": ...} or, when a metric failed,
    # {"<metric id>": {"exception_message": ...}, ...}.
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    messages = [str(v.get("exception_message")) for v in info.values()
                if isinstance(v, dict) and v.get("exception_message")]
    return "; ".join(messages) or None


def _examples(check: _Check, frame: pd.DataFrame, positions: list[int]) -> list[dict[str, Any]]:
    if not positions:
        return []
    columns = [c for c in EXAMPLE_COLUMNS if c in frame.columns]
    examples = []
    for position, row in zip(positions, frame.iloc[positions][columns].to_dict("records")):
        example = {name: _json_value(value) for name, value in row.items()}
        if isinstance(example.get("text"), str):
            example["text"] = example["text"][:EXAMPLE_TEXT_CHARS]
        example.update(_group_context(check, frame, position))
        examples.append(example)
    return examples


def _group_context(check: _Check, frame: pd.DataFrame, position: int) -> dict[str, Any]:
    """For the group-by checks: where the text was first seen, and which labels it carries."""
    if check.name not in ("duplicate_texts", "conflicting_labels"):
        return {}
    key = _duplicate_key(frame)
    group = frame.loc[key == key.iloc[position]]
    if group.empty:  # a null key matches nothing
        return {}
    if check.name == "duplicate_texts" and "source_row" in frame.columns:
        return {"first_source_row": int(group["source_row"].iloc[0])}
    if check.name == "conflicting_labels":
        return {"labels_for_this_text": sorted(str(v) for v in group["label"].dropna().unique())}
    return {}


def _json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # NaN -> null
        return None
    if hasattr(value, "item"):  # numpy scalar -> Python scalar
        return value.item()
    return value


def _summary_line(failure: FailedExpectation) -> str:
    on = f" on {failure.column!r}" if failure.column else ""
    line = (f"- {failure.check} ({failure.expectation}{on}): expected {failure.description}; "
            f"found {failure.observed}")
    quoted = [_quote_example(failure, example) for example in failure.examples[:SUMMARY_EXAMPLES]]
    if quoted:
        line += "; e.g. " + ", ".join(quoted)
    return line


def _quote_example(failure: FailedExpectation, example: dict[str, Any]) -> str:
    where = f"row {example['source_row']}" if "source_row" in example else "a row"
    field = {"duplicate_texts": "text", "conflicting_labels": "label"}.get(failure.check, failure.column or "text")
    value = example.get(field)
    if isinstance(value, str) and len(value) > SUMMARY_VALUE_CHARS:
        value = value[:SUMMARY_VALUE_CHARS] + "..."
    quoted = f"{where} {field}={value!r}"
    if "first_source_row" in example:
        quoted += f" (first seen in row {example['first_source_row']})"
    if "labels_for_this_text" in example:
        quoted += f" (this text has labels {example['labels_for_this_text']})"
    return quoted
