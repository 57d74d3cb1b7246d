"""CSV and TSV, read by pyarrow's C reader; Python walks the records only when something looks wrong."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    IngestError,
    require_columns,
    text_label_frame,
    unlimited_csv_fields,
    with_whole_file_fallback,
)


def read_delimited(path: Path, utf8: bytes, delimiter: str, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa

    header = _csv_header(utf8, delimiter)
    require_columns(path, header, data, delimiter)
    try:
        table = _arrow_csv(utf8, delimiter, [data.text_column, data.label_column, *data.keep_columns])
    except pa.ArrowInvalid as error:
        _walk_csv_records(path, utf8, delimiter, len(header))  # raises with the row, if it can find it
        raise IngestError(path, f"could not be parsed: {error}") from None
    if table.num_rows == 0:
        raise IngestError(path, f"has a header ({header}) but no data rows")
    source_rows = _csv_source_rows(path, utf8, delimiter, len(header), table.num_rows)
    return text_label_frame(table.column(data.text_column), table.column(data.label_column), source_rows,
                            {name: table.column(name) for name in data.keep_columns})


def _csv_header(utf8: bytes, delimiter: str) -> list[str]:
    prefix = utf8[: 1 << 16].decode("utf-8", errors="ignore")
    with unlimited_csv_fields():
        return next(csv.reader(io.StringIO(prefix, newline=""), delimiter=delimiter), [])


def _arrow_csv(utf8: bytes, delimiter: str, columns: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    def read(block_size: int) -> Any:
        return pa_csv.read_csv(
            pa.BufferReader(utf8),
            read_options=pa_csv.ReadOptions(block_size=block_size),
            # Quoted newlines are legal CSV (multi-paragraph reviews); blank lines are skipped.
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # Every field a string, "" kept as "" (never NaN): "1" stays "1", "NA" stays "NA".
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns,
                column_types={name: pa.string() for name in columns},
                strings_can_be_null=False,
            ),
        )

    return with_whole_file_fallback(read, len(utf8))


def _csv_source_rows(path: Path, utf8: bytes, delimiter: str, n_fields: int, n_records: int) -> np.ndarray:
    lines = utf8.count(b"\n") + (0 if utf8.endswith(b"\n") else 1)
    if lines == n_records + 1:
        # Every record is one line and there are no blank lines: line number = record number + 1.
        return np.arange(2, n_records + 2, dtype="int64")
    # Quoted newlines, blank lines, or a quote that swallowed the rest of the file: walk the records.
    starts = _walk_csv_records(path, utf8, delimiter, n_fields)
    if len(starts) != n_records:
        raise IngestError(
            path,
            f"pyarrow read {n_records} records but Python's csv module reads {len(starts)}; "
            "check the quoting of the file",
        )
    return np.asarray(starts, dtype="int64")


def _walk_csv_records(path: Path, utf8: bytes, delimiter: str, n_fields: int) -> list[int]:
    """The start line of each data record; raises IngestError on bad quoting or a wrong field count."""
    text = utf8.decode("utf-8")
    starts: list[int] = []
    # A short record is "truncated" if it is the last one; keep it until we know whether more follow.
    short_record: tuple[int, list[str]] | None = None
    with unlimited_csv_fields():
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        next(reader, None)  # header
        previous_end = reader.line_num
        while True:
            start = previous_end + 1
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise _quoting_error(path, error, start, reader.line_num) from None
            previous_end = reader.line_num
            if not record:
                continue  # a blank line: not a record (pyarrow skips it too)
            if short_record is not None:
                raise _field_count_error(path, *short_record, n_fields, delimiter, last=False)
            if len(record) > n_fields:
                raise _field_count_error(path, start, record, n_fields, delimiter, last=False)
            if len(record) < n_fields:
                short_record = (start, record)
                continue
            starts.append(start)
    if short_record is not None:
        raise _field_count_error(path, *short_record, n_fields, delimiter, last=True)
    return starts


def _quoting_error(path: Path, error: csv.Error, start: int, line: int) -> IngestError:
    if "unexpected end of data" in str(error):
        return IngestError(
            path,
            "a quoted field that starts in this row is never closed (unbalanced quote, or the file was cut off); "
            "everything after it would have been read as one field",
            row=start,
        )
    return IngestError(
        path,
        f"malformed quoting on line {line} ({error}); a field containing quotes must be quoted as a whole, "
        'with inner quotes doubled: "He said ""hi"""',
        row=start,
    )


def _field_count_error(
    path: Path, start: int, record: list[str], n_fields: int, delimiter: str, *, last: bool
) -> IngestError:
    preview = delimiter.join(record)[:80]
    problem = f"has {len(record)} field(s) but the header has {n_fields}: {preview!r}"
    if len(record) < n_fields and last:
        problem += "; this is the last line and it looks truncated (was the file cut off?)"
    elif len(record) < n_fields:
        problem += "; a field is missing (truncated line?)"
    else:
        problem += f"; a field containing {delimiter!r} must be quoted"
    return IngestError(path, problem, row=start)
