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
gets an error naming the row and field while a clean million-row file is read in well under a second.
Whatever is wrong, the reader raises `IngestError` rather than dropping or merging rows.

Token-classification data (`read_token_file`) comes as CoNLL-style text (.conll, .txt, .iob: one
token per line, whitespace-separated columns with the tag last, a blank line between sentences,
`-DOCSTART-` lines skipped) or as JSON Lines with a list of tokens and a list of tags per record
(data.tokens_column, data.tags_column). Its frame has the columns ``tokens`` and ``tags`` (lists of
str; tags stripped, not yet mapped through data.label_map) and ``source_row``: the line of the
sentence's first token (CoNLL) or of the record (JSON Lines). A sentence whose tokens and tags do not
pair up is read as it is: validation quarantines it with its reason.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams

# Suffix -> reader kind. Everything else is refused: guessing a format silently is how rows get lost.
SUFFIX_KINDS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
# Token-classification files: CoNLL-style text or JSON Lines of token and tag lists.
TOKEN_SUFFIX_KINDS: dict[str, str] = {
    ".conll": "conll",
    ".txt": "conll",
    ".iob": "conll",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DOCSTART = "-DOCSTART-"
DELIMITERS: dict[str, str] = {"csv": ",", "tsv": "\t"}
# Characters that, found in a lone header field, say the file was split on the wrong delimiter.
SUSPECT_DELIMITERS: dict[str, str] = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}

# Longest BOMs first: the UTF-32-LE BOM starts with the UTF-16-LE one.
BYTE_ORDER_MARKS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Large enough for the rows of a typical file to be parsed in parallel; a single record larger than
# a block makes pyarrow fail with "straddling object", and we then retry with one block for the file.
ARROW_BLOCK_SIZE = 16 * 1024 * 1024

REENCODE_HINT = (
    "re-encode the file as UTF-8 (for example `iconv -f WINDOWS-1252 -t UTF-8 in.csv > out.csv`, "
    "or 'CSV UTF-8' in a spreadsheet's Save As)"
)


class IngestError(ValueError):
    """A labelled file that cannot be read as it is; the message names the file, row and field."""

    def __init__(self, path: Path, problem: str, *, row: int | None = None, field: str | None = None) -> None:
        self.path = Path(path)
        self.row = row
        self.field = field
        self.problem = problem
        where = [str(path)]
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


def read_labelled_file(path: Path, data: DataParams) -> pd.DataFrame:
    """Read `path` into a frame with columns text, label (raw, stripped) and source_row."""
    path = Path(path)
    kind = _file_kind(path)
    if kind == "parquet":
        return _read_parquet(path, data)
    utf8 = _utf8_bytes(path, path.read_bytes(), kind)
    if not utf8 or utf8.isspace():
        raise IngestError(path, "the file is empty (only whitespace after decoding)")
    _reject_nul_bytes(path, utf8, kind)
    if kind == "jsonl":
        return _read_jsonl(path, utf8, data)
    return _read_delimited(path, utf8, DELIMITERS[kind], data)


# --- checks shared by all formats -----------------------------------------------------------------


def _file_kind(path: Path, kinds: dict[str, str] = SUFFIX_KINDS) -> str:
    if not path.exists():
        raise IngestError(path, "no such file")
    if path.is_dir():
        raise IngestError(path, "is a directory, expected a file")
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(kinds))
        problem = f"unsupported file type {path.suffix or '(no suffix)'!r}; supported: {supported}"
        if kinds is SUFFIX_KINDS and path.suffix.lower() in TOKEN_SUFFIX_KINDS:
            problem += " (a CoNLL-style token file is read only with task: token-classification)"
        elif kinds is TOKEN_SUFFIX_KINDS and path.suffix.lower() in SUFFIX_KINDS:
            problem += (" for token-classification data (task: token-classification); "
                        "a text-and-label table is read with task: sequence-classification")
        raise IngestError(path, problem)
    if path.stat().st_size == 0:
        raise IngestError(path, "the file is empty (0 bytes)")
    return kind


def _frame(texts: Any, labels: Any, source_rows: Any) -> pd.DataFrame:
    """texts/labels: pyarrow string arrays or lists of str; source_rows: ints."""
    # Labels come from spreadsheets and hand-written files: "positive " and "positive" are one label.
    return pd.DataFrame({
        "text": _str_series(texts),
        "label": _str_series(labels).str.strip(),
        "source_row": pd.Series(np.asarray(source_rows, dtype="int64")),
    })


