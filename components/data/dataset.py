"""The dataset: the rows a source gives, as the dataset holds them (ids, canonical text, mapped labels), and
where they live (data/: manifest.json, the batch files). Ingest (components.data.ingest) adds batches to it;
the stages read it."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import unicodedata
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from components.config import (
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    DataParams,
    Task,
)

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


def is_token_task(task: str) -> bool:
    if task not in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION):
        raise ValueError(f"unknown task {task!r}; expected {SEQUENCE_CLASSIFICATION!r} or {TOKEN_CLASSIFICATION!r}")
    return task == TOKEN_CLASSIFICATION


def check_task(raw: RawSource, task: str) -> bool:
    token_task = is_token_task(task)
    columns = raw.columns()
    if token_task != ("tokens" in columns):
        found = "token lists" if "tokens" in columns else "texts with one label each"
        raise ValueError(f"{raw.description}: holds {found}, which task {task!r} cannot use")
    return token_task



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
    if check_task(raw, task):
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
