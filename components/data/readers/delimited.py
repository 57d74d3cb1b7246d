"""CSV and TSV, a piece at a time (readers/stream.py), each piece read by pyarrow's C reader; Python
walks a piece's records only when something looks wrong.

A piece ends where a record ends. Where that is comes from counting quotes: a newline with an even number
of quotes before it lies outside quoted fields, so long as every quote is where RFC 4180 puts one (opening
a field, closing it, or doubled inside it). `_stray_quote` finds the first one that is not (`5" screen`,
`"a"b`); from there pieces are cut where Python's csv module, which reads such quotes as pyarrow does,
ends a record.

The row of a record (the line it starts on) is its piece's first row plus the lines of the records before
it: one each, plus the newlines inside their fields. That holds when the piece has no blank lines, no
lone "\\r" line ends and no stray quotes, which the counts prove (`_counted_rows`); otherwise the piece is
walked with the csv module as the whole file was before.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    DELIMITERS,
    IngestError,
    require_columns,
    text_label_frame,
    unlimited_csv_fields,
    with_whole_file_fallback,
)
from components.data.readers.stream import check_piece, lone_carriage_returns, text_pieces

# pyarrow parses a piece in blocks of this size (on as many threads as there are cores; on two cores 2 MiB
# and 16 MiB blocks read as fast); a record longer than a block makes it read the piece again as one block.
PIECE_BLOCK_BYTES = 2 * 1024 * 1024
QUOTE = ord('"')


def iter_delimited(path: Path, kind: str, data: DataParams) -> Iterator[pd.DataFrame]:
    """The file's records as frames (text, label, source_row, kept columns), one per piece."""
    delimiter = DELIMITERS[kind]
    columns = [data.text_column, data.label_column, *data.keep_columns]
    header: list[str] | None = None
    records = 0
    for piece in text_pieces(path, lambda buffer: _record_cut(buffer, delimiter)):
        check_piece(path, piece, kind, header)
        body, first_row = piece.data, piece.row
        if header is None:
            header, header_bytes, header_lines = _csv_header(piece.data, delimiter)
            require_columns(path, header, data, delimiter)
            body, first_row = piece.data[header_bytes:], piece.row + header_lines
        frame = _read_piece(path, body, delimiter, header, columns, first_row, piece.final)
        records += len(frame)
        if len(frame):
            yield frame
    if records == 0:
        raise IngestError(path, f"has a header ({header}) but no data rows")


def _csv_header(text: bytes, delimiter: str) -> tuple[list[str], int, int]:
    """The first record (the header), the bytes it takes (line end included) and its lines."""
    for size in (1 << 16, len(text)):
        prefix = text[:size].decode("utf-8", errors="ignore")  # a character cut at `size` comes after the header
        lines = _CountedLines(prefix)
        with unlimited_csv_fields():
            header = next(csv.reader(lines, delimiter=delimiter), [])
        if lines.ended or size >= len(text):
            return header, len(prefix[: lines.consumed].encode("utf-8")), lines.count
    raise AssertionError("unreachable")


class _CountedLines:
    """The lines of a text (as the csv module splits them) for csv.reader, counting what it took."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines = iter(io.StringIO(text, newline=""))
        self.consumed = 0  # characters
        self.count = 0  # lines
        self.exhausted = False  # the reader asked for a line after the last

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            line = next(self._lines)
        except StopIteration:
            self.exhausted = True
            raise
        self.consumed += len(line)
        self.count += 1
        return line

    @property
    def ended(self) -> bool:
        """The record the reader just gave ended with a line end. (The csv module takes the end of the text
        for one, but where the text is a buffer cut short, the record may go on.)"""
        return not self.exhausted and self._text[self.consumed - 1: self.consumed] in ("\r", "\n")


def _record_cut(buffer: bytes, delimiter: str) -> int:
    """How much of `buffer` (which starts at a record) a piece may take: up to the end of a record, as
    late as can be found cheaply; 0 when no record ends in it."""
    quotes = _quote_positions(buffer)
    stray = _stray_quote(buffer, quotes, delimiter)
    end = buffer.rfind(b"\n", 0, stray)
    # A newline outside quotes (an even count before it) ends a record; a stray quote upsets the count after it.
    while end >= 0 and int(np.searchsorted(quotes, end)) % 2:
        end = buffer.rfind(b"\n", 0, end)
    if end >= 0:
        return end + 1
    # Past a stray quote, or in a file whose lines end in a lone "\r" (old Mac), ask the csv module.
    return _csv_module_cut(buffer, delimiter) if stray < len(buffer) or b"\r" in buffer else 0


def _quote_positions(text: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == QUOTE)


def _stray_quote(text: bytes, quotes: np.ndarray, delimiter: str) -> int:
    """Offset of the first quote that does not open, close or double inside a quoted field, counting from
    `text`'s start at a record (len(text) if none). Up to it, a quote count tells quoted from unquoted."""
    if not len(quotes):
        return len(text)
    codes = np.frombuffer(text, dtype=np.uint8)
    boundary = np.array([ord(delimiter), ord("\n"), ord("\r"), QUOTE], dtype=np.uint8)
    opening, closing = quotes[0::2], quotes[1::2]
    # An opening quote starts a field (after a delimiter or a line end) or is the second of a doubled pair.
    opening_ok = (opening == 0) | np.isin(codes[np.maximum(opening - 1, 0)], boundary)
    # A closing quote ends a field (a delimiter or line end follows) or is the first of a doubled pair.
    after = np.minimum(closing + 1, len(codes) - 1)
    closing_ok = (closing == len(codes) - 1) | np.isin(codes[after], boundary)
    bad = np.concatenate([opening[~opening_ok], closing[~closing_ok]])
    return int(bad.min()) if len(bad) else len(text)


