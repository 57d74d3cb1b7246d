"""A text file read a piece at a time: bounded memory whatever the file's size.

`text_pieces` turns a CSV/TSV/JSON Lines file into pieces of its UTF-8 text (BOM stripped, UTF-16/32
transcoded as it goes), each ending where a record ends, so that a reader can parse each piece on its
own. A piece knows where it starts (byte offsets, line and row), so the checks of the whole text
(`check_piece`: UTF-8, NUL bytes, an undecodable UTF-16/32 byte) name the same offset, row and field as
when the file was read whole. `rechunk` cuts the frames read from the pieces into the caller's chunks.
"""

from __future__ import annotations

import codecs
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import pandas as pd

from components.data.readers.common import (
    BYTE_ORDER_MARKS,
    DELIMITERS,
    IngestError,
    check_utf8,
    reject_nul_bytes,
    text_position,
)

# Bytes read at a time, and about the size of a piece: some 80,000 rows of a typical review file. Its
# bytes, Arrow table and frame are what a reader holds, so memory does not grow with the file.
PIECE_BYTES = 16 * 1024 * 1024
# What the NUL-byte check looks at to tell UTF-16 without a byte-order mark.
HEAD_BYTES = 1000


@dataclass(frozen=True)
class TextPiece:
    """Whole records of the file's UTF-8 text, and where they start."""

    data: bytes  # not yet checked to be UTF-8 (check_piece does that), unless transcoded
    file_offset: int  # byte offset in the file of data[0] (for UTF-8 files: the text's offset plus the BOM)
    text_offset: int  # byte offset in the UTF-8 text of data[0]
    line: int  # 1-based line of data[0], counting "\n" only
    row: int  # the same counted as the csv module counts lines ("\n", "\r\n" and a lone "\r" each end one)
    final: bool  # nothing of the file follows
    head: bytes  # the text's first HEAD_BYTES bytes
    transcoded: bool  # the file is UTF-16/32 (by its BOM), and `data` valid UTF-8 made from it
    fault: tuple[int, str] | None = None  # (offset in data, problem): the file's bytes stop being readable there


def line_cut(buffer: bytes) -> int:
    """Where a piece of line-per-record text may end: after its last newline (0: none yet)."""
    return buffer.rfind(b"\n") + 1


def text_pieces(path: Path, cut: Callable[[bytes], int], piece_bytes: int | None = None) -> Iterator[TextPiece]:
    """The file's UTF-8 text in pieces of about `piece_bytes` (default PIECE_BYTES, looked up at the call,
    so that tests can make pieces of a few bytes), each ending where `cut` says a record ends
    (cut(buffer) -> length of the piece to take, 0 when no record ends in `buffer` yet: more is read).
    Raises IngestError if the text is empty or whitespace only; other checks are `check_piece`'s."""
    with open(path, "rb") as handle:
        transcoded, bom_length, blocks = _open_text(handle, piece_bytes or PIECE_BYTES)
        position = _Position(bom_length=0 if transcoded else bom_length)
        buffer, fault, seen_text = b"", None, False
        block = next(blocks, None)
        while block is not None:
            data, problem = block
            block = next(blocks, None)  # read ahead: a piece knows whether it is the last
            buffer += data
            if len(position.head) < HEAD_BYTES:
                position.head += data[: HEAD_BYTES - len(position.head)]
            if problem is not None:
                fault = (len(buffer), problem)
                break
            # Until something other than whitespace comes, the file may yet be "empty": hold it.
            seen_text = seen_text or (len(buffer) > 0 and not buffer.isspace())
            # Blank lines ahead may be all that is left: a piece that ends before them would not know it is
            # the last (a short last record reads as truncated only in the last piece).
            if block is None or not seen_text or block[0].isspace():
                continue
            end = cut(buffer)
            if end:
                yield position.piece(buffer[:end], final=False, transcoded=transcoded)
                buffer = buffer[end:]
    if fault is None and not seen_text:
        raise IngestError(path, "the file is empty (only whitespace after decoding)")
    yield position.piece(buffer, final=True, transcoded=transcoded, fault=fault)


