"""JSON Lines: one record per line, read by pyarrow a piece of lines at a time; a bad line is named by its number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    IngestError,
    require_columns,
    text_label_frame,
    with_whole_file_fallback,
)
from components.data.readers.stream import check_piece, line_cut, text_pieces


def iter_jsonl(path: Path, data: DataParams) -> Iterator[pd.DataFrame]:
    """The file's records as frames, one per piece of whole lines (readers/stream.py)."""
    records = 0
    for piece in text_pieces(path, line_cut):
        check_piece(path, piece, "jsonl")
        if piece.text_offset == 0:
            require_columns(path, list(_first_json_record(path, piece.data, piece.line)), data)
        frame = _read_jsonl_piece(path, piece.data, piece.line, data)
        records += len(frame)
        if len(frame):
            yield frame
    if records == 0:
        raise IngestError(path, "the file has no JSON records")


def _read_jsonl_piece(path: Path, utf8: bytes, first_line: int, data: DataParams) -> pd.DataFrame:
    """The records of `utf8` (whole lines, the first being line `first_line`) as a frame."""
    import pyarrow as pa

    if not utf8.strip():
        return _read_jsonl_records(path, b"", first_line, data)  # blank lines only: no records
    table = None
    # Labels are usually strings, sometimes integers (0/1): both have a fast path.
    for label_type in (pa.string(), pa.int64()):
        try:
            table = _arrow_jsonl(utf8, {data.text_column: pa.string(), data.label_column: label_type,
                                        **{name: pa.string() for name in data.keep_columns}})
            break
        except pa.ArrowInvalid:
            continue
    if table is None:
        # pyarrow's messages count rows per block, not per file; the slow reader names the line.
        return _read_jsonl_records(path, utf8, first_line, data)
    texts, labels = table.column(data.text_column), table.column(data.label_column).cast(pa.string())
    lines = utf8.count(b"\n") + (0 if utf8.endswith(b"\n") else 1)
    if texts.null_count or labels.null_count or lines != table.num_rows:
        # A missing/null field, or blank lines that shift line numbers: read record by record.
        return _read_jsonl_records(path, utf8, first_line, data)
    # A kept column's nulls and missing fields are "" (text_label_frame); a number in it takes the slow path.
    return text_label_frame(texts, labels, np.arange(first_line, first_line + table.num_rows, dtype="int64"),
                            {name: table.column(name) for name in data.keep_columns})


def _first_json_record(path: Path, utf8: bytes, first_line: int = 1) -> dict[str, Any]:
    # Scan line by line rather than split(): only the first record is needed here.
    start, number = 0, first_line
    while start < len(utf8):
        end = utf8.find(b"\n", start)
        end = len(utf8) if end < 0 else end
        if utf8[start:end].strip():
            return parse_json_line(path, number, utf8[start:end])
        start, number = end + 1, number + 1
    raise IngestError(path, "the file has no JSON records")


def numbered_lines(utf8: bytes, first: int = 1) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(utf8.split(b"\n"), start=first):
        if line.strip():
            yield number, line


def parse_json_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        hint = ""
        if number == 1 and line.lstrip().startswith(b"["):
            hint = "; the file looks like a JSON array: JSON Lines needs one object per line"
        raise IngestError(path, f"not valid JSON: {error.msg} at column {error.colno}{hint}", row=number) from None
    if not isinstance(record, dict):
        raise IngestError(path, f"expected a JSON object per line, got {json_type(record)}", row=number)
    return record


def _arrow_jsonl(utf8: bytes, column_types: dict[str, Any]) -> Any:
    import pyarrow as pa
    import pyarrow.json as pa_json

    # An explicit schema: without it pyarrow turns a text like "2020-01-01" into a timestamp.
    parse_options = pa_json.ParseOptions(
        explicit_schema=pa.schema(list(column_types.items())),
        unexpected_field_behavior="ignore",
    )

    def read(block_size: int) -> Any:
        return pa_json.read_json(pa.BufferReader(utf8), read_options=pa_json.ReadOptions(block_size=block_size),
                                 parse_options=parse_options)

    return with_whole_file_fallback(read, len(utf8))


def _read_jsonl_records(path: Path, utf8: bytes, first_line: int, data: DataParams) -> pd.DataFrame:
    """Record-by-record reader: names the line of any problem; also reads numeric labels as text."""
    texts: list[str] = []
    labels: list[str] = []
    rows: list[int] = []
    kept: dict[str, list[str]] = {name: [] for name in data.keep_columns}
    for number, line in numbered_lines(utf8, first_line):
        record = parse_json_line(path, number, line)
        texts.append(_json_text(path, number, record, data.text_column))
        labels.append(_json_label(path, number, record, data.label_column))
        rows.append(number)
        for name, values in kept.items():
            value = record.get(name)
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)  # 2021 -> "2021"
            values.append("" if value is None else text)
    return text_label_frame(texts, labels, rows, kept)


def _json_text(path: Path, number: int, record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise IngestError(path, f"record has no {name!r} field; fields: {sorted(record)}", row=number, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise IngestError(path, f"text must be a JSON string, got {json_type(value)} {preview_of(value)}",
                          row=number, field=name)
    return value


def _json_label(path: Path, number: int, record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise IngestError(path, f"record has no {name!r} field; fields: {sorted(record)}", row=number, field=name)
    value = record[name]
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)  # 1 -> "1", true -> "true": the label as written in the file
    raise IngestError(path, f"label must be a string or a number, got {json_type(value)} {preview_of(value)}",
                      row=number, field=name)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string"


def preview_of(value: Any) -> str:
    return json.dumps(value)[:60]
