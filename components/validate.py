"""Validate the dataset frame with a Great Expectations suite before any training.

The frame has columns id (hash of the normalized text), text, label (already mapped through
data.label_map), batch_id and source_row. The suite checks what a person would check by eye:
enough rows, real texts of a sane length, only known labels and all of them, few duplicates, and
no text labelled two ways. Two of those checks need a group-by, which GX has no expectation for:
they become boolean helper columns computed in pandas, each expected to be all False, so that they
appear in GX's results and in the report like every other check.

Two more entry points serve new batches (see their sections below): `quarantine_rows` sets aside
the rows that fail a row-level check, each with its reason, so that the rest can be used and no row
is lost; `validate_batch` then decides whether the batch as a whole may join the existing data.

Token classification (task="token-classification"): a row is a sentence, `text` its tokens joined by
single spaces and `label` its IOB2 tags joined likewise (or, from ingest, the lists in columns
tokens and tags). The per-sentence checks (no tokens, token/tag counts differ, a token with
whitespace or control characters, a tag outside O/B-/I- of data.labels, an I- tag that continues no
entity) are computed in Python into helper columns holding the reason (null when the sentence is
fine), each expected to be all null by GX. The label checks become entity-type checks (each type of
data.labels has an entity; examples per label are entities per type). Duplicates and conflicting
labels are found by sentence text; rows of an official split (column `split` not empty) are never
counted as either, since the official data keeps each occurrence.

GX is imported inside the entry points only: importing it costs about two seconds.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from components.reports import JsonReport
from components.config import TOKEN_CLASSIFICATION, DataParams, Task, iob2_tags
from components.entities import OUTSIDE, entity_type_counts, tag_parts

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
# Token data: the lists ingest passes along, and the column of an official split.
TOKEN_LIST_COLUMNS = ("tokens", "tags")
SPLIT_COLUMN = "split"
# Helper columns of the token checks: the check's reason for the sentence, null when it passes.
ISSUE_PREFIX = "issue_"
# Helper columns of the entity-type presence checks: the type when the sentence has such an entity.
ENTITY_PREFIX = "entity_"
ISSUE_EXAMPLES = 3  # bad tokens or tags named in one reason; the rest are counted


class FailedExpectation(BaseModel):
    check: str = Field(description="tunegate's name for the check, e.g. 'label_in_labels'")
    expectation: str = Field(description="GX expectation type, e.g. 'expect_column_values_to_be_in_set'")
    column: str | None = None
    description: str = Field(description="what was expected, in plain words")
    observed: str = Field(description="what was found, in plain words")
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list, description="up to 5 offending rows")


class ValidationReport(JsonReport):
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


def _token_task(task: str) -> bool:
    if task not in ("sequence-classification", TOKEN_CLASSIFICATION):
        raise ValueError(f"unknown task {task!r}")
    return task == TOKEN_CLASSIFICATION


def validate_dataset(frame: pd.DataFrame, data: DataParams, *, source: str,
                     task: Task = "sequence-classification") -> ValidationReport:
    """Run the suite over `frame` and return what failed, with example rows; raises nothing on bad data."""
    import great_expectations as gx

    given_columns = [str(c) for c in frame.columns]
    token_task = _token_task(task)
    frame, checks = _dataset_suite(gx, frame, data, token_task)
    result = _run_suite(gx, frame, checks)
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    failures = [
        _failure(check, by_name[check.name], frame, given_columns, token_task)
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


def _dataset_suite(gx: Any, frame: pd.DataFrame, data: DataParams,
                   token_task: bool = False) -> tuple[pd.DataFrame, list[_Check]]:
    """The frame the dataset suite runs on (0..n-1 index, helper columns added) and its checks."""
    frame = _with_helper_columns(frame.reset_index(drop=True), token_task)
    if token_task and {"text", "label"} <= set(frame.columns):
        frame = pd.concat([frame.drop(columns=list(TOKEN_LIST_COLUMNS), errors="ignore"),
                           _token_issues(frame, data, DATASET_TOKEN_CHECKS), _entity_columns(frame, data)], axis=1)
    return frame, _checks(gx, data, set(frame.columns), token_task)


def _duplicate_key(frame: pd.DataFrame, token_task: bool = False) -> pd.Series | None:
    # The id is the hash of the normalized text: texts that differ only in case or spacing collide.
    # Token data: ids of official-split rows are not the text's hash, so the sentence itself is the key.
    if "id" in frame.columns and not (token_task and "text" in frame.columns):
        return frame["id"]
    return frame["text"] if "text" in frame.columns else None


def _official(frame: pd.DataFrame, token_task: bool) -> np.ndarray:
    """Rows of an official split: never duplicates, never conflicting (the official data keeps them)."""
    if not token_task or SPLIT_COLUMN not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return (frame[SPLIT_COLUMN].fillna("").astype(str) != "").to_numpy()


def _with_helper_columns(frame: pd.DataFrame, token_task: bool = False) -> pd.DataFrame:
    key = _duplicate_key(frame, token_task)
    if key is None:
        return frame
    official = _official(frame, token_task)
    helpers = {DUPLICATE_FLAG: key.duplicated(keep="first") & ~official}  # the first occurrence is not a duplicate
    if "label" in frame.columns:
        helpers[CONFLICT_FLAG] = _conflicting_label_flags(key, frame["label"]) & ~official
    return frame.assign(**helpers)


# --- token data: per-sentence checks as helper columns ----------------------------------------------


def _token_lists(frame: pd.DataFrame) -> tuple[list[Any], list[Any]]:
    """Each row's tokens and tags: the lists ingest passes along, else text and label split on spaces."""
    if all(c in frame.columns for c in TOKEN_LIST_COLUMNS):
        return frame["tokens"].tolist(), frame["tags"].tolist()

    def words(value: Any) -> list[str]:
        return value.split(" ") if isinstance(value, str) and value else []

    return [words(v) for v in frame["text"].tolist()], [words(v) for v in frame["label"].tolist()]


