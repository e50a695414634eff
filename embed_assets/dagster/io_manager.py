"""A LanceDB IO manager in the style of dagster-duckdb / dagster-deltalake.

``LanceDBIOManager`` (a ``ConfigurableIOManagerFactory``) builds Dagster's ``DbIOManager``
over a :class:`LanceDbClient` bound to the store of its nested ``EmbedStoreResource``,
with one type handler per in-memory type: Arrow, Polars and pandas. Outputs become
exactly one Lance version per materialisation (none when nothing changed); inputs load
as any of the three types, optionally pinned to a version or tag.

Definition metadata of an asset (``@asset(metadata={...})``) steers writes:

- ``key``: the key column (default: the table's existing key, else the first column);
- ``write_mode``: ``overwrite`` (default for unpartitioned assets), ``append`` or
  ``upsert``. An ``overwrite`` whose output equals the latest version (same schema,
  same rows in any order) writes no version and reports the one it stayed at, as a
  no-op upsert does;
- ``partition_expr``: the column holding the partition (static, dynamic and time-window
  partitions; a dict per dimension for multi-partitions). A partitioned materialisation
  replaces exactly that partition's rows, in one commit;
- ``table``: the store table name (default: the asset key path joined with ``_``).

Input metadata (``AssetIn(metadata={...})``) steers reads: ``version`` (a number) or
``tag`` pins the read; ``columns`` selects columns.
"""

# No `from __future__ import annotations`: Dagster reads the field annotations of the
# resource classes to find nested resources (``LanceDBIOManager.store``).
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    ConfigurableIOManagerFactory,
    DagsterInstance,
    InitResourceContext,
    InputContext,
    OutputContext,
    TimeWindow,
)
from pydantic import Field

from ..errors import ValidationError
from ..store import (
    VECTOR_COLUMN,
    EmbeddingTable,
    Store,
    WriteMode,
    WriteResult,
    as_arrow,
    filter_in,
    quote_ident,
    sql_literal,
    to_vector_array,
)
from ._compat import (
    DbClient,
    DbIOManager,
    DbTypeHandler,
    TableNamingDbIOManager,
    TablePartitionDimension,
    TableSlice,
)
from .metadata import VERSION_KEY, lance_table_name, table_metadata, tag_run_with_version
from .resources import EmbedStoreResource

IO_WRITE_MODES = ("overwrite", "append", "upsert")


# -- the client: a store, and filters for table slices ----------------------------------
def partition_filter(dims: Sequence[TablePartitionDimension] | None) -> str | None:
    """A Lance filter selecting the rows of the partitions in a table slice."""
    parts = []
    for d in dims or []:
        col = quote_ident(d.partition_expr)
        if isinstance(d.partitions, TimeWindow):
            parts.append(f"{col} >= {sql_literal(_naive_utc(d.partitions.start))} AND "
                         f"{col} < {sql_literal(_naive_utc(d.partitions.end))}")
        else:
            parts.append(filter_in(d.partition_expr, list(d.partitions)))
    return " AND ".join(f"({p})" for p in parts) if parts else None


def _naive_utc(t: dt.datetime) -> dt.datetime:
    # Lance compares timestamp literals without a zone; stored values are UTC.
    return t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t


def _rows_in_slice(tbl: pa.Table, dims: Sequence[TablePartitionDimension]) -> pa.ChunkedArray | pa.Array:
    """A boolean mask: which rows of ``tbl`` belong to the slice's partitions."""
    mask = pa.array([True] * tbl.num_rows)
    for d in dims:
        if d.partition_expr not in tbl.column_names:
            raise ValidationError(
                f"partition_expr {d.partition_expr!r} is not a column of the output; "
                f"columns are {', '.join(tbl.column_names)}"
            )
        col = tbl.column(d.partition_expr)
        if isinstance(d.partitions, TimeWindow):
            # datetimes, or the dates of a date column
            start: Any = d.partitions.start
            end: Any = d.partitions.end
            if pa.types.is_timestamp(col.type) and col.type.tz is None:
                start, end = _naive_utc(start), _naive_utc(end)
            elif pa.types.is_date(col.type):
                start, end = start.date(), end.date()
            lo = pc.greater_equal(col, pa.scalar(start, col.type))
            hi = pc.less(col, pa.scalar(end, col.type))
            m = pc.and_(lo, hi)
        else:
            values = pa.array(list(d.partitions)).cast(col.type)
            m = pc.is_in(col, value_set=values)
        mask = pc.and_(mask, pc.fill_null(m, False))
    return mask