def _str_series(values: Any) -> pd.Series:
    if hasattr(values, "to_pandas"):  # a pyarrow (chunked) array: no per-value Python objects
        return values.to_pandas().astype("str")
    return pd.Series(values, dtype="str")


def _missing_column_error(path: Path, role: str, name: str, found: list[str], delimiter: str | None) -> IngestError:
    problem = f"no {role} column {name!r} (data.{role}_column); columns found: {found}"
    near = [c for c in found if c.strip().lower() == name.strip().lower() and c != name]
    if near:
        problem += f"; did you mean {near[0]!r}? (names must match exactly)"
    if delimiter is not None and len(found) == 1:
        suspects = [f"{label} ({char!r})" for char, label in SUSPECT_DELIMITERS.items()
                    if char in found[0] and char != delimiter]
        if suspects:
            problem += (
                f"; only one column was found and it contains a {', '.join(suspects)}: the delimiter looks wrong "
                f"({path.suffix} files are read with {delimiter!r}; "
                "save the file as comma-separated .csv or tab-separated .tsv)"
            )
    return IngestError(path, problem, field=name)


def _require_columns(path: Path, found: list[str], data: DataParams, delimiter: str | None = None) -> None:
    for role, name in (("text", data.text_column), ("label", data.label_column)):
        if name not in found:
            raise _missing_column_error(path, role, name, found, delimiter)
        if found.count(name) > 1:
            raise IngestError(path, f"column {name!r} appears {found.count(name)} times in the header", field=name)


# --- encodings ------------------------------------------------------------------------------------


def _utf8_bytes(path: Path, raw: bytes, kind: str) -> bytes:
    """The file's content as UTF-8 without a BOM; a UTF-16/32 file (told by its BOM) is transcoded."""
    for bom, codec in BYTE_ORDER_MARKS:
        if raw.startswith(bom):
            body = raw[len(bom):]
            if codec == "utf-8":
                _check_utf8(path, body, kind, file_offset=len(bom))
                return body
            try:
                return body.decode(codec).encode("utf-8")
            except UnicodeDecodeError as error:
                prefix = body[: error.start].decode(codec, errors="replace")
                row, field = _text_position(prefix, kind)
                raise IngestError(
                    path,
                    f"bytes at byte offset {error.start + len(bom)} are not valid {codec.upper()} "
                    f"(the byte-order mark says {codec.upper()}); re-save the file as UTF-8",
                    row=row, field=field,
                ) from None
    _check_utf8(path, raw, kind, file_offset=0)
    return raw


def _check_utf8(path: Path, body: bytes, kind: str, file_offset: int) -> None:
    try:
        body.decode("utf-8")  # C speed; the decoded copy is dropped at once
    except UnicodeDecodeError as error:
        prefix = body[: error.start].decode("utf-8")
        row, field = _text_position(prefix, kind)
        line = prefix.count("\n") + 1
        line_note = f" (line {line})" if line != row else ""
        offset = error.start + file_offset
        snippet = _line_around(body, error.start).decode("utf-8", errors="replace")
        raise IngestError(
            path,
            f"byte 0x{body[error.start]:02x} at byte offset {offset}{line_note} is not valid UTF-8, near {snippet!r}; "
            f"the file is probably in another encoding such as Latin-1/Windows-1252: {REENCODE_HINT}",
            row=row, field=field,
        ) from None


def _line_around(body: bytes, offset: int, width: int = 40) -> bytes:
    """Up to `width` bytes either side of `offset`, without crossing a line break: the context to show."""
    start = max(body.rfind(b"\n", 0, offset) + 1, offset - width)
    end = body.find(b"\n", offset)
    end = min(end if end >= 0 else len(body), offset + width)
    return body[start:end].rstrip(b"\r")


