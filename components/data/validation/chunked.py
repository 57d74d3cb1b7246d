"""The dataset suite over a dataset read a chunk at a time: the validate stage's memory stays flat as the
dataset grows (validate_dataset holds the whole frame and more: 1.7 GB at 1M rows, 3.3 GB at 5M).

Two passes over the chunks, in dataset order:
1. each row's duplicate key and label as 64-bit hashes, from which the duplicate and conflicting-label flags
   of every row follow (duplicates.flag_arrays; a group-by over the whole dataset in about 17 bytes a row);
2. each chunk gets its slice of those flags and its per-row helper columns (suite.dataset_suite), and GX runs
   the suite on it. Row checks add up: counts are summed, judged as GX judges them (with `mostly`), and the
   examples are the first failing rows of the dataset. Table checks are judged on the whole: the row count
   is the chunks' sum, and the distinct-values checks run through GX once, on a small table of the expected
   values found in any chunk.
The report equals validate_dataset's on the whole frame (tests/test_validation_chunks.py)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.dataset import DATASET_COLUMNS, DataStore
from components.data.validation.duplicates import (
    CONFLICT_FLAG,
    DUPLICATE_FLAG,
    NULL_HASH,
    flag_arrays,
    flag_inputs,
)
from components.data.validation.expectations import (
    MAX_EXAMPLES,
    Check,
    example_rows,
    failure_examples,
    failure_of,
    is_token_task,
    run_suite,
)
from components.data.validation.report import ValidationReport
from components.data.validation.suite import dataset_suite

CHUNK_ROWS = 100_000
_COLLECT_ROWS = 50_000  # a full garbage collection after this many rows (each costs ~0.1 s)
# A fresh pass over the dataset at each call: its chunks in dataset order, each with all of its columns.
Chunks = Callable[[], Iterator[pd.DataFrame]]

_ROW_COUNT = "expect_table_row_count_to_be_between"
_COLUMN_SET = "expect_table_columns_to_match_set"
_DISTINCT = "expect_column_distinct_values_to_contain_set"
_GROUP_CHECKS = ("duplicate_texts", "conflicting_labels")  # examples say where else the text is


@dataclass(frozen=True)
class ChunkedValidation:
    report: ValidationReport
    flags: dict[str, np.ndarray]  # each row's duplicate and conflict flags over the whole dataset


def stored_chunks(data_dir: Path, rows: int | None = None) -> Chunks:
    """The dataset under data_dir, `rows` (default CHUNK_ROWS) at a time, each chunk with the columns
    DataStore.read gives: a column some batch file lacks is "" on its rows (null for one of DATASET_COLUMNS)."""
    rows = rows or CHUNK_ROWS
    store = DataStore(data_dir)
    batches = store.required_batches()
    # The union in order of appearance, as pd.concat makes it; read from the headers alone.
    columns = list(dict.fromkeys(str(column) for batch in batches
                                 for column in pd.read_csv(data_dir / batch.batch_file, nrows=0).columns))

    def chunks() -> Iterator[pd.DataFrame]:
        for chunk in store.read_chunks(rows, batches):
            missing = [c for c in columns if c not in chunk.columns]
            if missing:
                chunk = chunk.assign(**{c: np.nan if c in DATASET_COLUMNS else "" for c in missing})
            yield chunk if list(chunk.columns) == columns else chunk[columns]

    return chunks


def validate_chunks(chunks: Chunks, data: DataParams, *, source: str,
                    task: Task = "sequence-classification") -> ChunkedValidation:
    """validate_dataset's report on the concatenation of the chunks, holding one chunk at a time."""
    import great_expectations as gx

    token_task = is_token_task(task)
    flags, context = _flags_and_context(chunks, token_task)
    tallies: dict[str, _Tally] = {}
    given_columns: list[str] = []
    rows = collected = 0
    with contextlib.closing(_with_rows(chunks())) as passing:
        for chunk in passing:
            frame, checks = dataset_suite(gx, chunk, data, token_task,
                                          flags={name: f[rows:rows + len(chunk)] for name, f in flags.items()})
            if not tallies:  # every chunk has the same columns, hence the same checks
                given_columns = [str(c) for c in chunk.columns]
                tallies = {check.name: _Tally(check) for check in checks}
            result = run_suite(gx, frame, [check for check in checks if _kind(check) != _DISTINCT])
            for outcome in result.results:
                tallies[outcome.expectation_config.meta["check"]].add(outcome, frame, rows, token_task)
            for tally in tallies.values():
                tally.add_distinct(frame)
            context.collect(frame, rows)
            rows += len(frame)
            del frame, result
            if rows - collected >= _COLLECT_ROWS:
                # GX's validator objects form reference cycles that hold the chunk's frame; left to the cyclic
                # collector's own pace they piled up (300 MB more at 3M rows); collected, they stay one chunk.
                gc.collect()
                collected = rows
    outcomes = {name: tally.outcome() for name, tally in tallies.items() if tally.kind != _DISTINCT}
    outcomes.update(_distinct_outcomes(gx, [tally for tally in tallies.values() if tally.kind == _DISTINCT]))
    failures = [
        failure_of(tally.check, outcomes[name], pd.DataFrame(), given_columns, token_task).model_copy(
            update={"examples": context.examples(tally, given_columns)})
        for name, tally in tallies.items() if not outcomes[name].success  # in the suite's order
    ]
    report = ValidationReport(success=all(o.success for o in outcomes.values()), source=source, rows=rows,
                              checked=len(outcomes), failures=failures)
    return ChunkedValidation(report, flags)