@dataclass
class _Position:
    """Where the next piece starts, advanced by each piece handed out."""

    bom_length: int
    text_offset: int = 0
    line: int = 1
    row: int = 1
    head: bytes = b""

    def piece(self, data: bytes, *, final: bool, transcoded: bool,
              fault: tuple[int, str] | None = None) -> TextPiece:
        piece = TextPiece(data, self.text_offset + self.bom_length, self.text_offset, self.line, self.row,
                          final, self.head, transcoded, fault)
        newlines = data.count(b"\n")
        self.text_offset += len(data)
        self.line += newlines
        self.row += newlines + lone_carriage_returns(data)
        return piece


def lone_carriage_returns(data: bytes) -> int:
    """The carriage returns not followed by a newline: line ends to the csv module (old Mac files), not
    to a count of newlines."""
    returns = data.count(b"\r")
    return returns - data.count(b"\r\n") if returns else 0  # most files have none: one pass, not two


def _open_text(handle: BinaryIO, size: int) -> tuple[bool, int, Iterator[tuple[bytes, str | None]]]:
    """(transcoded, BOM length, blocks): the file's text as UTF-8 blocks (bytes, None); a UTF-16/32 file's
    last block may be (what decoded before a bad byte, the problem)."""
    start = handle.read(max(size, 4))  # the longest BOM, whatever the size
    bom, codec = next(((bom, codec) for bom, codec in BYTE_ORDER_MARKS if start.startswith(bom)), (b"", "utf-8"))
    if codec == "utf-8":
        return False, len(bom), _raw_blocks(handle, start[len(bom):], size)
    return True, len(bom), _transcoded_blocks(handle, start[len(bom):], len(bom), codec, size)


def _raw_blocks(handle: BinaryIO, first: bytes, size: int) -> Iterator[tuple[bytes, str | None]]:
    # Checked per piece (check_piece), where the row and field of a bad byte are known.
    yield first, None
    while block := handle.read(size):
        yield block, None


def _transcoded_blocks(handle: BinaryIO, raw: bytes, raw_offset: int, codec: str,
                       size: int) -> Iterator[tuple[bytes, str | None]]:
    """raw_offset: the file offset of raw[0]."""
    decoder = codecs.getincrementaldecoder(codec)()
    while True:
        pending = len(decoder.getstate()[0])  # bytes held back from the last block, decoded with this one
        try:
            text = decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as error:
            good = error.object[: error.start].decode(codec, errors="replace")
            yield good.encode("utf-8"), (
                f"bytes at byte offset {raw_offset - pending + error.start} are not valid {codec.upper()} "
                f"(the byte-order mark says {codec.upper()}); re-save the file as UTF-8")
            return
        if text:  # an empty block would make the piece before the last look like more follows it
            yield text.encode("utf-8"), None
        if not raw:
            return
        raw_offset += len(raw)
        raw = handle.read(size)


def check_piece(path: Path, piece: TextPiece, kind: str, header: list[str] | None = None) -> None:
    """The checks read_utf8 makes of a whole text, made of one piece: bytes the BOM's encoding cannot
    decode, bytes that are not UTF-8, NUL bytes. `header`: the CSV header, for pieces after the first."""
    first_row = piece.row if kind in DELIMITERS else piece.line
    if piece.fault is not None:
        offset, problem = piece.fault
        row, field = text_position(piece.data[:offset].decode("utf-8"), kind, header, first_row)
        raise IngestError(path, problem, row=row, field=field)
    if not piece.transcoded:
        check_utf8(path, piece.data, kind, piece.file_offset, header=header, first_row=first_row,
                   first_line=piece.line)
    reject_nul_bytes(path, piece.data, kind, text_offset=piece.text_offset, head=piece.head, header=header,
                     first_row=first_row)


def rechunk(frames: Iterable[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `frames`, in order, as frames of exactly `rows` rows (the last may be shorter), each
    with a fresh RangeIndex."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    held: list[pd.DataFrame] = []
    count = 0
    for frame in frames:
        start = 0
        while start < len(frame):
            take = min(rows - count, len(frame) - start)
            held.append(frame.iloc[start:start + take])
            count, start = count + take, start + take
            if count == rows:
                yield _joined(held)
                held, count = [], 0
    if held:
        yield _joined(held)


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    return pd.concat(parts, ignore_index=True)


# rows for "all of them": read_labelled_file's one frame.
ALL_ROWS = sys.maxsize