def _more(count: int, what: str) -> str:
    return f" ({count:,} {what} in all)" if count > 1 else ""


def _issue_empty(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    return "sentence has no tokens" if not tokens else None


def _issue_counts(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    if len(tokens) == len(tags):
        return None
    return f"sentence has {len(tokens):,} token(s) but {len(tags):,} tag(s); each token needs exactly one tag"


def _bad_character(token: str) -> tuple[int, str] | None:
    for position, char in enumerate(token):
        if char.isspace():
            return position, "whitespace"
        if unicodedata.category(char) == "Cc":
            return position, "a control character"
    return None


def _issue_token_characters(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    bad = []
    for word, token in enumerate(tokens, start=1):
        if token == "":
            bad.append(f"token at word {word} is empty")
            continue
        found = _bad_character(token)
        if found is not None:
            position, kind = found
            bad.append(f"token {token[:40]!r} at word {word} contains {kind} "
                       f"(U+{ord(token[position]):04X} at character {position + 1})")
    if not bad:
        return None
    return "; ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "bad tokens") + (
        "; a token is one word without whitespace or control characters")


def _issue_tag_set(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    known = set(iob2_tags(list(data.labels)))
    bad = [f"tag {tag!r} at word {word}" for word, tag in enumerate(tags, start=1) if tag not in known]
    if not bad:
        return None
    return (", ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "unknown tags")
            + f" not among the tags of data.labels {list(data.labels)} (O, B-X, I-X)")


def _issue_iob2(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    bad = []
    previous = None
    for word, tag in enumerate(tags, start=1):
        prefix, kind = tag_parts(tag)
        if prefix == "I":
            before = tag_parts(previous) if previous is not None else (OUTSIDE, None)
            if before[0] not in ("B", "I") or before[1] != kind:
                after = f"follows {previous!r}" if previous is not None else "starts the sentence"
                bad.append(f"tag {tag!r} at word {word} {after}")
        previous = tag
    if not bad:
        return None
    return ("; ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "broken entities")
            + "; in IOB2 an I-X tag must follow B-X or I-X")


# check name -> (description, reason of one sentence or None)
_TOKEN_ISSUES = {
    "sentence_not_empty": ("every sentence has at least one token", _issue_empty),
    "tokens_match_tags": ("every sentence has as many tags as tokens", _issue_counts),
    "token_characters": ("no token is empty or contains whitespace or control characters", _issue_token_characters),
    "tags_in_tag_set": ("every tag is O or B-/I- of a type in data.labels", _issue_tag_set),
    "iob2_consistent": ("every I-X tag follows B-X or I-X (IOB2)", _issue_iob2),
}
DATASET_TOKEN_CHECKS = tuple(_TOKEN_ISSUES)


def _token_issues(frame: pd.DataFrame, data: DataParams, names: tuple[str, ...]) -> pd.DataFrame:
    """One helper column per check in `names`: each row's reason, or None when it passes."""
    all_tokens, all_tags = _token_lists(frame)
    columns: dict[str, list[str | None]] = {ISSUE_PREFIX + name: [] for name in names}
    issues = [(ISSUE_PREFIX + name, _TOKEN_ISSUES[name][1]) for name in names]
    for tokens, tags in zip(all_tokens, all_tags):
        tokens = list(tokens) if isinstance(tokens, (list, tuple, np.ndarray)) else []
        tags = list(tags) if isinstance(tags, (list, tuple, np.ndarray)) else []
        for column, issue in issues:
            columns[column].append(issue(tokens, tags, data))
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()},
                        index=frame.index)


def _entity_columns(frame: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """entity_<TYPE>: the type on each sentence with an entity of it (a B-TYPE tag), else None."""
    _, all_tags = _token_lists(frame)
    begins = [{tag[2:] for tag in tags if isinstance(tag, str) and tag.startswith("B-")}
              if isinstance(tags, (list, tuple, np.ndarray)) else set() for tags in all_tags]
    return pd.DataFrame({ENTITY_PREFIX + kind: pd.Series([kind if kind in found else None for found in begins],
                                                         dtype=object)
                         for kind in data.labels}, index=frame.index)


def _conflicting_label_flags(key: pd.Series, labels: pd.Series) -> pd.Series:
    """True on every row whose text also appears with another label (all rows of the group)."""
    pairs = pd.DataFrame({"key": key, "label": labels}).dropna(subset=["label"]).drop_duplicates()
    conflicting_keys = pairs.loc[pairs["key"].duplicated(keep=False), "key"]
    # drop_duplicates + isin is about twice as fast as groupby().transform("nunique") on 1M rows.
    return key.isin(conflicting_keys.unique())


def _checks(gx: Any, data: DataParams, columns: set[str], token_task: bool = False) -> list[_Check]:
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
    if "label" in columns and token_task:
        checks.append(_Check("label_not_null", "every row has a label",
                             E.ExpectColumnValuesToNotBeNull(column="label")))
        checks += [_Check(name, description, E.ExpectColumnValuesToBeNull(column=ISSUE_PREFIX + name))
                   for name, (description, _) in _TOKEN_ISSUES.items() if ISSUE_PREFIX + name in columns]
        checks += [_Check(f"entity_type_present[{kind}]", f"some sentence has a {kind} entity (a B-{kind} tag)",
                          E.ExpectColumnDistinctValuesToContainSet(column=ENTITY_PREFIX + kind, value_set=[kind]))
                   for kind in labels if ENTITY_PREFIX + kind in columns]
    elif "label" in columns:
        checks += [
            _Check("label_not_null", "every row has a label",
                   E.ExpectColumnValuesToNotBeNull(column="label")),
            _Check("label_in_labels", f"every label is one of {labels} (data.labels)",
                   E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
            _Check("all_labels_present", f"each of {labels} appears at least once",
                   E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels)),
        ]
    same = "sentence" if token_task else "id"
    if DUPLICATE_FLAG in columns:
        # "mostly" is the fraction of rows that must pass. The epsilon keeps the limit inclusive:
        # 1 - 0.18 is 0.8200000000000001 in floats, above the 41/50 = 0.82 GX compares it with.
        mostly = max(0.0, 1.0 - data.max_duplicate_fraction - 1e-12)
        checks.append(_Check(
            "duplicate_texts",
            f"at most {data.max_duplicate_fraction:.2%} of rows repeat an earlier text (same {same}; "
            "data.max_duplicate_fraction)" + ("; rows of an official split are not counted" if token_task else ""),
            E.ExpectColumnValuesToBeInSet(column=DUPLICATE_FLAG, value_set=[False], mostly=mostly)))
    if CONFLICT_FLAG in columns:
        checks.append(_Check(
            "conflicting_labels", f"no text appears with two different labels (same {same})"
                                  + ("; rows of an official split are not counted" if token_task else ""),
            E.ExpectColumnValuesToBeInSet(column=CONFLICT_FLAG, value_set=[False])))
    for check in checks:
        check.expectation.meta = {"check": check.name}
    return checks


# SUMMARY keeps only the first few unexpected row indices: enough for examples, and cheap when a
# million rows fail.
SUMMARY_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}


def _run_suite(gx: Any, frame: pd.DataFrame, checks: list[_Check], *, name: str = "tunegate dataset",
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
    with _quiet_gx_logging():
        return batch.validate(suite, result_format=result_format or SUMMARY_RESULT_FORMAT)


class _quiet_gx_logging:
    """Raise GX's logger to ERROR for the run: its INFO/WARNING chatter is not for our users."""

    def __enter__(self) -> None:
        self._logger = logging.getLogger("great_expectations")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


# --- turning GX results into the report -----------------------------------------------------------


def _failure(check: _Check, result: Any, frame: pd.DataFrame, given_columns: list[str],
             token_task: bool = False) -> FailedExpectation:
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
        examples=_examples(check, frame, [int(i) for i in indices[:MAX_EXAMPLES]], token_task),
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
    if check.name.startswith("entity_type_present["):
        return f"no sentence has an entity of type {details.get('partial_missing_list')}"
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


def _examples(check: _Check, frame: pd.DataFrame, positions: list[int],
              token_task: bool = False) -> list[dict[str, Any]]:
    examples = _example_rows(frame, positions)
    column = ISSUE_PREFIX + check.name
    for example, position in zip(examples, positions):
        example.update(_group_context(check, frame, position, token_task))
        if column in frame.columns:  # a token check: its reason for this sentence
            example["reason"] = _json_value(frame[column].iloc[position])
    return examples


def _example_rows(frame: pd.DataFrame, positions: list[int]) -> list[dict[str, Any]]:
    if not positions:
        return []
    columns = [c for c in EXAMPLE_COLUMNS if c in frame.columns]
    examples = []
    for row in frame.iloc[positions][columns].to_dict("records"):
        example = {name: _json_value(value) for name, value in row.items()}
        if isinstance(example.get("text"), str):
            example["text"] = example["text"][:EXAMPLE_TEXT_CHARS]
        examples.append(example)
    return examples


def _group_context(check: _Check, frame: pd.DataFrame, position: int, token_task: bool = False) -> dict[str, Any]:
    """For the group-by checks: where the text was first seen, and which labels it carries."""
    if check.name not in ("duplicate_texts", "conflicting_labels"):
        return {}
    key = _duplicate_key(frame, token_task)
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
    if "source_row" in example:
        where = f"row {example['source_row']}"
    elif "label" in example:  # a row of the per-label table of validate_batch
        where = f"label {example['label']!r}"
    else:
        where = "a row"
    field = {"duplicate_texts": "text", "conflicting_labels": "label"}.get(failure.check, failure.column or "text")
    if (failure.column or "").startswith(ISSUE_PREFIX):  # a token check: quote its reason
        field = "reason"
    value = example.get(field)
    if isinstance(value, str) and len(value) > SUMMARY_VALUE_CHARS:
        value = value[:SUMMARY_VALUE_CHARS] + "..."
    quoted = f"{where} {field}={value!r}"
    if "first_source_row" in example:
        quoted += f" (first seen in row {example['first_source_row']})"
    if "labels_for_this_text" in example:
        quoted += f" (this text has labels {example['labels_for_this_text']})"
    return quoted


# --- row-level quarantine -------------------------------------------------------------------------
#
# A new batch usually has a few bad rows among many good ones. Refusing the whole batch for them
# wastes the good rows; dropping them silently loses data. Instead each bad row is set aside in a
# quarantine frame that says which check it failed and why, and every row of the input ends up in
# exactly one of `clean` and `quarantined`.

QUARANTINE_COLUMNS = ("check", "expectation", "reason")
# The character a decoder substitutes for bytes it could not decode (errors="replace").
REPLACEMENT_CHARACTER = "\ufffd"
# C0 controls other than tab, newline and carriage return, DEL (Unicode counts it with the controls),
# and the C1 controls. Written as \xNN escapes, which RE2 (pyarrow strings) and Python's re read alike
# and which keep a NUL out of the pattern string itself.
CONTROL_CHARACTER_REGEX = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]"
# COMPLETE is the result format that lists every unexpected row index, not just the first few (GX
# caps the unexpected *values* at 200, not the indices). Measured on 1M rows with Batch.validate: the
# suite runs in about 2 s clean and under 4 s with four checks failing every row, so the rows GX
# names are used directly and no pandas re-implementation of the checks is needed for speed.
ROW_RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": MAX_EXAMPLES}
# The row checks, in the order that decides which one a row failing several is quarantined under.
ROW_CHECK_ORDER = ("text_not_null", "text_not_blank", "text_length", "text_decodable",
                   "text_no_control_characters", "label_not_null", "label_in_labels")
# The same for token data (a row is a sentence). text_decodable and text_length are the checks above,
# on the sentence's text (its tokens joined by single spaces).
TOKEN_ROW_CHECK_ORDER = ("sentence_not_empty", "tokens_match_tags", "token_characters", "text_decodable",
                         "text_length", "tags_in_tag_set", "iob2_consistent")


@dataclass(frozen=True)
class QuarantineResult:
    """Every input row, in exactly one of the two frames; both keep the caller's index."""

    clean: pd.DataFrame  # the input's columns
    quarantined: pd.DataFrame  # the input's columns plus check, expectation, reason

    @property
    def rows(self) -> int:
        return len(self.clean) + len(self.quarantined)

    def counts_by_check(self) -> dict[str, int]:
        """Quarantined rows per (first failing) check, in the order the checks run."""
        counts = self.quarantined["check"].value_counts()
        order = list(dict.fromkeys(ROW_CHECK_ORDER + TOKEN_ROW_CHECK_ORDER))
        return {name: int(counts[name]) for name in order if name in counts.index}

    def summary(self) -> str:
        line = f"{len(self.quarantined):,} of {self.rows:,} rows quarantined, {len(self.clean):,} clean"
        counts = self.counts_by_check()
        if counts:
            line += " (" + ", ".join(f"{name}: {count:,}" for name, count in counts.items()) + ")"
        return line


def quarantine_rows(frame: pd.DataFrame, data: DataParams, *, task: Task = "sequence-classification") -> QuarantineResult:
    """Split `frame` into clean rows and quarantined rows, checked by a GX suite of row-level checks.

    A row failing several checks is quarantined once: `check` and `expectation` name the first
    failing check (in ROW_CHECK_ORDER; token data: TOKEN_ROW_CHECK_ORDER), `reason` gives every
    failing check's reason joined by "; ". Token data is judged on the lists in columns tokens and
    tags when the frame has them (as ingest's does), else on text and label split on spaces.
    Raises ValueError when a required column is missing (no row can be judged) and RuntimeError
    when a check could not run (its rows would otherwise pass unchecked).
    """
    if _token_task(task):
        return _quarantine_token_rows(frame, data)
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"cannot quarantine rows: missing columns {missing}; columns found: "
                         f"{[str(c) for c in frame.columns]}")
    import great_expectations as gx

    # GX reports index labels (dicts, for a named index); an unnamed 0..n-1 index makes them plain
    # positions, whatever the caller's index is.
    by_position = frame.reset_index(drop=True)
    checks = _row_checks(gx, data)
    result = _run_suite(gx, by_position, checks, name="tunegate rows", result_format=ROW_RESULT_FORMAT)
    verdicts = _row_verdicts(by_position, checks, _failing_positions(checks, result), data)
    return _split(frame, verdicts)


def _quarantine_token_rows(frame: pd.DataFrame, data: DataParams) -> QuarantineResult:
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"cannot quarantine rows: missing columns {missing}; columns found: "
                         f"{[str(c) for c in frame.columns]}")
    import great_expectations as gx

    by_position = frame.reset_index(drop=True)
    # GX sees the text, the label and the reasons computed per sentence, never the lists themselves.
    checked = pd.concat([by_position[list(REQUIRED_COLUMNS)],
                         _token_issues(by_position, data, DATASET_TOKEN_CHECKS)], axis=1)
    checks = _token_row_checks(gx, data)
    result = _run_suite(gx, checked, checks, name="tunegate sentences", result_format=ROW_RESULT_FORMAT)
    verdicts = _row_verdicts(checked, checks, _failing_positions(checks, result), data)
    return _split(frame, verdicts)


