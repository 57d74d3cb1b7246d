"""Parquet: columns checked for type; the row is the record number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import (
    IngestError,
    require_columns,
    text_label_frame,
)


def read_parquet(path: Path, data: DataParams) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise IngestError(path, f"is not a readable Parquet file ({error})") from None
    require_columns(path, list(schema.names), data)
    _check_parquet_type(path, data.text_column, schema.field(data.text_column).type, allow_integers=False)
    _check_parquet_type(path, data.label_column, schema.field(data.label_column).type, allow_integers=True)
    try:
        table = pq.read_table(path, columns=[data.text_column, data.label_column, *data.keep_columns])
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
    return text_label_frame(columns[data.text_column], columns[data.label_column],
                            np.arange(1, table.num_rows + 1, dtype="int64"),
                            {name: _kept_as_text(path, name, table.column(name)) for name in data.keep_columns})


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
