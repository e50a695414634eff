"""How the store answers a ``knn`` call that the rewriter (:mod:`._rewrite`) found.

Why: a ``knn`` through the table macro pays DuckDB's fixed costs on every statement
(binding three UNION ALL branches, a Python UDF call, a scan that fetches the k rows;
~17-20 ms at 120k rows, against ~2 ms for the store's own search; benchmarks/RESULTS.md).

* A query vector known before the statement runs (a literal, a bound parameter, an
  expression that stands alone such as a scalar subquery) is searched once:
  :func:`result_table` returns the k rows, which the statement then reads as a table.
* A query vector from the statement around the call (``FROM queries q, LATERAL
  knn('t', q.vector, 10)``) cannot be known first. Through the macro it cost ~75 ms per
  outer row at 120k rows: DuckDB decorrelates the macro into a hash join of the hits with
  the *whole* view, built on the view's side since an Arrow scan reports no cardinality
  (issue 11). :class:`RowFunctions` registers one Python function per (view version,
  options) that returns, for each query vector of a chunk, the list of its k result rows
  as structs; ``unnest`` turns them back into rows. No view is scanned.

Both return the macro's rows, columns and types (tests/test_sql_knn_forms.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import ARROW, SPECIAL

from ..store import VECTOR_COLUMN
from ._errors import refused
from ._views import View

# Functions kept registered per connection (one per view version and option set).
_MAX_FUNCTIONS = 64
_RESULT_COLUMNS = ("distance", "rank")


@dataclass(frozen=True)
class StoreSearch:
    """How the store's search answers a knn call's options (``search()``'s arguments)."""

    metric: str
    use_index: bool | None
    where: str | None


def store_search(options: dict[str, Any], meta: Any) -> StoreSearch | None:
    """The search for a call's option values on a view with TableMeta ``meta``; None
    leaves the call to the macro (mahalanobis needs inv_cov; a value of another type)."""
    metric = str(options.get("metric") or meta.metric).lower()
    use_index = options.get("use_index", True)
    where = options.get("filter")
    if metric not in ("cosine", "dot", "l2") or not isinstance(use_index, bool) \
            or not (where is None or isinstance(where, str)) \
            or options.get("vector", VECTOR_COLUMN) != VECTOR_COLUMN:
        return None
    return StoreSearch(metric, None if use_index and metric == meta.metric else False, where)


def query_vector(value: Any, dimension: int, metric: str) -> np.ndarray:
    """A knn query vector as float32, or the refusal the macro would give (same words)."""
    if value is None:
        raise refused("knn: the query vector is NULL")
    try:
        q = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise refused(f"knn: the query vector must be a list of numbers, got {_shown(value)}") from None
    if q.shape[0] != dimension:
        raise refused(f"knn: dimension mismatch (query {q.shape[0]} vs table {dimension})")
    if not np.isfinite(q).all():
        raise refused("knn: the query vector has NULL or NaN elements")
    if metric == "cosine" and not q.any():
        raise refused("knn: the query vector is all zeros: it has no cosine distance to any row")
    return q


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def sql_distances(res: Any) -> Any:
    """A search result with ``distance`` as DOUBLE, the type the macro returns."""
    i = res.column_names.index("distance")
    return res.set_column(i, "distance", pc.cast(res.column(i), pa.float64()))


def result_table(table: Any, info: View, q: np.ndarray, k: int, how: StoreSearch,
                 with_vector: bool) -> pa.Table:
    """The rows ``knn(info, q, k, ...)`` returns, searched by the store."""
    cols = None if with_vector else [c for c in info.dataset.schema.names if c != VECTOR_COLUMN]
    return sql_distances(table.search(q, k=k, version=info.version, columns=cols, metric=how.metric,
                                      where=how.where, use_index=how.use_index))


@dataclass(frozen=True)
class _Spec:
    view: str
    version: int | tuple[str, int]  # (experiment, version) for an experiment's version
    k: int
    metric: str
    use_index: bool | None
    where: str | None
    with_vector: bool


class RowFunctions:
    """The per-connection registry of knn row functions."""

    def __init__(self, con: duckdb.DuckDBPyConnection, sink: Any) -> None:
        self.con = con
        self.sink = sink  # its udf_error: what a failing row function raised
        self._fns: OrderedDict[_Spec, str] = OrderedDict()
        self._n = 0
        self.searches = 0  # query vectors searched so far (tests read it)
        self.batches = 0  # batched searches made for them

    def function(self, info: View, table: Any, k: int, how: StoreSearch, with_vector: bool) -> str | None:
        """The name of the function that answers ``knn(info, <vector>, k, ...)`` per query
        vector, or None to leave the call to the macro (a view whose columns clash with
        ``distance``/``rank``)."""
        if any(c in info.dataset.schema.names for c in _RESULT_COLUMNS):
            return None
        spec = _Spec(info.table if info.ref is None else f"{info.table}@{info.ref}", info.version,
                     k, how.metric, how.use_index, how.where, with_vector)
        name = self._fns.get(spec)
        if name is None:
            return self._register(spec, info, table)
        self._fns.move_to_end(spec)
        return name

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
            name, _rows_function(self, table, spec, out, info.meta.key, info.meta.dimension),
            [duckdb.sqltype("FLOAT[]")],
            duckdb.list_type(duckdb.struct_type(fields)), type=ARROW, null_handling=SPECIAL,
            side_effects=False)
        self._fns[spec] = name
        while len(self._fns) > _MAX_FUNCTIONS:
            _, old = self._fns.popitem(last=False)
            self.con.remove_function(old)
        return name