def _token_row_checks(gx: Any, data: DataParams) -> list[_Check]:
    E = gx.expectations
    text_checks = {check.name: check for check in _row_checks(gx, data)}
    checks = []
    for name in TOKEN_ROW_CHECK_ORDER:
        if name in _TOKEN_ISSUES:
            checks.append(_Check(name, _TOKEN_ISSUES[name][0], E.ExpectColumnValuesToBeNull(column=ISSUE_PREFIX + name)))
        else:
            checks.append(text_checks[name])
    return _tagged(checks)


def _row_checks(gx: Any, data: DataParams) -> list[_Check]:
    E = gx.expectations
    labels = list(data.labels)
    checks = [
        _Check("text_not_null", "every row has a text", E.ExpectColumnValuesToNotBeNull(column="text")),
        _Check("text_not_blank", "no text is empty or whitespace only",
               E.ExpectColumnValuesToNotMatchRegex(column="text", regex=BLANK_TEXT_REGEX)),
        _Check("text_length", f"every text is {data.min_chars} to {data.max_chars} characters long "
                              "(data.min_chars, data.max_chars)",
               E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=data.min_chars,
                                                     max_value=data.max_chars)),
        _Check("text_decodable", "no text contains U+FFFD, the mark of bytes that did not decode",
               E.ExpectColumnValuesToNotMatchRegex(column="text", regex=REPLACEMENT_CHARACTER)),
        _Check("text_no_control_characters", "no text contains control characters other than tab, "
                                             "newline and carriage return",
               E.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHARACTER_REGEX)),
        _Check("label_not_null", "every row has a label", E.ExpectColumnValuesToNotBeNull(column="label")),
        _Check("label_in_labels", f"every label is one of {labels} (data.labels)",
               E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
    ]
    assert [check.name for check in checks] == list(ROW_CHECK_ORDER)  # one order, written down once
    return _tagged(checks)


