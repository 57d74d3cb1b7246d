"""Parquet: columns checked for type, read a batch of rows at a time; the row is the record number."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    IngestError,
    require_columns,
    text_label_frame,
)

# Rows read at a time: tens of MB of reviews.
BATCH_ROWS = 65_536


def iter_parquet(path: Path, data: DataParams) -> Iterator[pd.DataFrame]:
    """The file's records as frames, a batch of rows at a time (never the whole table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise IngestError(path, f"is not a readable Parquet file ({error})") from None
    schema = parquet.schema_arrow
    require_columns(path, list(schema.names), data)
    _check_parquet_type(path, data.text_column, schema.field(data.text_column).type, allow_integers=False)
    _check_parquet_type(path, data.label_column, schema.field(data.label_column).type, allow_integers=True)
    if parquet.metadata.num_rows == 0:
        raise IngestError(path, "has no rows")
    first_row = 1
    for batch in _batches(path, parquet, [data.text_column, data.label_column, *data.keep_columns]):
        columns = {}
        for name in (data.text_column, data.label_column):
            if batch.column(name).null_count:
                _raise_first_null(path, parquet, data)
            # Integer labels become "1"/"0"; dictionary-encoded strings become plain strings.
            columns[name] = batch.column(name).cast(pa.string())
        yield text_label_frame(columns[data.text_column], columns[data.label_column],
                               np.arange(first_row, first_row + batch.num_rows, dtype="int64"),
                               {name: _kept_as_text(path, name, batch.column(name)) for name in data.keep_columns})
        first_row += batch.num_rows


def _batches(path: Path, parquet: Any, columns: list[str]) -> Iterator[Any]:
    import pyarrow as pa

    try:
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise IngestError(path, f"could not be read ({error})") from None


def _raise_first_null(path: Path, parquet: Any, data: DataParams) -> None:
    """Name the first null of the text column, else of the label column, in the whole file (as a whole-file
    read did), with the column's count of nulls; one column at a time, batch by batch."""
    for name in (data.text_column, data.label_column):
        first_null, nulls, seen = None, 0, 0
        for batch in _batches(path, parquet, [name]):
            column = batch.column(name)
            if column.null_count and first_null is None:
                first_null = seen + int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            nulls += column.null_count
            seen += batch.num_rows
        if first_null is not None:
            raise IngestError(
                path, f"value is null ({nulls} null value(s) in this column; this is the first)",
                row=first_null + 1, field=name,
            )


def _kept_as_text(path: Path, name: str, column: Any) -> Any:
    """A kept column as strings (numbers, dates and booleans as pyarrow writes them; null stays null)."""
    import pyarrow as pa

    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise IngestError(path, f"column {name!r} (data.keep_columns) has type {column.type}, which cannot be "
                                f"kept as text ({error})", field=name) from None


def _check_parquet_type(path: Path, name: str, arrow_type: Any, *, allow_integers: bool) -> None:
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    is_text = (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
               or pa.types.is_string_view(value_type))
    if is_text or (allow_integers and pa.types.is_integer(value_type)):
        return
    wanted = "strings or integers" if allow_integers else "strings"
    raise IngestError(path, f"column {name!r} has type {arrow_type}; it must hold {wanted}", field=name)
