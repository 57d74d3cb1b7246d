"""Rows of token ids of varying length, held flat: one array of values and one of offsets.

A tokenized split of five million texts held as Python lists costs about 36 bytes a token; held flat it costs
4, and read from an Arrow file through a memory map it costs nothing until a row is read (and then only the
pages that row sits on). Training reads rows by index, and the length-grouped sampler reads `lengths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


class RaggedRows(Sequence):
    """Row i is a read-only int32 numpy view (no copy) into one of the chunks.

    A chunk is (values, offsets): its row j is values[offsets[j]:offsets[j + 1]]. A split written chunk by chunk
    is read back as those chunks, each straight from the memory-mapped file: joining them would copy the whole
    split into memory.
    """

    def __init__(self, chunks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for values, offsets in chunks:
            if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(values):
                raise ValueError(f"offsets must run from 0 to the chunk's {len(values)} values")
        self.chunks = [(values, offsets) for values, offsets in chunks if len(offsets) > 1] or [
            (np.zeros(0, dtype=np.int32), np.zeros(1, dtype=np.int64))]
        # Row index at which each chunk starts, and one past the last row.
        self._starts = np.cumsum([0] + [len(offsets) - 1 for _, offsets in self.chunks])
        self._lengths: np.ndarray | None = None

    @classmethod
    def from_arrow(cls, column: pa.Array | pa.ChunkedArray) -> "RaggedRows":
        """A list<int32> column, chunk for chunk, without copying the values."""
        arrays = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        return cls([_flat(array) for array in arrays])

    def to_arrow(self) -> pa.ChunkedArray:
        return pa.chunked_array([pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                          pa.array(values, type=pa.int32()))
                                 for values, offsets in self.chunks], type=pa.list_(pa.int32()))

    @property
    def lengths(self) -> np.ndarray:
        if self._lengths is None:
            self._lengths = np.concatenate([np.diff(offsets) for _, offsets in self.chunks])
        return self._lengths

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of {len(self)}")
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        values, offsets = self.chunks[chunk]
        row = index - int(self._starts[chunk])
        return values[offsets[row]:offsets[row + 1]]

    def take(self, indices: Sequence[int] | np.ndarray) -> "RaggedRows":
        """The rows at `indices`, in that order, copied into one chunk of their own."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.empty(int(offsets[-1]), dtype=np.int32)
        for slot, index in enumerate(indices.tolist()):
            values[offsets[slot]:offsets[slot + 1]] = self[index]
        return RaggedRows([(values, offsets)])

    def tolist(self) -> list[list[int]]:
        return [row.tolist() for row in self]

    def __iter__(self):
        for values, offsets in self.chunks:
            for row in range(len(offsets) - 1):
                yield values[offsets[row]:offsets[row + 1]]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RaggedRows, list, tuple)):
            return len(self) == len(other) and all(np.array_equal(a, b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # arrays inside: not hashable, as a list is not

    def __repr__(self) -> str:
        return f"RaggedRows({len(self)} rows in {len(self.chunks)} chunk(s))"


def _flat(array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(values, offsets) of a list<int32> array, rebased to start at 0 when the array is a slice."""
    if array.null_count:
        raise ValueError("a tokenized column has empty (null) rows")
    offsets = array.offsets.to_numpy(zero_copy_only=False)  # int32, straight from the file's pages
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return values, (offsets - offsets[0] if offsets[0] else offsets)


def holds_token_labels(labels: Any) -> bool:
    """Whether a split's labels are tag ids per token (RaggedRows, or lists) rather than one class id a row."""
    return isinstance(labels, RaggedRows) or (len(labels) > 0 and isinstance(labels[0], (list, np.ndarray)))


def row_lengths(rows: Sequence) -> np.ndarray:
    """The length of each row, read from the offsets when the rows are flat."""
    if isinstance(rows, RaggedRows):
        return rows.lengths
    return np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))


def pick_rows(rows: Any, indices: Sequence[int]) -> Any:
    """The rows (or values) at `indices`: flat rows stay flat, arrays stay arrays, lists stay lists."""
    if rows is None:
        return None
    if isinstance(rows, RaggedRows):
        return rows.take(indices)
    if isinstance(rows, np.ndarray):
        return rows[np.asarray(indices, dtype=np.int64)]
    if hasattr(rows, "take") and not isinstance(rows, (list, tuple)):  # a pandas Categorical of batch ids
        return rows.take(np.asarray(indices, dtype=np.int64))
    return [rows[i] for i in indices]