class LanceDbClient(DbClient[Store]):
    """Glue between ``DbIOManager`` and the store; the "connection" is the configured :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection: Store) -> None:
        # Deliberately nothing: deleting first would cost a second Lance version and leave
        # a window with the partition missing. The handler replaces the slice in one commit.
        return None

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection: Store) -> None:
        return None  # a store has one flat namespace of tables

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        # The same view the SQL layer (embed_assets.connect) exposes for the table.
        cols = ", ".join(f'"{c}"' for c in table_slice.columns) if table_slice.columns else "*"
        where = partition_filter(table_slice.partition_dimensions)
        sql = f'SELECT {cols} FROM "{table_slice.table}"'
        return f"{sql} WHERE {where.replace('`', chr(34))}" if where else sql

    @staticmethod
    def get_table_name(table_slice: TableSlice) -> str:
        # dagster/table_name: the name SQL reads (embed_assets.connect's view); the URI
        # lancedb/pylance open is dagster/uri (metadata.table_metadata).
        return table_slice.table

    @contextmanager
    def connect(self, context: OutputContext | InputContext,  # type: ignore[override]
                table_slice: TableSlice) -> Iterator[Store]:
        yield self._store


class _LanceDbIOManager(TableNamingDbIOManager):
    """``DbIOManager`` with the store's naming: one table per asset, key path joined by '_'."""

    def rename_table_slice(self, context: OutputContext | InputContext, output_context: OutputContext,
                           table_slice: TableSlice) -> TableSlice:
        # DbIOManager maps a key to schema.table; the store is flat, so the whole key path
        # (or the ``table`` metadata) names the table and ``schema`` is unused.
        if context.has_asset_key:
            name = lance_table_name(context.asset_key, output_context.definition_metadata)
        else:
            name = table_slice.table
        return table_slice._replace(table=name, schema="")


# -- type handlers ------------------------------------------------------------------------
class _ArrowBackedHandler(DbTypeHandler[Any]):
    """Shared write/read logic; subclasses convert to and from their in-memory type."""

    def to_arrow(self, obj: Any) -> pa.Table:
        return as_arrow(obj)

    def from_arrow(self, tbl: pa.Table) -> Any:
        return tbl

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: Any,
                      connection: Store) -> Mapping[str, Any]:
        store, name, tbl = connection, table_slice.table, self.to_arrow(obj)
        md = context.definition_metadata or {}
        existing = store.table(name) if store.exists(name) else None
        key = md.get("key") or (existing.meta.key if existing is not None else tbl.column_names[0])
        dims = list(table_slice.partition_dimensions or [])
        mode = _write_mode(context, md, partitioned=bool(dims))
        model = str(md["model"]) if md.get("model") else None
        props: dict[str, Any] = {"dagster_asset": context.asset_key.to_user_string()}
        if dims:
            write, mode = _partition_write(context, store, name, tbl, dims=dims, existing=existing,
                                           key=key, model=model, properties=props)
        elif mode == "overwrite" and existing is not None and _same_content(existing, tbl, key, model):
            # An explicit overwrite is a write to the store; here the asset merely ran
            # again on unchanged input, and a version that changes nothing is noise.
            write = WriteResult(name, existing.version, existing.version, mode, properties=props)
        else:
            write = store.write(name, tbl, key=key, mode=mode, model=model, run_id=context.run_id,
                                properties=props)
        _log_write(context, name, mode, write)
        return table_metadata(store.table(name), version=write.version, write=write,
                              label_column=dims[0].partition_expr if dims else None)

    def load_input(self, context: InputContext, table_slice: TableSlice, connection: Store) -> Any:
        md = context.definition_metadata or {}
        version = md.get("version", md.get("tag"))
        table = connection.table(table_slice.table)
        where = partition_filter(table_slice.partition_dimensions) if context.has_asset_partitions else None
        tbl = table.read(version, columns=table_slice.columns, where=where)
        if version is not None:
            context.log.info(f"loaded {table_slice.table} at version/tag {version!r}: {tbl.num_rows} rows")
        return self.from_arrow(tbl)


