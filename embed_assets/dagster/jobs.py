"""Rollback and tagging as jobs, launchable from the Launchpad.

Each op logs the table's versions before and after, so the run log is the audit trail;
the rollback records the run id in the new version's properties (version -> run) and
tags the run with the version (run -> version). When the table belongs to an asset, the
op also reports a materialisation, so the asset page shows the rolled-back version.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
import enum
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias, cast

from dagster import (
    AssetCheckEvaluation,
    AssetChecksDefinition,
    AssetKey,
    AssetMaterialization,
    Config,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    PartitionedConfig,
    PartitionsDefinition,
    RunConfig,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    StaticPartitionsDefinition,
    job,
    op,
    sensor,
)
from pydantic import Field

from ..errors import EmbedAssetsError, VersionNotFoundError
from ..store import EmbeddingTable
from ._compat import CoercibleToAssetKey
from .checks import EmbeddingCheckSettings, check_settings_of, evaluate_embedding_checks
from .metadata import (
    PARTITION_ROW_COUNT_KEY,
    ROW_COUNT_KEY,
    record_run_version,
    table_metadata,
)

# What a rollback op reports: the owning asset's new version, then its checks on it.
RollbackEvent: TypeAlias = AssetMaterialization | AssetCheckEvaluation

# ``to`` of a rollback, by default: the user version before the latest (an undo). A keyword,
# not a tag lookup: a tag of that name is reached by its version number.
PREVIOUS = "previous"


class RollbackConfig(Config):
    """Which table to roll back, and to which version or tag.

    :func:`build_version_jobs` with ``tables=`` offers those tables as a Dagster Enum
    instead of this free-text ``table``.
    """

    table: str = Field(description="store table name, e.g. debian_embeddings")
    to: str = Field(default=PREVIOUS, description=(
        "version number or tag to make the latest again; 'previous' (default): the version "
        "before the latest"))
    asset_key: str | None = Field(
        default=None, description="asset to report the new version for, e.g. debian/embeddings "
        "(default: the asset known to own the table)")


class TableRollbackConfig(Config):
    """The rollback of one table (a ``rollback_<table>`` job): only where to go."""

    to: str = Field(default=PREVIOUS, description=(
        "version number or tag to make the latest again; 'previous' (default): the version "
        "before the latest"))


def rollback_job_name(table: str) -> str:
    """The name of the job that rolls back ``table`` alone (made by :func:`build_version_jobs`)."""
    return f"rollback_{table}"


def rollback_link(table: str) -> str:
    """A UI path to the Launchpad of ``table``'s rollback job, whatever the code location
    is called (the UI's ``/guess/`` route finds the job), for an asset description."""
    return f"/guess/{rollback_job_name(table)}/playground"


def resolve_rollback_target(t: EmbeddingTable, to: str) -> int:
    """The version a rollback ``to`` means: a number, a tag, or ``previous``.

    Raises
    ------
    VersionNotFoundError
        For an unknown version or tag, or ``previous`` on a table with one version.
    """
    if to.strip().lower() != PREVIOUS:
        return t.resolve(to)
    # user versions only: an index build after the latest is not a step back
    vs = [v.version for v in t.versions(with_properties=False)]
    if len(vs) < 2:
        raise VersionNotFoundError(
            f"table {t.name!r} has one version (v{vs[-1]}): there is no previous version "
            "to roll back to" if vs else f"table {t.name!r} has no readable version")
    return vs[-2]


class TagConfig(Config):
    """Which version of which table to tag."""

    table: str = Field(description="store table name")
    tag: str = Field(description="tag name (starts with a letter or '_')")
    version: str | None = Field(default=None, description="version number or tag; empty: latest")
    move: bool = Field(default=False, description="move the tag if it already points elsewhere")
    remove: bool = Field(default=False, description="delete the tag instead of setting it")


def _listing(t: EmbeddingTable, last: int = 8) -> str:
    vs = t.versions()
    lines = [f"  v{v.version:<4} rows={v.rows:<7} tags={','.join(v.tags) or '-':<12} "
             f"mode={v.properties.get('mode', v.properties.get('operation', '?')):<12} "
             f"run={v.properties.get('run_id', '-')}" for v in vs[-last:]]
    return "\n".join(lines)


def build_version_jobs(
    *,
    store_key: str = "embed_store",
    tables: Mapping[str, CoercibleToAssetKey | None] | None = None,
    checks: Sequence[AssetChecksDefinition] = (),
    rollback_name: str = "rollback_table",
    tag_name: str = "tag_table_version",
    per_table: bool | Sequence[str] = True,
    partitioned: Mapping[str, tuple[PartitionsDefinition, str]] | None = None,
) -> list[JobDefinition]:
    """A rollback job, a tag job and (``per_table``) one rollback job per table in ``tables``.

    Parameters
    ----------
    tables : mapping of table name -> asset key (or None), optional
        The tables these jobs offer. The rollback and tag jobs take ``table`` as a Dagster
        Enum of these names (the Launchpad offers them; anything else is refused before
        the run starts); a table owned by an asset has its new version reported as a
        materialisation of that asset. Without ``tables``, ``table`` is free text.
    checks : sequence of AssetChecksDefinition
        Definitions made by :func:`~embed_assets.dagster.build_embedding_checks`: after a
        rollback of a checked asset's table the same checks run on the new version, in the
        same run, so the asset page shows them evaluated rather than "Not Evaluated".
    per_table : bool
        Also make ``rollback_<table>`` (:func:`rollback_job_name`) for each table in
        ``tables``: its config is only ``to``, default ``previous``, so it launches from the
        Launchpad as it opens. :func:`rollback_link` points an asset description at it.
        A sequence of table names: those tables only.
    partitioned : mapping of table name -> (partitions definition, partition column)
        Tables behind partitioned assets: a rollback is recorded as one materialisation
        per partition, each with that partition's row count.
    """
    owners = {t: (AssetKey.from_coercible(k) if k is not None else None)
              for t, k in (tables or {}).items()}
    checked: dict[AssetKey, EmbeddingCheckSettings] = {}
    for c in checks:
        key, settings = check_settings_of(c)
        checked[key] = settings
    # A Python Enum in a Config class is a Dagster Enum in the config schema.
    # Named after the jobs: Dagster keys config types by name, so two job sets in one
    # Definitions (the demo's and the image group's) each need their own Enum.
    enum_name = "StoreTable_" + re.sub(r"\W", "_", rollback_name)
    table_type: Any = enum.Enum(enum_name, {n: n for n in owners}) if owners else str
    rollback_config, tag_config = _rollback_config(table_type), _tag_config(table_type)

    def _owner(table: str, explicit: str | None) -> AssetKey | None:
        if explicit:
            return AssetKey.from_user_string(explicit)
        return owners.get(table)

    parts = dict(partitioned or {})

    def _rollback(context: OpExecutionContext, table: str, to: str,
                  asset_key: str | None) -> Iterator[RollbackEvent]:
        store = getattr(context.resources, store_key).get_store()
        try:
            t = store.table(table)
            before = t.version
            context.log.info(f"{table} before (latest v{before}):\n{_listing(t)}")
            target = resolve_rollback_target(t, to)
            asked = "" if str(target) == to.strip() else f" ({to})"
            current = t.versions(with_properties=False)[-1].version  # the latest user version
            if target == current:
                # a Restore of the latest would only add a copy of it: a version of nothing
                context.log.info(f"{table}: v{target}{asked} is already the latest version; "
                                 "nothing rolled back")
                return
            new = t.rollback(target, run_id=context.run.run_id)
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        # ``new`` is the Restore's version (the user's); an index rebuild may follow it.
        latest = t.version
        rebuilt = "" if latest == new else f", index rebuilt up to v{latest}"
        context.log.info(f"rolled {table} back to v{target}{asked}: new latest v{new} "
                         f"(was v{before}{rebuilt})\n{table} after:\n{_listing(t)}")
        record_run_version(context, table, new)
        sync_version_choices(context, t)
        key = _owner(table, asset_key)
        if key is None:
            return
        md = table_metadata(t, version=new, extra={"rollback_to": target, "rollback_from": before})
        if table in parts:
            # one event per partition, each with its own row count: each partition's page
            # then shows the restored version
            yield from _partition_materialisations(t, key, new, target, md, *parts[table])
        else:
            yield AssetMaterialization(asset_key=key, metadata=md,
                                       description=f"rollback to version {target}")
        settings = checked.get(key)
        if settings is not None and settings.table == table:
            yield from _check_events(t, key, settings)

    # out={}: the op's only product is the table's new version (reported as a
    # materialisation), not a value for another op.
    @op(name=f"{rollback_name}_op", required_resource_keys={store_key}, out={})
    def rollback_op(context: OpExecutionContext,
                    config: rollback_config) -> Iterator[RollbackEvent]:  # type: ignore[valid-type]
        cfg = cast(RollbackConfig, config)  # _rollback_config's class: a RollbackConfig
        yield from _rollback(context, _plain(cfg.table), cfg.to, cfg.asset_key)

    @op(name=f"{tag_name}_op", required_resource_keys={store_key})
    def tag_op(context: OpExecutionContext, config: tag_config) -> None:  # type: ignore[valid-type]
        config = cast(TagConfig, config)  # _tag_config's class: a TagConfig
        table = _plain(config.table)
        store = getattr(context.resources, store_key).get_store()
        try:
            t = store.table(table)
            context.log.info(f"{table} before:\n{_listing(t)}")
            if config.remove:
                v = t.untag(config.tag)
                context.log.info(f"removed tag {config.tag!r} (was on v{v})")
            else:
                ref = config.version if config.version not in (None, "") else None
                v = (t.retag if config.move else t.tag)(config.tag, ref)
                context.log.info(f"tagged v{v} of {table} as {config.tag!r}")
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        context.log.info(f"{table} after:\n{_listing(t)}")

    @job(name=rollback_name, description="Make an old version (or tag) of a table the latest again.")
    def rollback_job() -> None:
        rollback_op()

    @job(name=tag_name, description="Tag (or move, or remove a tag on) a version of a table.")
    def tag_job() -> None:
        tag_op()

    jobs = [rollback_job, tag_job]
    if per_table:
        chosen = owners if per_table is True else {t: owners[t] for t in per_table}
        jobs += [_table_rollback_job(table, key, _rollback, store_key) for table, key in chosen.items()]
    return jobs


def _table_rollback_job(table: str, key: AssetKey | None, rollback: Any, store_key: str) -> JobDefinition:
    """``rollback_<table>``: the rollback of one table, every field defaulted."""
    name = rollback_job_name(table)

    @op(name=f"{name}_op", required_resource_keys={store_key}, out={})
    def table_rollback_op(context: OpExecutionContext,
                          config: TableRollbackConfig) -> Iterator[RollbackEvent]:
        yield from rollback(context, table, config.to, None)

    owner = f" (asset {key.to_user_string()})" if key is not None else ""

    # The default shows in the Launchpad as it opens (to: previous): Launch Run is the undo.
    @job(name=name, description=f"Roll back store table `{table}`{owner}: by default to the "
         "version before the latest; then run its checks on the new version.",
         config=RunConfig(ops={f"{name}_op": TableRollbackConfig()}))
    def table_rollback_job() -> None:
        table_rollback_op()

    return table_rollback_job


def _plain(value: Any) -> str:
    """A table name from config: an Enum member's value, or the string itself."""
    return str(value.value if isinstance(value, enum.Enum) else value)


def _rollback_config(table_type: Any) -> type[Config]:
    if table_type is str:
        return RollbackConfig

    class StoreRollbackConfig(RollbackConfig):
        table: table_type = Field(description="store table to roll back")

    return StoreRollbackConfig


def _tag_config(table_type: Any) -> type[Config]:
    if table_type is str:
        return TagConfig

    class StoreTagConfig(TagConfig):
        table: table_type = Field(description="store table")

    return StoreTagConfig


def _check_events(t: EmbeddingTable, key: AssetKey,
                  settings: EmbeddingCheckSettings) -> Iterator[AssetCheckEvaluation]:
    """The asset's checks on the rolled-back version, evaluated in this run (the UI counts
    an evaluation in the run of the latest materialisation as an evaluation of it)."""
    results = evaluate_embedding_checks(t, key, settings)
    for r in results:
        yield AssetCheckEvaluation(
            asset_key=key, check_name=str(r.check_name), passed=bool(r.passed),
            metadata=r.metadata, severity=r.severity, blocking=settings.blocking(str(r.check_name)))
    failed = [str(r.check_name) for r in results if not r.passed and settings.blocking(str(r.check_name))]
    if failed:
        raise Failure(f"rolled {t.name} back, but the new version fails blocking checks: "
                      f"{', '.join(failed)}; roll back to another version")


def _partition_materialisations(t: EmbeddingTable, key: AssetKey, version: int, target: int,
                                md: Mapping[str, Any], partitions_def: PartitionsDefinition,
                                column: str) -> Iterator[AssetMaterialization]:
    """A rollback of a partitioned table as one materialisation per partition key."""
    col = t.read(version, columns=[column]).column(column)
    counts: dict[str, int] = {}
    for v in col.to_pylist():
        counts[str(v)] = counts.get(str(v), 0) + 1
    if isinstance(partitions_def, StaticPartitionsDefinition):
        keys = partitions_def.get_partition_keys()
    else:  # time windows and dynamic partitions: the keys the table holds rows of
        keys = sorted(counts)
    for pk in keys:
        rows = counts.get(pk, 0)
        yield AssetMaterialization(
            asset_key=key, partition=pk,
            metadata={**md, ROW_COUNT_KEY: MetadataValue.int(rows),
                      PARTITION_ROW_COUNT_KEY: MetadataValue.int(rows),
                      "table_rows": MetadataValue.int(t.dataset(version).count_rows())},
            description=f"rollback to version {target}")


# -- the table's versions as Launchpad choices ------------------------------------------------
# The restore_<table> and tag_<table> jobs are partitioned by the table's versions: the
# Launchpad's partition menu lists them (version, tags, rows, model, run, time) and a
# click picks one, with nothing typed. Dynamic partitions, because they change with
# every write: the embedding asset, the rollback and tag ops and a sensor (for writes
# from outside Dagster: the CLI, Python) keep them equal to the store's versions.
MAX_CHOICES = 50
_CHOICE = re.compile(r"^v(\d+)\b")


def versions_partitions_name(table: str) -> str:
    return f"versions_{table}"


def version_choice(t: EmbeddingTable, info: Any) -> str:
    """One version as a Launchpad choice:
    ``v3 [prod] | 2040 rows | model | run 1a2b3c4d | 2026-12-07 14:41 UTC``."""
    tags = f" [{', '.join(info.tags)}]" if info.tags else ""
    run = (info.properties.get("run_id") or "")[:8] or "-"
    try:
        model = t.meta_at(info.version).model or "?"
    except Exception:  # a version whose schema cannot be read still gets a choice
        model = "?"
    when = info.timestamp.strftime("%Y-%m-%d %H:%M UTC")
    return f"v{info.version}{tags} | {info.rows} rows | {model} | run {run} | {when}"


def version_from_choice(choice: str) -> int:
    m = _CHOICE.match(choice.strip())
    if not m:
        raise Failure(f"{choice!r} is not a version choice (v<N> | ...)")
    return int(m.group(1))


def sync_version_choices(context: Any, t: EmbeddingTable) -> None:
    """Make the dynamic partitions ``versions_<table>`` the latest versions of ``t``, newest
    first in the menu. Never fails the caller: the choices are a convenience."""
    instance = getattr(context, "instance", None)
    if instance is None:
        return
    name = versions_partitions_name(t.name)
    try:
        wanted = [version_choice(t, v) for v in t.versions()[-MAX_CHOICES:]]
        have = list(instance.get_dynamic_partitions(name))
        if have == wanted:
            return
        # Dagster lists dynamic partitions in the order they were added: rewrite them all
        # when anything changed (tens of rows), so the menu stays ordered by version.
        for k in have:
            instance.delete_dynamic_partition(name, k)
        instance.add_dynamic_partitions(name, wanted)
    except Exception as exc:
        context.log.warning(f"could not refresh the version choices of {t.name}: {exc}")


def version_choices_sensor(name: str, tables: Mapping[str, Any], *, store_key: str = "embed_store",
                           interval_seconds: int = 60) -> SensorDefinition:
    """A sensor that keeps the version choices of ``tables`` equal to the store's versions
    (writes made outside Dagster included); it never requests a run."""

    @sensor(name=name, minimum_interval_seconds=interval_seconds, required_resource_keys={store_key},
            default_status=DefaultSensorStatus.RUNNING,
            description="Keeps the version menus of the restore_/tag_ Launchpads equal to the store.")
    def _sensor(context: SensorEvaluationContext) -> SkipReason:
        store = getattr(context.resources, store_key).get_store()
        done = []
        for table in tables:
            if store.exists(table):
                sync_version_choices(context, store.table(table))
                done.append(table)
        return SkipReason(f"version choices refreshed: {', '.join(done) or 'no table yet'}")

    return _sensor


class RestoreConfig(Config):
    """Nothing to type: the version is the partition picked in the Launchpad."""


class TableTagConfig(Config):
    """Tag the version picked in the Launchpad's partition menu."""

    tag: str = Field(description="tag name (starts with a letter or '_')")
    move: bool = Field(default=False, description="move the tag if it already points elsewhere")
    remove: bool = Field(default=False, description="delete this tag (from whichever version holds it)")


def build_table_jobs(owners: Mapping[str, AssetKey | None], *,
                     checks: Sequence[AssetChecksDefinition] = (), store_key: str = "embed_store",
                     partitioned: Mapping[str, tuple[PartitionsDefinition, str]] | None = None,
                     ) -> list[JobDefinition]:
    """Per table: ``rollback_<table>`` (to the previous version, launches as it opens),
    ``restore_<table>`` (to the version picked in the Launchpad) and ``tag_<table>`` (tag
    the version picked), the asset's checks run after a rollback or restore."""
    jobs = build_version_jobs(tables=owners, checks=checks, store_key=store_key,
                              partitioned=partitioned, per_table=True,
                              rollback_name="rollback_table_" + "_".join(sorted(owners))[:60],
                              tag_name="tag_table_" + "_".join(sorted(owners))[:60])
    per_table = jobs[2:]  # the rollback_<table> jobs; the generic pair stays out
    rollback_op_of = {j.name: j for j in per_table}
    out: list[JobDefinition] = list(per_table)
    for table in owners:
        parts = DynamicPartitionsDefinition(name=versions_partitions_name(table))
        out.append(_restore_job(table, parts, rollback_op_of[rollback_job_name(table)]))
        out.append(_tag_job(table, parts, store_key))
    return out


def _restore_job(table: str, parts: DynamicPartitionsDefinition, rollback: JobDefinition) -> JobDefinition:
    """``restore_<table>``: the rollback op of ``rollback_<table>``, its target the picked version."""
    node = rollback.graph.node_defs[0]
    op_name = node.name

    @job(name=f"restore_{table}", partitions_def=parts,
         description=f"Make a version of store table `{table}` the latest again: pick it in the "
                     "Launchpad's partition menu (version, tags, rows, model, run, time), then "
                     "Launch Run; the asset's checks run on the new version.",
         config=PartitionedConfig(partitions_def=parts, run_config_for_partition_key_fn=lambda key: {
             "ops": {op_name: {"config": {"to": str(version_from_choice(key))}}}}))
    def restore_job() -> None:
        node()

    return restore_job


def _tag_job(table: str, parts: DynamicPartitionsDefinition, store_key: str) -> JobDefinition:
    @op(name=f"tag_{table}_op", required_resource_keys={store_key})
    def tag_op(context: OpExecutionContext, config: TableTagConfig) -> None:
        version = version_from_choice(context.partition_key)
        t = getattr(context.resources, store_key).get_store().table(table)
        try:
            if config.remove:
                v = t.untag(config.tag)
                context.log.info(f"removed tag {config.tag!r} (was on v{v})")
            else:
                v = (t.retag if config.move else t.tag)(config.tag, version)
                context.log.info(f"tagged v{v} of {table} as {config.tag!r}")
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        sync_version_choices(context, t)

    @job(name=f"tag_{table}", partitions_def=parts,
         description=f"Tag a version of store table `{table}`: pick it in the Launchpad's "
                     "partition menu, name the tag.")
    def tag_job() -> None:
        tag_op()

    return tag_job
