"""The versioned embedding store: one Lance dataset per table, one Lance version per write.

The layout is LanceDB's (``<store>/<name>.lance``), so ``lancedb.connect(store)`` opens
the same tables. Writes go through pylance directly because it lets every commit carry
*transaction properties*: the run id, model and row counts of the write that made each
version travel with the version itself, atomically, with no side table to keep in sync.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, overload

import lance

from .._config import settings
from ..errors import StorageError, TableNotFoundError, ValidationError, describe
from . import _writes
from ._cache import STATE
from ._meta import WriteMode, is_local, local_path
from ._objstore import explain
from ._results import WriteResult
from ._rollback import IndexKeeper
from ._table import EmbeddingTable
from ._validation import validate_table_name


def default_store_uri() -> str:
    """``$EMBED_ASSETS_STORE`` if set, else ``./.embed_store``."""
    return settings().store_uri


_LOOKS_LIKE_A_SCHEME = re.compile(r"(s3|s3a|gs|gcs|az|abfs|abfss|azure|http|https|memory|file):",
                                  re.IGNORECASE)


def absolute_uri(uri: str) -> str:
    """A local path made absolute (so a later ``chdir`` cannot move the store, and two
    spellings of one folder are one store); object-store URIs unchanged."""
    uri = uri.rstrip("/") or "/"
    if not is_local(uri):
        return uri
    if _LOOKS_LIKE_A_SCHEME.match(uri):
        # "s3:bucket" or "s3:/bucket" is a URI missing a slash, not a folder named "s3:"
        # (which a first write would create silently).
        raise ValidationError(f"store {uri!r} looks like a URI without '//': write "
                              f"{uri.split(':', 1)[0]}://bucket/prefix (or ./{uri} for a folder)")
    prefix = "file://" if uri.startswith("file://") else ""
    return prefix + os.path.abspath(os.path.expanduser(local_path(uri)))


def _is_missing(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "no such file" in text


def _usable(names: list[str], where: str) -> list[str]:
    """The names that are valid table names; a foreign folder with another name is
    skipped with a warning instead of breaking every listing of the store."""
    out = []
    for name in names:
        try:
            out.append(validate_table_name(name))
        except ValidationError as exc:
            warnings.warn(f"skipping {name + '.lance'!r} in {where}: {exc}", stacklevel=3)
    return out


@dataclass(frozen=True)
class TableInfo:
    """One line of :meth:`Store.tables` (what ``embed-assets tables`` prints): the
    latest version of a table and its facts."""

    name: str
    version: int
    rows: int
    dimension: int
    model: str | None
    metric: str
    key: str
    tags: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """A directory (or object-store prefix) of versioned embedding tables.

    Parameters
    ----------
    uri : str, optional
        Local path or ``s3://bucket/prefix``; defaults to ``$EMBED_ASSETS_STORE`` or
        ``./.embed_store``. A relative path is resolved when the store is opened.
    storage_options : dict, optional
        Passed to Lance for object stores (credentials, endpoint, region...).
    index_keeper : callable, optional
        What a rollback to a version older than the table's ANN index calls to rebuild
        it: ``index_keeper(table, lost_index_report, index_type)``. This layer's default
        is None (the rollback records the pending rebuild, ``refresh_index`` finishes it);
        :class:`embed_assets.Store` passes :func:`embed_assets.index.rebuild_after_rollback`,
        which re-tunes the index to the recall target it had.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> store = Store(tempfile.mkdtemp())
    >>> r = store.write("docs", {"id": [1, 2], "vector": np.eye(2, 3).tolist()}, key="id")
    >>> store.table("docs").versions()[0].rows
    2
    """

    def __init__(self, uri: str | os.PathLike[str] | None = None, *,
                 storage_options: dict[str, str] | None = None,
                 index_keeper: IndexKeeper | None = None) -> None:
        if uri is not None and not isinstance(uri, str | os.PathLike):
            raise ValidationError(f"a store is a folder or URI (str or path), got "
                                  f"{type(uri).__name__} {uri!r}")
        given = str(uri) if uri is not None else default_store_uri()
        if not given.strip():  # absolute_uri would make it "/": a store in the root folder
            raise ValidationError("the store URI is empty (check --store or $EMBED_ASSETS_STORE)")
        self.uri = absolute_uri(given)
        self.storage_options = storage_options
        self.index_keeper = index_keeper
        if is_local(self.uri):
            path = local_path(self.uri)
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValidationError(f"store path {path!r} exists and is not a directory")

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    @property
    def lock_path(self) -> str | None:
        """The folder under which writers lock tables (None for object stores)."""
        return local_path(self.uri) if is_local(self.uri) else None

    # -- tables -------------------------------------------------------------------------
    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{validate_table_name(name)}.lance"

    def table_names(self) -> list[str]:
        if is_local(self.uri):
            path = local_path(self.uri)
            if not os.path.isdir(path):
                return []
            found = [e[: -len(".lance")] for e in os.listdir(path)
                     if e.endswith(".lance") and os.path.isdir(os.path.join(path, e, "_versions"))]
            return sorted(_usable(found, self.uri))
        import lancedb

        try:
            db = lancedb.connect(self.uri, storage_options=self.storage_options)
            names, token = [], None
            while True:  # list_tables() is paged (table_names() is deprecated)
                page = db.list_tables(page_token=token)
                names += list(page.tables)
                token = page.page_token
                if not token:
                    break
        except Exception as exc:  # credentials, endpoint, network: say so
            raise StorageError(f"cannot list tables in {self.uri}: {explain(exc, self.uri)}") from None
        return sorted(_usable(list(names), self.uri))

    def tables(self) -> list[TableInfo]:
        """Every table with its latest version, row count, dimension, model, metric, key
        and tags, sorted by name (:meth:`table_names` lists the names only)."""
        out = []
        for name in self.table_names():
            t = self.table(name)
            ds = t.dataset()
            m = t.meta_at()
            out.append(TableInfo(name=name, version=ds.version, rows=ds.count_rows(),
                                 dimension=m.dimension, model=m.model, metric=m.metric,
                                 key=m.key, tags=sorted(t.tags())))
        return out

    def exists(self, name: str) -> bool:
        return self.open_dataset(name) is not None

    @overload
    def open_dataset(self, name: str, *, required: Literal[True]) -> lance.LanceDataset: ...

    @overload
    def open_dataset(self, name: str, *, required: bool = False) -> lance.LanceDataset | None: ...

    def open_dataset(self, name: str, *, required: bool = False) -> lance.LanceDataset | None:
        """The latest Lance dataset of a table; None (or :class:`TableNotFoundError` when
        ``required``) if there is no such table, :class:`StorageError` if it exists but
        cannot be opened."""
        uri = self.table_uri(name)
        missing = is_local(uri) and not os.path.isdir(os.path.join(local_path(uri), "_versions"))
        if not missing:
            try:
                return lance.dataset(uri, storage_options=self.storage_options)
            except Exception as exc:
                if not _is_missing(exc) or is_local(uri):
                    raise StorageError(f"cannot open table {name!r} in {self.uri}: "
                                       f"{describe(exc) if is_local(uri) else explain(exc, uri)}") from None
        if not required:
            return None
        names = self.table_names()
        raise TableNotFoundError(f"table {name!r} not found in store {self.uri}; "
                                 f"tables: {', '.join(names) if names else 'none'}")

    def table(self, name: str) -> EmbeddingTable:
        """Open a table; raises :class:`TableNotFoundError` listing the tables that exist."""
        return EmbeddingTable(self, name, self.open_dataset(name, required=True))

    def drop(self, name: str) -> None:
        """Delete a table and all its versions (and its HNSW graphs)."""
        t = self.table(name)
        uri = t.uri
        STATE.clear(uri)
        t.graph_home().drop()
        if is_local(self.uri):
            shutil.rmtree(local_path(uri))
        else:  # object stores
            import lancedb

            lancedb.connect(self.uri, storage_options=self.storage_options).drop_table(name)

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        name: str,
        data: Any,
        *,
        key: str,
        mode: WriteMode = "upsert",
        partition: tuple[str, Any] | None = None,
        partition_where: str | None = None,
        delete_keys: Sequence[Any] | None = None,
        keep_keys: Sequence[Any] | None = None,
        model: str | None = None,
        model_revision: str | None = None,
        metric: str | None = None,
        text_column: str | None = None,
        run_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """Write rows of ``(key, vector, other columns)`` as exactly one new version.

        Parameters
        ----------
        mode : {"overwrite", "append", "upsert", "replace_partition"}
            ``overwrite`` replaces the table (and may change model or dimension);
            ``append`` adds rows whose keys must be new; ``upsert`` inserts or updates by
            key (Lance ``merge_insert``); ``replace_partition`` makes the rows of one
            partition exactly ``data``, in one commit.
        partition : (column, value), optional
            The partition of ``replace_partition``: rows where ``column == value`` (or,
            with a list of values, ``column IN values``). Every row of ``data`` must be in it.
        partition_where : str, optional
            Instead of ``partition``: a filter selecting the partition's rows (a time
            window, several columns); the caller vouches that ``data`` lies inside it.
        delete_keys : sequence, optional
            With ``upsert``: keys to delete in the same commit (rows gone upstream).
        keep_keys : sequence, optional
            With ``replace_partition``: keys of the partition that stay as stored although
            ``data`` does not hold them (an incremental writer sends changed rows only).
        model, model_revision, metric, text_column
            Provenance. A table refuses vectors from another model or dimension unless
            ``mode="overwrite"``.
        run_id : str, optional
            Who wrote this version (a Dagster run id, a CLI invocation...); generated if
            omitted, and stored with the version.

        Returns
        -------
        WriteResult
            ``committed`` is False when there was nothing to change (no version written).
        """
        req = _writes.WriteRequest(
            name=name, key=key, mode=mode, partition=partition, partition_where=partition_where,
            delete_keys=delete_keys, keep_keys=keep_keys, model=model,
            model_revision=model_revision, metric=metric, text_column=text_column, run_id=run_id,
            properties=properties)
        return _writes.write(self, req, data)
