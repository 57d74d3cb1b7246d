"""Preprocess: a split that never moves an example, then tokenization with the base model's tokenizer.

The split of an example is a function of its text alone (a salted hash of the normalized text), so
adding data never moves an old example between train and test, and champion and challenger are
always compared on the same test rows.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from components.config import SplitParams
from components.data.ragged import RaggedRows, holds_token_labels, pick_rows
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
    return _split_rows(dataset.drop_duplicates(subset="id", keep="first"), split, keep_columns)


def stream_splits(chunks: Iterable[pd.DataFrame], split: SplitParams, keep_columns: list[str] | tuple[str, ...] = ()
                  ) -> Iterator[dict[str, pd.DataFrame]]:
    """assign_splits over a dataset read a chunk of rows at a time: each chunk's rows by split, without the
    repeats of an id seen in this or an earlier chunk. Concatenated, the chunks' splits are assign_splits's."""
    seen = SeenIds()
    for chunk in chunks:
        yield _split_rows(chunk[seen.first_time(chunk["id"])], split, keep_columns)


def _split_rows(deduplicated: pd.DataFrame, split: SplitParams, keep_columns: list[str] | tuple[str, ...]
                ) -> dict[str, pd.DataFrame]:
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
    columns = split_columns(deduplicated.columns, keep_columns)
    return {name: deduplicated.loc[names == name, columns].reset_index(drop=True) for name in SPLITS}


def split_columns(available: Iterable[str], keep_columns: list[str] | tuple[str, ...]) -> list[str]:
    """The columns of a split's CSV: the split's own (batch_id where the rows have it), then data.keep_columns."""
    available = set(available)
    return [c for c in SPLIT_COLUMNS if c in available] + list(keep_columns)


class SeenIds:
    """The example ids met so far, as 64-bit keys in one sorted numpy array: 8 bytes an id, where a Python set
    of the id strings costs about 100. Ids are the first 16 hex digits of a sha256 (components/data/dataset.py),
    so an id is its own key; any other id is hashed to one."""

    def __init__(self) -> None:
        self._sorted = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._sorted)

    def first_time(self, ids: pd.Series) -> np.ndarray:
        """Which of `ids` are met for the first time (a repeat within `ids` counts once, at its first place);
        they are remembered."""
        keys = np.fromiter((_id_key(i) for i in ids), dtype=np.uint64, count=len(ids))
        fresh = ~pd.Series(keys).duplicated().to_numpy()
        if len(self._sorted):
            places = np.searchsorted(self._sorted, keys).clip(max=len(self._sorted) - 1)
            fresh &= self._sorted[places] != keys
        self._sorted = np.sort(np.concatenate([self._sorted, keys[fresh]]))
        return fresh


def _id_key(example_id: str) -> int:
    if len(example_id) == 16:
        try:
            return int(example_id, 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(example_id.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class TokenizedSplit:
    """A split's model inputs. Freshly tokenized, Python lists; read back (load_tokenized), flat arrays on a
    memory map: RaggedRows for rows of ids, a numpy array of class ids, a pandas Categorical of batch ids."""

    input_ids: list[list[int]] | RaggedRows
    labels: list | np.ndarray | RaggedRows  # a class id per example, or (token classification) tag ids per token
    batch_ids: list[str] | pd.Categorical | None = None
    token_type_ids: list[list[int]] | RaggedRows | None = None  # word shapes (model.word_shapes), else none

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def token_level(self) -> bool:
        return holds_token_labels(self.labels)

    def select(self, indices: list[int]) -> "TokenizedSplit":
        return TokenizedSplit(pick_rows(self.input_ids, indices), pick_rows(self.labels, indices),
                              pick_rows(self.batch_ids, indices), pick_rows(self.token_type_ids, indices))


def tokenize_split(frame: pd.DataFrame, tokenizer, labels: list[str], max_length: int, *,
                   template: str | None = None) -> TokenizedSplit:
    """template (data.template): the model reads each text inside it; the split's CSV keeps the raw text."""
    from components.data.template import apply_template

    label_ids = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(frame["label"]) - set(label_ids))
    if unknown:
        raise ValueError(f"labels {unknown} are not in data.labels {labels}; validation should have caught this")
    # No padding here: batches are padded to their own longest example at training time.
    # Only the ids are kept: the masks and token types would triple the lists' memory for nothing.
    encoded = tokenizer(apply_template(template, frame["text"].tolist()), truncation=True, max_length=max_length,
                        padding=False, return_attention_mask=False, return_token_type_ids=False)
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
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
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


# Rows read, split and tokenized at a time: memory stays flat whatever the dataset's size. The tokenizer's
# Python lists of one chunk are the peak (about 2 KB a row), so a chunk is kept to some tens of MB.
CHUNK_ROWS = 20_000


