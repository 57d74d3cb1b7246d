"""Sorting a batch's rows into accepted, quarantined and duplicates, a chunk of rows at a time.

A batch can be larger than memory, so ingest never holds it whole. Two passes:

1. Each chunk of the source is built (ids, normalized texts, mapped labels), put through the row checks and
   data.pii. Rows that pass go to a spool file, the rows set aside to a spool per kind; of the passing rows
   only a 64-bit hash of the text's key and of its label stay in memory (16 bytes a row).
2. The repeat rules need every copy of a text, in the batch and in the dataset, so they are decided on those
   hashes once pass 1 is done (`RepeatHashes.verdicts`): duplicates are counted, conflicting copies quarantined.
   The spool is then read back a chunk at a time and each row written where its verdict says.

The files come out byte for byte as sorting the whole batch at once gave them: the accepted rows in file order,
the quarantined rows grouped as before (row checks, data.pii, conflicting labels, excluded labels), each group in
file order. Every input row ends in exactly one place, as before.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams, Task
from components.data.pii_screening import PiiScreening

if TYPE_CHECKING:
    from components.data.dataset import BatchRecord, DataStore, RawSource
    from components.privacy.pii import PiiScanner

# Rows of the source sorted at once: the row checks (GX) and data.pii scan this many rows at a time.
INGEST_CHUNK_ROWS = 100_000
# Drift is measured on at most this many of the batch's clean rows, a seeded uniform sample.
DRIFT_SAMPLE_ROWS = 200_000
# The quarantine file's groups, in the order they are written (as the whole-batch sort concatenated them).
QUARANTINE_GROUPS = ("checks", "pii", "conflicting", "excluded", "rejected")
UNIQUE, DUPLICATE, CONFLICTING = 0, 1, 2


def label_key_hashes(frame: pd.DataFrame, token_task: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(key hashes, label hashes, judged) of `frame`'s rows: judged rows are those the repeat rules apply to
    (a key, not of an official split). The key is duplicate_key's: the id, or the sentence for token data.
    64-bit hashes: two rows share one exactly when their texts are equal, but for a collision (under one in a
    million at five million distinct texts)."""
    from components.data.validation.duplicates import NULL_HASH, flag_inputs

    keys, labels, official = flag_inputs(frame, token_task)
    return keys, labels, ~official & (keys != NULL_HASH)


@dataclass
class DatasetIndex:
    """The dataset a batch joins, as much of it as the repeat rules and the counts need: per row a hash of its
    key and of its label, and the labels counted (entities per type for token data)."""

    keys: np.ndarray
    labels: np.ndarray
    label_counts: Counter
    rows: int
    store: DataStore | None = None  # where its rows are read again (the labels of a conflicting text)
    batches: list[BatchRecord] = field(default_factory=list)


def index_dataset(store: DataStore, batches: list[BatchRecord], *, token_task: bool,
                  chunk_rows: int = INGEST_CHUNK_ROWS) -> DatasetIndex:
    keys, labels, counts, rows = [], [], Counter(), 0
    for chunk in store.read_chunks(chunk_rows, batches):
        key, label, _ = label_key_hashes(chunk, token_task)
        keys.append(key)
        labels.append(label)
        counts.update(count_labels(chunk["label"], token_task))
        rows += len(chunk)
    return DatasetIndex(_joined(keys), _joined(labels), counts, rows, store, batches)


def count_labels(labels: pd.Series, token_task: bool) -> Counter:
    """Examples per label; token data: entities per type (B- tags)."""
    from components.entities import entity_type_counts

    if token_task:
        return Counter(entity_type_counts(labels.tolist()))
    return Counter({str(k): int(v) for k, v in labels.value_counts().items()})


def _joined(parts: list[np.ndarray], dtype: type = np.uint64) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


