"""Accepting user data: Arrow, Polars, pandas or a dict of columns, as one Arrow table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError


def _small_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_small_type(t.value_type))
    return t


def normalize_types(tbl: pa.Table) -> pa.Table:
    """Large string/binary/list types (Polars' defaults) become their 32-bit-offset forms:
    Lance's filter pushdown from DuckDB cannot convert predicates on large types."""
    fields = [pa.field(f.name, _small_type(f.type), f.nullable, f.metadata) for f in tbl.schema]
    schema = pa.schema(fields, metadata=tbl.schema.metadata)
    return tbl if schema.equals(tbl.schema, check_metadata=True) else tbl.cast(schema)


def as_arrow(data: Any) -> pa.Table:
    """Accept an Arrow table/batch, a Polars or pandas DataFrame, or a dict of columns."""
    if isinstance(data, pa.Table):
        return normalize_types(data)
    if isinstance(data, pa.RecordBatch):
        return normalize_types(pa.Table.from_batches([data]))
    if isinstance(data, pa.RecordBatchReader):
        return normalize_types(data.read_all())
    mod = type(data).__module__
    if mod.startswith("polars"):
        return normalize_types(data.to_arrow())
    if mod.startswith("pandas"):
        try:
            return normalize_types(pa.Table.from_pandas(data, preserve_index=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValidationError(f"cannot convert the DataFrame to Arrow: {exc}") from None
    if isinstance(data, Mapping):
        cols = {str(name): _column(str(name), values) for name, values in data.items()}
        try:
            return normalize_types(pa.table(cols))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValidationError(f"cannot convert the columns to Arrow: {exc}") from None
    raise ValidationError(
        f"cannot write data of type {type(data).__name__}; "
        "pass a pyarrow Table, a polars or pandas DataFrame, or a dict of columns"
    )


def _column(name: str, values: Any) -> Any:
    """A dict's column as Arrow takes it: a 2-D numpy array (one row per vector, how
    people hold embeddings) becomes a fixed-size list column; anything else unchanged."""
    if isinstance(values, np.ndarray) and values.ndim >= 2:
        if values.ndim > 2:
            raise ValidationError(
                f"column {name!r} is a {values.ndim}-D array of shape {values.shape}; "
                "a vector column must be 2-D (rows x dimension)")
        if values.dtype.kind not in "fiub":
            raise ValidationError(
                f"column {name!r} must hold numbers, got dtype {values.dtype}")
        n, d = values.shape
        flat = pa.array(np.ascontiguousarray(values).reshape(-1))
        if d == 0:
            return pa.array([[] for _ in range(n)], pa.list_(flat.type))
        return pa.FixedSizeListArray.from_arrays(flat, d)
    return values
