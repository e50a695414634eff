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
    Failure,
    JobDefinition,
    OpExecutionContext,
    RunConfig,
    job,
    op,
)
from pydantic import Field

from ..errors import EmbedAssetsError, VersionNotFoundError
from ..store import EmbeddingTable
from ._compat import CoercibleToAssetKey
from .checks import INTEGRITY_CHECKS, EmbeddingCheckSettings, check_settings_of, evaluate_embedding_checks
from .metadata import record_run_version, table_metadata

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
    per_table: bool = True,
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
        key = _owner(table, asset_key)
        if key is None:
            return
        md = table_metadata(t, version=new, extra={"rollback_to": target, "rollback_from": before})
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
        jobs += [_table_rollback_job(table, key, _rollback, store_key) for table, key in owners.items()]
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
            metadata=r.metadata, severity=r.severity, blocking=r.check_name in INTEGRITY_CHECKS)
    failed = [r.check_name for r in results if not r.passed and r.check_name in INTEGRITY_CHECKS]
    if failed:
        raise Failure(f"rolled {t.name} back, but the new version fails blocking checks: "
                      f"{', '.join(failed)}; roll back to another version")
