"""Ingest: turn labelled sources into the project's dataset under data/, one batch at a time.

data/ (tracked by data.dvc) holds
  manifest.json          every batch: source, counts, ingestion time, its files
  batches/NNNN-*.csv     the accepted rows of each batch (id, text, label, batch_id, source_row, and
                         `split` for a source with an official split)
  quarantine/NNNN-*.csv  the rows a batch set aside, each with the check that failed
  reports/NNNN-*/        the batch's validation (and drift) reports

The first batch comes from params' data.source and is rebuilt only when that source changes, so
re-running a pipeline on unchanged data writes the same bytes and DVC sees the same version.
Every input row ends in exactly one place: accepted, quarantined (with its reason) or counted as a
duplicate (the same text with the same label as an earlier row of the batch or a row of the dataset).
A text whose copies disagree on the label is quarantined, every copy in the batch, and the rest of the
batch goes on (components.data.validation.duplicates).

Token classification (task: token-classification) uses the same files, one row per sentence: `text`
is the tokens joined by single spaces and `label` the IOB2 tags joined by single spaces. A source
with an official split (builtin:conll2003) also fills `split` ('train', 'validation', 'test'); such
rows get an id made of their split, source line and text, so that a sentence repeated in (or across)
the official splits stays once per occurrence and the official test set is kept exactly. Every other
row's id is the hash of its text, as for sequence classification.
"""

from __future__ import annotations

import functools
import hashlib
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import pandas as pd

from components.assets import (
    builtin_dataset_task,
    read_builtin_dataset,
    read_builtin_split_dataset,
    split_builtin,
)
from components.config import (
    SEQUENCE_CLASSIFICATION,
    DataParams,
    DriftParams,
    Task,
)
from components.data.batch_sort import INGEST_CHUNK_ROWS
from components.data.dataset import (  # noqa: F401 - the dataset's names, re-exported: ingest's callers know them from here
    BATCH_CSV,
    DATASET_COLUMNS,
    REJECTED_CHECK,
    SPLIT_COLUMN,
    TOKEN_COLUMNS,
    BatchRecord,
    DataStore,
    RawSource,
    build_dataset,
    check_task,
    is_token_task,
    normalize_text,
    read_dataset,
    text_ids,
    written_columns,
)
from components.data.pii_screening import PiiScreening

if TYPE_CHECKING:
    from components.privacy.pii import PiiScanner


class DriftFailure(RuntimeError):
    """A new batch differs too much from the data the champion was trained on."""


@dataclass(frozen=True)
class IngestResult:
    batch: BatchRecord
    already_present: bool
    dataset_rows: int
    label_counts: dict[str, int]
    drift_summary: str | None = None


# --- reading sources --------------------------------------------------------------------------
def _read_builtin(name: str, data: DataParams, task: Task = SEQUENCE_CLASSIFICATION) -> RawSource:
    from components.assets import AssetError

    if builtin_dataset_task(name) != task:
        raise AssetError(f"built-in dataset {name!r} is {builtin_dataset_task(name)} data; "
                         f"params say task: {task}")
    if is_token_task(task):
        return _read_builtin_splits(name)
    builtin = read_builtin_dataset(name)
    frame = pd.read_csv(io.BytesIO(builtin.payload), dtype=str, keep_default_na=False)
    missing = [name for name in data.keep_columns if name not in frame.columns]
    if missing:
        raise AssetError(f"built-in dataset {name!r} has no column(s) {missing} (data.keep_columns); "
                         f"columns found: {list(frame.columns)}")
    frame = frame.rename(columns={data.text_column: "text", data.label_column: "label"})
    frame = frame[["text", "label", *data.keep_columns]]
    frame["source_row"] = range(2, len(frame) + 2)  # 1-based file line; line 1 is the header
    return RawSource(frame, batch_id=f"builtin:{name}@{builtin.fingerprint}", description=builtin.description)


def _read_builtin_splits(name: str) -> RawSource:
    """A built-in CoNLL-style dataset with an official split: one frame, train then validation then test."""
    from components.data.readers import parse_conll

    builtin = read_builtin_split_dataset(name)
    frames = []
    for split, payload in builtin.payloads.items():
        frame = parse_conll(Path(builtin.members[split]), payload)  # source_row: line in that split's file
        frames.append(frame.assign(**{SPLIT_COLUMN: split}))
    return RawSource(pd.concat(frames, ignore_index=True), batch_id=f"builtin:{name}@{builtin.fingerprint}",
                     description=builtin.description)