def _same_content(table: EmbeddingTable, tbl: pa.Table, key: str, model: str | None) -> bool:
    """Whether overwriting ``table`` with ``tbl`` would store exactly its latest version:
    same key and model, same columns in the same order with the same types (vectors
    compared as the store stores them, float32), same rows (compared sorted by key)."""
    meta = table.meta
    if key != meta.key or (model is not None and model != meta.model):
        return False
    stored = table.read()
    if tbl.column_names != stored.column_names or tbl.num_rows != stored.num_rows:
        return False
    if key not in tbl.column_names:
        return False
    cols = []
    for f in stored.schema:
        col = tbl.column(f.name)
        if col.type != f.type:
            if f.name != VECTOR_COLUMN:
                return False
            try:
                col = pa.chunked_array([to_vector_array(col)]).cast(f.type)
            except Exception:  # not a vector column the store would take as this one
                return False
        cols.append(col)
    new = pa.Table.from_arrays(cols, schema=stored.schema.remove_metadata())
    try:
        return new.sort_by(key).equals(stored.replace_schema_metadata(None).sort_by(key))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a key type that cannot be sorted
        return False


def _write_mode(context: OutputContext, md: Mapping[str, Any], *, partitioned: bool) -> WriteMode:
    """The ``write_mode`` of the asset's metadata, checked (default: upsert when partitioned)."""
    mode = md.get("write_mode") or ("upsert" if partitioned else "overwrite")
    if mode not in IO_WRITE_MODES:
        raise ValidationError(
            f"write_mode {mode!r} in the metadata of {context.asset_key.to_user_string()}; "
            f"choose one of {', '.join(IO_WRITE_MODES)}"
        )
    return cast(WriteMode, str(mode))  # one of IO_WRITE_MODES, checked above


def _partition_write(context: OutputContext, store: Store, name: str, tbl: pa.Table, *,
                     dims: Sequence[TablePartitionDimension], existing: EmbeddingTable | None,
                     key: str, model: str | None,
                     properties: Mapping[str, Any]) -> tuple[WriteResult, WriteMode]:
    """Replace exactly the slice's partitions of table ``name`` with ``tbl``, in one commit.

    Refuses rows of other partitions; then the store's ``replace_partition`` (the one
    partition path, shared with the embedding pipeline) upserts the rows and deletes the
    partition's rows they no longer hold, computed against the version it commits on. A
    first write creates the table. Returns the write and the store mode it used.
    """
    mask = _rows_in_slice(tbl, dims)
    outside = tbl.num_rows - pc.sum(mask).as_py() if tbl.num_rows else 0
    if outside:
        raise ValidationError(
            f"{outside} output row(s) of {context.asset_key.to_user_string()} lie outside "
            f"partition(s) {', '.join(context.asset_partition_keys)} "
            f"(partition_expr {[d.partition_expr for d in dims]})"
        )
    props = {**properties, "partition": ",".join(context.asset_partition_keys)}
    mode: WriteMode = "replace_partition" if existing is not None else "overwrite"
    write = store.write(name, tbl, key=key, mode=mode, model=model, run_id=context.run_id,
                        partition_where=partition_filter(dims) if existing is not None else None,
                        properties=props)
    return write, mode


