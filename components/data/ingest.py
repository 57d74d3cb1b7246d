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
import json
import re
import sys
import time
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import pandas as pd

from components.assets import (
    builtin_dataset_task,
    read_builtin_dataset,
    read_builtin_split_dataset,
    split_builtin,
)
from components.config import (
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    DataParams,
    DriftParams,
    Task,
)
from components.data.batch_sort import INGEST_CHUNK_ROWS
from components.data.pii_screening import PiiScreening

if TYPE_CHECKING:
    from components.privacy.pii import PiiScanner

DATASET_COLUMNS = ["id", "text", "label", "batch_id", "source_row"]
# Optional: 'train', 'validation' or 'test' for a row from a source's official split, else "".
SPLIT_COLUMN = "split"
EXCLUDED_CHECK = "excluded_label"
# The raw frame of token data: lists of tokens and tags per sentence (dropped when a batch is written).
TOKEN_COLUMNS = ["tokens", "tags"]
# The extension of a source file, left out of the names of the batch's own files.
DATA_SUFFIX = re.compile(r"\.(csv|tsv|jsonl|ndjson|json|parquet|conll|txt|iob)$", re.IGNORECASE)
# A reader may fill this column with why a row it read must not be trained on (a Label Studio task no
# person annotated); such rows are set aside under this check, with that reason.
REJECTED_COLUMN = "rejected"
REJECTED_CHECK = "no_human_label"


class DriftFailure(RuntimeError):
    """A new batch differs too much from the data the champion was trained on."""


@dataclass(frozen=True)
class RawSource:
    """A source's rows. columns: text, label (raw), source_row; token data: tokens, tags (lists, raw), source_row,
    and split where the source has an official one. Held whole in `frame`, or read a chunk at a time by
    `read_chunks(rows)` (a user's file: it may not fit in memory)."""

    frame: pd.DataFrame | None
    batch_id: str
    description: str
    read_chunks: Callable[[int], Iterator[pd.DataFrame]] | None = None

    def chunks(self, rows: int) -> Iterator[pd.DataFrame]:
        """The rows, `rows` at a time; at least one chunk (an empty source gives its empty frame)."""
        if self.read_chunks is not None:
            yield from self.read_chunks(rows)
            return
        assert self.frame is not None
        yield from (self.frame.iloc[start:start + rows] for start in range(0, max(len(self.frame), 1), rows))

    def columns(self) -> list[str]:
        if self.frame is not None:
            return [str(c) for c in self.frame.columns]
        return [str(c) for c in next(self.chunks(1)).columns]

    def with_frame(self, frame: pd.DataFrame) -> RawSource:
        """This source with `frame` as its rows: one chunk of it, built on its own."""
        return RawSource(frame, self.batch_id, self.description)


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
    pii: dict | None = None  # what data.pii found (PiiScreening.record): counts by type, never the data itself
    forgotten: int = 0  # rows removed later by `tunegate forget` (components/privacy/forget.py), from either file


@dataclass(frozen=True)
class IngestResult:
    batch: BatchRecord
    already_present: bool
    dataset_rows: int
    label_counts: dict[str, int]
    drift_summary: str | None = None


def strip_format_characters(text: str) -> str:
    """Without Unicode format characters (category Cf: zero-width space and joiners, byte-order mark,
    directional marks, soft hyphen...). They are invisible, and BERT-family tokenizers drop them
    before the model sees the text, so keeping them would only make one text look like two."""
    if text.isascii():  # the common case; Cf has no ASCII members
        return text
    return _format_characters().sub("", text)


@functools.cache
def _format_characters() -> re.Pattern[str]:
    # Built on first use, from this Python's Unicode database (about 170 code points).
    found = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    return re.compile("[" + "".join(re.escape(char) for char in found) + "]")


def normalize_text(text: str) -> str:
    """The canonical form of a text: NFC, no format characters, single spaces. The same review typed
    twice, or pasted with a zero-width space, is the same example. NFC rather than NFKC: NFKC folds
    characters a cased model tells apart (full-width letters, superscripts, ligatures)."""
    return " ".join(strip_format_characters(unicodedata.normalize("NFC", text)).split())


def normalize_token(token: str) -> str:
    """A token's canonical form: NFC without format characters (whitespace inside is left for the
    token check to report; a token of format characters only becomes empty and is quarantined)."""
    return strip_format_characters(unicodedata.normalize("NFC", token))


def text_ids(texts: pd.Series) -> pd.Series:
    return texts.map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest()[:16])


