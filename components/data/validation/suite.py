"""The dataset suite: Great Expectations checks over the whole dataset before any training.

The frame has columns id (hash of the normalized text), text, label (already mapped through
data.label_map), batch_id and source_row. The suite checks what a person would check by eye:
enough rows, real texts of a sane length, only known labels and all of them, few duplicates, and
no text labelled two ways. Two of those checks need a group-by, which GX has no expectation for:
they become boolean helper columns computed in pandas (components.data.validation.duplicates), each
expected to be all False, so that they appear in GX's results and in the report like every other check.

Token classification: a row is a sentence, `text` its tokens joined by single spaces and `label` its
IOB2 tags joined likewise; the per-sentence checks are components.data.validation.token_checks, and
the label checks become entity-type checks (each type of data.labels has an entity)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.validation.duplicates import (
    CONFLICT_FLAG,
    DUPLICATE_FLAG,
    with_duplicate_flags,
)
from components.data.validation.expectations import (
    REQUIRED_COLUMNS,
    Check,
    failure_of,
    is_token_task,
    run_suite,
    tagged,
    text_checks,
)
from components.data.validation.report import ISSUE_PREFIX, ValidationReport
from components.data.validation.token_checks import (
    DATASET_TOKEN_CHECKS,
    ENTITY_PREFIX,
    TOKEN_ISSUES,
    TOKEN_LIST_COLUMNS,
    entity_type_columns,
    token_issue_columns,
)


def validate_dataset(frame: pd.DataFrame, data: DataParams, *, source: str,
                     task: Task = "sequence-classification") -> ValidationReport:
    """Run the suite over `frame` and return what failed, with example rows; raises nothing on bad data."""
    import great_expectations as gx

    given_columns = [str(c) for c in frame.columns]
    token_task = is_token_task(task)
    frame, checks = dataset_suite(gx, frame, data, token_task)
    result = run_suite(gx, frame, checks)
    by_name = {r.expectation_config.meta["check"]: r for r in result.results}
    failures = [
        failure_of(check, by_name[check.name], frame, given_columns, token_task)
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


def dataset_suite(gx: Any, frame: pd.DataFrame, data: DataParams, token_task: bool = False, *,
                  flags: Mapping[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, list[Check]]:
    """The frame the dataset suite runs on (0..n-1 index, helper columns added) and its checks.

    `flags`: the duplicate and conflict flags of these rows computed over a larger dataset (a chunk of it,
    components.data.validation.chunked), in place of with_duplicate_flags on the frame alone."""
    frame = frame.reset_index(drop=True)
    frame = with_duplicate_flags(frame, token_task) if flags is None else frame.assign(**flags)
    if token_task and {"text", "label"} <= set(frame.columns):
        frame = pd.concat([frame.drop(columns=list(TOKEN_LIST_COLUMNS), errors="ignore"),
                           token_issue_columns(frame, data, DATASET_TOKEN_CHECKS), entity_type_columns(frame, data)], axis=1)
    return frame, dataset_checks(gx, data, set(frame.columns), token_task)


def dataset_checks(gx: Any, data: DataParams, columns: set[str], token_task: bool = False) -> list[Check]:
    """The checks that can run on these columns; a missing column fails the first check instead of
    making every check on it raise."""
    E = gx.expectations
    labels = list(data.labels)
    checks = [
        Check("required_columns", f"the columns {list(REQUIRED_COLUMNS)} are present",
               E.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False)),
        Check("min_rows", f"at least {data.min_rows} rows (data.min_rows)",
               E.ExpectTableRowCountToBeBetween(min_value=data.min_rows)),
    ]
    if "text" in columns:
        checks += text_checks(gx, data)
    if "label" in columns and token_task:
        checks.append(Check("label_not_null", "every row has a label",
                             E.ExpectColumnValuesToNotBeNull(column="label")))
        checks += [Check(name, description, E.ExpectColumnValuesToBeNull(column=ISSUE_PREFIX + name))
                   for name, (description, _) in TOKEN_ISSUES.items() if ISSUE_PREFIX + name in columns]
        checks += [Check(f"entity_type_present[{kind}]", f"some sentence has a {kind} entity (a B-{kind} tag)",
                          E.ExpectColumnDistinctValuesToContainSet(column=ENTITY_PREFIX + kind, value_set=[kind]))
                   for kind in labels if ENTITY_PREFIX + kind in columns]
    elif "label" in columns:
        checks += [
            Check("label_not_null", "every row has a label",
                   E.ExpectColumnValuesToNotBeNull(column="label")),
            Check("label_in_labels", f"every label is one of {labels} (data.labels)",
                   E.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
            Check("all_labels_present", f"each of {labels} appears at least once",
                   E.ExpectColumnDistinctValuesToContainSet(column="label", value_set=labels)),
        ]
    same = "sentence" if token_task else "id"
    if DUPLICATE_FLAG in columns:
        # "mostly" is the fraction of rows that must pass. The epsilon keeps the limit inclusive:
        # 1 - 0.18 is 0.8200000000000001 in floats, above the 41/50 = 0.82 GX compares it with.
        mostly = max(0.0, 1.0 - data.max_duplicate_fraction - 1e-12)
        checks.append(Check(
            "duplicate_texts",
            f"at most {data.max_duplicate_fraction:.2%} of rows repeat an earlier text (same {same}; "
            "data.max_duplicate_fraction)" + ("; rows of an official split are not counted" if token_task else ""),
            E.ExpectColumnValuesToBeInSet(column=DUPLICATE_FLAG, value_set=[False], mostly=mostly)))
    if CONFLICT_FLAG in columns:
        checks.append(Check(
            "conflicting_labels", f"no text appears with two different labels (same {same})"
                                  + ("; rows of an official split are not counted" if token_task else ""),
            E.ExpectColumnValuesToBeInSet(column=CONFLICT_FLAG, value_set=[False])))
    return tagged(checks)