def _log_write(context: OutputContext, name: str, mode: str, write: WriteResult) -> None:
    if write.committed:
        context.log.info(f"{name}: wrote version {write.version} (mode {mode}, "
                         f"+{write.rows_inserted} ~{write.rows_updated} -{write.rows_deleted})")
    elif mode == "overwrite":  # an output equal to the latest version (see _same_content)
        context.log.info(f"{name}: unchanged: stays at version {write.version}")
    else:
        context.log.info(f"{name}: nothing changed, stays at version {write.version}")


class _RunTaggingHandler(DbTypeHandler[Any]):
    """Wraps a handler: after each write, tags the run with the version it left (run -> version).

    The version is the handler's ``lance/version`` metadata entry; the instance is the
    one the IO manager was started with (``InitResourceContext.instance``).
    """

    def __init__(self, inner: DbTypeHandler[Any], instance: DagsterInstance) -> None:
        self.inner = inner
        self._instance = instance

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return self.inner.supported_types

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: Any,
                      connection: Store) -> Mapping[str, Any] | None:
        md = self.inner.handle_output(context, table_slice, obj, connection)
        version: Any = (md or {}).get(VERSION_KEY)
        if version is not None:
            tag_run_with_version(self._instance, context.run_id, table_slice.table,
                                 int(getattr(version, "value", version)), context.log)
        return md

    def load_input(self, context: InputContext, table_slice: TableSlice, connection: Store) -> Any:
        return self.inner.load_input(context, table_slice, connection)


class LanceArrowTypeHandler(_ArrowBackedHandler):
    """Stores and loads ``pyarrow.Table``."""

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pa.Table]


class LancePolarsTypeHandler(_ArrowBackedHandler):
    """Stores and loads ``polars.DataFrame``."""

    def from_arrow(self, tbl: pa.Table) -> Any:
        return pl.from_arrow(tbl)

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pl.DataFrame]


class LancePandasTypeHandler(_ArrowBackedHandler):
    """Stores and loads ``pandas.DataFrame`` (vectors load as numpy arrays per row)."""

    def from_arrow(self, tbl: pa.Table) -> Any:
        return tbl.to_pandas()

    @property
    def supported_types(self) -> Sequence[type[object]]:
        return [pd.DataFrame]


class LanceDBIOManager(ConfigurableIOManagerFactory):
    """Stores asset outputs as versioned Lance tables in an embed_assets store.

    The store comes from a nested :class:`EmbedStoreResource` (default: one with its own
    defaults, ``$EMBED_ASSETS_STORE`` or ``./.embed_store``). To give assets that use the
    store directly and this IO manager one configuration, pass the same resource to both;
    ``EmbedStoreResource.configure_at_launch()`` makes that one configuration settable
    in the Launchpad too.

    Examples
    --------
    .. code-block:: python

        @asset(metadata={"key": "id", "write_mode": "upsert"})
        def item_vectors() -> pl.DataFrame: ...

        store = EmbedStoreResource(uri="/data/store")
        defs = Definitions(assets=[item_vectors],
                           resources={"embed_store": store,
                                      "io_manager": LanceDBIOManager(store=store)})
    """

    store: EmbedStoreResource = Field(description="The store the tables live in")

    def __init__(self, *, store: EmbedStoreResource | None = None, **data: Any) -> None:
        # A nested resource field takes no pydantic default (Dagster resolves nested
        # resources itself), so the default store is filled in here. ``store`` may also
        # be a ``configure_at_launch()`` partial that is a top-level resource too.
        super().__init__(store=store if store is not None else EmbedStoreResource(), **data)

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [LanceArrowTypeHandler(), LancePolarsTypeHandler(), LancePandasTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pa.Table

    def create_io_manager(self, context: InitResourceContext) -> DbIOManager:
        store = self.store.get_store()
        handlers = self.type_handlers()
        if context.instance is not None:
            handlers = [_RunTaggingHandler(h, context.instance) for h in handlers]
        return _LanceDbIOManager(
            type_handlers=handlers,
            db_client=LanceDbClient(store),
            database=store.uri,
            io_manager_name="LanceDBIOManager",
            default_load_type=self.default_load_type(),
        )