def _failing_positions(checks: list[_Check], result: Any) -> dict[str, np.ndarray]:
    """Row positions each check found unexpected; raises rather than pass rows a check never saw."""
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    failing = {}
    for check in checks:
        check_result = by_name[check.name]
        problem = _exception_message(check_result.exception_info or {})
        details = check_result.result or {}
        positions = details.get("unexpected_index_list")
        if problem or positions is None:
            raise RuntimeError(f"row check {check.name} ({check_result.expectation_config.type}) could not "
                               f"run, so no row can be called clean: {problem or 'GX returned no row indices'}")
        if len(positions) != details.get("unexpected_count"):
            raise RuntimeError(f"row check {check.name}: GX listed {len(positions)} rows but counted "
                               f"{details.get('unexpected_count')}")
        failing[check.name] = np.asarray(positions, dtype=np.int64)
    return failing


@dataclass(frozen=True)
class _Verdicts:
    positions: np.ndarray  # positions of the rows to quarantine, ascending
    checks: np.ndarray  # object: each row's first failing check
    expectations: np.ndarray  # object: that check's GX expectation type
    reasons: np.ndarray  # object: every failing check's reason, joined by "; "


def _row_verdicts(frame: pd.DataFrame, checks: list[_Check], failing: dict[str, np.ndarray],
                  data: DataParams) -> _Verdicts:
    # Arrays over all positions, filled check by check: O(failing rows) of numpy work plus one
    # reason string per failure, with no per-group Python when a million rows fail.
    first = np.full(len(frame), -1, dtype=np.int16)  # index into `checks`; -1: passed every check
    reason = np.empty(len(frame), dtype=object)
    for code, check in enumerate(checks):
        positions = failing[check.name]
        if not len(positions):
            continue
        # tolist(): iterating a pyarrow-backed Series value by value is several times slower.
        values = frame[check.expectation.column].iloc[positions].tolist()
        reasons = np.asarray(_ROW_REASONS[check.name](values, data), dtype=object)
        seen = first[positions] >= 0
        fresh, again = positions[~seen], positions[seen]
        first[fresh] = code
        reason[fresh] = reasons[~seen]
        reason[again] = reason[again] + "; " + reasons[seen]
    failed = np.flatnonzero(first >= 0)
    names = np.array([check.name for check in checks], dtype=object)
    types = np.array([check.expectation.expectation_type for check in checks], dtype=object)
    return _Verdicts(failed, names[first[failed]], types[first[failed]], reason[failed])


