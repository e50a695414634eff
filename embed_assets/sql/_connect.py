"""Opening a DuckDB session on a store (:func:`connect`) and running one query (:func:`run_sql`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa

from .._extras import missing
from ..errors import ValidationError
from ..index import rebuild_after_rollback
from ..store import Store, is_local
from . import _native
from ._connection import SQLConnection
from ._files import NATIVE_MACRO_FILES, STORE_MACRO_FILES, default_extensions, extension_path, load_macros
from ._functions import register_functions
from ._images import register_image_functions


def connect(
    store: Store | str | os.PathLike[str] | None = None,
    *,
    read_only_views: bool = True,
    extensions: Iterable[str] | None = None,
    database: str = ":memory:",
    config: dict[str, Any] | None = None,
    storage_options: dict[str, str] | None = None,
    native: bool = True,
    progress_bar: bool = True,
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
    extensions : iterable of str, optional
        DuckDB extensions to load from their PyPI wheels. The default loads ``lance`` where
        its wheel is installed (the ``duckdb-lance`` extra; the store's views do not need
        it) before the first statement that mentions ``lance`` (a ``'*.lance'`` path, a
        ``lance_*`` function): loading it takes one to two seconds. ``()`` loads none;
        ``("lance", "vss")`` loads both now (``vss`` is in the ``bench`` extra).
    database, config
        Passed to :func:`duckdb.connect`.
    storage_options : dict, optional
        Object-store options when ``store`` is a URI.
    native : bool, default True
        Load the ``ea_vec`` C extension that backs ``vec_mean``/``vec_sum`` (the verified
        file the package build compiled; see :mod:`embed_assets.sql._native` for when
        DuckDB's ``allow_unsigned_extensions`` is on). Without it those macros use a
        Python UDF with the same results, ~20x slower; ``_native.status()`` says which.
    progress_bar : bool, default True
        DuckDB's progress bar for statements past 2 s; ``False`` turns it off before the
        first statement (``run_sql`` does: it prints on stdout, which would corrupt
        ``embed-assets sql --json`` on a slow object store).

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
        store = Store(store, storage_options=storage_options, index_keeper=rebuild_after_rollback)
    cfg = dict(config or {})
    ea_vec = _native.prepare(cfg, native)  # allow_unsigned_extensions on only to LOAD our file
    raw = duckdb.connect(database, config=cfg)
    if not progress_bar:
        raw.execute("SET enable_progress_bar = false")
    native_loaded = ea_vec.load(raw)  # ...and off again right after it
    extensions, deferred = _extensions(extensions, read_only_views)
    for name in extensions:
        raw.execute(f"LOAD '{extension_path(name)}'")
    con = SQLConnection(raw, store, deferred)
    _load_sql_layer(raw, con, native_loaded)
    if store is not None:
        con.refresh()  # a view per table, at its latest version
        if not read_only_views:
            _attach_writable(raw, store, extensions)
    return con


def _extensions(asked: Iterable[str] | None, read_only_views: bool,
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(extensions to load now, extensions to load before the first statement naming them).
    The default ones (lance: a 254 MB binary, 1-2 s to LOAD, most of connect()'s time; the
    store's views do not need it) wait (SQLConnection.needs); those asked for by name, and
    lance for a writable catalog, load now."""
    if asked is not None:
        return tuple(asked), ()
    if not read_only_views:
        return default_extensions(), ()
    return (), default_extensions()


def _load_sql_layer(raw: duckdb.DuckDBPyConnection, con: SQLConnection, native_loaded: bool) -> None:
    """The plain macros, the Python functions, their store-aware macros, and where the
    ea_vec extension loaded, the macros that move the aggregates onto it."""
    load_macros(raw)
    register_functions(raw, con.registry)
    register_image_functions(raw)
    con.publish_metadata()  # the (empty) view metadata the store macros read
    load_macros(raw, STORE_MACRO_FILES)
    if native_loaded:
        load_macros(raw, NATIVE_MACRO_FILES)


def _attach_writable(raw: duckdb.DuckDBPyConnection, store: Store, extensions: Iterable[str]) -> None:
    if "lance" not in set(extensions):
        if "lance" not in default_extensions():
            raise missing("duckdb_extension_lance", "connect(read_only_views=False)", "duckdb-lance")
        raise ValidationError("read_only_views=False needs the lance extension")
    if not is_local(store.uri):
        raise ValidationError("read_only_views=False works for local stores only")
    path = store.uri.removeprefix("file://").replace("'", "''")
    raw.execute(f"ATTACH '{path}' AS lance_store (TYPE LANCE)")


def run_sql(store: Store | str | os.PathLike[str] | None, query: str, *,
            storage_options: dict[str, str] | None = None,
            extensions: Iterable[str] | None = None) -> pa.Table:
    """Run one SQL statement (or several; the last one's result is returned) on a store.

    This is the body of ``embed-assets sql "QUERY"``. Every failure of a statement is a
    :class:`~embed_assets.QueryError` (see :class:`SQLConnection`).
    """
    if not query or not query.strip():
        raise ValidationError("the SQL query is empty")
    # DuckDB draws a progress bar on stdout for statements past 2 s (a slow object
    # store), which would corrupt `embed-assets sql --json`
    con = connect(store, extensions=extensions, storage_options=storage_options, progress_bar=False)
    try:
        return con.run(query)
    finally:
        con.close()