def read_file_source(path: Path, data: DataParams, *, task: Task = SEQUENCE_CLASSIFICATION) -> RawSource:
    """A user's file: a table of texts and labels, or (task token-classification) CoNLL-style text or
    JSON Lines of token and tag lists."""
    from components.data.readers import file_digest, iter_labelled_file, read_labelled_file, read_token_file

    digest = file_digest(path)[:12]
    batch_id, description = f"{path.name}@{digest}", f"{path} (sha256 {digest})"
    if is_token_task(task):
        return RawSource(read_token_file(path, data), batch_id, description)
    if reads_labelled_traffic(path):  # one JSON document, read whole: the labelling queue, not a corpus
        return RawSource(read_labelled_file(path, data), batch_id, description)
    source = RawSource(None, batch_id, description, read_chunks=lambda rows: iter_labelled_file(path, data, rows))
    source.columns()  # a file that cannot be read at all says so now; a bad row deep inside, when ingest reaches it
    return source


def reads_labelled_traffic(path: Path) -> bool:
    """Whether `path` is read as a Label Studio export: live texts a person labelled (the labelling loop)."""
    return Path(path).suffix.lower() == ".json"


def read_configured_source(data: DataParams, project_root: Path, *, task: Task = SEQUENCE_CLASSIFICATION) -> RawSource:
    builtin = split_builtin(data.source)
    if builtin is not None:
        return _read_builtin(builtin, data, task)
    path = Path(data.source).expanduser()
    return read_file_source(path if path.is_absolute() else project_root / path, data, task=task)


def rules_fingerprint(data: DataParams) -> str:
    """Short hash of the data params a batch is checked under (BatchRecord.rules): every field of them."""
    return hashlib.sha256(data.model_dump_json().encode()).hexdigest()[:12]


def ingest_batch(
    raw: RawSource,
    data: DataParams,
    store: DataStore,
    *,
    base: bool,
    drift: DriftParams | None = None,
    reference: pd.DataFrame | None = None,
    tokenizer_factory: Callable[[], Any] | None = None,
    task: Task = SEQUENCE_CLASSIFICATION,
    drift_gate: bool = True,
    pii_scanner: PiiScanner | None = None,
    chunk_rows: int = INGEST_CHUNK_ROWS,
) -> IngestResult:
    """Quarantine bad rows, screen the rest for personal data (data.pii), check the batch as a whole (and for
    drift), then add it to the dataset.

    `pii_scanner`: the scanner privacy: describes (components.privacy.configured.scanner_for); left out,
    one with the default settings and no NER model.

    A batch that fails a batch-level check or drifts beyond `fail` raises and adds nothing; its
    reports are still written so the reason can be read. `drift_gate` False measures and reports drift
    without refusing the batch: for the labelling queue coming back (`reads_labelled_traffic`), whose
    texts were picked because they drifted and whose labels a person gave. `task` must match the source (raw): token
    lists for token-classification. The batch is sorted `chunk_rows` rows at a time (components.data.batch_sort):
    memory does not grow with its size.
    """
    from components.data.batch_sort import index_dataset, scratch_folder, sort_batch
    from components.data.validation.batch import validate_batch_counts
    from components.data.validation.report import DataValidationError

    token_task = check_task(raw, task)

    batches = store.batches()
    rules = rules_fingerprint(data)
    known = next((b for b in batches if b.batch_id == raw.batch_id), None)
    # The base batch is checked again when the rules change (say data.max_chars): data.source is
    # what params.yaml says it is, under the rules params.yaml gives now.
    if known is not None and (not base or known.rules == rules):
        dataset = index_dataset(store, batches, token_task=token_task)
        return _result(known, dataset.label_counts, dataset.rows, already_present=True)
    kept = [b for b in batches if not b.base] if base else batches  # a new data.source replaces the old base
    existing = index_dataset(store, kept, token_task=token_task, chunk_rows=chunk_rows)

    if pii_scanner is None and data.pii != "off":
        pii_scanner = default_pii_scanner()
    sequence = 0 if base else max((int(Path(b.batch_file).stem[:4]) for b in batches), default=0) + 1
    batch_file, quarantine_file, report_dir = store.paths_for(sequence, raw.batch_id)
    with scratch_folder(store) as scratch:
        rows = sort_batch(raw, data, existing, task=task, token_task=token_task, pii_scanner=pii_scanner,
                          scratch=Path(scratch), chunk_rows=chunk_rows)
        record = BatchRecord(batch_id=raw.batch_id, source=raw.description, base=base,
                             ingested_at=None if base else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                             rows_read=rows.rows_read, accepted=rows.accepted, quarantined=rows.quarantined,
                             duplicates=rows.duplicates, batch_file=batch_file, quarantine_file=quarantine_file,
                             report_dir=report_dir, rules=rules, pii=rows.pii.record())
        reports = store.data_dir / report_dir
        reports.mkdir(parents=True, exist_ok=True)
        report = validate_batch_counts(clean_rows=rows.clean_rows, batch_label_counts=rows.clean_label_counts,
                                       existing_label_counts=existing.label_counts, rows_in=rows.rows_in,
                                       quarantined=rows.quarantined_by_checks, data=data,
                                       source=f"{raw.description} (batch {raw.batch_id})", task=task)
        report.pii = rows.pii.record()
        report_path = report.write(reports / "validation.json")
        if not report.success:
            raise DataValidationError(report, report_path)

        drift_summary = None
        if drift is not None and reference is not None and not reference.empty and tokenizer_factory is not None:
            drift_summary = _check_drift(raw, record, rows.drift_sample, reference, tokenizer_factory(), drift,
                                         reports, task=task, gate=drift_gate)
        rows.move_into(store, record)
    _write_manifest(store, record, batches, kept)
    # The dataset is what was there plus what this batch added: no need to read it all back.
    return _result(record, existing.label_counts + rows.accepted_label_counts, existing.rows + rows.accepted,
                   already_present=False, drift_summary=drift_summary)