def _split(frame: pd.DataFrame, verdicts: _Verdicts) -> QuarantineResult:
    bad = np.zeros(len(frame), dtype=bool)
    bad[verdicts.positions] = True
    quarantined = frame.iloc[verdicts.positions].copy()
    for column, values in zip(QUARANTINE_COLUMNS, (verdicts.checks, verdicts.expectations, verdicts.reasons)):
        quarantined[column] = pd.array(values, dtype="str")
    clean = frame.iloc[np.flatnonzero(~bad)].copy()
    if len(clean) + len(quarantined) != len(frame):  # the promise callers rely on; cheap to keep checking
        raise AssertionError(f"quarantine lost rows: {len(clean)} + {len(quarantined)} != {len(frame)}")
    return QuarantineResult(clean=clean, quarantined=quarantined)


# --- reasons, in plain words, for one check's failing values ----------------------------------------


def _characters(count: int) -> str:
    return f"{count:,} character" + ("" if count == 1 else "s")


def _reason_text_null(values: list[Any], data: DataParams) -> list[str]:
    return ["text is missing (null)"] * len(values)


def _reason_text_blank(values: list[Any], data: DataParams) -> list[str]:
    return ["text is empty" if not text else f"text is only whitespace ({_characters(len(text))})"
            for text in values]


