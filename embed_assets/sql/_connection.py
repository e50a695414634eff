"""DuckDB over the store: vector macros, versioned views, knn and similarity joins.

:func:`connect` returns a :class:`SQLConnection`, a thin wrapper over a
``duckdb.DuckDBPyConnection`` (every other attribute is forwarded) where:

* every store table is a view under its own name, reading the latest version;
* ``"name@N"`` reads version N and ``"name@TAG"`` the version tagged TAG;
* the macros of ``sql/vectors.sql`` are loaded, then ``sql/store.sql`` swaps in faster
  Python-backed versions of ``vec_mean``/``vec_sum``/``list_vec_*``, ``knn`` and
  ``similarity_join``, and adds ``vec_covariance`` and ``mat_inverse``; where the ea_vec C
  extension builds (:mod:`._native`), ``sql/native.sql`` moves the aggregates onto it;
* DuckDB's ``lance`` extension is loaded from its PyPI wheel where installed (the
  ``duckdb-lance`` extra), ``vss`` only when named; the views need neither.

Each statement run through this wrapper (``execute``, ``sql``, ``query``...) first
registers the versions it names (:mod:`._registry`: a version written after connect is
visible to the next statement, tables created after connect after :meth:`refresh`), then
goes through the rewriter (:mod:`._rewrite`), which checks the arguments of its ``knn`` and
``similarity_join`` calls and lets the store answer the ``knn`` calls it can. A failure is
a :class:`~embed_assets.QueryError` that is also the ``duckdb.Error`` subclass DuckDB
raised (and the store's exception where the store failed: ``"t@nope"``), also one met while
the rows of a lazy relation from ``sql()`` are fetched (:mod:`._relation`). Statements run
on the raw connection (``.con``) or a DuckDB cursor skip all this.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa

from ..errors import EmbedAssetsError, QueryError, ValidationError
from ..store import Store
from . import _ranking
from ._errors import UnknownColumnError, error_type, from_duckdb, from_store
from ._registry import Registry
from ._relation import Relation
from ._rewrite import Rewriter, Rewritten, correlated_k, unknown_column

__all__ = ["SQLConnection", "UnknownColumnError"]


class SQLConnection:
    """A DuckDB connection whose store views follow the store (see module docstring).

    Every ``duckdb.DuckDBPyConnection`` attribute is available; ``execute``,
    ``executemany``, ``sql``, ``query``, ``from_query`` and ``table`` first make sure
    the store views a statement names are registered and current.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, store: Store | None,
                 deferred: tuple[str, ...] = ()) -> None:
        self.con = con
        self.store = store
        self._deferred = list(deferred)  # extensions loaded by the first statement naming them
        self.registry = Registry(con, store)
        self.registry.matrix = lambda info: self._matrix(info)
        self.rewriter = Rewriter(self.registry)
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
        return f"SQLConnection(store={self.store!r}, views={len(self.registry.views)})"

    def close(self) -> None:
        self.con.close()

    @property
    def fast_knn(self) -> bool:
        """Whether the store answers the knn calls it can (False: every call runs the
        macro; the tests compare both)."""
        return self.rewriter.enabled

    @fast_knn.setter
    def fast_knn(self, value: bool) -> None:
        self.rewriter.enabled = bool(value)

    def _matrix(self, info: Any) -> Any:
        """(matrix, keys) of a view's version for similarity_join (the library's cache)."""
        return _ranking.join_side(info)

    @property
    def _fast_n(self) -> int:
        return self.rewriter.answered

    @property
    def _row_functions(self) -> Any:
        return self.rewriter.rows

    # -- statements ------------------------------------------------------------------------
    def needs(self, query: Any) -> None:
        """Load the deferred extensions a statement names (its text mentions them: their
        functions and paths carry the name, ``lance_vector_search``, ``'t.lance'``)."""
        if self._deferred and isinstance(query, str):
            text = query.lower()
            for name in [n for n in self._deferred if n in text]:
                from ._files import extension_path

                self.con.execute(f"LOAD '{extension_path(name)}'")
                self._deferred.remove(name)

    def execute(self, query: str, parameters: Any = None) -> SQLConnection:
        with self._statement(query, parameters) as st:
            self._drop_released(self._exec_names)
            self._exec_names = st.names
            self.con.execute(st.query, st.params)
        return self

    def executemany(self, query: str, parameters: Any = None) -> SQLConnection:
        with self._failures(None, query if isinstance(query, str) else None):
            self.needs(query)
            self.registry.prepare(query)
            self.con.executemany(query, parameters)
        return self

    def sql(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.sql, query, args, kwargs)

    def query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.query, query, args, kwargs)

    def from_query(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return self._relation(self.con.from_query, query, args, kwargs)

    def _relation(self, method: Any, query: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """sql/query/from_query: the statement rewritten as in execute(); the relation's
        failures, which a lazy relation meets when its rows are fetched, are QueryErrors."""
        params = kwargs.get("params")
        with self._statement(query, params, rewrite=not args) as st:
            self._drop_released()
            if st.params is not None or "params" in kwargs:
                kwargs["params"] = st.params
            rel = method(st.query, *args, **kwargs)
        if rel is None:
            self._released.extend(st.names)
            return None
        out = Relation(rel, functools.partial(self._failures, [st], query))
        if st.names:  # the result tables live as long as the relation that reads them
            weakref.finalize(out, self._released.extend, st.names)
        return out

    def run(self, query: str) -> pa.Table:
        """Run one or more statements; the last one's result as an Arrow table (empty if
        it returns none). The body of :func:`run_sql`."""
        with self._failures(None):
            statements = [s.query for s in duckdb.extract_statements(query)] or [query]
        table = pa.table({})
        for text in statements:
            with self._statement(text, None) as st:
                self._drop_released(self._exec_names)
                self._exec_names = st.names
                rel = self.con.sql(st.query)
                table = rel.to_arrow_table() if rel is not None else pa.table({})
        return table

    @contextlib.contextmanager
    def _statement(self, query: str, params: Any, rewrite: bool = True) -> Iterator[Rewritten]:
        """The statement rewritten for DuckDB (see _rewrite); failures inside the block
        become QueryErrors."""
        found = [Rewritten(query, params, [])]  # what the failure handler reads
        with self._failures(found, query if isinstance(query, str) else None):
            self.needs(query)
            if isinstance(query, str):
                if rewrite:
                    found[0] = self.rewriter.rewrite(query, params)
                else:
                    self.registry.prepare(query)
            yield found[0]

    @contextlib.contextmanager
    def _failures(self, found: list[Rewritten] | None, query: str | None = None) -> Iterator[None]:
        """DuckDB's failures as QueryErrors in the user's terms (see _errors); ``found``
        holds the statement as rewritten, whose calls name the columns they need, and
        ``query`` the statement as written. A failure of the store (``"t@nope"``) is a
        QueryError that is also the store's exception."""
        self.registry.udf_error = None
        try:
            yield
        except QueryError:
            raise
        except EmbedAssetsError as exc:
            raise from_store(exc) from None
        except duckdb.Error as exc:
            udf_error, self.registry.udf_error = self.registry.udf_error, None
            if isinstance(exc, duckdb.BinderException) and found and found[0].calls:
                msg = unknown_column(found[0].calls, self._columns_of)
                if msg is not None:
                    raise UnknownColumnError(msg) from None
                msg = correlated_k(found[0].calls, str(exc))
                if msg is not None:
                    raise error_type(type(exc))(msg) from None
            raise from_duckdb(exc, udf_error, query) from None

    def _columns_of(self, name: str) -> list[str] | None:
        try:
            rel = self.con.execute("SELECT * FROM query_table(?) LIMIT 0", [name])
            return [d[0] for d in rel.description]
        except duckdb.Error:
            return None

    def _drop_released(self, extra: list[str] | None = None) -> None:
        with self.registry.lock:
            names = [*self._released, *(extra or [])]
            self._released.clear()
            for name in names:
                with contextlib.suppress(duckdb.Error):  # the connection is closed
                    self.con.unregister(name)

    def table(self, name: str) -> Any:
        with self._failures(None):
            self.registry.ensure(name)
            rel = self.con.table(name)
        return Relation(rel, functools.partial(self._failures, None, None))

    # -- store views -----------------------------------------------------------------------
    def views(self) -> list[str]:
        """Names of the store views registered so far (latest ones plus versions used)."""
        return sorted(self.registry.views)

    def refresh(self) -> SQLConnection:
        """Pick up tables created since connect and re-point every view at its target."""
        self.registry.refresh()
        return self

    def register_version(self, table: str, ref: int | str | None = None) -> str:
        """Register (or re-point) the view of ``table`` at ``ref``; returns the view name."""
        if self.store is None:
            raise ValidationError("this connection has no store")
        view = table if ref is None else f"{table}@{ref}"
        self.registry.register(table, None if ref is None else str(ref), view)
        self.registry.publish_metadata()
        return view

    def publish_metadata(self) -> None:
        """Hand the views' metadata to the SQL macros (read with getvariable())."""
        self.registry.publish_metadata()