@functools.lru_cache(maxsize=1)
def default_pii_scanner() -> PiiScanner:
    """The scanner with privacy:'s defaults (no NER model), built once per process: Presidio takes seconds to
    import and its recognizers are read-only once built."""
    from components.privacy.pii import build_scanner

    return build_scanner()


def _check_drift(raw: RawSource, record: BatchRecord, clean: pd.DataFrame, reference: pd.DataFrame, tokenizer,
                 drift: DriftParams, reports: Path, *, task: Task, gate: bool) -> str:
    """The batch against the champion's training data: drift.json written, the status on the record, and a
    DriftFailure when it fails and `gate` holds. Returns the summary."""
    from components.data.drift import drift_report

    drifted = drift_report(reference, clean, tokenizer, drift, task=task)
    drifted.write(reports / "drift.json")
    record.drift_status, summary = drifted.status, drifted.summary()
    if drifted.status == "fail" and gate:
        raise DriftFailure(f"batch {raw.batch_id} drifted from the champion's training data:\n{summary}")
    return summary


def _write_manifest(store: DataStore, record: BatchRecord, batches: list[BatchRecord], kept: list[BatchRecord]) -> None:
    """The batch's manifest entry, once its files are in place; a base batch replaces the old base batch's files."""
    if record.base:
        for old in batches:
            if old.base:
                for stale in {old.batch_file, old.quarantine_file} - {record.batch_file, record.quarantine_file}:
                    (store.data_dir / stale).unlink(missing_ok=True)
        store.write_manifest([record] + kept)
    else:
        store.write_manifest(batches + [record])


def _result(record: BatchRecord, label_counts: Mapping[str, int], dataset_rows: int, already_present: bool,
            drift_summary: str | None = None) -> IngestResult:
    # Token data: entities per type, not the (all different) tag strings of the sentences.
    counts = {str(label): int(label_counts[label]) for label in sorted(label_counts) if label_counts[label]}
    return IngestResult(record, already_present, dataset_rows, counts, drift_summary)


def describe(result: IngestResult) -> str:
    b = result.batch
    if result.already_present:
        forgotten = f", {b.forgotten:,} of its rows forgotten" if b.forgotten else ""
        return f"batch {b.batch_id} is already in the dataset ({result.dataset_rows:,} rows{forgotten}); nothing to do"
    line = (f"batch {b.batch_id}: {b.rows_read:,} rows read = {b.accepted:,} accepted + {b.quarantined:,} "
            f"quarantined ({b.quarantine_file}) + {b.duplicates:,} duplicates"
            + (f" + {b.forgotten:,} forgotten" if b.forgotten else "") + "; "
            f"dataset now {result.dataset_rows:,} rows {result.label_counts}")
    if b.pii is not None:
        line += f"\n{PiiScreening(**b.pii).summary()}"
    return line + (f"\n{result.drift_summary}" if result.drift_summary else "")