def _reason_text_length(values: list[Any], data: DataParams) -> list[str]:
    return [f"text is {_characters(len(text))}; data.max_chars is {data.max_chars:,}" if len(text) > data.max_chars
            else f"text is {_characters(len(text))}; data.min_chars is {data.min_chars:,}"
            for text in values]


def _reason_text_undecodable(values: list[Any], data: DataParams) -> list[str]:
    return [f"text contains the replacement character U+FFFD {text.count(REPLACEMENT_CHARACTER):,} time(s), "
            f"first at character {text.index(REPLACEMENT_CHARACTER) + 1:,}: bytes that were not valid in the "
            "source's encoding were replaced when it was decoded"
            for text in values]


def _reason_text_control(values: list[Any], data: DataParams) -> list[str]:
    import re

    pattern = re.compile(CONTROL_CHARACTER_REGEX)
    reasons = []
    for text in values:
        first = pattern.search(text)
        reasons.append(f"text contains {len(pattern.findall(text)):,} control character(s), first "
                       f"U+{ord(first.group()):04X} at character {first.start() + 1:,}; only tab, newline and "
                       "carriage return are allowed")
    return reasons


def _reason_label_null(values: list[Any], data: DataParams) -> list[str]:
    return ["label is missing (null)"] * len(values)


def _reason_label_unknown(values: list[Any], data: DataParams) -> list[str]:
    return [f"label {label!r} is not one of data.labels {list(data.labels)}" for label in values]


def _reason_given(values: list[Any], data: DataParams) -> list[str]:
    return [str(value) for value in values]  # the token checks' helper columns hold the reason itself


_ROW_REASONS = {
    **{name: _reason_given for name in _TOKEN_ISSUES},
    "text_not_null": _reason_text_null,
    "text_not_blank": _reason_text_blank,
    "text_length": _reason_text_length,
    "text_decodable": _reason_text_undecodable,
    "text_no_control_characters": _reason_text_control,
    "label_not_null": _reason_label_null,
    "label_in_labels": _reason_label_unknown,
}


# --- batch-level checks ---------------------------------------------------------------------------
#
# After quarantine a batch's rows are each fine; these checks ask whether the batch as a whole may
# join the dataset. Each runs as a GX expectation on a small table built for it, so it is reported
# like every other check: the batch's clean rows (row count, conflicting labels), one row per label
# (examples per label), and one summary row (the quarantined fraction).

LABEL_COUNT_COLUMN = "examples"
QUARANTINE_FRACTION_COLUMN = "quarantined_fraction"


def validate_batch(batch_clean: pd.DataFrame, *, rows_in: int, quarantined: int, existing: pd.DataFrame | None,
                   data: DataParams, source: str | None = None,
                   task: Task = "sequence-classification") -> ValidationReport:
    """Batch-level checks on a batch's clean rows (from quarantine_rows) against the existing dataset.

    rows_in: rows given to quarantine_rows; quarantined: how many it set aside (rows_in must equal
    len(batch_clean) + quarantined: a row missing from both is refused, not ignored).
    existing: the dataset the batch joins (columns id or text, and label), or None for the first batch.
    source: the name in the report; by default the batch's batch_id.
    Token data: examples per label are entities per type (B- tags), conflicts are found by sentence
    text, and rows of an official split (column split) are never conflicting.
    """
    token_task = _token_task(task)
    if rows_in != len(batch_clean) + quarantined:
        raise ValueError(f"rows do not add up: rows_in={rows_in:,} but {len(batch_clean):,} clean + "
                         f"{quarantined:,} quarantined = {len(batch_clean) + quarantined:,}")
    if "label" not in batch_clean.columns or _duplicate_key(batch_clean) is None:
        raise ValueError(f"cannot validate the batch: it needs columns 'label' and 'id' (or 'text'); "
                         f"columns found: {[str(c) for c in batch_clean.columns]}")
    import great_expectations as gx

    existing = existing if existing is not None else batch_clean.iloc[:0]
    batch = _batch_table(batch_clean.reset_index(drop=True).drop(columns=list(TOKEN_LIST_COLUMNS), errors="ignore"),
                         existing, token_task)
    tables = [
        (batch, _batch_row_checks(gx, data)),
        (_label_count_table(batch, existing, data, token_task), _label_count_checks(gx, data, token_task)),
        (_quarantine_table(rows_in, quarantined), _quarantine_checks(gx, data)),
    ]
    failures, checked = [], 0
    for table, checks in tables:
        result = _run_suite(gx, table, checks, name="tunegate batch")
        by_name = {r.expectation_config.meta["check"]: r for r in result.results}
        checked += int(result.statistics["evaluated_expectations"])
        failures += [_batch_failure(check, by_name[check.name], table, existing, rows_in, quarantined, token_task)
                     for check in checks if not by_name[check.name].success]
    return ValidationReport(success=not failures, source=source or _batch_source(batch_clean), rows=len(batch_clean),
                            checked=checked, failures=failures)


