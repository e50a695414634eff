"""Rollback and tagging as jobs, launchable from the Launchpad.

Each op logs the table's versions before and after, so the run log is the audit trail;
the rollback records the run id in the new version's properties (version -> run) and
tags the run with the version (run -> version). When the table belongs to an asset, the
op also reports a materialisation, so the asset page shows the rolled-back version.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
from collections.abc import Iterator, Mapping

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    Failure,
    JobDefinition,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from ..errors import EmbedAssetsError
from ..store import EmbeddingTable
from ._compat import CoercibleToAssetKey
from .metadata import record_run_version, table_metadata


class RollbackConfig(Config):
    """Which table to roll back, and to which version or tag."""

    table: str = Field(description="store table name, e.g. debian_embeddings")
    to: str = Field(description="version number or tag to make the latest again")
    asset_key: str | None = Field(
        default=None, description="asset to report the new version for, e.g. debian/embeddings "
        "(default: the asset known to own the table)")


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
    tables: Mapping[str, CoercibleToAssetKey] | None = None,
    rollback_name: str = "rollback_table",
    tag_name: str = "tag_table_version",
) -> list[JobDefinition]:
    """A rollback job and a tag job; ``tables`` maps table names to the assets that own them."""
    owners = {t: AssetKey.from_coercible(k) for t, k in (tables or {}).items()}

    def _owner(table: str, explicit: str | None) -> AssetKey | None:
        if explicit:
            return AssetKey.from_user_string(explicit)
        return owners.get(table)

    # out={}: the op's only product is the table's new version (reported as a
    # materialisation), not a value for another op.
    @op(name=f"{rollback_name}_op", required_resource_keys={store_key}, out={})
    def rollback_op(context: OpExecutionContext, config: RollbackConfig) -> Iterator[AssetMaterialization]:
        store = getattr(context.resources, store_key).get_store()
        try:
            t = store.table(config.table)
            before = t.version
            context.log.info(f"{config.table} before (latest v{before}):\n{_listing(t)}")
            target = t.resolve(config.to)
            new = t.rollback(config.to, run_id=context.run.run_id)
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        # ``new`` is the Restore's version (the user's); an index rebuild may follow it.
        latest = t.version
        rebuilt = "" if latest == new else f", index rebuilt up to v{latest}"
        context.log.info(f"rolled {config.table} back to v{target}: new latest v{new} "
                         f"(was v{before}{rebuilt})\n{config.table} after:\n{_listing(t)}")
        record_run_version(context, config.table, new)
        key = _owner(config.table, config.asset_key)
        if key is not None:
            md = table_metadata(t, version=new, extra={"rollback_to": target, "rollback_from": before})
            yield AssetMaterialization(asset_key=key, metadata=md,
                                       description=f"rollback to version {target}")

    @op(name=f"{tag_name}_op", required_resource_keys={store_key})
    def tag_op(context: OpExecutionContext, config: TagConfig) -> None:
        store = getattr(context.resources, store_key).get_store()
        try:
            t = store.table(config.table)
            context.log.info(f"{config.table} before:\n{_listing(t)}")
            if config.remove:
                v = t.untag(config.tag)
                context.log.info(f"removed tag {config.tag!r} (was on v{v})")
            else:
                ref = config.version if config.version not in (None, "") else None
                v = (t.retag if config.move else t.tag)(config.tag, ref)
                context.log.info(f"tagged v{v} of {config.table} as {config.tag!r}")
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        context.log.info(f"{config.table} after:\n{_listing(t)}")

    @job(name=rollback_name, description="Make an old version (or tag) of a table the latest again.")
    def rollback_job() -> None:
        rollback_op()

    @job(name=tag_name, description="Tag (or move, or remove a tag on) a version of a table.")
    def tag_job() -> None:
        tag_op()

    return [rollback_job, tag_job]
