"""Ingest: turn labelled sources into the project's dataset under data/, one batch at a time.

data/ (tracked by data.dvc) holds
  manifest.json          every batch: source, counts, ingestion time, its files
  batches/NNNN-*.csv     the accepted rows of each batch (id, text, label, batch_id, source_row)
  quarantine/NNNN-*.csv  the rows a batch set aside, each with the check that failed
  reports/NNNN-*/        the batch's validation (and drift) reports

The first batch comes from params' data.source and is rebuilt only when that source changes, so
re-running a pipeline on unchanged data writes the same bytes and DVC sees the same version.
Every input row ends in exactly one place: accepted, quarantined (with its reason) or counted as a
duplicate of a row an earlier batch already holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from components.assets import read_builtin_dataset, split_builtin
from components.config import DataParams, DriftParams

DATASET_COLUMNS = ["id", "text", "label", "batch_id", "source_row"]
EXCLUDED_CHECK = "excluded_label"


class DriftFailure(RuntimeError):
    """A new batch differs too much from the data the champion was trained on."""


@dataclass(frozen=True)
class RawSource:
    frame: pd.DataFrame  # columns: text, label (raw), source_row
    batch_id: str
    description: str


@dataclass
class BatchRecord:
    batch_id: str
    source: str
    ingested_at: str | None  # None for data.source: its bytes are pinned, a clock time would not be
    base: bool
    rows_read: int
    accepted: int
    quarantined: int
    duplicates: int
    batch_file: str
    quarantine_file: str
    report_dir: str
    drift_status: str | None = None
    rules: str = ""  # fingerprint of the data params the batch was checked under


@dataclass(frozen=True)
class IngestResult:
    batch: BatchRecord
    already_present: bool
    dataset_rows: int
    label_counts: dict[str, int]
    drift_summary: str | None = None


def normalize_text(text: str) -> str:
    """NFC and single spaces: the same review typed twice is the same example."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_ids(texts: pd.Series) -> pd.Series:
    return texts.map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest()[:16])


# --- reading sources --------------------------------------------------------------------------
def _read_builtin(name: str, data: DataParams) -> RawSource:
    builtin = read_builtin_dataset(name)
    frame = pd.read_csv(io.BytesIO(builtin.payload), dtype=str, keep_default_na=False)
    frame = frame.rename(columns={data.text_column: "text", data.label_column: "label"})[["text", "label"]]
    frame["source_row"] = range(2, len(frame) + 2)  # 1-based file line; line 1 is the header
    return RawSource(frame, batch_id=f"builtin:{name}@{builtin.fingerprint}", description=builtin.description)


def read_file_source(path: Path, data: DataParams) -> RawSource:
    from components.readers import read_labelled_file

    frame = read_labelled_file(path, data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return RawSource(frame, batch_id=f"{path.name}@{digest}", description=f"{path} (sha256 {digest})")


def read_configured_source(data: DataParams, project_root: Path) -> RawSource:
    builtin = split_builtin(data.source)
    if builtin is not None:
        return _read_builtin(builtin, data)
    path = Path(data.source).expanduser()
    return read_file_source(path if path.is_absolute() else project_root / path, data)


# --- the dataset on disk ----------------------------------------------------------------------
class DataStore:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.manifest_path = data_dir / "manifest.json"

    def batches(self) -> list[BatchRecord]:
        if not self.manifest_path.is_file():
            return []
        return [BatchRecord(**record) for record in json.loads(self.manifest_path.read_text())["batches"]]

    def write_manifest(self, batches: list[BatchRecord]) -> None:
        payload = json.dumps({"batches": [asdict(b) for b in batches]}, indent=2, sort_keys=True) + "\n"
        scratch = self.manifest_path.with_suffix(".tmp")
        scratch.write_text(payload)
        scratch.replace(self.manifest_path)  # readers never see half a manifest

    def read(self, batches: list[BatchRecord] | None = None) -> pd.DataFrame:
        """The accepted rows of `batches` (default: all), in ingestion order."""
        chosen = self.batches() if batches is None else batches
        frames = [pd.read_csv(self.data_dir / b.batch_file, dtype={c: str for c in DATASET_COLUMNS[:4]},
                              keep_default_na=False) for b in chosen]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=str) for c in DATASET_COLUMNS})
        return pd.concat(frames, ignore_index=True)

    def quarantined_rows(self) -> int:
        return sum(b.quarantined for b in self.batches())

    def paths_for(self, sequence: int, batch_id: str) -> tuple[str, str, str]:
        slug = f"{sequence:04d}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", batch_id.split("@")[0]).strip("-")[:60]
        return f"batches/{slug}.csv", f"quarantine/{slug}.csv", f"reports/{slug}"


def read_dataset(data_dir: Path) -> pd.DataFrame:
    store = DataStore(data_dir)
    if not store.batches():
        raise FileNotFoundError(f"{data_dir}: no dataset; run `tunegate ingest` first")
    return store.read()


# --- building a batch -------------------------------------------------------------------------
def canonical_label(label: str, labels: list[str]) -> str:
    """'Positive' or 'POSITIVE' is the configured 'positive'; an unknown label is left as it is."""
    if label in labels:
        return label
    matches = [known for known in labels if known.casefold() == label.casefold()]
    return matches[0] if len(matches) == 1 else label


