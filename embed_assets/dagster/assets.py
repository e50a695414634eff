"""The embedding-asset factory: a source asset (key + text + columns) -> an embedding table.

The asset is incremental by content hash (:func:`embed_assets.embed_table`): only new or
changed texts reach the model, rows deleted upstream are removed, and a run with no
change writes no version and says "embedded 0 row(s)". It writes to the store itself
(so it can reuse stored vectors) and returns a ``MaterializeResult``; downstream assets
load it through the ``LanceDBIOManager`` under ``io_manager_key``.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    BackfillPolicy,
    BetaWarning,
    Config,
    DataVersion,
    Failure,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)
from pydantic import Field

from ..embed import (
    Embedder,
    EmbedMode,
    EmbedResult,
    EmptyTextPolicy,
    Executor,
    InProcess,
    OnRay,
    RayEmbedResult,
    Streamed,
    embed_table,
    model_change,
)
from ..store import EmbeddingTable, Store, as_arrow, filter_in
from ._compat import CoercibleToAssetKey
from .metadata import (
    ROW_COUNT_KEY,
    SUMMARY_KEY,
    column_lineage,
    lance_table_name,
    record_run_version,
    standard_table_metadata,
    table_metadata,
)

# The rows of one run's partition(s): (partition column, one key or a list of keys), as
# embed_table takes it.
Partition: TypeAlias = tuple[str, Any]


class EmbedConfig(Config):
    """Run config of an embedding asset (Launchpad: ``ops: <asset>: config:``)."""

    overwrite: bool = Field(
        default=False,
        description=(
            "Re-embed everything and replace the table. Needed when the model's dimension "
            "changes; on a partitioned asset it drops the other partitions' rows."
        ),
    )
    commit_every: int = Field(
        default=50_000,
        description=(
            "Unpartitioned assets: commit every this many rows, so a run that fails halfway "
            "and is re-executed resumes without re-embedding what it committed (0: one commit)."
        ),
    )
    ray_address: str = Field(
        default="",
        description=(
            "Embed this run on a Ray cluster (auto, HOST:PORT, ray://HOST:PORT or local:N): "
            "the workers write fragments, the run commits them as one version, a failed task "
            "is retried and a failed run commits nothing. Empty: the embedder resource's "
            "ray_address (empty there too: in this process). commit_every does not apply."
        ),
    )


def build_embedding_asset(
    key: CoercibleToAssetKey,
    *,
    source: CoercibleToAssetKey | None,
    key_column: str,
    text_column: str,
    columns: Sequence[str] | None = None,
    partitions_def: PartitionsDefinition | None = None,
    partition_expr: str | None = None,
    table: str | None = None,
    on_empty: EmptyTextPolicy = "error",
    group_name: str | None = None,
    description: str | None = None,
    io_manager_key: str = "lance_io_manager",
    store_key: str = "embed_store",
    embedder_key: str = "embedder",
    label_column: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    automation_condition: AutomationCondition | None = None,
    freshness_policy: FreshnessPolicy | None = None,
    kinds: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    owners: Sequence[str] | None = None,
    reembed_on_model_change: bool = False,
    index_recall: float | None = None,
    on_write: Any = None,
    write_mode: EmbedMode | None = None,
    load_source: Callable[[], Any] | None = None,
) -> AssetsDefinition:
    """An asset embedding ``source[text_column]`` keyed by ``source[key_column]``.

    Parameters
    ----------
    source : asset key
        The upstream asset (loaded by its own IO manager) holding key, text and columns.
    columns : sequence of str, optional
        Source columns kept beside key, vector and provenance (default: all).
    partitions_def, partition_expr
        Partition the embedding table: each run embeds the source rows whose
        ``partition_expr`` column is one of the run's partition keys and replaces exactly
        those rows of the table, in one commit. A partition range runs as one run.
    table : str, optional
        Store table name (default: the asset key path joined with ``_``).

    code_version, automation_condition, freshness_policy
        Passed to ``@asset``. :class:`~embed_assets.dagster.EmbeddingsComponent` sets the
        code version to the model identity, so ``AutomationCondition.code_version_changed()``
        re-materialises the asset when the model changes.
    reembed_on_model_change : bool
        Re-embed every row of an unpartitioned table when the model changes even if the
        dimension changes too (default: refused, as below).
    index_recall : float, optional
        After a write that committed, (re)build the table's vector index tuned to this
        recall@10 (:func:`embed_assets.build_index`; below its size threshold the table
        stays on exact search).
    on_write : callable, optional
        ``on_write(context, table)`` after every run (the version choices of the restore
        Launchpad are refreshed this way).
    write_mode : {"sync", "upsert", "append", "overwrite"}, optional
        How an unpartitioned run writes (default ``sync``: the table mirrors the source).
    load_source : callable, optional
        Reads the source itself (a file) instead of loading asset ``source`` through its
        IO manager; ``source`` is then only a dependency (an external asset).

    Notes
    -----
    A model change with the same dimension re-embeds everything (unpartitioned assets);
    a dimension change, or a model change on a partitioned asset, needs run config
    ``overwrite: true`` or a new ``table``: a table never mixes models.
    """
    asset_key = AssetKey.from_coercible(key)
    if source is None and load_source is None:
        raise ValueError("pass source (an upstream asset key) or load_source")
    source_key = AssetKey.from_coercible(source) if source is not None else None
    name = table or lance_table_name(asset_key)
    if (partitions_def is None) != (partition_expr is None):
        raise ValueError("pass partitions_def and partition_expr together (or neither)")
    def_md: dict[str, Any] = {"key": key_column, "table": name, "text_column": text_column,
                              **(metadata or {})}
    if partition_expr:
        def_md["partition_expr"] = partition_expr
    # vector <- the text column: Dagster's column lineage (shown on the asset's Columns tab)
    lineage = column_lineage(source_key, text_column) if source_key is not None else None

    # backfill_policy is a Beta parameter of @asset in Dagster 1.13: it warns each time
    # the code location is imported (three times per partitioned launch: CLI, run worker,
    # step), saying nothing a user can act on. Only that warning is silenced, only here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        decorator = asset(
            key=asset_key,
            ins={"source": AssetIn(key=source_key)} if load_source is None else {},
            partitions_def=partitions_def,
            backfill_policy=BackfillPolicy.single_run() if partitions_def is not None else None,
            io_manager_key=io_manager_key,
            required_resource_keys={store_key, embedder_key},
            metadata=def_md,
            group_name=group_name,
            kinds=set(kinds) if kinds is not None else {"lancedb", "python"},
            tags=dict(tags) if tags else None,
            owners=list(owners) if owners else None,
            code_version=code_version,
            automation_condition=automation_condition,
            freshness_policy=freshness_policy,
            description=description or (
                f"Embeddings of `{source_key.to_user_string() if source_key else 'the source'}`."
                f"{text_column}, keyed by {key_column}, "
                f"in store table `{name}`; only new or changed rows are embedded."
            ),
        )

    def _embed(context: AssetExecutionContext, config: EmbedConfig, source: Any) -> MaterializeResult:
        store: Store = getattr(context.resources, store_key).get_store()
        embedder: Embedder = getattr(context.resources, embedder_key).get_embedder()
        src, partition = as_arrow(source), None
        if partition_expr is not None:
            src, partition = _partition_slice(context, src, partition_expr, source_key or asset_key)
        mode = _embed_mode(context, store, name, embedder, overwrite=config.overwrite,
                           partitioned=partition is not None,
                           reembed_on_model_change=reembed_on_model_change, default=write_mode)
        properties = {"dagster_asset": asset_key.to_user_string()}
        if partition is not None:
            properties["dagster_partition"] = ",".join(context.partition_keys)
        executor = _executor(context, config, src, partition, embedder_key)
        if isinstance(executor, OnRay):
            properties["ray_address"] = str(executor.address)
        res = embed_table(store, name, src, key=key_column, text=text_column, embedder=embedder,
                          mode=mode, columns=columns, partition=partition, on_empty=on_empty,
                          run_id=context.run.run_id, properties=properties, executor=executor)
        if isinstance(res, RayEmbedResult):
            _log_ray(context, res)
        context.log.info(res.summary())
        table = store.table(name)
        if index_recall is not None and res.write is not None and res.write.committed:
            _build_index(context, table, index_recall)
        record_run_version(context, name, res.version)
        md = _embedding_metadata(table, res, mode, partition,
                                 label_column=label_column or partition_expr,
                                 key_column=key_column, text_column=text_column)
        if lineage is not None:
            md[LINEAGE_KEY] = lineage
        if on_write is not None:
            on_write(context, table)
        # The Lance version is the asset's data version: the Overview shows it, and
        # downstream assets turn stale exactly when a new version was written.
        return MaterializeResult(metadata=md, data_version=DataVersion(f"v{res.version}"))

    if load_source is not None:
        def _embedding_asset_from_file(context: AssetExecutionContext,
                                       config: EmbedConfig) -> MaterializeResult:
            return _embed(context, config, load_source())

        return decorator(_embedding_asset_from_file)

    def _embedding_asset(context: AssetExecutionContext, config: EmbedConfig,
                         source: Any) -> MaterializeResult:
        return _embed(context, config, source)

    return decorator(_embedding_asset)


LINEAGE_KEY = "dagster/column_lineage"


def _build_index(context: AssetExecutionContext, table: EmbeddingTable, recall: float) -> None:
    """The table's index, tuned to ``recall`` on the version just written."""
    from ..index import build_index

    rep = build_index(table, recall=recall)
    context.log.info(f"index of {table.name}: {rep.kind}, recall@{rep.k} {rep.recall:.3f} "
                     f"(target {rep.target_recall}) {rep.reason}".rstrip())


