"""Moving the serving tag from Dagster, only once the embedding asset's checks pass.

``embed-assets serve`` follows a tag (``prod`` by default); this asset is what moves it.
It depends on the embedding asset, whose integrity checks are *blocking*: in the run that
materialises the embeddings, a failed check stops the run before this asset, so the tag
stays where it was. Materialised on its own (another run, a schedule, the UI), it
evaluates the same blocking checks on the version it is about to tag and refuses a version
that fails them; so a failed check never reaches serving, whichever way the run came.
"""

# No `from __future__ import annotations`: Dagster reads the decorated function's
# annotations at definition time.
from typing import Any, cast

from dagster import (
    AssetChecksDefinition,
    AssetExecutionContext,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..store import validate_tag
from .checks import INTEGRITY_CHECKS, check_settings_of, evaluate_embedding_checks
from .metadata import VERSION_KEY


def build_serving_promotion(checks: AssetChecksDefinition, *, tag: str = "prod",
                            store_key: str = "embed_store", name: str | None = None,
                            group_name: str | None = None) -> AssetsDefinition:
    """An asset that points ``tag`` at the latest version of the table behind ``checks``
    (made by :func:`~embed_assets.dagster.build_embedding_checks`) once its blocking
    checks pass on that very version.

    Its materialisation records the tag, the version tagged and the version it left.
    """
    validate_tag(tag)
    asset_key, settings = check_settings_of(checks)

    @asset(name=name or f"{settings.table}_{tag}_tag".replace("-", "_").replace(".", "_"),
           deps=[asset_key], required_resource_keys={store_key}, group_name=group_name,
           description=f"Points tag {tag!r} of {settings.table!r} (what `embed-assets serve` "
                       f"follows) at its latest version once its blocking checks pass.")
    def _promote(context: AssetExecutionContext) -> MaterializeResult:
        t = getattr(context.resources, store_key).get_store().table(settings.table)
        version = t.version
        results = evaluate_embedding_checks(t, asset_key, settings)
        checked = {int(cast(Any, r.metadata[VERSION_KEY]).value) for r in results
                   if VERSION_KEY in r.metadata}
        if checked != {version}:  # a write landed while the checks ran: judge that one next run
            raise Failure(f"{settings.table!r} moved from version {version} while it was checked; "
                          f"tag {tag!r} left unchanged")
        previous = t.tags().get(tag)
        failed = [r.check_name for r in results if r.check_name in INTEGRITY_CHECKS and not r.passed]
        if failed:
            raise Failure(
                f"version {version} of {settings.table!r} fails blocking checks: {', '.join(failed)}; "
                f"tag {tag!r} left at version {previous}",
                metadata={"failed_checks": MetadataValue.json(failed), VERSION_KEY: version})
        t.retag(tag, version)
        context.log.info(f"tag {tag!r} of {settings.table!r}: version {previous} -> {version}")
        md: dict[str, Any] = {"tag": tag, VERSION_KEY: MetadataValue.int(version),
                              "previous_version": MetadataValue.int(previous) if previous is not None
                              else MetadataValue.text("none")}
        return MaterializeResult(metadata=md)

    return _promote
