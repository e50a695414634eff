"""The full-text (BM25) index that text and hybrid search read: Lance's ``INVERTED`` index.

Built on the table's text column (the one the embeddings were made from) and, when it is
a string, the key: a package or product name is often the literal term a user types, and
it appears in no description. Rows written later are searched too (Lance scans the
fragments an index does not cover); :func:`build_text_index` again folds them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ..errors import ValidationError, describe
from ..store import EmbeddingTable


def default_text_columns(table: EmbeddingTable) -> list[str]:
    """The text column the table records, plus a string key."""
    ds = table.dataset()
    meta = table.meta
    cols = []
    if meta.text_column and meta.text_column in ds.schema.names:
        cols.append(meta.text_column)
    key_type = ds.schema.field(meta.key).type if meta.key in ds.schema.names else None
    if key_type is not None and (pa.types.is_string(key_type) or pa.types.is_large_string(key_type)):
        cols.append(meta.key)
    return cols


def build_text_index(table: EmbeddingTable, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Build (or rebuild, folding in new rows) the full-text index of ``table``.

    Parameters
    ----------
    columns : sequence of str, optional
        String columns to index; default the recorded text column and a string key.

    Returns
    -------
    dict
        ``{"columns": [...], "version": N}``; the index build commits one maintenance
        version (hidden from ``versions()`` like the vector index's).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from embed_assets import Store
    >>> s = Store(tempfile.mkdtemp())
    >>> _ = s.write("t", {"name": ["vim", "nano"], "text": ["a modal editor", "a small editor"],
    ...                   "vector": np.eye(2, dtype=np.float32)}, key="name", text_column="text")
    >>> build_text_index(s.table("t"))["columns"]
    ['text', 'name']
    >>> s.table("t").search("vim", k=1, mode="text").column("name").to_pylist()
    ['vim']
    """
    cols = list(columns) if columns is not None else default_text_columns(table)
    if not cols:
        raise ValidationError(
            f"table {table.name!r} records no text column and its key is not a string: "
            "pass columns=[...] (string columns to index)")
    ds = table.dataset()
    for c in cols:
        if c not in ds.schema.names:
            raise ValidationError(f"{c!r} is not a column of {table.name!r}; "
                                  f"columns: {', '.join(ds.schema.names)}")
        typ = ds.schema.field(c).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise ValidationError(f"column {c!r} of {table.name!r} is {typ}, not text")
    for c in cols:
        try:
            ds.create_scalar_index(c, "INVERTED", name=f"fts_{c}", replace=True)
        except (ValueError, OSError) as exc:
            raise ValidationError(f"full-text index on {table.name}.{c} failed: "
                                  f"{describe(exc)}") from None
        ds = table.refresh().dataset()
    return {"columns": cols, "version": table.refresh().version}