@dataclass
class RepeatHashes:
    """What the repeat rules need of a batch, gathered chunk by chunk: which rows they judge, and those rows'
    key and label hashes (17 bytes a judged row)."""

    judged: list[np.ndarray] = field(default_factory=list)
    keys: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def add(self, frame: pd.DataFrame, token_task: bool) -> None:
        keys, labels, judged = label_key_hashes(frame, token_task)
        self.judged.append(judged)
        self.keys.append(keys[judged])
        self.labels.append(labels[judged])

    def verdicts(self, existing: DatasetIndex) -> np.ndarray:
        """Each batch row's verdict (and the gathered hashes let go): UNIQUE (added), DUPLICATE (same text and
        label as an earlier judged row of the batch or a row of the dataset) or CONFLICTING (its text has two
        labels among the batch's judged rows and the dataset). The rules of duplicates.separate_repeated_texts,
        on hashes, grouped by one sort: about 35 bytes a row at the peak."""
        from components.data.validation.duplicates import conflicting_rows, sorted_groups, spread_over_groups

        judged = _joined(self.judged, np.bool_)
        # The batch's judged rows first, then every row of the dataset (official or not, as separate_repeated_texts)
        keys = _joined(self.keys + [existing.keys])
        labels = _joined(self.labels + [existing.labels])
        self.keys, self.labels, self.judged = [], [], []
        batch_rows = int(judged.sum())
        order, starts = sorted_groups(keys)
        del keys
        conflicting = conflicting_rows(labels, order, starts)
        del labels
        known = spread_over_groups(order, starts, lambda rows, first: np.logical_or.reduceat(rows >= batch_rows, first))
        later = np.empty(len(order), dtype=bool)
        later[order] = ~starts  # a stable sort: the batch's first copy of a text starts its run
        del order, starts
        # The first copy in the batch is kept unless the dataset has the text; a text with two labels is set aside.
        judged_verdicts = np.where(later | known, DUPLICATE, UNIQUE).astype(np.uint8)[:batch_rows]
        judged_verdicts[conflicting[:batch_rows]] = CONFLICTING
        verdicts = np.full(len(judged), UNIQUE, dtype=np.uint8)
        verdicts[judged] = judged_verdicts
        return verdicts


@dataclass
class SortedBatch:
    """Where a batch's rows went; the files are in the scratch folder until `move_into` puts them in data/."""

    rows_read: int = 0
    rows_in: int = 0  # rows that reached the row checks (past the rows build_dataset excluded)
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    quarantined_by_checks: int = 0  # row checks, data.pii and the conflicting-labels rule
    clean_rows: int = 0  # passed the row checks, conflicting copies dropped: accepted + duplicates
    clean_label_counts: Counter = field(default_factory=Counter)
    accepted_label_counts: Counter = field(default_factory=Counter)
    pii: PiiScreening | None = None
    drift_sample: pd.DataFrame | None = None  # clean rows (all of them, or a sample of DRIFT_SAMPLE_ROWS)
    batch_path: Path | None = None
    quarantine_path: Path | None = None

    def move_into(self, store: DataStore, record: BatchRecord) -> None:
        for path, name in ((self.batch_path, record.batch_file), (self.quarantine_path, record.quarantine_file)):
            target = store.data_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)


