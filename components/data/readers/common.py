"""What every reader shares: the error that names file, row and field, the file kinds, column
checks, and turning bytes into checked UTF-8."""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import hashlib
import io
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
    ".json": "label-studio",  # a Label Studio export (readers/label_studio.py): the labelling queue coming back
}
# Token-classification files: CoNLL-style text or JSON Lines of token and tag lists.
TOKEN_SUFFIX_KINDS: dict[str, str] = {
    ".conll": "conll",
    ".txt": "conll",
    ".iob": "conll",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "label-studio",
}
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


def _check_readable(path: Path) -> None:
    """Follow symbolic links as opening would; say what stands in the way in the file's terms."""
    try:
        path.stat()
    except FileNotFoundError:
        dangling = path.is_symlink()
        raise IngestError(path, "is a symbolic link to a missing file" if dangling else "no such file") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise IngestError(path, "is a symbolic link that loops back on itself; point it at a real file") from None
        raise IngestError(path, f"cannot be read: {error.strerror or error}") from None


def _check_file(path: Path) -> None:
    _check_readable(path)
    if path.is_dir():
        raise IngestError(path, "is a directory, expected a file")


def file_kind(path: Path, kinds: dict[str, str] = SUFFIX_KINDS) -> str:
    _check_file(path)
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


def text_label_frame(texts: Any, labels: Any, source_rows: Any, kept: dict[str, Any] | None = None) -> pd.DataFrame:
    """texts/labels: pyarrow string arrays or lists of str; source_rows: ints; kept: data.keep_columns'
    values by column (pyarrow string arrays or lists of str; null/None becomes "")."""
    # Labels come from spreadsheets and hand-written files: "positive " and "positive" are one label.
    frame = pd.DataFrame({
        "text": _str_series(texts),
        "label": _str_series(labels).str.strip(),
        "source_row": pd.Series(np.asarray(source_rows, dtype="int64")),
    })
    for name, values in (kept or {}).items():
        if hasattr(values, "to_pandas"):  # before to_pandas: a null would become the text "None"
            import pyarrow.compute as pc

            values = pc.fill_null(values, "")
        frame[name] = _str_series(values).fillna("")
    return frame


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


def require_columns(path: Path, found: list[str], data: DataParams, delimiter: str | None = None) -> None:
    for role, name in (("text", data.text_column), ("label", data.label_column)):
        if name not in found:
            raise _missing_column_error(path, role, name, found, delimiter)
        if found.count(name) > 1:
            raise IngestError(path, f"column {name!r} appears {found.count(name)} times in the header", field=name)
    for name in data.keep_columns:
        if name not in found:
            problem = f"no column {name!r} (named in data.keep_columns); columns found: {found}"
            near = [c for c in found if c.strip().lower() == name.strip().lower()]
            raise IngestError(path, problem + (f"; did you mean {near[0]!r}? (names must match exactly)" if near
                                               else "; add it to the file or remove it from data.keep_columns"),
                              field=name)
        if found.count(name) > 1:
            raise IngestError(path, f"column {name!r} appears {found.count(name)} times in the header", field=name)


def utf8_bytes(path: Path, raw: bytes, kind: str) -> bytes:
    """The file's content as UTF-8 without a BOM; a UTF-16/32 file (told by its BOM) is transcoded."""
    for bom, codec in BYTE_ORDER_MARKS:
        if raw.startswith(bom):
            body = raw[len(bom):]
            if codec == "utf-8":
                check_utf8(path, body, kind, file_offset=len(bom))
                return body
            try:
                return body.decode(codec).encode("utf-8")
            except UnicodeDecodeError as error:
                prefix = body[: error.start].decode(codec, errors="replace")
                row, field = text_position(prefix, kind)
                raise IngestError(
                    path,
                    f"bytes at byte offset {error.start + len(bom)} are not valid {codec.upper()} "
                    f"(the byte-order mark says {codec.upper()}); re-save the file as UTF-8",
                    row=row, field=field,
                ) from None
    check_utf8(path, raw, kind, file_offset=0)
    return raw


