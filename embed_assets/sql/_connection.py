"""DuckDB over the store: vector macros, versioned views, knn and similarity joins.

:func:`connect` returns a :class:`SQLConnection`, a thin wrapper over a
``duckdb.DuckDBPyConnection`` (every other attribute is forwarded) where:

* every store table is a view under its own name, reading the latest version;
* ``"name@N"`` reads version N and ``"name@TAG"`` the version tagged TAG;
* the macros of ``sql/vectors.sql`` are loaded, then ``sql/store.sql`` swaps in faster
  Python-backed versions of ``vec_mean``/``vec_sum``/``list_vec_*``, ``knn`` and
  ``similarity_join``, and adds ``vec_covariance`` and ``mat_inverse``; where the ea_vec C
  extension builds (:mod:`._native`), ``sql/native.sql`` moves the aggregates onto it;
* the ``lance`` and ``vss`` extensions are loaded from their PyPI wheels.

How views are registered, and when new versions become visible
----------------------------------------------------------------
A view is a Lance dataset handed to DuckDB as a pyarrow dataset (DuckDB pushes column
projections and filters into the Lance scanner), so a version view costs one manifest read
(~1 ms) when it is registered. Registering every version of every table up front would
grow with history (thousands of versions = seconds), so registration is lazy:

* at connect, only the latest version of each table is registered (one per table);
* before each statement run through this wrapper (``execute``, ``sql``, ``query``...),
  its tokens are scanned for store names: ``"name@N"`` / ``"name@TAG"`` identifiers or
  string literals (as in ``knn('name@3', ...)``) are registered on first use, tags are
  re-resolved (a moved tag is followed), and a plain ``name`` is re-pointed at the latest
  version if a newer one was committed since. A version written after connect is
  therefore visible to the next statement, with no call needed;
* tables created after connect appear after :meth:`SQLConnection.refresh`, which also
  re-points every view at the latest version.

Statements run on the raw connection (``.con``) or a DuckDB cursor skip that scan and see
the views as they were last registered.
"""

from __future__ import annotations

import glob
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import TableNotFoundError, ValidationError, VersionNotFoundError
from ..store._store import VECTOR_COLUMN, Store, TableMeta
from . import _native
from . import _udf as udf
from ._knnfast import KnnCall, find_knn_calls, may_read_column, tokens
from ._pushdown import ScanDataset

__all__ = [
    "SQLConnection",
    "connect",
    "extension_path",
    "format_result",
    "load_macros",
    "macro_file",
    "run_sql",
]

EXTENSIONS = ("lance", "vss")
_MACRO_FILES = ("vectors.sql",)
_STORE_MACRO_FILES = ("store.sql",)
# Decoded store matrices kept for similarity_join, keyed by (uri, version): versions are
# immutable, so a cached matrix can never be stale. Bounded by bytes, not entries.
_MATRIX_CACHE_BYTES = 1 << 30


# -- files and extensions ------------------------------------------------------------------
def macro_file(name: str = "vectors.sql") -> Path:
    """Path of a macro file shipped with embed_assets (``embed_assets/sql``; the repo's
    top-level ``sql/`` is a link to it, so ``.read sql/vectors.sql`` works from the root)."""
    path = Path(__file__).resolve().parent / "macros" / name
    if not path.is_file():
        raise FileNotFoundError(f"embed_assets macro file {name!r} not found at {path}")
    return path


def load_macros(con: duckdb.DuckDBPyConnection, files: Sequence[str] = _MACRO_FILES) -> None:
    """Execute macro files (plain SQL) on a DuckDB connection."""
    for f in files:
        con.execute(macro_file(f).read_text())


def extension_path(name: str) -> str:
    """File of a DuckDB extension shipped by the ``duckdb-extension-<name>`` wheel.

    DuckDB's extension server is unreachable here, so ``INSTALL`` cannot be used; the
    wheels carry ``extensions/v<duckdb version>/<name>.duckdb_extension``.
    """
    import importlib

    try:
        mod = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise ValidationError(
            f"DuckDB extension {name!r} is not installed; pip install duckdb-extension-{name}"
        ) from None
    base = Path(mod.__file__ or "").parent / "extensions"
    exact = base / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if exact.is_file():
        return str(exact)
    found = sorted(glob.glob(str(base / "*" / f"{name}.duckdb_extension")))
    if not found:
        raise ValidationError(f"no {name}.duckdb_extension file under {base}")
    # A wheel built for another DuckDB refuses to LOAD with its own clear message.
    return found[-1]


