"""The store views of one session: which versions are registered in DuckDB, when they are
re-pointed, and the Python side of the SQL functions that read them.

How views are registered, and when new versions become visible
----------------------------------------------------------------
A view is a Lance dataset handed to DuckDB as a pyarrow dataset (DuckDB pushes column
projections and filters into the Lance scanner), so a version view costs one manifest read
(~1 ms) when it is registered. Registering every version of every table up front would
grow with history (thousands of versions = seconds), so registration is lazy:

* at connect, only the latest version of each table is registered (one per table);
* before each statement, its tokens (DuckDB's tokenizer) are scanned for store names:
  ``"name@N"`` / ``"name@TAG"`` identifiers or string literals (as in ``knn('name@3', ...)``)
  are registered on first use, tags are re-resolved (a moved tag is followed), and a plain
  ``name`` is re-pointed at the latest version if a newer one was committed since; a table
  name bound as a parameter (``knn(?, ...)``) is looked up the same way by the rewriter;
* tables created after connect appear after ``refresh()``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ..errors import ValidationError, VersionNotFoundError
from ..store import Fusion, Store, TableMeta, VersionKey, table_fingerprint, version_number
from . import _ranking
from ._pushdown import ScanDataset
from ._views import View

# Table functions whose first string argument (and similarity_join's second) names a table.
TABLE_FUNCTIONS = ("knn", "similarity_join", "query_table", "hybrid_search")


class Registry:
    """The views of one connection, and what the ``_ea_*`` functions ask of them."""

    def __init__(self, con: duckdb.DuckDBPyConnection, store: Store | None) -> None:
        self.con = con
        self.store = store
        self.views: dict[str, View] = {}
        self._handles: dict[str, Any] = {}
        self._embedders: dict[str, Any] = {}  # model name -> embedder, for hybrid_search
        self.known: set[str] = set()  # store tables seen at connect/refresh or since
        self.lock = threading.RLock()
        # The exception the last failing _ea_* function raised: DuckDB reports it as text
        # wrapped in its own ("Python exception occurred while executing the UDF"), so the
        # connection takes the message from the exception itself.
        self.udf_error: BaseException | None = None
        # How a join reads a view's matrix: the connection's hook (tests replace it).
        self.matrix: Any = _ranking.join_side

    # -- registration ----------------------------------------------------------------------
    def refresh(self) -> None:
        if self.store is None:
            return
        names = set(self.store.table_names())
        for gone in [v for v, info in self.views.items() if info.table not in names]:
            self.con.unregister(gone)
            self.views.pop(gone, None)
        self.known |= names
        for name in sorted(names):
            self.register(name, None)
        for view, info in list(self.views.items()):
            if info.ref is not None:
                self.register(info.table, info.ref, view)
        self.publish_metadata()

    def register(self, table: str, ref: str | None, view: str | None = None) -> bool:
        """(Re-)register one view; True if it changed. Raises for unknown versions/tags."""
        assert self.store is not None
        view = view or (table if ref is None else f"{table}@{ref}")
        version: int | tuple[str, int]
        uri = self.store.table_uri(table)
        opts = self.store.storage_options
        with self.lock:
            old = self.views.get(view)
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
                ds._ea_seen = seen
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
                target = self.store.table(table).dataset(ref)  # a tag or an experiment
                branch = getattr(target, "_ea_branch", None)
                version = target.version if branch is None else (branch, target.version)
                ds = None
                if branch is not None and not (old is not None and old.version == version):
                    ds = ScanDataset(uri, storage_options=opts)
                    # versions of an experiment are numbered like production's: its own key
                    ds.at_branch((branch, target.version),
                                 VersionKey(f"{uri}#{branch}", ds.cache_key.table_id, target.version))
            if old is not None and old.version == version and (
                    ds is None or getattr(old.dataset, "_ea_seen", None) == getattr(ds, "_ea_seen", None)):
                return False
            if ds is None:
                ds = ScanDataset(uri, version=version, storage_options=opts)
            self.con.register(view, ds)
            self.views[view] = View(table, ref, version, ds, TableMeta.infer(ds.schema))
            self.known.add(table)
            return True

    def publish_metadata(self) -> None:
        """Hand the views' metadata to the SQL macros (read with getvariable())."""
        keys, kinds, metrics = {}, {}, {}
        for view, info in self.views.items():
            meta = info.meta
            keys[view] = meta.key
            metrics[view] = meta.metric
            typ = info.dataset.schema.field(meta.key).type if meta.key in info.dataset.schema.names else None
            kinds[view] = ("i" if typ is not None and pa.types.is_integer(typ)
                           else "s" if typ is not None and (pa.types.is_string(typ)
                                                            or pa.types.is_large_string(typ))
                           else "o")
        for var, m in (("__ea_key", keys), ("__ea_keykind", kinds), ("__ea_metric", metrics)):
            names = sorted(m)  # bound as data: view names never become SQL text
            self.con.execute(f"SET VARIABLE {var} = MAP(?::VARCHAR[], ?::VARCHAR[])",
                             [names, [m[n] for n in names]])

    def ensure(self, name: str, literal: bool = False) -> bool:
        """Make sure a name that may denote a store view is registered and current. A
        string literal only may name one (``knn('t@3', ...)``): ``'k@example.com'`` where
        ``k`` is a table is a value, so an unknown version or tag there is not an error."""
        if self.store is None:
            return False
        table, sep, ref = name.partition("@")
        if table not in self.known:
            return False
        if not sep:
            return self.register(table, None)
        if not ref:
            if literal:
                return False
            raise VersionNotFoundError(f"{name!r}: give a version number or tag after '@'")
        try:
            return self.register(table, ref, name)
        except (VersionNotFoundError, ValidationError):
            if literal:
                return False
            raise

    def prepare(self, query: str) -> None:
        """Register and re-point the views a statement names (see the module docstring)."""
        if self.store is None:
            return
        changed = False
        for name, lenient in _candidate_names(query):
            changed |= self.ensure(name, lenient)
        if changed:
            self.publish_metadata()

    def handle(self, info: View) -> Any:
        """The store's handle on a view's table: one per table, so the versions it opened
        stay open between queries."""
        assert self.store is not None
        table = self._handles.get(info.table)
        if table is None:
            table = self._handles[info.table] = self.store.table(info.table)
        return table

    # -- the Python side of the SQL functions (see _functions) -----------------------------
    def _view(self, name: str) -> View:
        info = self.views.get(name)
        if info is None:
            raise ValidationError(f"{name!r} is not a store view of this connection")
        return info

    def _knn_hits(self, view: str, qs: np.ndarray, k: int, metric: str,
                  use_index: bool, where: str | None = None) -> list[list[dict[str, Any]]]:
        info = self._view(view)
        return _ranking.knn_hits(self.handle(info), info, qs, k, metric, use_index, where)

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
        res = self.handle(info).search(
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
        if approximate:
            got = _ranking.ann_join(self.handle(info), info, left, sql_keys, k, metric)
            if got is not None:
                return got
        return _ranking.exact_join(self.matrix(info), left, sql_keys, k, metric, inv_cov)


def _tokens(query: str) -> list[tuple[str, Any]]:
    """(text, type) of each token of a statement (DuckDB's tokenizer)."""
    toks = duckdb.tokenize(query)
    out = []
    for i, (pos, typ) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(query)
        out.append((query[pos:end].rstrip(), typ))
    return out


@functools.lru_cache(maxsize=256)
def _candidate_names(query: str) -> frozenset[tuple[str, bool]]:
    """(text, lenient) of the identifiers and string literals of a statement that could
    name a store view. A literal is a table reference only as a table argument of
    ``knn``/``similarity_join``/``query_table``; anywhere else (``WHERE id = 'k@x'``) it
    is lenient: it names a view only if that view exists."""
    try:
        toks = _tokens(query)
    except Exception:  # a statement DuckDB cannot tokenise fails on execute anyway
        return frozenset()
    tt = duckdb.token_type
    texts = [t[0].lower() for t in toks]
    out: set[tuple[str, bool]] = set()
    for i, (text, typ) in enumerate(toks):
        if typ not in (tt.identifier, tt.string_const):
            continue
        literal = typ == tt.string_const
        table_arg = literal and i >= 2 and texts[i - 1] == "(" and texts[i - 2] in TABLE_FUNCTIONS
        table_arg |= (literal and i >= 4 and texts[i - 1] == "," and toks[i - 2][1] == tt.string_const
                      and texts[i - 3] == "(" and texts[i - 4] == "similarity_join")
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1].replace(text[0] * 2, text[0])
        if text:
            out.add((text, literal and not table_arg))
    return frozenset(out)