def build_sample_data_docs(chunks: Chunks, checked: ChunkedValidation, data: DataParams, out_dir: Path, *,
                           source: str, task: Task = "sequence-classification") -> Path:
    """GX Data Docs on the first chunk, whose rows carry their flags over the whole dataset: rendering through
    a checkpoint costs far more than the checks, so a bounded sample; its notes say that the report covers
    every row. A dataset of one chunk gets the pages build_data_docs gives on the whole frame."""
    from components.data.validation.data_docs import build_data_docs

    with contextlib.closing(_with_rows(chunks())) as passing:
        first = next(passing)
    flags = {name: f[:len(first)] for name, f in checked.flags.items()}
    return build_data_docs(first, data, out_dir, source=source, task=task, flags=flags,
                           total_rows=checked.report.rows)


def _with_rows(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks that have rows (an empty batch file reads as an empty chunk: GX must not judge it alone);
    one empty chunk when no chunk has rows, since the checks still need the columns."""
    empty: pd.DataFrame | None = None
    any_rows = False
    for chunk in chunks:
        if len(chunk):
            any_rows = True
            yield chunk
        elif empty is None:
            empty = chunk
    if not any_rows:
        if empty is None:
            raise ValueError("no chunks at all: even an empty dataset has its columns")
        yield empty


# --- pass 1: the flags, and what the group checks' examples say about the whole dataset -------------------

def _flags_and_context(chunks: Chunks, token_task: bool) -> tuple[dict[str, np.ndarray], _GroupContext]:
    parts: dict[str, list[np.ndarray]] = {"keys": [], "labels": [], "official": []}
    with contextlib.closing(_with_rows(chunks())) as passing:
        for chunk in passing:
            keys, labels, official = flag_inputs(chunk, token_task)
            if keys is None:  # no key column: no flags, as with_duplicate_flags
                return {}, _GroupContext()
            parts["keys"].append(keys)
            parts["official"].append(official)
            if labels is not None:
                parts["labels"].append(labels)
    # One array at a time, each chunk's pieces let go as soon as they are copied; then the heap they and the
    # chunks' parsing left free goes back to the system before the sort takes room of its own.
    keys, labels, official = (_joined(parts.pop(name)) for name in ("keys", "labels", "official"))
    _release_free_memory()
    flags = flag_arrays(keys, labels, official)
    del labels, official
    return flags, _GroupContext.prepare(keys, flags)


def _release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing). Parsing the
    chunks and their small hash arrays leave free heap that arrays of millions of rows (mapped pages of their
    own) never reuse: without this the sort's arrays came on top of it (5M rows: 609 MB peak rather than 572)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _joined(pieces: list[np.ndarray]) -> np.ndarray | None:
    joined = np.concatenate(pieces) if pieces else None
    pieces.clear()
    return joined


def _first_rows(mask: np.ndarray, count: int = MAX_EXAMPLES) -> list[int]:
    """The first `count` positions where mask holds, without listing them all (a million may)."""
    found: list[int] = []
    step = 1 << 20
    for start in range(0, len(mask), step):
        found += [start + int(i) for i in np.flatnonzero(mask[start:start + step])[:count - len(found)]]
        if len(found) == count:
            break
    return found


@dataclass
class _GroupContext:
    """_group_context over the whole dataset, for the rows the group checks will quote: the first 5 flagged
    rows of each (GX's first unexpected rows). None: the row's key is null, which no row equals."""

    first_position: dict[int, int | None] = field(default_factory=dict)  # duplicate row -> first row of its text
    label_set_of: dict[int, int | None] = field(default_factory=dict)  # conflicting row -> its text's label set
    text_of_row: np.ndarray | None = None  # per row: the label set of its text (int8), -1 for other texts
    label_sets: list[set[str]] = field(default_factory=list)  # filled by collect
    source_rows: dict[int, int] = field(default_factory=dict)  # first_position -> source_row, by collect

    @classmethod
    def prepare(cls, keys: np.ndarray, flags: dict[str, np.ndarray]) -> _GroupContext:
        context = cls()
        for row in _first_rows(flags[DUPLICATE_FLAG]):
            # Its first occurrence: the first row with its key (a duplicate is never that row itself).
            context.first_position[row] = None if keys[row] == NULL_HASH else int(np.argmax(keys == keys[row]))
        if CONFLICT_FLAG in flags:
            texts: dict[np.uint64, int] = {}
            for row in _first_rows(flags[CONFLICT_FLAG]):
                context.label_set_of[row] = None if keys[row] == NULL_HASH else texts.setdefault(keys[row], len(texts))
            context.text_of_row = np.full(len(keys), -1, dtype=np.int8)
            for key, index in texts.items():
                context.text_of_row[keys == key] = index
            context.label_sets = [set() for _ in texts]
        return context

    def collect(self, frame: pd.DataFrame, offset: int) -> None:
        """Take from a chunk (its rows at offset..) the source_row of first occurrences and the labels."""
        for first in self.first_position.values():
            if first is not None and offset <= first < offset + len(frame) and "source_row" in frame.columns:
                self.source_rows[first] = int(frame["source_row"].iloc[first - offset])
        if self.text_of_row is None or not self.label_sets:
            return
        texts = self.text_of_row[offset:offset + len(frame)]
        for index in np.unique(texts[texts >= 0]):
            self.label_sets[index].update(str(v) for v in frame["label"][texts == index].dropna().unique())

    def examples(self, tally: _Tally, given_columns: list[str]) -> list[dict[str, Any]]:
        if tally.check.name not in _GROUP_CHECKS:
            return tally.examples
        return [{**example, **self._context(tally.check.name, row, given_columns)}
                for example, row in zip(tally.examples, tally.positions)]

    def _context(self, check: str, row: int, given_columns: list[str]) -> dict[str, Any]:
        if check == "duplicate_texts":
            first = self.first_position[row]
            if first is None or "source_row" not in given_columns:
                return {}
            return {"first_source_row": self.source_rows[first]}
        label_set = self.label_set_of[row]
        return {} if label_set is None else {"labels_for_this_text": sorted(self.label_sets[label_set])}


# --- pass 2: each check's GX results added up over the chunks ------------------------------------------

@dataclass(frozen=True)
class _Outcome:
    """What failure_of reads of a GX ExpectationValidationResult, for the dataset as a whole."""

    expectation_config: Any
    success: bool
    result: dict[str, Any]
    exception_info: dict[str, Any]


@dataclass
class _Tally:
    """One check's results over the chunks so far."""

    check: Check
    kind: str = field(init=False)  # the GX expectation type
    elements: int = 0
    missing: int | None = 0  # null values of the column; None where GX does not set them apart (not_be_null)
    unexpected: int | None = 0
    rows: int = 0  # the row count check's observed values
    first: Any = None  # the first chunk's result: the column set check's, or one that raised
    found: set[Any] = field(default_factory=set)  # distinct-values checks: expected values seen
    positions: list[int] = field(default_factory=list)  # the first unexpected rows, in the dataset
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.kind = _kind(self.check)

    def add(self, result: Any, frame: pd.DataFrame, offset: int, token_task: bool) -> None:
        if self.first is None or (_raised(result) and not _raised(self.first)):
            self.first = result  # a chunk on which the check could not run stands for the dataset
        details = result.result or {}
        if self.kind == _ROW_COUNT:
            self.rows += int(details.get("observed_value") or 0)
        elif self.kind != _COLUMN_SET:
            self._add_counts(details)
            self._add_examples([int(i) for i in details.get("partial_unexpected_index_list") or []], frame,
                               offset, token_task)

    def add_distinct(self, frame: pd.DataFrame) -> None:
        if self.kind == _DISTINCT:
            column = self.check.expectation.column
            self.found |= set(frame[column].dropna().unique()) & set(self.check.expectation.value_set)

    def _add_counts(self, details: dict[str, Any]) -> None:
        self.elements += int(details.get("element_count") or 0)
        count = details.get("unexpected_count")
        self.unexpected = None if count is None or self.unexpected is None else self.unexpected + int(count)
        missing = details.get("missing_count")
        self.missing = None if missing is None or self.missing is None else self.missing + int(missing)

    def _add_examples(self, local: list[int], frame: pd.DataFrame, offset: int, token_task: bool) -> None:
        local = local[:MAX_EXAMPLES - len(self.positions)]
        if not local:
            return
        self.positions += [offset + i for i in local]
        # The group checks' context is the whole dataset's, added at the end (_GroupContext.examples).
        self.examples += (example_rows(frame, local) if self.check.name in _GROUP_CHECKS
                          else failure_examples(self.check, frame, local, token_task))

    def outcome(self) -> _Outcome:
        if _raised(self.first):
            return _Outcome(self.first.expectation_config, bool(self.first.success), {},
                            dict(self.first.exception_info))
        config = self.first.expectation_config
        info = {"raised_exception": False, "exception_traceback": None, "exception_message": None}
        if self.kind == _COLUMN_SET:  # every chunk has the same columns
            return _Outcome(config, bool(self.first.success), dict(self.first.result or {}), info)
        if self.kind == _ROW_COUNT:
            return _Outcome(config, _between(self.rows, self.check.expectation), {"observed_value": self.rows}, info)
        success, percent = _map_success(self.elements, self.missing, self.unexpected,
                                        float(self.check.expectation.mostly))
        return _Outcome(config, success, {"element_count": self.elements, "unexpected_count": self.unexpected,
                                          "unexpected_percent": percent}, info)


def _kind(check: Check) -> str:
    """The expectation type, for those whose results this module knows how to add up."""
    from great_expectations.expectations.expectation import ColumnMapExpectation

    kind = str(check.expectation.expectation_type)
    if kind not in (_ROW_COUNT, _COLUMN_SET, _DISTINCT) and not isinstance(check.expectation, ColumnMapExpectation):
        raise NotImplementedError(f"check {check.name!r} ({kind}): no rule to add up its results over chunks")
    return kind


def _raised(result: Any) -> bool:
    return result is not None and bool((result.exception_info or {}).get("raised_exception"))


def _map_success(elements: int, missing: int | None, unexpected: int | None,
                 mostly: float) -> tuple[bool, float | None]:
    """GX's verdict and unexpected_percent for a column map expectation on these counts (ColumnMapExpectation
    ._validate and _format_map_output): nulls are not judged, except by not_be_null (missing None), which
    judges every row; no row to judge passes."""
    judged = elements if missing is None else elements - missing
    if unexpected is None or elements == 0 or judged == 0:
        return True, None
    success = (float(judged) - float(unexpected)) / float(judged) >= mostly
    return success, unexpected / judged * 100


def _between(value: int, expectation: Any) -> bool:
    """GX's verdict on a table metric between min_value and max_value (either may be None)."""
    low, high = expectation.min_value, expectation.max_value
    above = low is None or (value > low if getattr(expectation, "strict_min", False) else value >= low)
    below = high is None or (value < high if getattr(expectation, "strict_max", False) else value <= high)
    return bool(above and below)


def _distinct_outcomes(gx: Any, tallies: list[_Tally]) -> dict[str, _Outcome]:
    """The distinct-values checks, run by GX on a table of the expected values found in any chunk: it finds
    missing what the whole column misses, and lists them in the order the whole column gives."""
    if not tallies:
        return {}
    found: dict[str, set[Any]] = {}
    for tally in tallies:
        found.setdefault(tally.check.expectation.column, set()).update(tally.found)
    height = max(1, *(len(values) for values in found.values()))
    table = pd.DataFrame({column: pd.Series(sorted(values, key=str) + [None] * (height - len(values)), dtype=object)
                          for column, values in found.items()})
    result = run_suite(gx, table, [tally.check for tally in tallies])
    return {r.expectation_config.meta["check"]: _Outcome(r.expectation_config, bool(r.success),
                                                         dict(r.result or {}), dict(r.exception_info or {}))
            for r in result.results}