def write_split_files(chunks: Iterable[pd.DataFrame], split: SplitParams, keep_columns: list[str] | tuple[str, ...],
                      tokenize: Callable[[pd.DataFrame], TokenizedSplit], csv_files: dict[str, Path],
                      tokenized_files: dict[str, Path], *, token_level: bool, word_shapes: bool,
                      total_rows: int | None = None) -> dict[str, int]:
    """Each split's CSV and tokenized file, written a chunk of the dataset at a time (stream_splits); returns
    the examples per split. The files hold what assign_splits, then tokenizing each whole split, would give:
    a text's ids do not depend on the texts tokenized beside it."""
    from tqdm.auto import tqdm

    counts = dict.fromkeys(SPLITS, 0)
    with contextlib.ExitStack() as stack:
        csvs = {name: stack.enter_context(open(csv_files[name], "w", encoding="utf-8", newline=""))
                for name in SPLITS}
        writers = {name: stack.enter_context(TokenizedWriter(tokenized_files[name], token_level=token_level,
                                                             batch_ids=True, token_type_ids=word_shapes))
                   for name in SPLITS}
        progress = stack.enter_context(tqdm(total=total_rows, desc="split and tokenize", unit="row"))
        header = split_columns(SPLIT_COLUMNS, keep_columns)  # every dataset row has batch_id
        for csv in csvs.values():
            csv.write(pd.DataFrame(columns=header).to_csv(index=False, lineterminator="\n"))
        for frames in stream_splits(_counting(chunks, progress), split, keep_columns):
            for name, frame in frames.items():
                frame.to_csv(csvs[name], index=False, header=False, lineterminator="\n")
                if len(frame):
                    writers[name].write(tokenize(frame))
                counts[name] += len(frame)
    return counts


def _counting(chunks: Iterable[pd.DataFrame], progress) -> Iterator[pd.DataFrame]:
    for chunk in chunks:
        yield chunk
        progress.update(len(chunk))


class TokenizedWriter:
    """A split's tokenized rows written chunk by chunk to an Arrow file (artifacts/tokenized/<split>.arrow),
    which load_tokenized maps into memory rather than reading. The file appears whole or not at all."""

    def __init__(self, path: Path, *, token_level: bool, batch_ids: bool, token_type_ids: bool) -> None:
        fields = [pa.field("input_ids", pa.list_(pa.int32())),
                  pa.field("label", pa.list_(pa.int32()) if token_level else pa.int32())]
        if batch_ids:
            fields.append(pa.field("batch_id", pa.string()))
        if token_type_ids:
            fields.append(pa.field("token_type_ids", pa.list_(pa.int32())))
        self.schema = pa.schema(fields)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._scratch = self.path.with_name(self.path.name + ".tmp")
        self._writer = pa.ipc.new_file(str(self._scratch), self.schema)
        self.rows = 0

    def write(self, split: TokenizedSplit) -> None:
        if not len(split):
            return
        columns = {"input_ids": _ids_column(split.input_ids), "label": _labels_column(split.labels)}
        if "batch_id" in self.schema.names:
            columns["batch_id"] = pa.array(list(split.batch_ids), type=pa.string())
        if "token_type_ids" in self.schema.names:
            columns["token_type_ids"] = _ids_column(split.token_type_ids)
        for batch in pa.table(columns).cast(self.schema).to_batches():
            self._writer.write_batch(batch)
        self.rows += len(split)

    def close(self) -> None:
        self._writer.close()
        self._scratch.replace(self.path)

    def __enter__(self) -> "TokenizedWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:  # a failed run leaves no half a file behind
            self._writer.close()
            self._scratch.unlink(missing_ok=True)


def _ids_column(rows) -> pa.ChunkedArray | pa.Array:
    return rows.to_arrow() if isinstance(rows, RaggedRows) else pa.array(rows, type=pa.list_(pa.int32()))


def _labels_column(labels) -> pa.ChunkedArray | pa.Array:
    if holds_token_labels(labels):
        return _ids_column(labels)
    return pa.array(np.asarray(labels, dtype=np.int32))


def save_tokenized(split: TokenizedSplit, path: Path) -> None:
    with TokenizedWriter(path, token_level=split.token_level, batch_ids=split.batch_ids is not None,
                         token_type_ids=split.token_type_ids is not None) as writer:
        writer.write(split)


def load_tokenized(path: Path, *, batch_ids: bool = True) -> TokenizedSplit:
    """A split written by TokenizedWriter, its rows read through a memory map: pages are read from disk as
    rows are used, and only the row lengths and class ids are held in memory (4 bytes a row each).
    `batch_ids` False leaves them out: reading them reads every row's batch id from disk, and only continual
    training's replay needs them."""
    table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    label = table.column("label")
    labels = RaggedRows.from_arrow(label) if pa.types.is_list(label.type) else label.to_numpy()
    # A few distinct batch ids over millions of rows: codes and categories, never a string object per row.
    kept_batch_ids = (table.column("batch_id").dictionary_encode().to_pandas().array
                      if batch_ids and "batch_id" in table.column_names else None)
    return TokenizedSplit(input_ids=RaggedRows.from_arrow(table.column("input_ids")), labels=labels,
                          batch_ids=kept_batch_ids,
                          token_type_ids=(RaggedRows.from_arrow(table.column("token_type_ids"))
                                          if "token_type_ids" in table.column_names else None))