def _reject_nul_bytes(path: Path, utf8: bytes, kind: str) -> None:
    offset = utf8.find(b"\x00")
    if offset < 0:
        return
    row, field = _text_position(utf8[:offset].decode("utf-8"), kind)
    problem = (f"contains a NUL byte (0x00) at byte offset {offset} (of the UTF-8 text); "
               "text files must not contain NUL bytes")
    head = utf8[:1000]
    if head.count(b"\x00") * 4 > len(head):  # a quarter of the bytes: text in a two-byte encoding
        problem += "; so many NULs suggest UTF-16 without a byte-order mark: re-save the file as UTF-8"
    raise IngestError(path, problem, row=row, field=field)


def _text_position(prefix: str, kind: str) -> tuple[int, str | None]:
    """Row (and field name, where cheap to know) of the character that follows `prefix`."""
    if kind in ("jsonl", "conll"):
        return prefix.count("\n") + 1, None
    delimiter = DELIMITERS[kind]
    header: list[str] = []
    row, field_index = 1, 0
    # The sentinel makes the record holding the bad character the last one the csv module yields.
    with _unlimited_csv_fields():
        reader = csv.reader(io.StringIO(prefix + "x", newline=""), delimiter=delimiter)
        previous_end = 0
        for record in reader:
            if not header:
                header = record
            row, field_index = previous_end + 1, len(record) - 1
            previous_end = reader.line_num
    field = header[field_index] if row > 1 and 0 <= field_index < len(header) else None
    return row, field


@contextlib.contextmanager
def _unlimited_csv_fields() -> Iterator[None]:
    # The csv module refuses fields over 128 KiB by default; a 10 MB review is legitimate.
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


# --- CSV / TSV ------------------------------------------------------------------------------------