class Spool:
    """Frames appended to one CSV file, header once: the same bytes as writing their concatenation."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns, self.rows = path, columns, 0
        path.write_text(pd.DataFrame(columns=columns).to_csv(index=False, lineterminator="\n"))

    def append(self, frame: pd.DataFrame) -> None:
        if len(frame):
            frame.reindex(columns=self.columns).to_csv(self.path, mode="a", header=False, index=False,
                                                        lineterminator="\n")
            self.rows += len(frame)

    def body(self) -> bytes:
        with open(self.path, "rb") as spooled:
            spooled.readline()  # the header
            return spooled.read()


def sort_batch(raw: RawSource, data: DataParams, existing: DatasetIndex, *, task: Task, token_task: bool,
               pii_scanner: PiiScanner | None, scratch: Path, chunk_rows: int = INGEST_CHUNK_ROWS) -> SortedBatch:
    """Pass 1 and pass 2 of the module docstring; the accepted and quarantined files are left in `scratch`."""
    sorted_batch = SortedBatch()
    spools, repeats, screenings = _first_pass(raw, data, task, token_task, pii_scanner, scratch, chunk_rows,
                                              sorted_batch)
    verdicts = repeats.verdicts(existing)
    sorted_batch.pii = merge_screenings(screenings)
    conflicting = _second_pass(spools["clean"], verdicts, scratch / "accepted.csv", chunk_rows, token_task,
                               sorted_batch)
    conflicting = _with_reasons(conflicting, existing, token_task)
    spools["conflicting"].append(conflicting)
    sorted_batch.quarantined = sum(spools[group].rows for group in QUARANTINE_GROUPS)
    sorted_batch.quarantined_by_checks = sum(spools[group].rows for group in ("checks", "pii", "conflicting"))
    sorted_batch.quarantine_path = scratch / "quarantined.csv"
    with open(sorted_batch.quarantine_path, "wb") as out:
        out.write(pd.DataFrame(columns=spools["checks"].columns).to_csv(index=False, lineterminator="\n").encode())
        for group in QUARANTINE_GROUPS:
            out.write(spools[group].body())
    return sorted_batch


def _first_pass(raw: RawSource, data: DataParams, task: Task, token_task: bool, pii_scanner: PiiScanner | None,
                scratch: Path, chunk_rows: int, sorted_batch: SortedBatch
                ) -> tuple[dict[str, Spool], RepeatHashes, list[PiiScreening]]:
    from components.data.dataset import REJECTED_CHECK, TOKEN_COLUMNS, build_dataset, written_columns
    from components.data.pii_screening import screen_rows
    from components.data.validation.quarantine import QUARANTINE_COLUMNS, quarantine_rows

    spools: dict[str, Spool] = {}
    repeats, screenings = RepeatHashes(), []
    for chunk in raw.chunks(chunk_rows):
        sorted_batch.rows_read += len(chunk)
        rows, excluded = build_dataset(raw.with_frame(chunk), data, task=task)
        if not spools:  # every chunk has the columns of the first
            columns = [c for c in rows.columns if c not in TOKEN_COLUMNS]
            spools["clean"] = Spool(scratch / "clean.csv", written_columns(rows, data))
            spools.update({group: Spool(scratch / f"{group}.csv", columns + list(QUARANTINE_COLUMNS))
                           for group in QUARANTINE_GROUPS})
        checked = quarantine_rows(rows, data, task=task)
        # After the row checks (a row they quarantine is not scanned), before the repeats: a redacted text is
        # compared with the dataset as it will be written.
        screened = screen_rows(checked.clean, data.pii, pii_scanner, source=raw.description,
                               text_field=data.tokens_column if token_task else data.text_column)
        spools["clean"].append(screened.kept)
        spools["checks"].append(checked.quarantined)
        spools["pii"].append(screened.set_aside)
        # build_dataset lists the rows without a person's label after those of excluded labels
        rejected = (excluded["check"] == REJECTED_CHECK if "check" in excluded.columns
                    else pd.Series(False, index=excluded.index))
        spools["excluded"].append(excluded[~rejected])
        spools["rejected"].append(excluded[rejected])
        repeats.add(screened.kept, token_task)
        screenings.append(screened.screening)
        sorted_batch.rows_in += len(rows)
    return spools, repeats, screenings


def _second_pass(clean: Spool, verdicts: np.ndarray, accepted_path: Path, chunk_rows: int, token_task: bool,
                 sorted_batch: SortedBatch) -> pd.DataFrame:
    """The accepted rows written, the counts taken, the drift sample drawn; returns the conflicting rows."""
    from components.data.dataset import BATCH_CSV

    accepted = Spool(accepted_path, clean.columns)
    not_conflicting = verdicts != CONFLICTING
    sample = _drift_sample_mask(int(not_conflicting.sum()))
    conflicting, drift_rows, start, clean_seen = [], [], 0, 0
    for chunk in _read_spool(clean.path, chunk_rows, BATCH_CSV):
        verdict = verdicts[start:start + len(chunk)]
        start += len(chunk)
        unique, kept = chunk[verdict == UNIQUE], chunk[verdict != CONFLICTING]
        accepted.append(unique)
        conflicting.append(chunk[verdict == CONFLICTING])
        sorted_batch.clean_label_counts.update(count_labels(kept["label"], token_task))
        sorted_batch.accepted_label_counts.update(count_labels(unique["label"], token_task))
        drift_rows.append(kept[sample[clean_seen:clean_seen + len(kept)]])
        clean_seen += len(kept)
    sorted_batch.accepted = accepted.rows
    sorted_batch.duplicates = int((verdicts == DUPLICATE).sum())
    sorted_batch.clean_rows = int(not_conflicting.sum())
    sorted_batch.drift_sample = _concat(drift_rows, clean.columns)
    sorted_batch.batch_path = accepted_path
    return _concat(conflicting, clean.columns)


def _read_spool(path: Path, chunk_rows: int, options: dict) -> Iterator[pd.DataFrame]:
    with pd.read_csv(path, chunksize=chunk_rows, **options) as reader:
        yield from reader


def _drift_sample_mask(rows: int) -> np.ndarray:
    if rows <= DRIFT_SAMPLE_ROWS:
        return np.ones(rows, dtype=bool)
    mask = np.zeros(rows, dtype=bool)
    mask[np.random.default_rng(0).choice(rows, size=DRIFT_SAMPLE_ROWS, replace=False)] = True
    return mask


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _with_reasons(conflicting: pd.DataFrame, existing: DatasetIndex, token_task: bool) -> pd.DataFrame:
    """The conflicting rows with their check, expectation and reason: every label the text has, and where."""
    from components.data.validation.duplicates import conflict_reasons, duplicate_key, value_hashes
    from components.data.validation.quarantine import QUARANTINE_COLUMNS

    if conflicting.empty:
        return conflicting.reindex(columns=list(conflicting.columns) + list(QUARANTINE_COLUMNS))
    key = duplicate_key(conflicting, token_task)
    known = _dataset_rows_with_keys(value_hashes(key.drop_duplicates()), existing, token_task)
    return conflict_reasons(conflicting, key, known, duplicate_key(known, token_task) if len(known) else
                            key.iloc[:0])


def _dataset_rows_with_keys(wanted: np.ndarray, existing: DatasetIndex, token_task: bool) -> pd.DataFrame:
    """The dataset's rows whose key hashes are `wanted` (read again only when the index has some)."""
    if existing.store is None or not np.isin(wanted, existing.keys).any():
        return pd.DataFrame(columns=["id", "text", "label"])
    found = []
    for chunk in existing.store.read_chunks(INGEST_CHUNK_ROWS, existing.batches):
        key, _, _ = label_key_hashes(chunk, token_task)
        found.append(chunk[np.isin(key, wanted)])
    return pd.concat(found, ignore_index=True)


def merge_screenings(screenings: list[PiiScreening]) -> PiiScreening:
    """One batch's PiiScreening from its chunks' (there is always one chunk)."""
    from components.privacy.pii import in_type_order

    found: Counter = Counter()
    for screening in screenings:
        found.update(screening.found)
    return PiiScreening(screenings[0].policy, sum(s.rows_scanned for s in screenings),
                        sum(s.rows_with_pii for s in screenings), in_type_order(found), screenings[0].not_detected)


def scratch_folder(store: DataStore) -> tempfile.TemporaryDirectory:
    """Beside data/ (one file system, so the files move in with a rename), never inside it (DVC tracks data/)."""
    store.data_dir.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=".tunegate-ingest-", dir=store.data_dir.parent)