def _executor(context: AssetExecutionContext, config: EmbedConfig, src: pa.Table,
              partition: Partition | None, embedder_key: str) -> Executor:
    """The run config (and the embedder resource's Ray address) as the executor of the run."""
    address = config.ray_address or getattr(getattr(context.resources, embedder_key),
                                            "ray_address", None)
    if address:
        context.log.info(f"embedding on Ray at {address}")
        return OnRay(address)
    # groups only where the source is larger than one: a small run stays one commit
    if partition is None and config.commit_every and src.num_rows > config.commit_every:
        return Streamed(config.commit_every, progress=False)
    return InProcess()


def _log_ray(context: AssetExecutionContext, res: RayEmbedResult) -> None:
    if res.ray.get("tasks"):
        t = res.ray.get("timings", {})
        context.log.info(
            f"Ray: {res.ray['tasks']} task(s) on {res.ray['workers']} worker(s); worker seconds: "
            f"model load {t.get('worker_model_load_s', 0):.2f}, embed {t.get('worker_embed_s', 0):.2f}, "
            f"fragment writes {t.get('worker_write_s', 0):.2f}; commit {t.get('commit_s', 0):.2f} s")


def _partition_slice(context: AssetExecutionContext, src: pa.Table, partition_expr: str,
                     source_key: AssetKey) -> tuple[pa.Table, Partition]:
    """The source rows of the run's partition key(s), and the partition to replace."""
    keys = list(context.partition_keys)
    if partition_expr not in src.column_names:
        raise Failure(f"source {source_key.to_user_string()} has no column "
                      f"{partition_expr!r} (partition_expr)")
    col = src.column(partition_expr)
    src = src.filter(pc.is_in(col, value_set=pa.array(keys).cast(col.type)))
    context.log.info(f"partition(s) {', '.join(keys)}: {src.num_rows} source rows")
    return src, (partition_expr, keys[0] if len(keys) == 1 else keys)