def _read_delimited(path: Path, utf8: bytes, delimiter: str, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa

    header = _csv_header(utf8, delimiter)
    _require_columns(path, header, data, delimiter)
    try:
        table = _arrow_csv(utf8, delimiter, [data.text_column, data.label_column])
    except pa.ArrowInvalid as error:
        _walk_csv_records(path, utf8, delimiter, len(header))  # raises with the row, if it can find it
        raise IngestError(path, f"could not be parsed: {error}") from None
    if table.num_rows == 0:
        raise IngestError(path, f"has a header ({header}) but no data rows")
    source_rows = _csv_source_rows(path, utf8, delimiter, len(header), table.num_rows)
    return _frame(table.column(data.text_column), table.column(data.label_column), source_rows)


def _csv_header(utf8: bytes, delimiter: str) -> list[str]:
    prefix = utf8[: 1 << 16].decode("utf-8", errors="ignore")
    with _unlimited_csv_fields():
        return next(csv.reader(io.StringIO(prefix, newline=""), delimiter=delimiter), [])


def _with_whole_file_fallback(read: Callable[[int], Any], size: int) -> Any:
    """Read in blocks; a record straddling two blocks (a very long text) makes pyarrow give up,
    so read again with one block holding the whole file."""
    import pyarrow as pa

    try:
        return read(ARROW_BLOCK_SIZE)
    except pa.ArrowInvalid as error:
        if "straddl" not in str(error):
            raise
        return read(size + 1)


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

    return _with_whole_file_fallback(read, len(utf8))


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
    with _unlimited_csv_fields():
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


# --- JSON Lines -----------------------------------------------------------------------------------


def _read_jsonl(path: Path, utf8: bytes, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa

    _require_columns(path, list(_first_json_record(path, utf8)), data)
    table = None
    # Labels are usually strings, sometimes integers (0/1): both have a fast path.
    for label_type in (pa.string(), pa.int64()):
        try:
            table = _arrow_jsonl(utf8, {data.text_column: pa.string(), data.label_column: label_type})
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
    return _frame(texts, labels, np.arange(1, table.num_rows + 1, dtype="int64"))


def _first_json_record(path: Path, utf8: bytes) -> dict[str, Any]:
    # Scan line by line rather than split(): only the first record is needed here.
    start, number = 0, 1
    while start < len(utf8):
        end = utf8.find(b"\n", start)
        end = len(utf8) if end < 0 else end
        if utf8[start:end].strip():
            return _parse_json_line(path, number, utf8[start:end])
        start, number = end + 1, number + 1
    raise IngestError(path, "the file has no JSON records")


def _numbered_lines(utf8: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(utf8.split(b"\n"), start=1):
        if line.strip():
            yield number, line


def _parse_json_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        hint = ""
        if number == 1 and line.lstrip().startswith(b"["):
            hint = "; the file looks like a JSON array: JSON Lines needs one object per line"
        raise IngestError(path, f"not valid JSON: {error.msg} at column {error.colno}{hint}", row=number) from None
    if not isinstance(record, dict):
        raise IngestError(path, f"expected a JSON object per line, got {_json_type(record)}", row=number)
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

    return _with_whole_file_fallback(read, len(utf8))


def _read_jsonl_records(path: Path, utf8: bytes, data: DataParams) -> pd.DataFrame:
    """Record-by-record reader: names the line of any problem; also reads numeric labels as text."""
    texts: list[str] = []
    labels: list[str] = []
    rows: list[int] = []
    for number, line in _numbered_lines(utf8):
        record = _parse_json_line(path, number, line)
        texts.append(_json_text(path, number, record, data.text_column))
        labels.append(_json_label(path, number, record, data.label_column))
        rows.append(number)
    if not rows:
        raise IngestError(path, "the file has no JSON records")
    return _frame(texts, labels, rows)


def _json_text(path: Path, number: int, record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise IngestError(path, f"record has no {name!r} field; fields: {sorted(record)}", row=number, field=name)
    value = record[name]
    if not isinstance(value, str):
        raise IngestError(path, f"text must be a JSON string, got {_json_type(value)} {_preview(value)}",
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
    raise IngestError(path, f"label must be a string or a number, got {_json_type(value)} {_preview(value)}",
                      row=number, field=name)


def _json_type(value: Any) -> str:
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


def _preview(value: Any) -> str:
    return json.dumps(value)[:60]


# --- token classification: CoNLL-style text and JSON Lines of token lists --------------------------


def read_token_file(path: Path, data: DataParams) -> pd.DataFrame:
    """Read a token-classification file into a frame with columns tokens, tags (lists of str) and source_row."""
    path = Path(path)
    kind = _file_kind(path, TOKEN_SUFFIX_KINDS)
    utf8 = _utf8_bytes(path, path.read_bytes(), kind)
    if not utf8 or utf8.isspace():
        raise IngestError(path, "the file is empty (only whitespace after decoding)")
    _reject_nul_bytes(path, utf8, kind)
    if kind == "jsonl":
        return _read_token_jsonl(path, utf8, data)
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
    for number, line in _numbered_lines(utf8):
        record = _parse_json_line(path, number, line)
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
        raise IngestError(path, f"{role}s must be a JSON array of strings, got {_json_type(value)} {_preview(value)}",
                          row=number, field=name)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise IngestError(path, f"{role} {index + 1} (of {len(value)}) must be a string, got {_json_type(item)} "
                                    f"{_preview(item)}", row=number, field=name)
    return value


# --- Parquet --------------------------------------------------------------------------------------


def _read_parquet(path: Path, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise IngestError(path, f"is not a readable Parquet file ({error})") from None
    _require_columns(path, list(schema.names), data)
    _check_parquet_type(path, data.text_column, schema.field(data.text_column).type, allow_integers=False)
    _check_parquet_type(path, data.label_column, schema.field(data.label_column).type, allow_integers=True)
    try:
        table = pq.read_table(path, columns=[data.text_column, data.label_column])
    except (pa.ArrowException, OSError) as error:
        raise IngestError(path, f"could not be read ({error})") from None
    if table.num_rows == 0:
        raise IngestError(path, "has no rows")
    columns = {}
    for name in (data.text_column, data.label_column):
        column = table.column(name)
        if column.null_count:
            first_null = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise IngestError(
                path, f"value is null ({column.null_count} null value(s) in this column; this is the first)",
                row=first_null + 1, field=name,
            )
        # Integer labels become "1"/"0"; dictionary-encoded strings become plain strings.
        columns[name] = column.cast(pa.string())
    return _frame(columns[data.text_column], columns[data.label_column],
                  np.arange(1, table.num_rows + 1, dtype="int64"))


def _check_parquet_type(path: Path, name: str, arrow_type: Any, *, allow_integers: bool) -> None:
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    is_text = (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
               or pa.types.is_string_view(value_type))
    if is_text or (allow_integers and pa.types.is_integer(value_type)):
        return
    wanted = "strings or integers" if allow_integers else "strings"
    raise IngestError(path, f"column {name!r} has type {arrow_type}; it must hold {wanted}", field=name)