def _batch_source(batch_clean: pd.DataFrame) -> str:
    if "batch_id" not in batch_clean.columns or batch_clean.empty:
        return "batch"
    return "batch " + ", ".join(str(b) for b in batch_clean["batch_id"].dropna().unique()[:3])


def _batch_table(batch: pd.DataFrame, existing: pd.DataFrame, token_task: bool = False) -> pd.DataFrame:
    """The batch with a flag on each row whose text has another label in the batch or in `existing`."""
    batch_key, existing_key = _duplicate_key(batch, token_task), _duplicate_key(existing, token_task)
    if existing_key is None or "label" not in existing.columns:
        existing_key, existing_labels = batch_key.iloc[:0], batch["label"].iloc[:0]
    else:
        existing_labels = existing["label"]
    key = pd.concat([batch_key, existing_key], ignore_index=True)
    labels = pd.concat([batch["label"], existing_labels], ignore_index=True)
    # Conflicts inside `existing` alone were there before this batch: only the batch's rows are judged.
    flags = _conflicting_label_flags(key, labels).iloc[: len(batch)].to_numpy() & ~_official(batch, token_task)
    return batch.assign(**{CONFLICT_FLAG: flags})


def _batch_row_checks(gx: Any, data: DataParams) -> list[_Check]:
    E = gx.expectations
    checks = [
        _Check("min_batch_rows", f"at least {data.min_batch_rows} clean rows in the batch (data.min_batch_rows)",
               E.ExpectTableRowCountToBeBetween(min_value=data.min_batch_rows)),
        _Check("conflicting_labels", "no text of the batch has another label, in the batch or in the existing "
                                     "data (same id)",
               E.ExpectColumnValuesToBeInSet(column=CONFLICT_FLAG, value_set=[False])),
    ]
    return _tagged(checks)


def _label_count_table(batch: pd.DataFrame, existing: pd.DataFrame, data: DataParams,
                       token_task: bool = False) -> pd.DataFrame:
    """One row per label in data.labels: examples in the existing data, in the batch, and both.
    Token data: one row per entity type, counting entities (B- tags)."""
    labels = list(data.labels)

    def counts(labels_column: pd.Series) -> pd.Series:
        if token_task:
            return pd.Series(entity_type_counts(labels_column.tolist()), dtype="int64").reindex(labels, fill_value=0)
        return labels_column.value_counts().reindex(labels, fill_value=0)

    in_existing = counts(existing["label"]) if "label" in existing.columns else pd.Series(0, index=labels)
    in_batch = counts(batch["label"])
    return pd.DataFrame({
        "label": pd.Series(labels, dtype="str"),
        "in_existing": in_existing.to_numpy(dtype="int64"),
        "in_batch": in_batch.to_numpy(dtype="int64"),
        LABEL_COUNT_COLUMN: (in_existing + in_batch).to_numpy(dtype="int64"),
    })


def _label_count_checks(gx: Any, data: DataParams, token_task: bool = False) -> list[_Check]:
    what = "entities (B- tags)" if token_task else "example(s)"
    return _tagged([_Check(
        "min_examples_per_label",
        f"each of {list(data.labels)} has at least {data.min_examples_per_label} {what} in the existing data "
        "and the batch together (data.min_examples_per_label)",
        gx.expectations.ExpectColumnValuesToBeBetween(column=LABEL_COUNT_COLUMN,
                                                      min_value=data.min_examples_per_label))])


def _quarantine_table(rows_in: int, quarantined: int) -> pd.DataFrame:
    # An empty input quarantined nothing; min_batch_rows is the check that refuses it.
    fraction = quarantined / rows_in if rows_in else 0.0
    return pd.DataFrame({"rows_in": [rows_in], "quarantined": [quarantined], QUARANTINE_FRACTION_COLUMN: [fraction]})


def _quarantine_checks(gx: Any, data: DataParams) -> list[_Check]:
    # quarantined / rows_in is correctly rounded, so a fraction exactly at the limit (5 of 100 with
    # 0.05) equals the limit's float and passes: the limit is inclusive without an epsilon.
    return _tagged([_Check(
        "max_quarantine_fraction",
        f"at most {data.max_quarantine_fraction:.2%} of the batch's input rows quarantined "
        "(data.max_quarantine_fraction)",
        gx.expectations.ExpectColumnValuesToBeBetween(column=QUARANTINE_FRACTION_COLUMN,
                                                      max_value=data.max_quarantine_fraction))])


def _tagged(checks: list[_Check]) -> list[_Check]:
    for check in checks:
        check.expectation.meta = {"check": check.name}
    return checks