def _csv_module_cut(buffer: bytes, delimiter: str) -> int:
    """The end of the last record that ends in `buffer`, as Python's csv module (not strict: as pyarrow
    reads a stray quote) finds it; 0 if none does."""
    text = buffer.decode("utf-8", errors="surrogateescape")  # checked later, piece by piece
    lines = _CountedLines(text)
    ends = [0]
    with unlimited_csv_fields():
        for _ in csv.reader(lines, delimiter=delimiter):
            if not lines.ended:
                break  # cut off by the end of the buffer
            ends.append(lines.consumed)
    # A "\r" at the very end may be the first half of a "\r\n".
    end = ends[-2] if len(ends) > 1 and ends[-1] == len(text) and text.endswith("\r") else ends[-1]
    return len(text[:end].encode("utf-8", errors="surrogateescape"))


def _read_piece(path: Path, body: bytes, delimiter: str, header: list[str], columns: list[str],
                first_row: int, final: bool) -> pd.DataFrame:
    """The records of `body` (whole records, starting on row `first_row`) as a frame."""
    import pyarrow as pa

    if not body[:64].strip(b"\r\n") and not body.strip(b"\r\n"):  # the first bytes spare a copy of the piece
        return text_label_frame([], [], [], {name: [] for name in columns[2:]})  # blank lines only
    try:
        table = _arrow_csv(body, delimiter, header, columns)
    except pa.ArrowInvalid as error:
        _walk_csv_records(path, body, delimiter, len(header), first_row, final)  # raises with the row, if it can
        raise IngestError(path, f"could not be parsed: {error}") from None
    source_rows = _csv_source_rows(path, body, delimiter, len(header), table, columns, first_row, final)
    return text_label_frame(table.column(columns[0]), table.column(columns[1]), source_rows,
                            {name: table.column(name) for name in columns[2:]})


def _arrow_csv(body: bytes, delimiter: str, header: list[str], columns: list[str]) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    def read(block_size: int) -> Any:
        return pa_csv.read_csv(
            pa.BufferReader(body),
            # The header was read from the first piece; every piece's first line is a record.
            read_options=pa_csv.ReadOptions(block_size=block_size, column_names=header),
            # Quoted newlines are legal CSV (multi-paragraph reviews); blank lines are skipped.
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # Every field a string, "" kept as "" (never NaN): "1" stays "1", "NA" stays "NA".
            convert_options=pa_csv.ConvertOptions(
                include_columns=columns,
                column_types={name: pa.string() for name in columns},
                strings_can_be_null=False,
            ),
        )

    return with_whole_file_fallback(read, len(body), PIECE_BLOCK_BYTES)


def _csv_source_rows(path: Path, body: bytes, delimiter: str, n_fields: int, table: Any, columns: list[str],
                     first_row: int, final: bool) -> np.ndarray:
    n_records = table.num_rows
    # A lone "\r" ends a line for the csv module (and old Mac files end every line so) but not for a count
    # of "\n": only the walk counts such lines.
    if not lone_carriage_returns(body):
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        if lines == n_records:
            # Every record is one line and there are no blank lines: rows follow one another.
            return np.arange(first_row, first_row + n_records, dtype="int64")
        counted = _counted_rows(body, delimiter, table, columns, first_row, lines)
        if counted is not None:
            return counted
    # Blank lines, a lone "\r", a stray quote, or one that swallowed the rest of the file: walk the records.
    starts = _walk_csv_records(path, body, delimiter, n_fields, first_row, final)
    if len(starts) != n_records:
        raise IngestError(
            path,
            f"pyarrow read {n_records} records but Python's csv module reads {len(starts)}; "
            "check the quoting of the file",
        )
    return np.asarray(starts, dtype="int64")


def _counted_rows(body: bytes, delimiter: str, table: Any, columns: list[str], first_row: int,
                  lines: int) -> np.ndarray | None:
    """Each record's row from the newlines inside its fields, where the counts prove that every line of
    `body` (which has no lone "\\r") is a record's or inside one of its fields; None where they do not."""
    import pyarrow.compute as pc

    quotes = _quote_positions(body)
    if len(quotes) % 2 or _stray_quote(body, quotes, delimiter) < len(body):
        return None  # quotes the count cannot follow: the fields may not be what the lines say
    inside = np.zeros(table.num_rows, dtype="int64")
    for name in columns:
        inside += pc.count_substring(table.column(name), "\n").to_numpy(zero_copy_only=False)
    # Lines = records + newlines inside the columns read + inside the others + blank lines: equality with
    # the first two says the other two are zero.
    if lines != table.num_rows + int(inside.sum()):
        return None
    before = np.concatenate([[0], np.cumsum(inside)[:-1]])
    return first_row + np.arange(table.num_rows, dtype="int64") + before


def _walk_csv_records(path: Path, body: bytes, delimiter: str, n_fields: int, first_row: int,
                      final: bool) -> list[int]:
    """The start row of each record of `body` (which starts on row `first_row`, after the header); raises
    IngestError on bad quoting or a wrong field count. `final`: no record follows `body`."""
    text = body.decode("utf-8")
    starts: list[int] = []
    # A short record is "truncated" if it is the last one; keep it until we know whether more follow.
    short_record: tuple[int, list[str]] | None = None
    with unlimited_csv_fields():
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        previous_end = 0
        while True:
            start = first_row + previous_end
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise _quoting_error(path, error, start, first_row - 1 + reader.line_num) from None
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
        raise _field_count_error(path, *short_record, n_fields, delimiter, last=final)
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