def official_split_ids(splits: pd.Series, source_rows: pd.Series, texts: pd.Series) -> pd.Series:
    """Ids of rows from an official split: hash of 'split:source_row:text', so that the same sentence
    at two places of the official data (say twice in test) is two examples, never one."""
    keys = splits.astype(str) + ":" + source_rows.astype(str) + ":" + texts
    return text_ids(keys)


def _is_token_task(task: str) -> bool:
    if task not in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION):
        raise ValueError(f"unknown task {task!r}; expected {SEQUENCE_CLASSIFICATION!r} or {TOKEN_CLASSIFICATION!r}")
    return task == TOKEN_CLASSIFICATION


def _check_task(raw: RawSource, task: str) -> bool:
    token_task = _is_token_task(task)
    columns = raw.columns()
    if token_task != ("tokens" in columns):
        found = "token lists" if "tokens" in columns else "texts with one label each"
        raise ValueError(f"{raw.description}: holds {found}, which task {task!r} cannot use")
    return token_task


# --- reading sources --------------------------------------------------------------------------
def _read_builtin(name: str, data: DataParams, task: Task = SEQUENCE_CLASSIFICATION) -> RawSource:
    from components.assets import AssetError

    if builtin_dataset_task(name) != task:
        raise AssetError(f"built-in dataset {name!r} is {builtin_dataset_task(name)} data; "
                         f"params say task: {task}")
    if _is_token_task(task):
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
    if _is_token_task(task):
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


# --- the dataset on disk ----------------------------------------------------------------------
# Every column as text but source_row: a kept column of numbers ("2021") stays as written.
BATCH_CSV = {"dtype": defaultdict(lambda: str, source_row="int64"), "keep_default_na": False}


class DataStore:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.manifest_path = data_dir / "manifest.json"

    def batches(self) -> list[BatchRecord]:
        if not self.manifest_path.is_file():
            return []
        return [BatchRecord(**record) for record in json.loads(self.manifest_path.read_text())["batches"]]

    def required_batches(self) -> list[BatchRecord]:
        """The batches, for a step that needs a dataset: none is an error that says what to run."""
        batches = self.batches()
        if not batches:
            raise FileNotFoundError(f"{self.data_dir}: no dataset; run `tunegate ingest` first")
        return batches

    def write_manifest(self, batches: list[BatchRecord]) -> None:
        payload = json.dumps({"batches": [asdict(b) for b in batches]}, indent=2, sort_keys=True) + "\n"
        scratch = self.manifest_path.with_suffix(".tmp")
        scratch.write_text(payload)
        scratch.replace(self.manifest_path)  # readers never see half a manifest

    def read(self, batches: list[BatchRecord] | None = None) -> pd.DataFrame:
        """The accepted rows of `batches` (default: all), in ingestion order.

        The column `split`, and each column kept by data.keep_columns, is there when some batch file has
        it, "" on the rows of those without it (a batch ingested before the column was kept).
        """
        chosen = self.batches() if batches is None else batches
        frames = [pd.read_csv(self.data_dir / b.batch_file, **BATCH_CSV) for b in chosen]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=str) for c in DATASET_COLUMNS})
        combined = pd.concat(frames, ignore_index=True)
        for column in combined.columns.drop(DATASET_COLUMNS, errors="ignore"):  # split, kept columns
            combined[column] = combined[column].fillna("")
        return combined

    def read_chunks(self, rows: int, batches: list[BatchRecord] | None = None) -> Iterator[pd.DataFrame]:
        """The accepted rows of `batches` (default: all) in ingestion order, `rows` at a time: a dataset larger
        than memory is read in pieces. A chunk lacks the columns its batch file lacks (read fills them)."""
        for batch in self.batches() if batches is None else batches:
            with pd.read_csv(self.data_dir / batch.batch_file, chunksize=rows, **BATCH_CSV) as reader:
                yield from reader

    def quarantined_rows(self) -> int:
        return sum(b.quarantined for b in self.batches())

    def paths_for(self, sequence: int, batch_id: str) -> tuple[str, str, str]:
        name = DATA_SUFFIX.sub("", batch_id.split("@")[0])  # reviews.csv@ab12 -> 0001-reviews.csv, not .csv.csv
        slug = f"{sequence:04d}-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60]
        return f"batches/{slug}.csv", f"quarantine/{slug}.csv", f"reports/{slug}"


def read_dataset(data_dir: Path) -> pd.DataFrame:
    store = DataStore(data_dir)
    return store.read(store.required_batches())


