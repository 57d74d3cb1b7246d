"""Preprocess: a split that never moves an example, then tokenization with the base model's tokenizer.

The split of an example is a function of its text alone (a salted hash of the normalized text), so
adding data never moves an old example between train and test, and champion and challenger are
always compared on the same test rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.config import SplitParams
from components.layout import SPLITS

SPLIT_COLUMNS = ["id", "text", "label"]


def split_of(example_id: str, split: SplitParams) -> str:
    digest = hashlib.sha256(f"{split.salt}:{example_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < split.test_fraction:
        return "test"
    if position < split.test_fraction + split.validation_fraction:
        return "validation"
    return "train"


def assign_splits(dataset: pd.DataFrame, split: SplitParams) -> dict[str, pd.DataFrame]:
    # Duplicates share an id, hence a split: no test example is also a training example.
    deduplicated = dataset.drop_duplicates(subset="id", keep="first")
    names = deduplicated["id"].map(lambda i: split_of(i, split))
    return {name: deduplicated.loc[names == name, SPLIT_COLUMNS].reset_index(drop=True) for name in SPLITS}


@dataclass(frozen=True)
class TokenizedSplit:
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def tokenize_split(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int) -> TokenizedSplit:
    label_ids = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(label_ids))
    if unknown:
        raise ValueError(f"labels {unknown} are not in data.labels {labels}; validation should have caught this")
    # No padding here: batches are padded to their own longest example at training time.
    encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length, padding=False)
    return TokenizedSplit(input_ids=encoded["input_ids"], labels=[label_ids[x] for x in frame["label"]])


def save_tokenized(split: TokenizedSplit, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "input_ids": pa.array(split.input_ids, type=pa.list_(pa.int32())),
        "label": pa.array(split.labels, type=pa.int32()),
    })
    pq.write_table(table, path)


def load_tokenized(path: Path) -> TokenizedSplit:
    table = pq.read_table(path)
    return TokenizedSplit(input_ids=table.column("input_ids").to_pylist(), labels=table.column("label").to_pylist())
