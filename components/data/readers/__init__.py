"""Read a user's labelled file (CSV, TSV, JSON Lines, Parquet) into a frame of text, raw label and row.

The frame has three columns: ``text`` and ``label`` (pandas ``str``; labels stripped of surrounding
whitespace but not yet mapped through ``data.label_map``) and ``source_row``, the 1-based position a
person would look for in the file:

- CSV/TSV: the line on which the record starts (the header is line 1). It equals the record number
  unless a field above contains a newline or the file has blank lines.
- JSON Lines: the line number.
- Parquet: the record number.

Reading is done by pyarrow's C readers. Python-level, per-record checks run only when something
already looks wrong (the C reader raised, or lines and records do not add up), so that a broken file
gets an error naming the row and field while a clean million-row file is read in about two seconds.
Whatever is wrong, the reader raises `IngestError` rather than dropping or merging rows.

`iter_labelled_file` gives the same frame in chunks of rows, reading the file a piece of about 16 MB at a
time (readers/stream.py: CSV/TSV and JSON Lines; Parquet a batch of rows at a time), so that memory follows
the chunk size and not the file's; `read_labelled_file` is its one-chunk case. An error in a later piece
comes after the chunks before it.

Token-classification data (`read_token_file`) comes as CoNLL-style text (.conll, .txt, .iob: one
token per line, whitespace-separated columns with the tag last, a blank line between sentences,
`-DOCSTART-` lines skipped) or as JSON Lines with a list of tokens and a list of tags per record
(data.tokens_column, data.tags_column). Its frame has the columns ``tokens`` and ``tags`` (lists of
str; tags stripped, not yet mapped through data.label_map) and ``source_row``: the line of the
sentence's first token (CoNLL) or of the record (JSON Lines). A sentence whose tokens and tags do not
pair up is read as it is: validation quarantines it with its reason.

A `.json` file is a Label Studio export of the labelling queue (readers/label_studio.py), for either
task: labels only from a person's annotations, and a `rejected` column naming each task that has none
(ingest sets those aside with that reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    IngestError,
    file_digest,
    file_kind,
    read_utf8,
)
from components.data.readers.delimited import iter_delimited
from components.data.readers.jsonl import iter_jsonl
from components.data.readers.label_studio import REJECTED_COLUMN, read_label_studio
from components.data.readers.parquet import iter_parquet
from components.data.readers.stream import ALL_ROWS, rechunk
from components.data.readers.tokens import parse_conll, read_token_file

__all__ = ["REJECTED_COLUMN", "IngestError", "file_digest", "iter_labelled_file", "parse_conll", "read_labelled_file",
           "read_token_file"]


def read_labelled_file(path: Path, data: DataParams) -> pd.DataFrame:
    """Read `path` into a frame with columns text, label (raw, stripped) and source_row (a Label Studio
    export also has `rejected`: why a task must not be trained on, "" when it may)."""
    # One chunk holding every row: the chunked reader is the only reader.
    chunks = list(iter_labelled_file(path, data, ALL_ROWS))
    return chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)


def iter_labelled_file(path: Path, data: DataParams, rows: int) -> Iterator[pd.DataFrame]:
    """The frames read_labelled_file(path, data) would return, split into consecutive chunks of `rows` rows
    (the last may be shorter), with the same columns, dtypes, values and source_row, and the same IngestError
    for a broken file. The file is read a piece at a time, so memory follows `rows`, not the file's size;
    an error found in a later piece comes after the chunks before it were yielded (the caller discards them)."""
    yield from rechunk(_frames(Path(path), data), rows)


def _frames(path: Path, data: DataParams) -> Iterator[pd.DataFrame]:
    kind = file_kind(path)
    if kind == "parquet":
        yield from iter_parquet(path, data)
    elif kind == "jsonl":
        yield from iter_jsonl(path, data)
    elif kind == "label-studio":
        # One JSON document, parsed whole (json.loads): read at once, then cut into chunks like the rest.
        yield read_label_studio(path, read_utf8(path, kind), data, token_task=False)
    else:
        yield from iter_delimited(path, kind, data)