# -- the connection ------------------------------------------------------------------------
@dataclass
class _View:
    table: str
    ref: str | None  # None = latest; "3" or "prod" for name@3 / name@prod
    version: int
    dataset: Any


class SQLConnection:
    """A DuckDB connection whose store views follow the store (see module docstring).

    Every ``duckdb.DuckDBPyConnection`` attribute is available; ``execute``,
    ``executemany``, ``sql``, ``query``, ``from_query`` and ``table`` first make sure
    the store views a statement names are registered and current.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, store: Store | None,
                 cache_bytes: int = _MATRIX_CACHE_BYTES) -> None:
        self.con = con
        self.store = store
        self.cache_bytes = cache_bytes
        self._views: dict[str, _View] = {}
        self._handles: dict[str, Any] = {}
        self._tables: dict[str, TableMeta] = {}
        self._lock = threading.RLock()
        self._cache: OrderedDict[tuple[str, int], tuple[np.ndarray, pa.Array, np.ndarray]] = OrderedDict()
        self.fast_knn = True  # see _knnfast; False always runs the knn macro
        self._fast_n = 0
        self._fast_names: list[str] = []

    # -- forwarding ----------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def __enter__(self) -> SQLConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLConnection(store={self.store!r}, views={len(self._views)})"

    def close(self) -> None:
        self._cache.clear()
        self.con.close()

    def execute(self, query: str, parameters: Any = None) -> SQLConnection:
        self._prepare(query)
        self.con.execute(*self._fast_knn(query, parameters))
        return self

    def executemany(self, query: str, parameters: Any = None) -> SQLConnection:
        self._prepare(query)
        self.con.executemany(query, parameters)
        return self

    def sql(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._prepare(query)
        if "params" in kwargs and not args:
            query, kwargs["params"] = self._fast_knn(query, kwargs["params"])
        return self.con.sql(query, *args, **kwargs)

    def query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._prepare(query)
        return self.con.query(query, *args, **kwargs)

    def from_query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        self._prepare(query)
        return self.con.from_query(query, *args, **kwargs)

    def table(self, name: str) -> Any:
        self._ensure_name(name)
        return self.con.table(name)

    # -- store views -----------------------------------------------------------------------
    def views(self) -> list[str]:
        """Names of the store views registered so far (latest ones plus versions used)."""
        return sorted(self._views)

    def refresh(self) -> SQLConnection:
        """Pick up tables created since connect and re-point every view at its target."""
        if self.store is None:
            return self
        names = set(self.store.table_names())
        for gone in [v for v, info in self._views.items() if info.table not in names]:
            self._unregister(gone)
        for name in sorted(names):
            self._tables.pop(name, None)
            self._register(name, None)
        for view, info in list(self._views.items()):
            if info.ref is not None:
                self._register(info.table, info.ref, view)
        self._publish()
        return self

    def register_version(self, table: str, ref: int | str | None = None) -> str:
        """Register (or re-point) the view of ``table`` at ``ref``; returns the view name."""
        if self.store is None:
            raise ValidationError("this connection has no store")
        view = table if ref is None else f"{table}@{ref}"
        self._register(table, None if ref is None else str(ref), view)
        self._publish()
        return view

    def _unregister(self, view: str) -> None:
        self.con.unregister(view)
        self._views.pop(view, None)

    def _meta(self, table: str) -> TableMeta:
        if table not in self._tables:
            assert self.store is not None
            self._tables[table] = self.store.table(table).meta
        return self._tables[table]

    def _register(self, table: str, ref: str | None, view: str | None = None) -> bool:
        """(Re-)register one view; True if it changed. Raises for unknown versions/tags."""
        assert self.store is not None
        view = view or (table if ref is None else f"{table}@{ref}")
        uri = self.store.table_uri(table)
        opts = self.store.storage_options
        with self._lock:
            old = self._views.get(view)
            if ref is None:
                if old is not None:
                    try:  # ~0.01 ms, where reopening costs ~0.6 ms on every statement
                        if old.dataset.latest_version == old.version:
                            return False
                    except Exception:  # the table was dropped: reopening says so
                        pass
                ds = ScanDataset(uri, storage_options=opts)
                version = ds.version
            elif ref.isdigit():
                version = int(ref)
                if old is not None and old.version == version:
                    return False  # a numbered version never changes
                try:
                    ds = ScanDataset(uri, version=version, storage_options=opts)
                except Exception:
                    # Let the store phrase the error (it lists the versions that exist).
                    self.store.table(table).resolve(version)
                    raise
            else:
                version = self.store.table(table).resolve(ref)
                ds = None
            if old is not None and old.version == version:
                return False
            if ds is None:
                ds = ScanDataset(uri, version=version, storage_options=opts)
            self.con.register(view, ds)
            self._views[view] = _View(table, ref, version, ds)
            return True

    def _publish(self) -> None:
        """Hand the views' metadata to the SQL macros (read with getvariable())."""
        keys, kinds, metrics = {}, {}, {}
        for view, info in self._views.items():
            meta = self._meta(info.table)
            keys[view] = meta.key
            metrics[view] = meta.metric
            typ = info.dataset.schema.field(meta.key).type if meta.key in info.dataset.schema.names else None
            kinds[view] = ("i" if typ is not None and pa.types.is_integer(typ)
                           else "s" if typ is not None and (pa.types.is_string(typ)
                                                            or pa.types.is_large_string(typ))
                           else "o")
        for var, m in (("__ea_key", keys), ("__ea_keykind", kinds), ("__ea_metric", metrics)):
            self.con.execute(f"SET VARIABLE {var} = {_map_literal(m)}")

    def _ensure_name(self, name: str) -> bool:
        """Make sure a name that may denote a store view is registered and current."""
        if self.store is None:
            return False
        table, sep, ref = name.partition("@")
        if table not in self._tables and not self._known_table(table):
            return False
        if not sep:
            return self._register(table, None)
        if not ref:
            raise VersionNotFoundError(f"{name!r}: give a version number or tag after '@'")
        return self._register(table, ref, name)

    def _known_table(self, table: str) -> bool:
        if not table or self.store is None:
            return False
        return any(v.table == table for v in self._views.values())

    def _prepare(self, query: str) -> None:
        if self.store is None or not isinstance(query, str):
            return
        changed = False
        for name in _candidate_names(query):
            changed |= self._ensure_name(name)
        if changed:
            self._publish()

    def _table(self, info: _View) -> Any:
        """The store's handle on a view's table: one per table, so the versions it opened
        stay open between queries."""
        assert self.store is not None
        table = self._handles.get(info.table)
        if table is None:
            table = self._handles[info.table] = self.store.table(info.table)
        return table

    # -- knn answered before DuckDB runs (see _knnfast) -----------------------------------
    def _fast_knn(self, query: str, parameters: Any) -> tuple[str, Any]:
        if (self.store is None or not self.fast_knn or not isinstance(query, str)
                or not isinstance(parameters, list | tuple) or "knn" not in query.lower()):
            return query, parameters
        calls = find_knn_calls(query)
        pieces, last, answered = [], 0, set()
        with_vector = may_read_column(query, VECTOR_COLUMN) if calls else True
        for call in calls:
            name = self._knn_table(call, parameters[call.param], with_vector) \
                if call.param < len(parameters) else None
            if name is None:
                continue
            pieces += [query[last:call.start], name]
            last = call.end
            answered.add(call.param)
        if not answered:
            return query, parameters
        pieces.append(query[last:])
        return "".join(pieces), [p for i, p in enumerate(parameters) if i not in answered]

    def _knn_table(self, call: KnnCall, value: Any, with_vector: bool) -> str | None:
        """Register the rows ``knn(call.view, value, call.k)`` returns; None leaves the call
        to the macro (not a store view, a vector the store refuses...)."""
        info = self._views.get(call.view)
        if info is None:
            return None
        meta = self._meta(info.table)
        try:
            q = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            return None
        if q.shape[0] != meta.dimension or not np.isfinite(q).all():
            return None
        table = self._table(info)
        cols = None if with_vector else [c for c in info.dataset.schema.names if c != VECTOR_COLUMN]
        try:
            res = table.search(q, k=call.k, version=info.version, columns=cols)
        except ValidationError:
            return None
        i = res.column_names.index("distance")
        res = res.set_column(i, "distance", pc.cast(res.column(i), pa.float64()))
        with self._lock:
            self._fast_n += 1
            name = f"__ea_knn_{self._fast_n}"
            self.con.register(name, res)
            self._fast_names.append(name)
            while len(self._fast_names) > 16:  # results a caller may still be fetching
                self.con.unregister(self._fast_names.pop(0))
        return name

    # -- Python side of the SQL functions ------------------------------------------------
    def _view(self, name: str) -> _View:
        info = self._views.get(name)
        if info is None:
            raise ValidationError(f"{name!r} is not a store view of this connection")
        return info

    def _matrix(self, info: _View) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """(float32 matrix, keys as strings, squared row norms) of a view, in Lance order.

        Cached per (uri, version): knn then costs one GEMV + argpartition, like numpy on a
        matrix already in memory.
        """
        assert self.store is not None
        ck = (self.store.table_uri(info.table), info.version)
        with self._lock:
            hit = self._cache.get(ck)
            if hit is not None:
                self._cache.move_to_end(ck)
                return hit
        key = self._meta(info.table).key
        tbl = info.dataset.to_table(columns=[key, VECTOR_COLUMN], filter=f"{VECTOR_COLUMN} IS NOT NULL")
        mat = udf.vectors_matrix(tbl.column(VECTOR_COLUMN), "similarity_join")
        keys = pc.cast(tbl.column(key), pa.string()).combine_chunks()
        sq = np.einsum("ij,ij->i", mat, mat, dtype=np.float64).astype(np.float32)
        with self._lock:
            self._cache[ck] = (mat, keys, sq)
            while (len(self._cache) > 1
                   and sum(e[0].nbytes for e in self._cache.values()) > self.cache_bytes):
                self._cache.popitem(last=False)
        return mat, keys, sq

    def _knn_hits(self, view: str, q: np.ndarray, k: int, metric: str,
                  use_index: bool) -> list[dict[str, Any]]:
        """The k nearest rows of a store view by the store's own search (tuned index path or
        cached exact scan): key (``ki`` for integer keys, ``ks`` for strings), distance
        and rank. The macro then fetches those rows by key."""
        info = self._view(view)
        if metric not in ("cosine", "dot", "l2"):
            raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")
        table = self._table(info)
        meta = self._meta(info.table)
        res = table.search(q, k=int(k), version=info.version, columns=[meta.key], metric=metric,
                           use_index=None if use_index and metric == meta.metric else False)
        keys = res.column(meta.key).to_pylist()
        dist = res.column("distance").to_pylist()
        field = "ki" if pa.types.is_integer(res.schema.field(meta.key).type) else "ks"
        return [{field: key if field == "ki" else str(key), "distance": d, "rank": i + 1}
                for i, (key, d) in enumerate(zip(keys, dist, strict=True))]

    def _topk_store(self, left: np.ndarray, view: str, sql_keys: pa.Array, k: int, metric: str,
                    inv_cov: Any, approximate: bool) -> pa.Array:
        info = self._view(view)
        if approximate and metric in ("cosine", "dot", "l2") and _index_metric(info.dataset) == metric:
            return self._ann_join(left, info, sql_keys, k, metric)
        mat, lance_keys, _ = self._matrix(info)
        li, ri, dist = udf.topk(left, mat, k, metric, inv_cov)
        # Lance row order -> position in the SQL list of right keys.
        pos = pc.index_in(lance_keys, value_set=_combine(sql_keys)).to_numpy(zero_copy_only=False)
        return udf.hits_array(li, pos[ri].astype(np.int64), dist, min(int(k), mat.shape[0]))

    def _ann_join(self, left: np.ndarray, info: _View, sql_keys: pa.Array, k: int,
                  metric: str) -> pa.Array:
        """Approximate join: batched index probes, then exact distances on the candidates."""
        import lancedb

        assert self.store is not None
        key = self._meta(info.table).key
        db = lancedb.connect(self.store.uri, storage_options=self.store.storage_options)
        tbl = db.open_table(info.table)
        tbl.checkout(info.version)
        li_parts, ri_parts, d_parts = [], [], []
        value_set = _combine(sql_keys)
        for s in range(0, left.shape[0], 256):
            block = left[s:s + 256]
            params = _search_params(info.dataset)
            search = (tbl.search(list(block), vector_column_name=VECTOR_COLUMN)
                      .distance_type(metric).limit(int(k)).refine_factor(params["refine_factor"]))
            if "nprobes" in params:
                search = search.nprobes(params["nprobes"])
            res = search.select([key, VECTOR_COLUMN]).to_arrow()
            qi = res.column("query_index").to_numpy() + s
            cand = udf.vectors_matrix(res.column(VECTOR_COLUMN))
            lq = left[qi]
            if metric == "cosine":
                d = 1.0 - np.einsum("ij,ij->i", lq, cand) / (
                    np.linalg.norm(lq, axis=1) * np.linalg.norm(cand, axis=1))
            elif metric == "dot":
                d = 1.0 - np.einsum("ij,ij->i", lq, cand)
            else:
                d = np.linalg.norm(lq - cand, axis=1)
            pos = pc.index_in(pc.cast(res.column(key), pa.string()), value_set=value_set)
            li_parts.append(qi)
            ri_parts.append(pos.to_numpy(zero_copy_only=False))
            d_parts.append(d)
        li = np.concatenate(li_parts) if li_parts else np.zeros(0, np.int64)
        ri = np.concatenate(ri_parts) if ri_parts else np.zeros(0, np.int64)
        dist = np.concatenate(d_parts) if d_parts else np.zeros(0)
        order = np.lexsort((dist, li))
        li, ri, dist = li[order], ri[order], dist[order]
        rank = np.ones(len(li), np.int64)
        if len(li):
            starts = np.r_[True, li[1:] != li[:-1]]
            grp = np.cumsum(starts) - 1
            first = np.flatnonzero(starts)
            rank = np.arange(len(li)) - first[grp] + 1
        return _hits_with_rank(li, ri, dist, rank)

    # -- UDF registration --------------------------------------------------------------------
    def _register_functions(self) -> None:
        con = self.con
        fl = "FLOAT[]"
        lfl = "FLOAT[][]"
        dd = "DOUBLE[][]"
        hit = "STRUCT(l INTEGER, r INTEGER, distance DOUBLE, rank INTEGER)[]"

        def agg(vs: pa.Array, how: pa.Array) -> pa.Array:
            return udf.list_vec_agg(vs, udf._scalar(how) or "mean")

        def topk(lv: pa.Array, rv: pa.Array, k: pa.Array, metric: pa.Array, inv: pa.Array,
                 approx: pa.Array) -> pa.Array:
            left = _first_matrix(lv)
            right = _first_matrix(rv)
            kk = int(udf._scalar(k))
            li, ri, dist = udf.topk(left, right, kk, udf._scalar(metric), udf._scalar(inv))
            return _repeat(udf.hits_array(li, ri, dist, min(kk, right.shape[0])), len(lv))

        def topk_packed(lv: pa.Array, rv: pa.Array, k: pa.Array, metric: pa.Array, inv: pa.Array,
                        approx: pa.Array) -> pa.Array:
            left, right = udf.packed_matrix(lv), udf.packed_matrix(rv)
            kk = int(udf._scalar(k))
            li, ri, dist = udf.topk(left, right, kk, udf._scalar(metric), udf._scalar(inv))
            return _repeat(udf.hits_array(li, ri, dist, min(kk, right.shape[0])), len(lv))

        def topk_store_packed(lv: pa.Array, view: pa.Array, keys: pa.Array, k: pa.Array,
                              metric: pa.Array, inv: pa.Array, approx: pa.Array) -> pa.Array:
            return store_hits(udf.packed_matrix(lv), lv, view, keys, k, metric, inv, approx)

        def topk_store(lv: pa.Array, view: pa.Array, keys: pa.Array, k: pa.Array, metric: pa.Array,
                       inv: pa.Array, approx: pa.Array) -> pa.Array:
            return store_hits(_first_matrix(lv), lv, view, keys, k, metric, inv, approx)

        def store_hits(left: np.ndarray, lv: pa.Array, view: pa.Array, keys: pa.Array, k: pa.Array,
                       metric: pa.Array, inv: pa.Array, approx: pa.Array) -> pa.Array:
            cell = _combine(keys)[0]
            sql_keys = cell.values if cell.is_valid else pa.array([], pa.string())
            res = self._topk_store(left, udf._scalar(view), sql_keys, int(udf._scalar(k)),
                                   udf._scalar(metric), udf._scalar(inv), bool(udf._scalar(approx)))
            return _repeat(res, len(lv))

        def knn_hits(view: pa.Array, q: pa.Array, k: pa.Array, metric: pa.Array,
                     use_index: pa.Array) -> pa.Array:
            views, qs, ks = _combine(view), _combine(q), _combine(k)
            metrics, idx = _combine(metric), _combine(use_index)
            out: list[list[dict[str, Any]]] = []
            for i in range(len(views)):
                if not qs[i].is_valid or not ks[i].is_valid or ks[i].as_py() <= 0:
                    out.append([])
                    continue
                name = views[i].as_py()
                qv = qs[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
                dim = self._meta(self._view(name).table).dimension
                if qv.shape[0] != dim:
                    raise ValueError(f"knn: dimension mismatch (query {qv.shape[0]} vs table {dim})")
                if np.isnan(qv).any():
                    raise ValueError("knn: the query vector has NULL or NaN elements")
                out.append(self._knn_hits(name, qv, int(ks[i].as_py()), metrics[i].as_py(),
                                          bool(idx[i].as_py())))
            return pa.array(out, _KNN_HITS)

        for suffix, typ in (("f", lfl), ("d", dd)):
            con.create_function(f"_ea_list_vec_agg_{suffix}", agg, [typ, "VARCHAR"], "DOUBLE[]",
                                type="arrow", null_handling="special")
        con.create_function("_ea_list_vec_cov", udf.list_vec_cov, [dd], dd, type="arrow",
                            null_handling="special")
        con.create_function("_ea_mat_inverse", udf.mat_inverse, [dd], dd, type="arrow",
                            null_handling="special")
        con.create_function("_ea_topk", topk, [lfl, lfl, "BIGINT", "VARCHAR", dd, "BOOLEAN"], hit,
                            type="arrow", null_handling="special")
        con.create_function("_ea_topk_store", topk_store,
                            [lfl, "VARCHAR", "VARCHAR[]", "BIGINT", "VARCHAR", dd, "BOOLEAN"], hit,
                            type="arrow", null_handling="special", side_effects=False)
        con.create_function("_ea_topk_packed", topk_packed,
                            ["BLOB", "BLOB", "BIGINT", "VARCHAR", dd, "BOOLEAN"], hit,
                            type="arrow", null_handling="special")
        con.create_function("_ea_topk_store_packed", topk_store_packed,
                            ["BLOB", "VARCHAR", "VARCHAR[]", "BIGINT", "VARCHAR", dd, "BOOLEAN"], hit,
                            type="arrow", null_handling="special", side_effects=False)
        con.create_function("_ea_distance", udf.pair_distance, ["DOUBLE[]", "DOUBLE[]", "VARCHAR", dd],
                            "DOUBLE", type="arrow", null_handling="special")
        con.create_function("_ea_knn_hits", knn_hits, ["VARCHAR", fl, "BIGINT", "VARCHAR", "BOOLEAN"],
                            "STRUCT(ki BIGINT, ks VARCHAR, distance DOUBLE, rank INTEGER)[]",
                            type="arrow", null_handling="special")


# -- helpers ---------------------------------------------------------------------------------
_KNN_HITS = pa.list_(pa.struct([("ki", pa.int64()), ("ks", pa.string()),
                                ("distance", pa.float64()), ("rank", pa.int32())]))


def _combine(arr: Any) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _first_matrix(lv: pa.Array) -> np.ndarray:
    """The list of vectors of the (single-row) argument as a matrix; empty if NULL."""
    cell = _combine(lv)[0]
    if not cell.is_valid or len(cell.values) == 0:
        return np.zeros((0, 0), np.float32)
    return udf.vectors_matrix(cell.values, "similarity_join")


def _repeat(one: pa.Array, n: int) -> pa.Array:
    # The UDF is called with a chunk of n identical rows (the CTEs hold one row each).
    return one if n == 1 else pa.concat_arrays([one] * n)


def _hits_with_rank(li: np.ndarray, ri: np.ndarray, dist: np.ndarray, rank: np.ndarray) -> pa.Array:
    st = pa.StructArray.from_arrays(
        [pa.array(li + 1, pa.int32()), pa.array(ri + 1, pa.int32()),
         pa.array(dist.astype(np.float64)), pa.array(rank, pa.int32())],
        fields=list(udf.HIT_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array([0, len(li)], pa.int32()), st)


def _index_metric(ds: Any) -> str | None:
    """Metric of the dataset's vector index, or None if it has none."""
    try:
        for idx in ds.describe_indices():
            fields = getattr(idx, "field_names", None) or getattr(idx, "fields", [])
            if VECTOR_COLUMN in fields:
                details = getattr(idx, "details", None) or {}
                if isinstance(details, str):
                    try:
                        details = json.loads(details)
                    except ValueError:
                        details = {}
                m = str(details.get("metric_type") or details.get("distance_type") or "").lower()
                return m or "l2"
    except AttributeError:
        for idx in ds.list_indices():
            if VECTOR_COLUMN in idx.get("fields", []):
                return str(idx.get("metric_type", "l2")).lower()
    return None


def _search_params(ds: Any) -> dict[str, Any]:
    """ANN search parameters: those the index policy stored with the version when it tuned
    the index to a recall target, else a refine step (PQ codes alone ranked poorly here:
    recall@10 ~0.56 on MiniLM without refine)."""
    params: dict[str, Any] = {"refine_factor": 4}
    try:
        from ..index._build import search_defaults

        tuned = search_defaults(ds) or {}
    except Exception:  # an index built outside embed_assets has no stored policy
        tuned = {}
    params.update({k: v for k, v in tuned.items() if k in ("nprobes", "refine_factor") and v})
    return params


def _map_literal(m: dict[str, str]) -> str:
    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    if not m:
        return "MAP {}::MAP(VARCHAR, VARCHAR)"
    return "MAP {" + ", ".join(f"{q(k)}: {q(v)}" for k, v in sorted(m.items())) + "}"


def _candidate_names(query: str) -> set[str]:
    """Identifiers and string literals of a statement that could name a store view."""
    try:
        toks = tokens(query)
    except Exception:  # a statement DuckDB cannot tokenise fails on execute anyway
        return set()
    names = (duckdb.token_type.identifier, duckdb.token_type.string_const)
    out: set[str] = set()
    for _, _, text, typ in toks:
        if typ not in names:
            continue
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].replace(text[0] * 2, text[0])
        if text:
            out.add(text)
    return out


# -- entry points ---------------------------------------------------------------------------
def connect(
    store: Store | str | os.PathLike[str] | None = None,
    *,
    read_only_views: bool = True,
    extensions: Iterable[str] = EXTENSIONS,
    database: str = ":memory:",
    config: dict[str, Any] | None = None,
    storage_options: dict[str, str] | None = None,
    cache_bytes: int = _MATRIX_CACHE_BYTES,
    native: bool = True,
) -> SQLConnection:
    """A DuckDB connection with the vector macros and the store's tables as views.

    Parameters
    ----------
    store : Store or str, optional
        The store whose tables become views (a :class:`Store` or its URI). ``None``
        gives a connection with the macros and extensions only.
    read_only_views : bool, default True
        Store tables are read-only views (writes go through :class:`Store`, which keeps
        provenance). With False the store directory is also attached through the
        ``lance`` extension as catalog ``lance_store`` (local stores only), where SQL can
        ``CREATE TABLE``/``INSERT`` Lance tables directly, without embed_assets provenance.
    extensions : iterable of str, default ("lance", "vss")
        DuckDB extensions to load from their PyPI wheels (``()`` skips them; loading the
        lance extension takes about a second, once per process).
    database, config
        Passed to :func:`duckdb.connect`.
    storage_options : dict, optional
        Object-store options when ``store`` is a URI.
    cache_bytes : int, default 1 GiB
        Memory for decoded store versions that exact ``knn``/``similarity_join`` reuse
        (versions are immutable, so the cache is never stale); least recently used first out.
    native : bool, default True
        Load the ``ea_vec`` C extension (built from ``embed_assets/native`` on first use)
        that backs ``vec_mean``/``vec_sum``; without it, or without a C compiler, those
        macros use a Python UDF with the same results, ~20x slower.

    Returns
    -------
    SQLConnection
        Forwards every ``duckdb.DuckDBPyConnection`` method; see the module docstring
        for when new versions become visible.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from embed_assets import Store
    >>> s = Store(tempfile.mkdtemp())
    >>> _ = s.write("docs", {"id": [1, 2], "vector": [[1.0, 0.0], [0.0, 1.0]]}, key="id")
    >>> con = connect(s, extensions=())
    >>> con.sql("SELECT id, rank FROM knn('docs', [1.0, 0.1], 1)").fetchall()
    [(1, 1)]
    >>> con.sql('SELECT count(*) FROM "docs@1"').fetchone()[0]
    2
    """
    if store is not None and not isinstance(store, Store):
        store = Store(store, storage_options=storage_options)
    cfg = dict(config or {})
    native_file = _native.extension_file() if native else None
    if native_file is not None:
        cfg.setdefault("allow_unsigned_extensions", "true")  # our own build: see _native
    raw = duckdb.connect(database, config=cfg)
    for name in extensions:
        raw.execute(f"LOAD '{extension_path(name)}'")
    con = SQLConnection(raw, store, cache_bytes)
    load_macros(raw)
    con._register_functions()
    for var in ("__ea_key", "__ea_keykind", "__ea_metric"):
        raw.execute(f"SET VARIABLE {var} = {_map_literal({})}")
    load_macros(raw, _STORE_MACRO_FILES)
    if native_file is not None and str(cfg["allow_unsigned_extensions"]).lower() == "true":
        try:
            raw.execute(f"LOAD '{native_file}'")
        except duckdb.Error as exc:  # a build this DuckDB refuses: keep the Python macros
            _native._STATUS.append(f"not loaded: {exc}")
        else:
            load_macros(raw, ("native.sql",))
    if store is not None:
        for name in store.table_names():
            con._register(name, None)
        con._publish()
        if not read_only_views:
            if "lance" not in set(extensions):
                raise ValidationError("read_only_views=False needs the lance extension")
            if "://" in store.uri and not store.uri.startswith("file://"):
                raise ValidationError("read_only_views=False works for local stores only")
            path = store.uri.removeprefix("file://").replace("'", "''")
            raw.execute(f"ATTACH '{path}' AS lance_store (TYPE LANCE)")
    return con


def run_sql(store: Store | str | os.PathLike[str] | None, query: str, *,
            storage_options: dict[str, str] | None = None,
            extensions: Iterable[str] = EXTENSIONS) -> pa.Table:
    """Run one SQL statement (or several; the last one's result is returned) on a store.

    This is the body of ``embed-assets sql "QUERY"``. Errors from DuckDB come back as
    :class:`~embed_assets.ValidationError` with DuckDB's first message line.
    """
    if not query or not query.strip():
        raise ValidationError("the SQL query is empty")
    try:
        con = connect(store, extensions=extensions, storage_options=storage_options)
    except TableNotFoundError:
        raise
    try:
        stmts = duckdb.extract_statements(query)
        for st in stmts[:-1]:
            con.execute(st.query)
        last = stmts[-1].query if stmts else query
        rel = con.sql(last)
        return rel.to_arrow_table() if rel is not None else pa.table({})
    except duckdb.Error as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(msg) from None
    finally:
        con.close()


def format_result(table: pa.Table, *, as_json: bool = False, max_width: int = 60) -> str:
    """Render a query result for the terminal (aligned columns) or as a JSON list of rows."""
    rows = table.to_pylist()
    if as_json:
        return json.dumps(rows, indent=2, default=_json_default)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, list | tuple) and v and all(isinstance(x, int | float) for x in v):
            shown = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v[:4])
            return f"[{shown}{', ...' if len(v) > 4 else ''}] ({len(v)})"
        s = "NULL" if v is None else str(v)
        return s if len(s) <= max_width else s[: max_width - 3] + "..."

    cols = table.column_names
    cells = [[cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def timed_connect(store: Store | str, **kwargs: Any) -> tuple[SQLConnection, float]:
    """:func:`connect` and the seconds it took (used by the benchmark)."""
    t0 = time.perf_counter()
    con = connect(store, **kwargs)
    return con, time.perf_counter() - t0
