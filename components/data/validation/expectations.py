"""Running checks as a Great Expectations suite, and reading its results back as report entries.

A check is tunegate's name and plain-words description around one GX expectation. GX is imported by
the callers, inside their entry points: importing it costs about two seconds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from components.config import TOKEN_CLASSIFICATION, DataParams
from components.data.validation.duplicates import duplicate_key
from components.data.validation.report import ISSUE_PREFIX, FailedExpectation

REQUIRED_COLUMNS = ("text", "label")
EXAMPLE_COLUMNS = ("source_row", "batch_id", "id", "text", "label")
MAX_EXAMPLES = 5
EXAMPLE_TEXT_CHARS = 200
# Every character Python calls whitespace, written literally inside one character class: the
# same pattern means the same thing to RE2 (pandas' pyarrow strings) and to Python's re.
_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
BLANK_TEXT_REGEX = f"^[{_WHITESPACE}]*$"


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    expectation: Any  # a GX Expectation; typed loosely because GX is imported lazily


def is_token_task(task: str) -> bool:
    if task not in ("sequence-classification", TOKEN_CLASSIFICATION):
        raise ValueError(f"unknown task {task!r}")
    return task == TOKEN_CLASSIFICATION


# SUMMARY keeps only the first few unexpected row indices: enough for examples, and cheap when a
# million rows fail.
SUMMARY_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}


def run_suite(gx: Any, frame: pd.DataFrame, checks: list[Check], *, name: str = "tunegate dataset",
               result_format: dict[str, Any] | None = None) -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Without this every run draws a "Calculating Metrics" tqdm bar on stderr.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("tunegate")
        .add_dataframe_asset("dataset")
        .add_batch_definition_whole_dataframe("whole dataset")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name=name, expectations=[check.expectation for check in checks])
    # Batch.validate rather than ValidationDefinition.run: run() also serializes the whole result
    # into the context's results store, which nobody reads here, and with COMPLETE index lists that
    # was 20 of 23 s on 1M rows failing four checks (Batch.validate: under 4 s).
    with quiet_gx_logging():
        return batch.validate(suite, result_format=result_format or SUMMARY_RESULT_FORMAT)


class quiet_gx_logging:
    """Raise GX's logger to ERROR for the run: its INFO/WARNING chatter is not for our users."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("great_expectations")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def failure_of(check: Check, result: Any, frame: pd.DataFrame, given_columns: list[str],
             token_task: bool = False) -> FailedExpectation:
    config = result.expectation_config
    details = result.result or {}
    indices = details.get("partial_unexpected_index_list") or []
    return FailedExpectation(
        check=check.name,
        expectation=config.type,
        column=config.kwargs.get("column"),
        description=check.description,
        observed=observed_text(check, result, given_columns),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        examples=failure_examples(check, frame, [int(i) for i in indices[:MAX_EXAMPLES]], token_task),
    )


def observed_text(check: Check, result: Any, given_columns: list[str]) -> str:
    details = result.result or {}
    problem = exception_message(result.exception_info or {})
    if problem:
        return f"the check could not run: {problem}"
    if check.name == "required_columns":
        missing = [c for c in REQUIRED_COLUMNS if c not in given_columns]
        return f"missing columns {missing}; columns found: {given_columns}"
    if check.name == "min_rows":
        return f"{details.get('observed_value')} rows"
    if check.name == "all_labels_present":
        return f"no rows for {details.get('partial_missing_list')}"
    if check.name.startswith("entity_type_present["):
        return f"no sentence has an entity of type {details.get('partial_missing_list')}"
    count, percent = details.get("unexpected_count"), details.get("unexpected_percent")
    if count is None:  # some GX failures carry only a flag; say so rather than invent numbers
        return "failed (GX gave no count)"
    return f"{count} row(s) ({percent or 0:.2f}%) that do not"


def exception_message(info: dict[str, Any]) -> str | None:
    # GX gives either {"raised_exception": ..., "exception_message": ...} or, when a metric failed,
    # {"<metric id>": {"exception_message": ...}, ...}.
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    messages = [str(v.get("exception_message")) for v in info.values()
                if isinstance(v, dict) and v.get("exception_message")]
    return "; ".join(messages) or None


def failure_examples(check: Check, frame: pd.DataFrame, positions: list[int],
              token_task: bool = False) -> list[dict[str, Any]]:
    examples = example_rows(frame, positions)
    column = ISSUE_PREFIX + check.name
    for example, position in zip(examples, positions):
        example.update(_group_context(check, frame, position, token_task))
        if column in frame.columns:  # a token check: its reason for this sentence
            example["reason"] = json_value(frame[column].iloc[position])
    return examples


def example_rows(frame: pd.DataFrame, positions: list[int]) -> list[dict[str, Any]]:
    if not positions:
        return []
    columns = [c for c in EXAMPLE_COLUMNS if c in frame.columns]
    examples = []
    for row in frame.iloc[positions][columns].to_dict("records"):
        example = {name: json_value(value) for name, value in row.items()}
        if isinstance(example.get("text"), str):
            example["text"] = example["text"][:EXAMPLE_TEXT_CHARS]
        examples.append(example)
    return examples


def _group_context(check: Check, frame: pd.DataFrame, position: int, token_task: bool = False) -> dict[str, Any]:
    """For the group-by checks: where the text was first seen, and which labels it carries."""
    if check.name not in ("duplicate_texts", "conflicting_labels"):
        return {}
    key = duplicate_key(frame, token_task)
    group = frame.loc[key == key.iloc[position]]
    if group.empty:  # a null key matches nothing
        return {}
    if check.name == "duplicate_texts" and "source_row" in frame.columns:
        return {"first_source_row": int(group["source_row"].iloc[0])}
    if check.name == "conflicting_labels":
        return {"labels_for_this_text": sorted(str(v) for v in group["label"].dropna().unique())}
    return {}


def json_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):  # NaN -> null
        return None
    if hasattr(value, "item"):  # numpy scalar -> Python scalar
        return value.item()
    return value


def tagged(checks: list[Check]) -> list[Check]:
    for check in checks:
        check.expectation.meta = {"check": check.name}
    return checks


def text_checks(gx: Any, data: DataParams) -> list[Check]:
    """The checks on each text that the dataset suite and the row quarantine share."""
    E = gx.expectations
    return [
        Check("text_not_null", "every row has a text", E.ExpectColumnValuesToNotBeNull(column="text")),
        Check("text_not_blank", "no text is empty or whitespace only",
              E.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK_TEXT_REGEX)),
        Check("text_length", f"every text is {data.min_chars} to {data.max_chars} characters long "
                             "(data.min_chars, data.max_chars)",
              E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=data.min_chars,
                                                    max_value=data.max_chars)),
    ]
