"""Ingest: turn the configured source into the project's dataset file under data/.

The dataset is a deterministic CSV (same source, same bytes), so DVC sees an unchanged source as
unchanged data. Each row keeps where it came from (batch and source row) for error messages.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from components.assets import read_builtin_dataset, split_builtin
from components.config import DataParams

DATASET_COLUMNS = ["id", "text", "label", "batch_id", "source_row"]


@dataclass(frozen=True)
class RawSource:
    frame: pd.DataFrame  # columns: text, label (raw), source_row
    batch_id: str
    description: str


@dataclass(frozen=True)
class IngestResult:
    path: Path
    rows: int
    excluded: int
    batch_id: str
    source: str
    label_counts: dict[str, int]


def normalize_text(text: str) -> str:
    """NFC and single spaces: the same review typed twice is the same example."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_ids(texts: pd.Series) -> pd.Series:
    return texts.map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest()[:16])


def _read_builtin(name: str, data: DataParams) -> RawSource:
    builtin = read_builtin_dataset(name)
    frame = pd.read_csv(io.BytesIO(builtin.payload), dtype=str, keep_default_na=False)
    frame = frame.rename(columns={data.text_column: "text", data.label_column: "label"})[["text", "label"]]
    frame["source_row"] = range(2, len(frame) + 2)  # 1-based file line; line 1 is the header
    return RawSource(frame, batch_id=f"builtin:{name}@{builtin.fingerprint}", description=builtin.description)


def _read_file(path: Path, data: DataParams) -> RawSource:
    from components.readers import read_labelled_file

    frame = read_labelled_file(path, data)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return RawSource(frame, batch_id=f"{path.name}@{digest}", description=f"{path} (sha256 {digest})")


def read_source(data: DataParams, project_root: Path) -> RawSource:
    builtin = split_builtin(data.source)
    if builtin is not None:
        return _read_builtin(builtin, data)
    path = Path(data.source).expanduser()
    return _read_file(path if path.is_absolute() else project_root / path, data)


def build_dataset(raw: RawSource, data: DataParams) -> tuple[pd.DataFrame, int]:
    """Map labels, normalize text and give each row its id; returns (dataset, rows excluded)."""
    frame = raw.frame.copy()
    raw_labels = frame["label"].astype(str).str.strip()
    keep = ~raw_labels.isin(data.exclude_labels)
    frame, raw_labels = frame[keep], raw_labels[keep]
    # Unknown labels stay as they are: validation reports them with their source rows.
    frame["label"] = raw_labels.map(lambda label: data.label_map.get(label, label))
    frame["text"] = frame["text"].astype(str).map(normalize_text)
    frame["id"] = text_ids(frame["text"])
    frame["batch_id"] = raw.batch_id
    return frame[DATASET_COLUMNS].reset_index(drop=True), int((~keep).sum())


def ingest(data: DataParams, project_root: Path, dataset_path: Path) -> IngestResult:
    raw = read_source(data, project_root)
    dataset, excluded = build_dataset(raw, data)
    dataset_path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_csv(dataset_path, index=False, lineterminator="\n")
    return IngestResult(
        path=dataset_path,
        rows=len(dataset),
        excluded=excluded,
        batch_id=raw.batch_id,
        source=raw.description,
        label_counts={str(k): int(v) for k, v in dataset["label"].value_counts().sort_index().items()},
    )


def read_dataset(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset; run `tunegate ingest` first")
    return pd.read_csv(path, dtype={"id": str, "text": str, "label": str, "batch_id": str}, keep_default_na=False)