# --- building a batch -------------------------------------------------------------------------
def canonical_label(label: str, labels: list[str]) -> str:
    """'Positive' or 'POSITIVE' is the configured 'positive'; an unknown label is left as it is."""
    if label in labels:
        return label
    matches = [known for known in labels if known.casefold() == label.casefold()]
    return matches[0] if len(matches) == 1 else label


def map_tag(tag: str, data: DataParams) -> str:
    """'B-PERSON' with label_map {PERSON: PER} is 'B-PER'; 'i-per' stays (the tag check reports it);
    'B-per' is 'B-PER' (entity types are matched like labels, ignoring case)."""
    prefix, dash, kind = tag.partition("-")
    if not dash or prefix not in ("B", "I"):
        return tag
    return f"{prefix}-{canonical_label(data.label_map.get(kind, kind), data.labels)}"


def build_dataset(raw: RawSource, data: DataParams, *, task: Task = SEQUENCE_CLASSIFICATION
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map labels, normalize text and give each row its id; returns (rows, rows excluded by label).

    Token data: tokens normalized by `normalize_token` (each kept as one token, whitespace and all: validation
    quarantines a token with whitespace), tags mapped by `map_tag`; the rows also keep the lists in
    columns tokens and tags for the row checks (they are not written to the dataset).
    data.exclude_labels does not apply to token data: nothing is excluded.
    """
    if _check_task(raw, task):
        return _build_token_dataset(raw, data)
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
        **_kept_columns(frame, data),
    })
    set_aside = rows[excluded].assign(check=EXCLUDED_CHECK, expectation="data.exclude_labels",
                                      reason="label '" + raw_labels[excluded] + "' is in data.exclude_labels")
    rejected = _rejected(frame) & ~excluded
    if rejected.any():
        set_aside = pd.concat([set_aside, _set_aside_rejected(rows, frame, rejected)])
    kept = ~excluded & ~rejected
    return rows[kept].reset_index(drop=True), set_aside.reset_index(drop=True)


def _kept_columns(frame: pd.DataFrame, data: DataParams) -> dict[str, Any]:
    """data.keep_columns as text; "" where the source has no such column (token files, Label Studio
    exports: their readers do not carry them)."""
    return {name: frame[name].fillna("").astype(str) if name in frame.columns else "" for name in data.keep_columns}


def _rejected(frame: pd.DataFrame) -> pd.Series:
    if REJECTED_COLUMN not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[REJECTED_COLUMN].fillna("").astype(str) != ""


def _set_aside_rejected(rows: pd.DataFrame, frame: pd.DataFrame, rejected: pd.Series) -> pd.DataFrame:
    # No label a person gave: the label cell stays empty, whatever a model suggested.
    return rows[rejected].assign(label="", check=REJECTED_CHECK, expectation="a label given by a person",
                                 reason=frame.loc[rejected, REJECTED_COLUMN].astype(str))


def _build_token_dataset(raw: RawSource, data: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = raw.frame.reset_index(drop=True)
    tokens = frame["tokens"].map(lambda words: [normalize_token(w) for w in words])
    tag_memo: dict[str, str] = {}  # a few dozen distinct tags in a million words

    def mapped(tags: list[str]) -> list[str]:
        return [tag_memo[t] if t in tag_memo else tag_memo.setdefault(t, map_tag(t, data)) for t in tags]

    tags = frame["tags"].map(mapped)
    texts = tokens.map(" ".join)
    ids = text_ids(texts)
    split = frame[SPLIT_COLUMN].fillna("").astype(str) if SPLIT_COLUMN in frame.columns else None
    if split is not None:
        official = split != ""
        ids = ids.where(~official, official_split_ids(split, frame["source_row"], texts))
    columns = {
        "id": ids,
        "text": texts,
        "label": tags.map(" ".join),
        "batch_id": raw.batch_id,
        "source_row": frame["source_row"],
    }
    if split is not None:
        columns[SPLIT_COLUMN] = split
    columns.update(_kept_columns(frame, data))
    rows = pd.DataFrame(columns).assign(tokens=tokens, tags=tags)
    rejected = _rejected(frame)
    if not rejected.any():
        return rows, rows.iloc[:0].drop(columns=TOKEN_COLUMNS)
    set_aside = _set_aside_rejected(rows, frame, rejected).drop(columns=TOKEN_COLUMNS)
    return rows[~rejected].reset_index(drop=True), set_aside.reset_index(drop=True)


def written_columns(frame: pd.DataFrame, data: DataParams) -> list[str]:
    return DATASET_COLUMNS + ([SPLIT_COLUMN] if SPLIT_COLUMN in frame.columns else []) + list(data.keep_columns)


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

    token_task = _check_task(raw, task)

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