def build_dataset(raw: RawSource, data: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map labels, normalize text and give each row its id; returns (rows, rows excluded by label)."""
    frame = raw.frame.reset_index(drop=True)
    raw_labels = frame["label"].astype(str).str.strip()
    excluded = raw_labels.isin(data.exclude_labels)
    texts = frame["text"].map(lambda t: normalize_text(t) if isinstance(t, str) else t)
    rows = pd.DataFrame({
        "id": text_ids(texts.fillna("")),
        "text": texts,
        # Unknown labels stay as they are: quarantine reports them with their source rows.
        "label": raw_labels.map(lambda label: canonical_label(data.label_map.get(label, label), data.labels)),
        "batch_id": raw.batch_id,
        "source_row": frame["source_row"],
    })
    set_aside = rows[excluded].assign(check=EXCLUDED_CHECK, expectation="data.exclude_labels",
                                      reason="label '" + raw_labels[excluded] + "' is in data.exclude_labels")
    return rows[~excluded].reset_index(drop=True), set_aside.reset_index(drop=True)


def ingest_batch(
    raw: RawSource,
    data: DataParams,
    store: DataStore,
    *,
    base: bool,
    drift: DriftParams | None = None,
    reference: pd.DataFrame | None = None,
    tokenizer_factory: Callable[[], Any] | None = None,
) -> IngestResult:
    """Quarantine bad rows, check the batch as a whole (and for drift), then add it to the dataset.

    A batch that fails a batch-level check or drifts beyond `fail` raises and adds nothing; its
    reports are still written so the reason can be read.
    """
    from components.validate import DataValidationError, quarantine_rows, validate_batch

    batches = store.batches()
    rules = hashlib.sha256(data.model_dump_json().encode()).hexdigest()[:12]
    known = next((b for b in batches if b.batch_id == raw.batch_id), None)
    # The base batch is checked again when the rules change (say data.max_chars): data.source is
    # what params.yaml says it is, under the rules params.yaml gives now.
    if known is not None and (not base or known.rules == rules):
        return _result(known, store.read()["label"], already_present=True)
    kept = [b for b in batches if not b.base] if base else batches  # a new data.source replaces the old base
    existing = store.read(kept)

    rows, excluded = build_dataset(raw, data)
    checked = quarantine_rows(rows, data)
    duplicate = checked.clean["id"].isin(existing["id"])
    sequence = 0 if base else max((int(Path(b.batch_file).stem[:4]) for b in batches), default=0) + 1
    batch_file, quarantine_file, report_dir = store.paths_for(sequence, raw.batch_id)
    quarantined = pd.concat([checked.quarantined, excluded], ignore_index=True)
    record = BatchRecord(batch_id=raw.batch_id, source=raw.description, base=base,
                         ingested_at=None if base else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         rows_read=len(raw.frame), accepted=int((~duplicate).sum()), quarantined=len(quarantined),
                         duplicates=int(duplicate.sum()), batch_file=batch_file, quarantine_file=quarantine_file,
                         report_dir=report_dir, rules=rules)
    reports = store.data_dir / report_dir
    reports.mkdir(parents=True, exist_ok=True)
    report = validate_batch(checked.clean, rows_in=len(rows), quarantined=len(checked.quarantined),
                            existing=existing, data=data, source=f"{raw.description} (batch {raw.batch_id})")
    report.write(reports / "validation.json")
    if not report.success:
        raise DataValidationError(report)

    drift_summary = None
    if drift is not None and reference is not None and not reference.empty and tokenizer_factory is not None:
        from components.drift import drift_report

        drifted = drift_report(reference, checked.clean, tokenizer_factory(), drift)
        drifted.write(reports / "drift.json")
        record.drift_status, drift_summary = drifted.status, drifted.summary()
        if drifted.status == "fail":
            raise DriftFailure(f"batch {raw.batch_id} drifted from the champion's training data:\n{drift_summary}")

    (store.data_dir / "batches").mkdir(parents=True, exist_ok=True)
    (store.data_dir / "quarantine").mkdir(parents=True, exist_ok=True)
    accepted = checked.clean[~duplicate][DATASET_COLUMNS]
    accepted.to_csv(store.data_dir / batch_file, index=False, lineterminator="\n")
    quarantined.to_csv(store.data_dir / quarantine_file, index=False, lineterminator="\n")
    if base:
        for old in batches:
            if old.base:
                for stale in {old.batch_file, old.quarantine_file} - {batch_file, quarantine_file}:
                    (store.data_dir / stale).unlink(missing_ok=True)
        store.write_manifest([record] + kept)
    else:
        store.write_manifest(batches + [record])
    # The dataset is what was there plus what this batch added: no need to read it all back.
    return _result(record, pd.concat([existing["label"], accepted["label"]]), already_present=False,
                   drift_summary=drift_summary)


def _result(record: BatchRecord, labels: pd.Series, already_present: bool, drift_summary: str | None = None) -> IngestResult:
    counts = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
    return IngestResult(record, already_present, len(labels), counts, drift_summary)


def describe(result: IngestResult) -> str:
    b = result.batch
    if result.already_present:
        return f"batch {b.batch_id} is already in the dataset ({result.dataset_rows:,} rows); nothing to do"
    line = (f"batch {b.batch_id}: {b.rows_read:,} rows read = {b.accepted:,} accepted + {b.quarantined:,} "
            f"quarantined ({b.quarantine_file}) + {b.duplicates:,} already in the dataset; "
            f"dataset now {result.dataset_rows:,} rows {result.label_counts}")
    return line + (f"\n{result.drift_summary}" if result.drift_summary else "")