def _rows_function(owner: RowFunctions, table: Any, spec: _Spec, out: pa.Schema,
                   key: str, dimension: int) -> Callable[[Any], pa.Array]:
    columns = [f.name for f in out if f.name not in _RESULT_COLUMNS]
    # The vectors of all the chunk's result rows come from one fetch by key after the
    # searches (a Lance take per search cost ~1 ms per outer row).
    scalar = [c for c in columns if c != VECTOR_COLUMN]
    with_vectors = len(scalar) < len(columns)
    if with_vectors and key not in scalar:
        scalar.append(key)

    def rows(vectors: Any) -> pa.Array:
        try:
            return search_rows(vectors)
        except Exception as exc:
            owner.sink.udf_error = exc
            raise

    def search_rows(vectors: Any) -> pa.Array:
        if isinstance(vectors, pa.ChunkedArray):
            vectors = vectors.combine_chunks()
        # A NULL outer vector is refused, as knn('t', NULL, k) and Table.search(None) are
        # (it once gave no rows, silently); every vector is checked in the words of the
        # other forms of knn, so the chunk is one batch of one dimension.
        queries = [query_vector(v, dimension, spec.metric) for v in vectors.to_pylist()]
        counts = np.zeros(len(queries), np.int64)
        parts: list[pa.Table] = []
        if queries:
            # One batched search for the whole chunk (one plan, one graph call, one
            # gather), answering as one search per vector would.
            owner.searches += len(queries)
            owner.batches += 1
            res = table.search_batch(np.stack(queries), k=spec.k, version=spec.version, columns=scalar,
                                     metric=spec.metric, where=spec.where, use_index=spec.use_index)
            counts = np.bincount(res.column("query").to_numpy(), minlength=len(queries))
            parts.append(sql_distances(res.drop_columns(["query"])))
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
        got = pa.concat_tables(parts).combine_chunks() if parts else out.empty_table()
        if parts and with_vectors:
            vecs = table.get(got.column(key).to_pylist(), version=spec.version,
                             columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
            got = got.append_column(VECTOR_COLUMN, vecs)
        values = pa.StructArray.from_arrays(
            [pa.concat_arrays(got.column(f.name).chunks) if got.column(f.name).num_chunks
             else pa.array([], f.type) for f in out], fields=list(out))
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)

    return rows
