"""``knn`` whose query vector comes from the statement around it, as a vectorised UDF.

``FROM queries q, LATERAL knn('t', q.vector, 10) k`` cannot be answered before DuckDB
runs (the vectors are the outer rows'), and through the table macro it costs ~75 ms per
outer row at 120k rows: DuckDB decorrelates the macro into a hash join of the hits with
the *whole* view, and since an Arrow scan reports no cardinality it builds the hash
table on the view's side (119,800 rows with their vectors) and pushes no key filter
into its scan (benchmarks/RESULTS.md, issue 11).

Here the wrapper rewrites such a call into a subquery over one Python function per
(view version, options) that returns, for each query vector, the list of its k result
rows as structs with the view's columns plus ``distance`` and ``rank``; ``unnest`` turns
them back into rows. DuckDB hands the function a whole chunk of outer vectors at once,
each is searched by the store (its tuned index, filters, metric), and no view is scanned.
The rows are the macro's (tests/test_sql_knn_forms.py compares both).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.func import ARROW, SPECIAL

from ..store import VECTOR_COLUMN
from ._knnfast import sql_distances, store_search
from ._views import View

# Functions kept registered per connection (one per view version and option set).
_MAX_FUNCTIONS = 64
_RESULT_COLUMNS = ("distance", "rank")


@dataclass(frozen=True)
class _Spec:
    view: str
    version: int
    k: int
    metric: str
    use_index: bool | None
    where: str | None
    with_vector: bool


class RowFunctions:
    """The per-connection registry of knn row functions."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._fns: OrderedDict[_Spec, str] = OrderedDict()
        self._n = 0
        self.searches = 0  # query vectors searched so far (tests read it)

    def call_sql(self, info: View, table: Any, expr: str, k: int, options: dict[str, Any],
                 with_vector: bool) -> str | None:
        """The SQL that replaces ``knn(info, <expr>, k, **options)``, or None to leave the
        call to the macro (an option the store path does not take, a view whose columns
        clash with ``distance``/``rank``)."""
        how = store_search(options, info.meta)
        if how is None or any(c in info.dataset.schema.names for c in _RESULT_COLUMNS):
            return None
        spec = _Spec(info.table if info.ref is None else f"{info.table}@{info.ref}", info.version,
                     k, how.metric, how.use_index, how.where, with_vector)
        name = self._fns.get(spec)
        if name is None:
            name = self._register(spec, info, table)
            if name is None:
                return None
        else:
            self._fns.move_to_end(spec)
        return f"(SELECT unnest({name}(CAST(({expr}) AS FLOAT[])), max_depth := 2))"

    def _register(self, spec: _Spec, info: View, table: Any) -> str | None:
        view_sql = '"' + spec.view.replace('"', '""') + '"'
        try:
            described = self.con.execute(f"DESCRIBE SELECT * FROM {view_sql}").fetchall()
            fields = {col: duckdb.sqltype(typ) for col, typ, *_ in described
                      if spec.with_vector or col != VECTOR_COLUMN}
        except duckdb.Error:
            return None
        fields["distance"] = duckdb.sqltype("DOUBLE")
        fields["rank"] = duckdb.sqltype("INTEGER")
        columns = [c for c in fields if c not in _RESULT_COLUMNS]
        schema = info.dataset.schema
        out = pa.schema([*(schema.field(c) for c in columns), pa.field("distance", pa.float64()),
                         pa.field("rank", pa.int32())])
        self._n += 1
        name = f"__ea_knn_rows_{self._n}"
        self.con.create_function(
            name, _rows_function(self, table, spec, out, info.meta.key), [duckdb.sqltype("FLOAT[]")],
            duckdb.list_type(duckdb.struct_type(fields)), type=ARROW,
            null_handling=SPECIAL, side_effects=False)
        self._fns[spec] = name
        while len(self._fns) > _MAX_FUNCTIONS:
            _, old = self._fns.popitem(last=False)
            self.con.remove_function(old)
        return name


def _rows_function(owner: RowFunctions, table: Any, spec: _Spec, out: pa.Schema,
                   key: str) -> Callable[[Any], pa.Array]:
    columns = [f.name for f in out if f.name not in _RESULT_COLUMNS]
    # The vectors of all the chunk's result rows come from one fetch by key after the
    # searches (a Lance take per search cost ~1 ms per outer row).
    scalar = [c for c in columns if c != VECTOR_COLUMN]
    with_vectors = len(scalar) < len(columns)
    if with_vectors and key not in scalar:
        scalar.append(key)

    def rows(vectors: Any) -> pa.Array:
        if isinstance(vectors, pa.ChunkedArray):
            vectors = vectors.combine_chunks()
        parts: list[pa.Table] = []
        offsets = [0]
        valid = []
        for v in vectors.to_pylist():
            valid.append(v is not None)
            if v is not None:
                owner.searches += 1
                res = table.search(np.asarray(v, dtype=np.float32), k=spec.k, version=spec.version,
                                   columns=scalar, metric=spec.metric, where=spec.where,
                                   use_index=spec.use_index)
                parts.append(sql_distances(res))
                offsets.append(offsets[-1] + res.num_rows)
            else:
                offsets.append(offsets[-1])
        got = pa.concat_tables(parts).combine_chunks() if parts else out.empty_table()
        if parts and with_vectors:
            vecs = table.get(got.column(key).to_pylist(), version=spec.version,
                             columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
            got = got.append_column(VECTOR_COLUMN, vecs)
        values = pa.StructArray.from_arrays(
            [pa.concat_arrays(got.column(f.name).chunks) if got.column(f.name).num_chunks
             else pa.array([], f.type) for f in out], fields=list(out))
        mask = None if all(valid) else pa.array([not ok for ok in valid])
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values, mask=mask)

    return rows