def check_utf8(path: Path, body: bytes, kind: str, file_offset: int, *, header: list[str] | None = None,
               first_row: int = 1, first_line: int = 1) -> None:
    """Raise naming offset, line, row and field of the first byte of `body` that is not UTF-8. `body` is the
    file from `file_offset` on, starting at a record that begins on line `first_line` (row `first_row` as the
    csv module counts); `header`: the CSV header when `body` starts after it."""
    try:
        body.decode("utf-8")  # C speed; the decoded copy is dropped at once
    except UnicodeDecodeError as error:
        prefix = body[: error.start].decode("utf-8")
        row, field = text_position(prefix, kind, header, first_row)
        line = first_line + prefix.count("\n")
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


def reject_nul_bytes(path: Path, utf8: bytes, kind: str, *, text_offset: int = 0, head: bytes | None = None,
                     header: list[str] | None = None, first_row: int = 1) -> None:
    """Raise if `utf8` (the text from byte `text_offset` on, starting at a record on row `first_row`) holds a
    NUL byte; `head`: the text's first bytes, for the hint (defaults to `utf8`'s)."""
    offset = utf8.find(b"\x00")
    if offset < 0:
        return
    row, field = text_position(utf8[:offset].decode("utf-8"), kind, header, first_row)
    problem = (f"contains a NUL byte (0x00) at byte offset {text_offset + offset} (of the UTF-8 text); "
               "text files must not contain NUL bytes")
    head = (utf8 if head is None else head)[:1000]
    if head.count(b"\x00") * 4 > len(head):  # a quarter of the bytes: text in a two-byte encoding
        problem += "; so many NULs suggest UTF-16 without a byte-order mark: re-save the file as UTF-8"
    raise IngestError(path, problem, row=row, field=field)


def text_position(prefix: str, kind: str, header: list[str] | None = None,
                  first_row: int = 1) -> tuple[int, str | None]:
    """Row (and field name, where cheap to know) of the character that follows `prefix`, a text that starts
    at a record on row `first_row`. A CSV `prefix` starts with the header unless `header` is given."""
    if kind in ("jsonl", "conll", "label-studio"):
        return first_row + prefix.count("\n"), None
    delimiter = DELIMITERS[kind]
    data_only = header is not None
    names: list[str] = list(header or [])
    row, field_index = first_row, 0
    # The sentinel makes the record holding the bad character the last one the csv module yields.
    with unlimited_csv_fields():
        reader = csv.reader(io.StringIO(prefix + "x", newline=""), delimiter=delimiter)
        previous_end = 0
        for record in reader:
            if not names:
                names = record
            row, field_index = first_row + previous_end, len(record) - 1
            previous_end = reader.line_num
    in_header = not data_only and row == first_row
    field = names[field_index] if not in_header and 0 <= field_index < len(names) else None
    return row, field


def with_whole_file_fallback(read: Callable[[int], Any], size: int, block_size: int = ARROW_BLOCK_SIZE) -> Any:
    """Read in blocks; a record straddling two blocks (a very long text) makes pyarrow give up,
    so read again with one block holding the whole file."""
    import pyarrow as pa

    try:
        return read(block_size)
    except pa.ArrowInvalid as error:
        if "straddl" not in str(error):
            raise
        return read(size + 1)


@contextlib.contextmanager
def unlimited_csv_fields() -> Iterator[None]:
    # The csv module refuses fields over 128 KiB by default; a 10 MB review is legitimate.
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_utf8(path: Path, kind: str) -> bytes:
    """The file's text as checked UTF-8 bytes: decoded by its byte-order mark, neither empty nor
    holding NUL bytes."""
    utf8 = utf8_bytes(path, path.read_bytes(), kind)
    if not utf8 or utf8.isspace():
        raise IngestError(path, "the file is empty (only whitespace after decoding)")
    reject_nul_bytes(path, utf8, kind)
    return utf8


def file_digest(path: Path, block_size: int = 1 << 20) -> str:
    """The sha256 (hex) of the file's bytes, read a block at a time: a large file never sits in memory.
    A path that is no readable file raises the IngestError the readers would."""
    path = Path(path)
    _check_file(path)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(block_size):
                digest.update(block)
    except OSError as error:
        raise IngestError(path, f"cannot be read: {error.strerror or error}") from None
    return digest.hexdigest()
