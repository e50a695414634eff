"""Reading the filters DuckDB pushes into store-view scans, to answer them from memory.

DuckDB hands a registered dataset's ``scanner()`` its pushed-down filters as a pyarrow
expression: key lookups (``WHERE id = 5``), ranges, and the join filters it builds from
a small build side (``is_in(id, {value_set=int64:[...]}) and (id >= lo) and (id <= hi)``,
which is what ``knn`` and key joins produce). Lance plans each such scan in ~10 ms (pylance 14,
2 cores); Arrow evaluates the same expression over the version's in-memory key index
(:class:`embed_assets.store.KeyIndex`) or scalar columns in well under a millisecond.
Anything that cannot be answered exactly there returns None and the scan goes to Lance.
"""

from __future__ import annotations

from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..store import (
    CACHE,
    OFFSET_COLUMN,
    SCAN_ALL,
    VECTOR_COLUMN,
    TableMeta,
    VersionKey,
    table_identity,
    take_rows,
)
from ._substrait import key_filter


def key_offsets(filt: pc.Expression, key: str, keys: np.ndarray, offsets: np.ndarray,
                key_type: pa.DataType) -> np.ndarray | None:
    """The row offsets ``filt`` (the expression object DuckDB pushed down) selects when it
    reads the key column alone; None when it reads any other column (or cannot be
    evaluated there).

    Lookups, ranges and ``IN`` lists (what ``WHERE id = 5`` and a ``knn`` join push) are
    read from the expression's Substrait form (:mod:`._substrait`) and answered by binary
    search over the sorted keys, in microseconds. Any other filter on the key is evaluated
    by Arrow over all the keys, which is exact by definition (~0.2-0.5 ms at 64k keys),
    against ~10 ms for Lance to plan the filtered scan. ``str()`` of the expression is
    never read: it is not a stable format.
    """
    kf = key_filter(filt, key, key_type)
    if kf is not None:
        return offsets[kf.select(keys)]
    table = pa.table({key: pa.array(keys, key_type), OFFSET_COLUMN: pa.array(offsets, pa.int64())})
    try:
        kept = table.filter(filt)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError):
        return None  # another column (or a type the key column cannot compare with)
    return kept.column(OFFSET_COLUMN).to_numpy()


# Most rows a filtered scan that wants the vector column fetches by ``take`` from the
# in-memory match list; past it a Lance filtered scan is cheaper.
SELECTIVE_TAKE_ROWS = 4096


def _is_blob(field: pa.Field) -> bool:
    return "blob" in str(getattr(field.type, "extension_name", ""))


class ScanDataset(lance.LanceDataset):
    """The Lance dataset of one version as DuckDB scans it (through ``scanner()``).

    - Unfiltered scans pass :data:`embed_assets.store.SCAN_ALL` (see there).
    - Filtered scans are answered from memory where that is exact and cheap: filters on the
      key alone (lookups, ranges and the join filters DuckDB pushes down, ``is_in(id, ...)``,
      which is what ``knn`` produces) are evaluated over the version's key index
      (:func:`key_offsets`); other filters are evaluated on the version's scalar columns
      in memory. The rows then come from :func:`embed_assets.store.take_rows`. Lance plans each
      filtered scan in ~10 ms; this costs well under 1 ms. Filters that touch the
      vector column, or that need the vectors of many rows, go to Lance as before.
    """

    def __init__(self, uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(uri, *args, **kwargs)
        # The store's key for this version: the library-wide cache is shared with search.
        self.cache_key = VersionKey(str(uri), table_identity(self), self.version)

    def at_branch(self, version: tuple[str, int], cache_key: VersionKey) -> None:
        """Point this scan at a version of a branch (an experiment's), under its own cache
        key. ``LanceDataset.checkout_version`` returns a plain LanceDataset, so the native
        handle is swapped instead; what was kept of the version opened first (its schema,
        its TableMeta) is dropped with it."""
        self._ds = self._ds.checkout_version(version)
        self.cache_key = cache_key
        for kept in ("_ea_schema", "_ea_meta"):
            self.__dict__.pop(kept, None)

    @property
    def schema(self) -> pa.Schema:
        """The columns DuckDB sees. A picture column kept with Lance's blob encoding is left
        out: Lance's schema gives it the blob extension's storage struct while its scans
        and takes return blob descriptions, and DuckDB, reading one by the other, failed
        every ``SELECT *`` of such a table ("Strings over 4GB"), and ``knn`` with it. The
        pictures are read with ``stored_images`` / ``search-image --png``, not through SQL
        (which would also pull every picture into the scalar-column cache)."""
        # Kept: a version's schema never changes, and Lance builds it anew on every call
        # (~5-10 us), which a filtered scan asked for seven times.
        got: pa.Schema | None = self.__dict__.get("_ea_schema")
        if got is None:
            s = super().schema
            got = s if not any(_is_blob(f) for f in s) else \
                pa.schema([f for f in s if not _is_blob(f)], metadata=s.metadata)
            self.__dict__["_ea_schema"] = got
        return got

    def scanner(self, *args: Any, **kwargs: Any) -> Any:
        filt = kwargs.get("filter")
        if filt is None:
            kwargs["filter"] = SCAN_ALL
        elif not args and isinstance(filt, pc.Expression):
            got = self._selective(kwargs.get("columns"), filt)
            if got is not None:
                return got
        return super().scanner(*args, **kwargs)

    def _selective(self, columns: list[str] | None, filt: pc.Expression) -> Any:
        import pyarrow.dataset as pads

        schema = self.schema
        names = list(columns) if columns is not None else schema.names
        if not names or any(c not in schema.names for c in names):
            return None
        offsets = self._key_lookup(filt)
        if offsets is None:
            mem = CACHE.scalars(self.cache_key, self)
            if mem is None:
                return None
            try:
                offsets = mem.filter(filt).column(OFFSET_COLUMN).to_numpy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError):
                return None  # e.g. the filter reads the vector column
        if VECTOR_COLUMN in names and len(offsets) > SELECTIVE_TAKE_ROWS:
            return None
        return pads.dataset(take_rows(self.cache_key, self, np.sort(offsets), names)).scanner()

    def _key_lookup(self, filt: pc.Expression) -> np.ndarray | None:
        schema = self.schema
        if "_ea_meta" not in self.__dict__:  # JSON in the schema: parsed once per version
            self.__dict__["_ea_meta"] = TableMeta.from_schema(schema)
        meta: TableMeta | None = self.__dict__["_ea_meta"]
        if meta is None or meta.key not in schema.names \
                or not pa.types.is_integer(schema.field(meta.key).type):
            return None
        if OFFSET_COLUMN in schema.names:
            return None
        idx = CACHE.key_index(self.cache_key, self, meta.key)
        if idx is None:
            return None
        return key_offsets(filt, meta.key, idx.keys, idx.offsets, schema.field(meta.key).type)
