"""Token-classification files: CoNLL-style text and JSON Lines of token and tag lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    TOKEN_SUFFIX_KINDS,
    IngestError,
    file_kind,
    read_utf8,
)
from components.data.readers.jsonl import (
    json_type,
    numbered_lines,
    parse_json_line,
    preview_of,
)

DOCSTART = "-DOCSTART-"


def read_token_file(path: Path, data: DataParams) -> pd.DataFrame:
    """Read a token-classification file into a frame with columns tokens, tags (lists of str) and source_row."""
    path = Path(path)
    kind = file_kind(path, TOKEN_SUFFIX_KINDS)
    utf8 = read_utf8(path, kind)
    if kind == "jsonl":
        return _read_token_jsonl(path, utf8, data)
    if kind == "label-studio":
        from components.data.readers.label_studio import read_label_studio

        return read_label_studio(path, utf8, data, token_task=True)
    return parse_conll(path, utf8)


def parse_conll(path: Path, utf8: bytes) -> pd.DataFrame:
    """Sentences of a CoNLL-style text (UTF-8 bytes): one token per line, whitespace-separated columns,
    the token first and its tag last; a blank line ends a sentence; `-DOCSTART-` lines are skipped.
    `path` names the source in errors (it need not exist: a member inside a wheel, say)."""
    sentences: list[list[str]] = []
    sentence_tags: list[list[str]] = []
    starts: list[int] = []
    tokens: list[str] = []
    tags: list[str] = []
    for number, line in enumerate(utf8.decode("utf-8").split("\n"), start=1):
        columns = line.split()
        if not columns or columns[0] == DOCSTART:
            if tokens:
                sentences.append(tokens)
                sentence_tags.append(tags)
                tokens, tags = [], []
            continue
        if len(columns) < 2:
            raise IngestError(
                path,
                f"line has 1 column ({line.strip()[:60]!r}); expected a token and its tag, separated by whitespace, "
                "with the tag in the last column (a blank line ends a sentence)",
                row=number, field="tag",
            )
        if not tokens:
            starts.append(number)
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append(tokens)
        sentence_tags.append(tags)
    if not sentences:
        raise IngestError(path, "has no sentences (only blank and -DOCSTART- lines)")
    return _token_frame(sentences, sentence_tags, starts)


def _token_frame(tokens: list[list[str]], tags: list[list[str]], source_rows: list[int]) -> pd.DataFrame:
    frame = pd.DataFrame({"tokens": pd.Series(tokens, dtype=object), "tags": pd.Series(tags, dtype=object)})
    frame["source_row"] = pd.Series(np.asarray(source_rows, dtype="int64"))
    return frame


def _read_token_jsonl(path: Path, utf8: bytes, data: DataParams) -> pd.DataFrame:
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    rows: list[int] = []
    for number, line in numbered_lines(utf8):
        record = parse_json_line(path, number, line)
        tokens.append(_json_strings(path, number, record, data.tokens_column, "token"))
        # Tags come from hand-written files too: "B-PER " and "B-PER" are one tag.
        tags.append([tag.strip() for tag in _json_strings(path, number, record, data.tags_column, "tag")])
        rows.append(number)
    if not rows:
        raise IngestError(path, "the file has no JSON records")
    return _token_frame(tokens, tags, rows)


def _json_strings(path: Path, number: int, record: dict[str, Any], name: str, role: str) -> list[str]:
    if name not in record:
        raise IngestError(path, f"record has no {name!r} field (data.{role}s_column); fields: {sorted(record)}",
                          row=number, field=name)
    value = record[name]
    if not isinstance(value, list):
        raise IngestError(path, f"{role}s must be a JSON array of strings, got {json_type(value)} {preview_of(value)}",
                          row=number, field=name)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise IngestError(path, f"{role} {index + 1} (of {len(value)}) must be a string, got {json_type(item)} "
                                    f"{preview_of(item)}", row=number, field=name)
    return value