def _batch_failure(check: _Check, result: Any, table: pd.DataFrame, existing: pd.DataFrame, rows_in: int,
                   quarantined: int, token_task: bool = False) -> FailedExpectation:
    details = result.result or {}
    positions = [int(i) for i in (details.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]]
    problem = _exception_message(result.exception_info or {})
    if problem:
        observed = f"the check could not run: {problem}"
    elif check.name == "min_batch_rows":
        observed = (f"{details.get('observed_value')} clean rows ({rows_in:,} input rows, "
                    f"{quarantined:,} quarantined)")
    elif check.name == "max_quarantine_fraction":
        observed = f"{quarantined:,} of {rows_in:,} input rows quarantined ({quarantined / rows_in:.2%})"
    elif check.name == "min_examples_per_label":
        short = table.iloc[positions]
        kind, what = ("entity type", "entities") if token_task else ("label", "example(s)")
        observed = "; ".join(f"{kind} {row.label!r} has {row.examples:,} {what} ({row.in_existing:,} existing + "
                             f"{row.in_batch:,} in the batch)" for row in short.itertuples())
    else:
        observed = _observed(check, result, [str(c) for c in table.columns])
    if check.name == "min_examples_per_label":
        examples = [{name: _json_value(value) for name, value in row.items()}
                    for row in table.iloc[positions].to_dict("records")]
    elif check.name == "conflicting_labels":
        examples = _conflict_examples(table, existing, positions, token_task)
    else:
        examples = []
    count, percent = details.get("unexpected_count"), details.get("unexpected_percent")
    if check.name == "max_quarantine_fraction":  # the rows behind the one summary row GX saw
        count, percent = quarantined, 100 * quarantined / rows_in
    return FailedExpectation(
        check=check.name,
        expectation=result.expectation_config.type,
        column=result.expectation_config.kwargs.get("column"),
        description=check.description,
        observed=observed,
        unexpected_count=count,
        unexpected_percent=percent,
        examples=examples,
    )


def _conflict_examples(batch: pd.DataFrame, existing: pd.DataFrame, positions: list[int],
                       token_task: bool = False) -> list[dict[str, Any]]:
    """The batch's offending rows, each with every label its text has in the batch and the existing data."""
    examples = _example_rows(batch, positions)
    batch_key, existing_key = _duplicate_key(batch, token_task), _duplicate_key(existing, token_task)
    for example, position in zip(examples, positions):
        key = batch_key.iloc[position]
        labels = set(batch.loc[batch_key == key, "label"].dropna())
        if existing_key is not None and "label" in existing.columns:
            labels |= set(existing.loc[existing_key == key, "label"].dropna())
        example["labels_for_this_text"] = sorted(str(label) for label in labels)
    return examples


# --- Data Docs ------------------------------------------------------------------------------------
#
# The dataset suite's result as Great Expectations' own static HTML site, for a person to browse (the
# pipeline logs it as an MLflow artifact). The suite runs once more, in a throwaway file context: only
# a file context renders Data Docs, and its stores (suite, validation definition, checkpoint, result
# JSON) must not pile up anywhere.

DATA_DOCS_SUITE = "tunegate_dataset"
# SUMMARY gives each failing expectation its unexpected count and a table of the most frequent
# unexpected values; more of them than the JSON report's examples, since only a person reads these.
DATA_DOCS_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}
_DATA_DOCS_SITE = "local_site"


def build_data_docs(frame: pd.DataFrame, data: DataParams, out_dir: Path, *, source: str,
                    task: Task = "sequence-classification") -> Path:
    """Render the dataset suite's result on `frame` as a GX Data Docs site in `out_dir`; return its index.html.

    The expectations are validate_dataset's (same helper columns, same checks); each carries a note
    with tunegate's check name and what it expects in plain words. The site's layout is GX's:
    out_dir/index.html lists the run, out_dir/validations/<suite>/<run name>/<run time>/<batch>.html
    shows each expectation with its observed value and, for failures, the unexpected values, and
    out_dir/expectations/<suite>.html lists the suite. The run name is `source` with characters
    other than letters, digits, '.', '_' and '-' replaced by '_'. Entries of out_dir that the site
    also has (index.html, validations/, expectations/, static/) are replaced; others are left alone.
    Raises nothing on bad data: a failing suite is what the pages show.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    frame, checks = _dataset_suite(gx, frame, data, _token_task(task))
    for check in checks:
        # GX renders a description in place of its own sentence for the expectation; ours names
        # tunegate's check and the GX type too.
        check.expectation.description = f"{check.description} [{check.name}: {check.expectation.expectation_type}]"
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tunegate-gx-docs-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch_definition = (
            context.data_sources.add_pandas("tunegate")
            .add_dataframe_asset("dataset")
            .add_batch_definition_whole_dataframe("whole dataset")
        )
        suite = context.suites.add(gx.ExpectationSuite(
            name=DATA_DOCS_SUITE,
            expectations=[check.expectation for check in checks],
            notes=f"tunegate's dataset checks on {source} ({len(frame):,} rows)",
        ))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="tunegate dataset", data=batch_definition, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="tunegate dataset docs",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update data docs", site_names=[_DATA_DOCS_SITE])],
            result_format=DATA_DOCS_RESULT_FORMAT,
        ))
        run_name = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("_") or "dataset"
        with _quiet_gx_logging():
            checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / _DATA_DOCS_SITE
        if not (site / "index.html").is_file():
            raise RuntimeError(f"Great Expectations rendered no Data Docs index under {site}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in site.iterdir():
            target = out_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
    return out_dir / "index.html"

