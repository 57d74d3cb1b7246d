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

# batch_id lets the gate score the test rows of earlier batches on their own (forgetting) and
# training replay a share of earlier batches.
SPLIT_COLUMNS = ["id", "text", "label", "batch_id"]
OFFICIAL_SPLIT_COLUMN = "split"
# Sub-tokens after a word's first, and special tokens, carry no label: the loss skips them.
IGNORE_INDEX = -100
TEMPLATE_RECORD = "template.json"


def split_of(example_id: str, split: SplitParams) -> str:
    digest = hashlib.sha256(f"{split.salt}:{example_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < split.test_fraction:
        return "test"
    if position < split.test_fraction + split.validation_fraction:
        return "validation"
    return "train"


def assign_splits(dataset: pd.DataFrame, split: SplitParams, keep_columns: list[str] | tuple[str, ...] = ()
                  ) -> dict[str, pd.DataFrame]:
    """keep_columns (data.keep_columns) follow the split's own columns, "" where the dataset lacks one
    (no batch has it yet): slices select on them. They never move an example: the split is by id."""
    # Duplicates share an id, hence a split: no test example is also a training example.
    deduplicated = dataset.drop_duplicates(subset="id", keep="first")
    missing = [name for name in keep_columns if name not in deduplicated.columns]
    if missing:
        deduplicated = deduplicated.assign(**{name: "" for name in missing})
    names = deduplicated["id"].map(lambda i: split_of(i, split))
    if OFFICIAL_SPLIT_COLUMN in deduplicated:
        # A source with an official split (CoNLL-2003's train/valid/test) keeps it: published scores
        # are comparable only on the official test set.
        official = deduplicated[OFFICIAL_SPLIT_COLUMN].fillna("").astype(str)
        names = names.where(official == "", official)
    # batch_id: absent from a bare frame
    columns = [c for c in SPLIT_COLUMNS if c in deduplicated] + list(keep_columns)
    return {name: deduplicated.loc[names == name, columns].reset_index(drop=True) for name in SPLITS}


@dataclass(frozen=True)
class TokenizedSplit:
    input_ids: list[list[int]]
    labels: list  # a class id per example, or (token classification) a list of tag ids per token
    batch_ids: list[str] | None = None
    token_type_ids: list[list[int]] | None = None  # word shapes (model.word_shapes), else none

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def token_level(self) -> bool:
        return bool(self.labels) and isinstance(self.labels[0], list)

    def select(self, indices: list[int]) -> "TokenizedSplit":
        def pick(values):
            return None if values is None else [values[i] for i in indices]

        return TokenizedSplit(pick(self.input_ids), pick(self.labels), pick(self.batch_ids), pick(self.token_type_ids))


def tokenize_split(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int, *,
                   template: str | None = None) -> TokenizedSplit:
    """template (data.template): the model reads each text inside it; the split's CSV keeps the raw text."""
    from components.data.template import apply_template

    label_ids = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(label_ids))
    if unknown:
        raise ValueError(f"labels {unknown} are not in data.labels {labels}; validation should have caught this")
    # No padding here: batches are padded to their own longest example at training time.
    encoded = tokenizer(apply_template(template, frame["text"].tolist()), truncation=True, max_length=max_length,
                        padding=False)
    return TokenizedSplit(input_ids=encoded["input_ids"], labels=[label_ids[x] for x in frame["label"]],
                          batch_ids=_batch_ids(frame))


def write_template_record(splits_dir: Path, template: str | None, word_shapes: bool = False) -> Path:
    """artifacts/splits/template.json: how the splits are read: through data.template, and with word shapes
    (model.word_shapes). The split CSVs keep the raw text, so without it a stage that reads them (the
    distillation teacher) would not see, through DVC, that what its model reads has changed."""
    import json

    record: dict = {"template": template}
    if word_shapes:  # only then: a record written before word shapes reached the teacher stays the same
        record["word_shapes"] = True
    path = Path(splits_dir) / TEMPLATE_RECORD
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def _batch_ids(frame: pd.DataFrame) -> list[str] | None:
    return frame["batch_id"].astype(str).tolist() if "batch_id" in frame else None


def tokenize_tagged_split(frame: pd.DataFrame, tokenizer, tags: list[str], max_length: int, *,
                          word_shapes: bool = False) -> TokenizedSplit:
    """Words (text split on single spaces) with a tag each -> sub-tokens, the tag on each word's first
    sub-token and IGNORE_INDEX elsewhere; the same alignment the served model reads back. With
    word_shapes, each sub-token's token type is its word's shape."""
    from components.data.word_shapes import token_shapes

    tag_ids = {tag: i for i, tag in enumerate(tags)}
    words = [text.split(" ") for text in frame["text"]]
    word_tags = [label.split(" ") for label in frame["label"]]
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, padding=False)
    labels, shapes = [], []
    for row, sentence_tags in enumerate(word_tags):
        unknown = sorted(set(sentence_tags) - set(tag_ids))
        if unknown:
            raise ValueError(f"tags {unknown} are not in {tags}; validation should have caught this")
        aligned, previous = [], None
        for word in encoded.word_ids(row):
            aligned.append(IGNORE_INDEX if word is None or word == previous else tag_ids[sentence_tags[word]])
            previous = word
        labels.append(aligned)
        if word_shapes:
            shapes.append(token_shapes(words[row], encoded.word_ids(row)))
    return TokenizedSplit(input_ids=encoded["input_ids"], labels=labels, batch_ids=_batch_ids(frame),
                          token_type_ids=shapes if word_shapes else None)


def save_tokenized(split: TokenizedSplit, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {
        "input_ids": pa.array(split.input_ids, type=pa.list_(pa.int32())),
        "label": pa.array(split.labels, type=pa.list_(pa.int32()) if split.token_level else pa.int32()),
    }
    if split.batch_ids is not None:
        columns["batch_id"] = pa.array(split.batch_ids, type=pa.string())
    if split.token_type_ids is not None:
        columns["token_type_ids"] = pa.array(split.token_type_ids, type=pa.list_(pa.int32()))
    pq.write_table(pa.table(columns), path)


def load_tokenized(path: Path) -> TokenizedSplit:
    table = pq.read_table(path)
    def optional(name: str):
        return table.column(name).to_pylist() if name in table.column_names else None

    return TokenizedSplit(input_ids=table.column("input_ids").to_pylist(), labels=table.column("label").to_pylist(),
                          batch_ids=optional("batch_id"), token_type_ids=optional("token_type_ids"))
