"""JSON Lines: one record per line, read by pyarrow; a bad line is named by its number."""

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


def read_jsonl(path: Path, utf8: bytes, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa

    require_columns(path, list(_first_json_record(path, utf8)), data)
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
        return _read_jsonl_records(path, utf8, data)
    texts, labels = table.column(data.text_column), table.column(data.label_column).cast(pa.string())
    lines = utf8.count(b"\n") + (0 if utf8.endswith(b"\n") else 1)
    if texts.null_count or labels.null_count or lines != table.num_rows:
        # A missing/null field, or blank lines that shift line numbers: read record by record.
        return _read_jsonl_records(path, utf8, data)
    # A kept column's nulls and missing fields are "" (text_label_frame); a number in it takes the slow path.
    return text_label_frame(texts, labels, np.arange(1, table.num_rows + 1, dtype="int64"),
                            {name: table.column(name) for name in data.keep_columns})


def _first_json_record(path: Path, utf8: bytes) -> dict[str, Any]:
    # Scan line by line rather than split(): only the first record is needed here.
    start, number = 0, 1
    while start < len(utf8):
        end = utf8.find(b"\n", start)
        end = len(utf8) if end < 0 else end
        if utf8[start:end].strip():
            return parse_json_line(path, number, utf8[start:end])
        start, number = end + 1, number + 1
    raise IngestError(path, "the file has no JSON records")


def numbered_lines(utf8: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(utf8.split(b"\n"), start=1):
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


def _read_jsonl_records(path: Path, utf8: bytes, data: DataParams) -> pd.DataFrame:
    """Record-by-record reader: names the line of any problem; also reads numeric labels as text."""
    texts: list[str] = []
    labels: list[str] = []
    rows: list[int] = []
    kept: dict[str, list[str]] = {name: [] for name in data.keep_columns}
    for number, line in numbered_lines(utf8):
        record = parse_json_line(path, number, line)
        texts.append(_json_text(path, number, record, data.text_column))
        labels.append(_json_label(path, number, record, data.label_column))
        rows.append(number)
        for name, values in kept.items():
            value = record.get(name)
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)  # 2021 -> "2021"
            values.append("" if value is None else text)
    if not rows:
        raise IngestError(path, "the file has no JSON records")
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
