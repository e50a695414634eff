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

import contextlib
import re
import threading
import weakref
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ..errors import QueryError, ValidationError, VersionNotFoundError, unknown_column_message
from ..store import VECTOR_COLUMN, Fusion, Store, TableMeta, table_fingerprint, version_number
from . import _ranking
from ._knnfast import KnnCall, find_knn_calls, may_read_column, sql_distances, store_search, tokens
from ._knnrows import RowFunctions
from ._pushdown import ScanDataset
from ._views import View

__all__ = ["SQLConnection"]


class UnknownColumnError(QueryError, duckdb.BinderException):
    """A ``key :=`` / ``vector :=`` of ``knn``/``similarity_join`` names no column of its
    table; both a :class:`~embed_assets.QueryError` and the ``duckdb.BinderException``
    DuckDB raised, so ``except duckdb.Error`` keeps catching it."""


# -- the connection ------------------------------------------------------------------------
class SQLConnection:
    """A DuckDB connection whose store views follow the store (see module docstring).

    Every ``duckdb.DuckDBPyConnection`` attribute is available; ``execute``,
    ``executemany``, ``sql``, ``query``, ``from_query`` and ``table`` first make sure
    the store views a statement names are registered and current.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, store: Store | None) -> None:
        self.con = con
        self.store = store
        self._views: dict[str, View] = {}
        self._handles: dict[str, Any] = {}
        self._embedders: dict[str, Any] = {}  # model name -> embedder, for hybrid_search
        self._known: set[str] = set()  # store tables seen at connect/refresh or since
        self._lock = threading.RLock()
        self.fast_knn = True  # see _knnfast; False always runs the knn macro
        self._fast_n = 0
        self._row_functions: RowFunctions | None = None
        # knn result tables: those of the last execute() (its result is read through the
        # connection until the next statement), and those released by the relations of
        # sql() that held them (dropped at the next statement, not inside the finaliser).
        self._exec_names: list[str] = []
        self._released: list[str] = []

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
        self.con.close()

    def execute(self, query: str, parameters: Any = None) -> SQLConnection:
        self._prepare(query)
        self._drop_released(self._exec_names)
        original = query
        query, parameters, self._exec_names = self._fast_knn(query, parameters)
        try:
            self.con.execute(query, parameters)
        except duckdb.BinderException as exc:
            self._raise_unknown_column(exc, original)
            raise
        return self

    def executemany(self, query: str, parameters: Any = None) -> SQLConnection:
        self._prepare(query)
        self.con.executemany(query, parameters)
        return self

    def sql(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.sql, query, args, kwargs)

    def query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.query, query, args, kwargs)

    def from_query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.from_query, query, args, kwargs)

    def _relation(self, method: Any, query: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """sql/query/from_query: the statement's knn calls answered first, as in execute()."""
        self._prepare(query)
        self._drop_released()
        names: list[str] = []
        original = query
        if not args:
            query, params, names = self._fast_knn(query, kwargs.get("params"))
            if params or "params" in kwargs:
                kwargs["params"] = params
        try:
            rel = method(query, *args, **kwargs)
        except duckdb.BinderException as exc:
            self._raise_unknown_column(exc, original)
            raise
        if names:
            if rel is None:
                self._released.extend(names)
            else:  # the result tables live as long as the relation that reads them
                weakref.finalize(rel, self._released.extend, names)
        return rel

    def _raise_unknown_column(self, exc: duckdb.BinderException, query: str) -> None:
        """DuckDB's binder text for a ``key :=``/``vector :=`` naming no column, as one
        line naming it (other binder errors go on unchanged)."""
        msg = unknown_column_message(str(exc), query, self._columns_of)
        if msg is not None:
            raise UnknownColumnError(msg) from None

    def _columns_of(self, name: str) -> list[str] | None:
        try:
            quoted = '"' + name.replace('"', '""') + '"'
            return [d[0] for d in self.con.execute(f"SELECT * FROM {quoted} LIMIT 0").description]
        except duckdb.Error:
            return None

    def _drop_released(self, extra: list[str] | None = None) -> None:
        with self._lock:
            names = [*self._released, *(extra or [])]
            self._released.clear()
            for name in names:
                with contextlib.suppress(duckdb.Error):  # the connection is closed
                    self.con.unregister(name)

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
        self._known |= names
        for name in sorted(names):
            self._register(name, None)
        for view, info in list(self._views.items()):
            if info.ref is not None:
                self._register(info.table, info.ref, view)
        self.publish_metadata()
        return self

    def register_version(self, table: str, ref: int | str | None = None) -> str:
        """Register (or re-point) the view of ``table`` at ``ref``; returns the view name."""
        if self.store is None:
            raise ValidationError("this connection has no store")
        view = table if ref is None else f"{table}@{ref}"
        self._register(table, None if ref is None else str(ref), view)
        self.publish_metadata()
        return view

    def _unregister(self, view: str) -> None:
        self.con.unregister(view)
        self._views.pop(view, None)

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
                        # (same folder too: not a table dropped and created again)
                        if old.dataset.latest_version == old.version and \
                                getattr(old.dataset, "_ea_seen", None) == table_fingerprint(uri):
                            return False
                    except Exception:  # the table was dropped: reopening says so
                        pass
                seen = table_fingerprint(uri)
                ds = ScanDataset(uri, storage_options=opts)
                ds._ea_seen = seen  # type: ignore[attr-defined]
                version = ds.version
            elif version_number(ref) is not None:
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
            if old is not None and old.version == version and (
                    ds is None or getattr(old.dataset, "_ea_seen", None) == getattr(ds, "_ea_seen", None)):
                return False
            if ds is None:
                ds = ScanDataset(uri, version=version, storage_options=opts)
            self.con.register(view, ds)
            self._views[view] = View(table, ref, version, ds, TableMeta.infer(ds.schema))
            self._known.add(table)
            return True

    def publish_metadata(self) -> None:
        """Hand the views' metadata to the SQL macros (read with getvariable())."""
        keys, kinds, metrics = {}, {}, {}
        for view, info in self._views.items():
            meta = info.meta
            keys[view] = meta.key
            metrics[view] = meta.metric
            typ = info.dataset.schema.field(meta.key).type if meta.key in info.dataset.schema.names else None
            kinds[view] = ("i" if typ is not None and pa.types.is_integer(typ)
                           else "s" if typ is not None and (pa.types.is_string(typ)
                                                            or pa.types.is_large_string(typ))
                           else "o")
        for var, m in (("__ea_key", keys), ("__ea_keykind", kinds), ("__ea_metric", metrics)):
            self.con.execute(f"SET VARIABLE {var} = {_map_literal(m)}")

    def _ensure_name(self, name: str, literal: bool = False) -> bool:
        """Make sure a name that may denote a store view is registered and current. A
        string literal only may name one (``knn('t@3', ...)``): ``'k@example.com'`` where
        ``k`` is a table is a value, so an unknown version or tag there is not an error."""
        if self.store is None:
            return False
        table, sep, ref = name.partition("@")
        if table not in self._known:
            return False
        if not sep:
            return self._register(table, None)
        if not ref:
            if literal:
                return False
            raise VersionNotFoundError(f"{name!r}: give a version number or tag after '@'")
        try:
            return self._register(table, ref, name)
        except (VersionNotFoundError, ValidationError):
            if literal:
                return False
            raise

    def _prepare(self, query: str) -> None:
        if self.store is None or not isinstance(query, str):
            return
        changed = False
        for name, lenient in _candidate_names(query):
            changed |= self._ensure_name(name, lenient)
        if changed:
            self.publish_metadata()

    def _table(self, info: View) -> Any:
        """The store's handle on a view's table: one per table, so the versions it opened
        stay open between queries."""
        assert self.store is not None
        table = self._handles.get(info.table)
        if table is None:
            table = self._handles[info.table] = self.store.table(info.table)
        return table

    # -- knn answered before DuckDB runs (see _knnfast) -----------------------------------
    def _fast_knn(self, query: str, parameters: Any) -> tuple[str, Any, list[str]]:
        """The statement with answered knn calls replaced by result tables, its remaining
        parameters, and the names of the tables registered for it."""
        if (self.store is None or not self.fast_knn or not isinstance(query, str)
                or not isinstance(parameters, list | tuple | None) or "knn" not in query.lower()):
            return query, parameters, []
        given = parameters
        parameters = [] if parameters is None else parameters
        calls = find_knn_calls(query)
        pieces, last, answered, names = [], 0, set(), []
        rewritten = False
        # Whether the statement reads the results' vectors: asked of the statement without
        # the knn calls themselves (a subquery for the query vector names `vector` too).
        outside = "".join(query[a:b] for a, b in zip(
            [0, *(c.end for c in calls)], [*(c.start for c in calls), len(query)], strict=True))
        with_vector = may_read_column(outside, VECTOR_COLUMN) if calls else True
        for call in calls:
            if call.param is not None:
                if call.param >= len(parameters):
                    continue
                value = parameters[call.param]
            else:
                value = self._standalone_value(call.expr)
                if value is None:
                    # It refers to the statement around it (a LATERAL column): one
                    # vectorised call per chunk of outer rows, see _knnrows.
                    sql = self._knn_rows(call, with_vector)
                    if sql is not None:
                        pieces += [query[last:call.start], sql]
                        last = call.end
                        rewritten = True
                    continue
            name = self._knn_table(call, value, with_vector)
            if name is None:
                continue
            pieces += [query[last:call.start], name]
            last = call.end
            if call.param is not None:
                answered.add(call.param)
            names.append(name)
        if not names and not rewritten:
            return query, given, []
        pieces.append(query[last:])
        return "".join(pieces), [p for i, p in enumerate(parameters) if i not in answered], names

    def _standalone_value(self, expr: str | None) -> Any:
        """The value of a knn query-vector expression evaluated on its own (a scalar
        subquery, a literal), or None when it cannot stand alone (it refers to the
        statement around it) or is not one vector: the macro then decides."""
        if not expr:
            return None
        lit = _LIST_LITERAL.match(expr)
        if lit is not None:  # a list of numbers: no statement needed to read it
            try:
                return [float(x) for x in lit.group(1).split(",")]
            except ValueError:
                return None
        inner = _SUBQUERY.match(expr)
        if inner is not None and _one_group(expr):
            # (SELECT ...): run the SELECT itself; a scalar subquery's plan costs ~0.6 ms
            # more. Anything but exactly one row is left to the macro (DuckDB's semantics).
            try:
                rows = self.con.execute(inner.group(1)).fetchmany(2)
            except duckdb.Error:
                return None
            return rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else None
        try:
            row = self.con.execute(f"SELECT CAST(({expr}) AS FLOAT[])").fetchone()
        except duckdb.Error:
            return None
        return None if row is None else row[0]

    def _knn_table(self, call: KnnCall, value: Any, with_vector: bool) -> str | None:
        """Register the rows ``knn(call.view, value, call.k, **call.options)`` returns;
        None leaves the call to the macro (not a store view, a vector the store
        refuses...)."""
        info = self._views.get(call.view)
        if info is None or value is None:
            return None
        meta = info.meta
        try:
            q = np.asarray(value, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            return None
        if q.shape[0] != meta.dimension or not np.isfinite(q).all():
            return None
        how = store_search(call.options, meta)
        if how is None:
            return None
        table = self._table(info)
        cols = None if with_vector else [c for c in info.dataset.schema.names if c != VECTOR_COLUMN]
        try:
            res = sql_distances(table.search(q, k=call.k, version=info.version, columns=cols,
                                             metric=how.metric, where=how.where,
                                             use_index=how.use_index))
        except ValidationError:
            return None
        with self._lock:
            self._fast_n += 1
            name = f"__ea_knn_{self._fast_n}"
            self.con.register(name, res)
        return name

    def _knn_rows(self, call: KnnCall, with_vector: bool) -> str | None:
        info = self._views.get(call.view)
        if info is None or call.expr is None:
            return None
        with self._lock:
            if self._row_functions is None:
                self._row_functions = RowFunctions(self.con)
            return self._row_functions.call_sql(info, self._table(info), call.expr, call.k,
                                                call.options, with_vector)

    # -- Python side of the SQL functions ------------------------------------------------
    def _view(self, name: str) -> View:
        info = self._views.get(name)
        if info is None:
            raise ValidationError(f"{name!r} is not a store view of this connection")
        return info

    def _matrix(self, info: View) -> tuple[np.ndarray, pa.Array]:
        return _ranking.join_side(info)

    def _knn_hits(self, view: str, q: np.ndarray, k: int, metric: str,
                  use_index: bool, where: str | None = None) -> list[dict[str, Any]]:
        info = self._view(view)
        return _ranking.knn_hits(self._table(info), info, q, k, metric, use_index, where)

    def _hybrid_hits(self, view: str, text: str, k: int, mode: str, where: str | None,
                     text_weight: float, vector_weight: float) -> list[dict[str, Any]]:
        """text_search / hybrid_search: the store's BM25 (and vector) search; the text is
        embedded with the view's model (loaded once per connection)."""
        info = self._view(view)
        meta = info.meta
        embedder = None
        if mode != "text":
            embedder = self._embedders.get(meta.model or "")
            if embedder is None:
                from ..embed import default_embedder

                embedder = self._embedders[meta.model or ""] = default_embedder(meta.model)
        res = self._table(info).search(
            text, k=k, version=info.version, columns=[meta.key], where=where, mode=mode,
            embedder=embedder, fusion=Fusion(vector_weight, text_weight))
        field = "ki" if pa.types.is_integer(res.schema.field(meta.key).type) else "ks"
        names = res.column_names
        out = []
        for row in res.to_pylist():
            key = row[meta.key]
            out.append({field: key if field == "ki" else str(key),
                        "distance": row.get("distance") if "distance" in names else None,
                        "text_score": row.get("text_score"),
                        "score": row.get("score") if "score" in names else row.get("text_score"),
                        "rank": row["rank"]})
        return out

    def _topk_store(self, left: np.ndarray, view: str, sql_keys: pa.Array, k: int, metric: str,
                    inv_cov: Any, approximate: bool) -> pa.Array:
        info = self._view(view)
        if approximate and _ranking.index_serves(info, metric):
            assert self.store is not None
            return _ranking.ann_join(self.store, info, left, sql_keys, k, metric)
        return _ranking.exact_join(self._matrix(info), left, sql_keys, k, metric, inv_cov)


def _map_literal(m: dict[str, str]) -> str:
    def q(s: str) -> str:
        return "'" + s.replace("'", "''") + "'"

    if not m:
        return "MAP {}::MAP(VARCHAR, VARCHAR)"
    return "MAP {" + ", ".join(f"{q(k)}: {q(v)}" for k, v in sorted(m.items())) + "}"


# [1.0, -2e-3, ...] with an optional ::FLOAT[n] / ::DOUBLE[] cast
_LIST_LITERAL = re.compile(r"^\s*\[([-+0-9.eE,\s]+)\]\s*(?:::\s*(?:FLOAT|DOUBLE|REAL)\s*\[\s*\d*\s*\])?\s*$",
                           re.IGNORECASE)

# (SELECT ...) or (WITH ...), the whole expression
_SUBQUERY = re.compile(r"^\s*\(\s*((?:SELECT|WITH)\b.*)\)\s*$", re.IGNORECASE | re.DOTALL)

def _one_group(expr: str) -> bool:
    """Whether the parenthesis opening ``expr`` is the one closing it (``(a) + (b)`` is
    two groups); string literals are skipped by DuckDB's tokenizer."""
    depth = 0
    toks = tokens(expr)
    for i, (_, _, text, _) in enumerate(toks):
        if text == "(":
            depth += 1
        elif text == ")":
            depth -= 1
        if depth == 0:
            return i == len(toks) - 1
    return False


_TABLE_FUNCTIONS = ("knn", "similarity_join", "query_table", "hybrid_search")


def _candidate_names(query: str) -> set[tuple[str, bool]]:
    """(text, lenient) of the identifiers and string literals of a statement that could
    name a store view. A literal is a table reference only as a table argument of
    ``knn``/``similarity_join``/``query_table``; anywhere else (``WHERE id = 'k@x'``) it
    is lenient: it names a view only if that view exists."""
    try:
        toks = tokens(query)
    except Exception:  # a statement DuckDB cannot tokenise fails on execute anyway
        return set()
    tt = duckdb.token_type
    texts = [t[2].lower() for t in toks]
    out: set[tuple[str, bool]] = set()
    for i, (_, _, text, typ) in enumerate(toks):
        if typ not in (tt.identifier, tt.string_const):
            continue
        literal = typ == tt.string_const
        table_arg = literal and i >= 2 and texts[i - 1] == "(" and texts[i - 2] in _TABLE_FUNCTIONS
        table_arg |= (literal and i >= 4 and texts[i - 1] == "," and toks[i - 2][3] == tt.string_const
                      and texts[i - 3] == "(" and texts[i - 4] == "similarity_join")
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].replace(text[0] * 2, text[0])
        if text:
            out.add((text, literal and not table_arg))
    return out


