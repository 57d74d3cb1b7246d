"""Row-level quarantine of a new batch.

A new batch usually has a few bad rows among many good ones. Refusing the whole batch for them
wastes the good rows; dropping them silently loses data. Instead each bad row is set aside in a
quarantine frame that says which check it failed and why, and every row of the input ends up in
exactly one of `clean` and `quarantined`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.validation.expectations import (
    MAX_EXAMPLES,
    REQUIRED_COLUMNS,
    Check,
    exception_message,
    is_token_task,
    run_suite,
    tagged,
    text_checks,
)
from components.data.validation.report import ISSUE_PREFIX
from components.data.validation.token_checks import (
    DATASET_TOKEN_CHECKS,
    TOKEN_ISSUES,
    token_issue_columns,
)

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
    if is_token_task(task):
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
    result = run_suite(gx, by_position, checks, name="tunegate rows", result_format=ROW_RESULT_FORMAT)
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
                         token_issue_columns(by_position, data, DATASET_TOKEN_CHECKS)], axis=1)
    checks = _token_row_checks(gx, data)
    result = run_suite(gx, checked, checks, name="tunegate sentences", result_format=ROW_RESULT_FORMAT)
    verdicts = _row_verdicts(checked, checks, _failing_positions(checks, result), data)
    return _split(frame, verdicts)


def _token_row_checks(gx: Any, data: DataParams) -> list[Check]:
    E = gx.expectations
    text_checks = {check.name: check for check in _row_checks(gx, data)}
    checks = []
    for name in TOKEN_ROW_CHECK_ORDER:
        if name in TOKEN_ISSUES:
            checks.append(Check(name, TOKEN_ISSUES[name][0], E.ExpectColumnValuesToBeNull(column=ISSUE_PREFIX + name)))
        else:
            checks.append(text_checks[name])
    return tagged(checks)


def _row_checks(gx: Any, data: DataParams) -> list[Check]:
    E = gx.expectations
    labels = list(data.labels)
    checks = text_checks(gx, data) + [
        Check("text_decodable", "no text contains U+FFFD, the mark of bytes that did not decode",
               E.ExpectColumnValuesToNotMatchRegex(column="text", regex=REPLACEMENT_CHARACTER)),
        Check("text_no_control_characters", "no text contains control characters other than tab, "
                                             "newline and carriage return",
               E.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_CHARACTER_REGEX)),
        Check("label_not_null", "every row has a label", E.ExpectColumnValuesToNotBeNull(column="label")),
        Check("label_in_labels", f"every label is one of {labels} (data.labels)",
               E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
    ]
    assert [check.name for check in checks] == list(ROW_CHECK_ORDER)  # one order, written down once
    return tagged(checks)


def _failing_positions(checks: list[Check], result: Any) -> dict[str, np.ndarray]:
    """Row positions each check found unexpected; raises rather than pass rows a check never saw."""
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    failing = {}
    for check in checks:
        check_result = by_name[check.name]
        problem = exception_message(check_result.exception_info or {})
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


def _row_verdicts(frame: pd.DataFrame, checks: list[Check], failing: dict[str, np.ndarray],
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
    **{name: _reason_given for name in TOKEN_ISSUES},
    "text_not_null": _reason_text_null,
    "text_not_blank": _reason_text_blank,
    "text_length": _reason_text_length,
    "text_decodable": _reason_text_undecodable,
    "text_no_control_characters": _reason_text_control,
    "label_not_null": _reason_label_null,
    "label_in_labels": _reason_label_unknown,
}
