"""Batch-level checks: may a batch's clean rows join the existing dataset?

Three small tables, each validated by GX: the batch's rows (count, conflicting labels), one row per
label (examples per label), and one summary row (the quarantined fraction)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.validation.duplicates import (
    CONFLICT_FLAG,
    conflicting_label_flags,
    duplicate_key,
    official_rows,
)
from components.data.validation.expectations import (
    MAX_EXAMPLES,
    Check,
    example_rows,
    exception_message,
    is_token_task,
    json_value,
    observed_text,
    run_suite,
    tagged,
)
from components.data.validation.report import FailedExpectation, ValidationReport
from components.data.validation.token_checks import TOKEN_LIST_COLUMNS
from components.entities import entity_type_counts

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
    token_task = is_token_task(task)
    if rows_in != len(batch_clean) + quarantined:
        raise ValueError(f"rows do not add up: rows_in={rows_in:,} but {len(batch_clean):,} clean + "
                         f"{quarantined:,} quarantined = {len(batch_clean) + quarantined:,}")
    if "label" not in batch_clean.columns or duplicate_key(batch_clean) is None:
        raise ValueError(f"cannot validate the batch: it needs columns 'label' and 'id' (or 'text'); "
                         f"columns found: {[str(c) for c in batch_clean.columns]}")
    import great_expectations as gx

    existing = existing if existing is not None else batch_clean.iloc[:0]
    batch = _batch_table(batch_clean.reset_index(drop=True).drop(columns=list(TOKEN_LIST_COLUMNS), errors="ignore"),
                         existing, token_task)
    label_counts = _label_count_table(_counts(batch["label"], data, token_task),
                                      _counts(existing["label"], data, token_task) if "label" in existing.columns
                                      else pd.Series(0, index=list(data.labels)))
    return _run_tables(gx, batch, label_counts, existing, rows_in=rows_in, quarantined=quarantined, data=data,
                       source=source or _batch_source(batch_clean), token_task=token_task)


def validate_batch_counts(*, clean_rows: int, batch_label_counts: Mapping[str, int],
                          existing_label_counts: Mapping[str, int], rows_in: int, quarantined: int, data: DataParams,
                          source: str, task: Task = "sequence-classification") -> ValidationReport:
    """validate_batch for a batch too large to hold: its clean rows counted, conflicting copies already set aside
    (ingest quarantines every copy of a text with two labels, so no clean row conflicts). Labels counted as
    validate_batch counts them (entities per type for token data)."""
    import great_expectations as gx

    if rows_in != clean_rows + quarantined:
        raise ValueError(f"rows do not add up: rows_in={rows_in:,} but {clean_rows:,} clean + "
                         f"{quarantined:,} quarantined = {clean_rows + quarantined:,}")
    batch = pd.DataFrame({CONFLICT_FLAG: np.zeros(clean_rows, dtype=bool)})  # 1 byte a row: the row count's table
    labels = list(data.labels)
    label_counts = _label_count_table(pd.Series(batch_label_counts, dtype="int64").reindex(labels, fill_value=0),
                                      pd.Series(existing_label_counts, dtype="int64").reindex(labels, fill_value=0))
    return _run_tables(gx, batch, label_counts, pd.DataFrame(columns=["id", "label"]), rows_in=rows_in,
                       quarantined=quarantined, data=data, source=source, token_task=is_token_task(task))


def _run_tables(gx: Any, batch: pd.DataFrame, label_counts: pd.DataFrame, existing: pd.DataFrame, *, rows_in: int,
                quarantined: int, data: DataParams, source: str, token_task: bool) -> ValidationReport:
    tables = [
        (batch, _batch_row_checks(gx, data)),
        (label_counts, _label_count_checks(gx, data, token_task)),
        (_quarantine_table(rows_in, quarantined), _quarantine_checks(gx, data)),
    ]
    failures, checked = [], 0
    for table, checks in tables:
        result = run_suite(gx, table, checks, name="tunegate batch")
        by_name = {r.expectation_config.meta["check"]: r for r in result.results}
        checked += int(result.statistics["evaluated_expectations"])
        failures += [_batch_failure(check, by_name[check.name], table, existing, rows_in, quarantined, token_task)
                     for check in checks if not by_name[check.name].success]
    return ValidationReport(success=not failures, source=source, rows=len(batch), checked=checked, failures=failures)


def _batch_source(batch_clean: pd.DataFrame) -> str:
    if "batch_id" not in batch_clean.columns or batch_clean.empty:
        return "batch"
    return "batch " + ", ".join(str(b) for b in batch_clean["batch_id"].dropna().unique()[:3])


def _batch_table(batch: pd.DataFrame, existing: pd.DataFrame, token_task: bool = False) -> pd.DataFrame:
    """The batch with a flag on each row whose text has another label in the batch or in `existing`."""
    batch_key, existing_key = duplicate_key(batch, token_task), duplicate_key(existing, token_task)
    if existing_key is None or "label" not in existing.columns:
        existing_key, existing_labels = batch_key.iloc[:0], batch["label"].iloc[:0]
    else:
        existing_labels = existing["label"]
    key = pd.concat([batch_key, existing_key], ignore_index=True)
    labels = pd.concat([batch["label"], existing_labels], ignore_index=True)
    # Conflicts inside `existing` alone were there before this batch: only the batch's rows are judged.
    flags = conflicting_label_flags(key, labels).iloc[: len(batch)].to_numpy() & ~official_rows(batch, token_task)
    return batch.assign(**{CONFLICT_FLAG: flags})


def _batch_row_checks(gx: Any, data: DataParams) -> list[Check]:
    E = gx.expectations
    checks = [
        Check("min_batch_rows", f"at least {data.min_batch_rows} clean rows in the batch (data.min_batch_rows)",
               E.ExpectTableRowCountToBeBetween(min_value=data.min_batch_rows)),
        Check("conflicting_labels", "no text of the batch has another label, in the batch or in the existing "
                                     "data (same id)",
               E.ExpectColumnValuesToBeInSet(column=CONFLICT_FLAG, value_set=[False])),
    ]
    return tagged(checks)


def _counts(labels_column: pd.Series, data: DataParams, token_task: bool) -> pd.Series:
    """Examples per label of data.labels (token data: entities per type), 0 for a label without any."""
    if token_task:
        counted = pd.Series(entity_type_counts(labels_column.tolist()), dtype="int64")
    else:
        counted = labels_column.value_counts()
    return counted.reindex(list(data.labels), fill_value=0)


def _label_count_table(in_batch: pd.Series, in_existing: pd.Series) -> pd.DataFrame:
    """One row per label in data.labels (token data: per entity type): examples in the existing data, in the
    batch, and both."""
    return pd.DataFrame({
        "label": pd.Series(list(in_batch.index), dtype="str"),
        "in_existing": in_existing.to_numpy(dtype="int64"),
        "in_batch": in_batch.to_numpy(dtype="int64"),
        LABEL_COUNT_COLUMN: (in_existing + in_batch).to_numpy(dtype="int64"),
    })


def _label_count_checks(gx: Any, data: DataParams, token_task: bool = False) -> list[Check]:
    what = "entities (B- tags)" if token_task else "example(s)"
    return tagged([Check(
        "min_examples_per_label",
        f"each of {list(data.labels)} has at least {data.min_examples_per_label} {what} in the existing data "
        "and the batch together (data.min_examples_per_label)",
        gx.expectations.ExpectColumnValuesToBeBetween(column=LABEL_COUNT_COLUMN,
                                                      min_value=data.min_examples_per_label))])


def _quarantine_table(rows_in: int, quarantined: int) -> pd.DataFrame:
    # An empty input quarantined nothing; min_batch_rows is the check that refuses it.
    fraction = quarantined / rows_in if rows_in else 0.0
    return pd.DataFrame({"rows_in": [rows_in], "quarantined": [quarantined], QUARANTINE_FRACTION_COLUMN: [fraction]})


def _quarantine_checks(gx: Any, data: DataParams) -> list[Check]:
    # quarantined / rows_in is correctly rounded, so a fraction exactly at the limit (5 of 100 with
    # 0.05) equals the limit's float and passes: the limit is inclusive without an epsilon.
    return tagged([Check(
        "max_quarantine_fraction",
        f"at most {data.max_quarantine_fraction:.2%} of the batch's input rows quarantined "
        "(data.max_quarantine_fraction)",
        gx.expectations.ExpectColumnValuesToBeBetween(column=QUARANTINE_FRACTION_COLUMN,
                                                      max_value=data.max_quarantine_fraction))])


def _batch_failure(check: Check, result: Any, table: pd.DataFrame, existing: pd.DataFrame, rows_in: int,
                   quarantined: int, token_task: bool = False) -> FailedExpectation:
    details = result.result or {}
    positions = [int(i) for i in (details.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]]
    problem = exception_message(result.exception_info or {})
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
        observed = observed_text(check, result, [str(c) for c in table.columns])
    if check.name == "min_examples_per_label":
        examples = [{name: json_value(value) for name, value in row.items()}
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
    examples = example_rows(batch, positions)
    batch_key, existing_key = duplicate_key(batch, token_task), duplicate_key(existing, token_task)
    for example, position in zip(examples, positions):
        key = batch_key.iloc[position]
        labels = set(batch.loc[batch_key == key, "label"].dropna())
        if existing_key is not None and "label" in existing.columns:
            labels |= set(existing.loc[existing_key == key, "label"].dropna())
        example["labels_for_this_text"] = sorted(str(label) for label in labels)
    return examples