def _embed_mode(context: AssetExecutionContext, store: Store, name: str, embedder: Embedder, *,
                overwrite: bool, partitioned: bool, reembed_on_model_change: bool = False,
                default: EmbedMode | None = None) -> EmbedMode:
    """How embed_table writes: sync (or replace_partition), or overwrite on request or a model change.

    A model change re-embeds everything when it is safe (unpartitioned, same dimension);
    otherwise it is refused unless ``overwrite``: a table never mixes models.
    """
    if overwrite:
        return "overwrite"
    meta = model_change(store, name, embedder)
    if meta is None:
        return "replace_partition" if partitioned else (default or "sync")
    if partitioned or (meta.dimension != embedder.dimension and not reembed_on_model_change):
        raise Failure(
            f"table {name!r} holds {meta.dimension}-d vectors from {meta.model!r}; the "
            f"embedder is {embedder.name!r} ({embedder.dimension}-d). A table never "
            "mixes models: launch with config overwrite: true (then re-materialise "
            "every partition) or give the asset a new table."
        )
    context.log.warning(f"model changed {meta.model!r} -> {embedder.name!r}: "
                        "re-embedding every row")
    return "overwrite"


def _embedding_metadata(table: EmbeddingTable, res: EmbedResult, mode: EmbedMode,
                        partition: Partition | None, *, label_column: str | None,
                        key_column: str | None = None,
                        text_column: str | None = None) -> dict[str, Any]:
    """The materialisation metadata: the table's entries plus what this run embedded."""
    extra: dict[str, Any] = {
        SUMMARY_KEY: MetadataValue.text(res.summary()),
        "rows_embedded": MetadataValue.int(res.rows_embedded),
        "rows_reused": MetadataValue.int(res.rows_reused),
        "rows_unchanged": MetadataValue.int(res.rows_unchanged),
        "rows_skipped_empty": MetadataValue.int(res.rows_skipped_empty),
        "seconds": MetadataValue.float(round(res.seconds, 3)),
        "embed_mode": MetadataValue.text(mode),
    }
    rows = None
    if partition is not None:
        column, keys = partition
        rows = table.dataset(res.version).count_rows(
            filter=filter_in(column, keys if isinstance(keys, list) else [keys]))
        extra.update(standard_table_metadata(partition_row_count=rows))
    md = table_metadata(table, version=res.version, write=res.write, extra=extra,
                          label_column=label_column,
                          preview_columns=[c for c in (key_column, text_column, label_column) if c])
    if rows is not None:
        # A partition's page shows dagster/row_count: its own rows, not the whole table's
        # (the table's stay in table_rows).
        md["table_rows"] = md[ROW_COUNT_KEY]
        md[ROW_COUNT_KEY] = MetadataValue.int(rows)
    return md
