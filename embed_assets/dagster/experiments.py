"""Model experiments in Dagster: an experiment asset whose materialisation embeds the
production table's rows with another model into a Lance branch (production untouched) and
shows the comparison as metadata, and a ``promote_<table>`` job, launched from the
Launchpad, that makes an experiment production's next version (one commit, no model call).
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    Config,
    Failure,
    JobDefinition,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
    RunConfig,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    job,
    op,
)
from pydantic import Field

from ..embed import default_embedder
from ..errors import EmbedAssetsError
from ..store import Comparison
from ._compat import CoercibleToAssetKey
from .metadata import histogram_png, projection_markdown, record_run_version, table_metadata


def promote_job_name(table: str) -> str:
    """The name of the job that promotes an experiment of ``table``."""
    return f"promote_{table}"


def comparison_metadata(cmp: Comparison) -> dict[str, Any]:
    """A comparison as asset metadata: the headline figures as numbers (plotted over
    materialisations by the UI), every figure as a table, and a markdown page with the
    summary and a histogram of the per-query top-k overlap."""
    f = cmp.figures_by_name
    md: dict[str, Any] = {
        "overlap_at_k": MetadataValue.float(float(f["overlap_at_k"])),
        "nn_changed": MetadataValue.float(float(f["nn_changed"])),
        "queries": MetadataValue.int(cmp.queries),
    }
    if f.get("rank_correlation") is not None:
        md["rank_correlation"] = MetadataValue.float(float(f["rank_correlation"]))
    for side in ("production", "experiment"):
        v = f.get(f"same_label_at_k_{side}")
        if v is not None:
            md[f"same_label_at_k_{side}"] = MetadataValue.float(float(v))
    rows = cmp.to_arrow().to_pylist()
    md["comparison"] = MetadataValue.table(
        records=[TableRecord({k: (v if v is not None else "") for k, v in r.items()}) for r in rows],
        schema=TableSchema(columns=[TableColumn("metric", "string"), TableColumn("value", "float"),
                                    TableColumn("production", "float"),
                                    TableColumn("experiment", "float")]))
    md["comparison_report"] = MetadataValue.md(comparison_markdown(cmp))
    # the plot as a picture on the materialisation (a markdown image, as the projection of
    # the embedding assets: what Dagster's UI shows without a click)
    md["overlap_plot"] = projection_markdown(overlap_png(cmp), alt=f"top-{cmp.k} overlap per query")
    return md


def overlap_png(cmp: Comparison) -> bytes:
    """A histogram of the per-query top-k overlap between production and the experiment."""
    overlaps = np.asarray(cmp.per_query.column("overlap").to_pylist(), float)
    return histogram_png(overlaps, xlabel=f"top-{cmp.k} neighbours shared with production",
                         title=f"{cmp.experiment} vs production: {cmp.queries} queries, "
                               f"mean overlap {float(np.mean(overlaps)) if len(overlaps) else 0:.2f}")


def comparison_markdown(cmp: Comparison) -> str:
    """The summary, then a text histogram of per-query top-k overlap (the plot)."""
    overlaps = np.asarray(cmp.per_query.column("overlap").to_pylist(), float)
    counts, edges = np.histogram(overlaps, bins=10, range=(0.0, 1.0))
    top = max(int(counts.max()), 1)
    bars = [f"{edges[i]:.1f}-{edges[i + 1]:.1f} | {'█' * round(30 * c / top):<30} {c}"
            for i, c in enumerate(counts)]
    return (f"**{cmp.table}**: production v{cmp.production_version} (`{cmp.production_model}`) vs "
            f"experiment `{cmp.experiment}` v{cmp.experiment_version} (`{cmp.experiment_model}`)"
            f"\n\n```\n{cmp.summary()}\n```\n\nTop-{cmp.k} overlap per query "
            f"({cmp.queries} queries):\n\n```\n" + "\n".join(bars) + "\n```\n\n"
            f"Promote it with the `{promote_job_name(cmp.table)}` job.")


def build_experiment_asset(
    table: str,
    experiment: str,
    *,
    model: str,
    backend: str | None = None,
    production: CoercibleToAssetKey | None = None,
    key: CoercibleToAssetKey | None = None,
    store_key: str = "embed_store",
    sample: int = 200,
    k: int = 10,
    label_column: str | None = None,
    group_name: str | None = None,
) -> AssetsDefinition:
    """An asset that runs experiment ``experiment`` of store table ``table``: ``model`` (a
    sentence-transformers name or ``hash-bow:DIM``, on ``backend``) re-embeds production's
    rows into the experiment's branch (only changed rows on a rerun), then the comparison
    with production is the materialisation's metadata (:func:`comparison_metadata`).

    Its key defaults to ``<production asset>/experiments/<experiment>`` (downstream of
    production, so a production run marks it stale).
    """
    prod_key = AssetKey.from_coercible(production) if production is not None else None
    if key is not None:
        asset_key = AssetKey.from_coercible(key)
    elif prod_key is not None:
        asset_key = AssetKey([*prod_key.path, "experiments", experiment])
    else:
        asset_key = AssetKey(["experiments", table, experiment])
    embedder: dict[str, Any] = {}

    @asset(key=asset_key, deps=[prod_key] if prod_key is not None else [],
           required_resource_keys={store_key}, group_name=group_name,
           code_version=f"{model}#{backend or 'default'}", kinds={"lancedb"},
           description=f"Experiment `{experiment}` of store table `{table}`: `{model}` on a Lance "
                       f"branch (SQL `\"{table}@{experiment}\"`), compared with production. "
                       f"Promote it with the `{promote_job_name(table)}` job.")
    def _experiment(context: AssetExecutionContext) -> MaterializeResult:
        store = getattr(context.resources, store_key).get_store()
        if "e" not in embedder:  # the model is loaded once per process
            embedder["e"] = default_embedder(model, backend=backend)
        try:
            t = store.table(table)
            res = t.experiment(experiment, embedder=embedder["e"], run_id=context.run.run_id)
            context.log.info(res.summary())
            cmp = t.compare(experiment, sample=sample, k=k, label_column=label_column)
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        context.log.info(cmp.summary())
        md = {"experiment": experiment, "experiment_version": res.version,
              "base_version": res.base_version, "model": res.model,
              "rows": res.rows, "rows_embedded": res.rows_embedded, **comparison_metadata(cmp)}
        return MaterializeResult(metadata=md)

    return _experiment


class PromoteConfig(Config):
    """Which experiment to promote, and whether to re-sync it first."""

    experiment: str = Field(description="the experiment to make production's next version")
    resync: bool = Field(default=False, description=(
        "if production changed since the experiment's base: re-embed the changed rows with the "
        "experiment's model first (otherwise the promotion is refused and nothing is written)"))


def build_promotion_job(table: str, *, production: CoercibleToAssetKey | None = None,
                        store_key: str = "embed_store",
                        experiments: Sequence[str] = ()) -> JobDefinition:
    """``promote_<table>``: promote an experiment of ``table`` from the Launchpad (the
    first of ``experiments`` is the default). The new production version is reported as
    a materialisation of the ``production`` asset; the run log says how to roll it back."""
    name = promote_job_name(table)
    owner = AssetKey.from_coercible(production) if production is not None else None

    @op(name=f"{name}_op", required_resource_keys={store_key}, out={})
    def promote_op(context: OpExecutionContext, config: PromoteConfig) -> Iterator[AssetMaterialization]:
        store = getattr(context.resources, store_key).get_store()
        try:
            t = store.table(table)
            embedder = None
            if config.resync:
                embedder = default_embedder(t.experiment_info(config.experiment).model)
            res = t.promote(config.experiment, resync=config.resync, embedder=embedder,
                            run_id=context.run.run_id)
        except EmbedAssetsError as exc:
            raise Failure(str(exc)) from None
        context.log.info(res.summary())
        record_run_version(context, table, res.version)
        if owner is not None:
            yield AssetMaterialization(
                asset_key=owner, description=f"promoted experiment {config.experiment!r}",
                metadata=table_metadata(t, version=res.version, extra={
                    "promoted_experiment": config.experiment,
                    "promotion_seconds": round(res.seconds, 4),
                    "promotion_bytes_written": res.bytes_written,
                    "previous_version": res.previous_version}))

    defaults: dict[str, Any] = (
        {"config": RunConfig(ops={f"{name}_op": PromoteConfig(experiment=experiments[0])})}
        if experiments else {})

    @job(name=name, **defaults,
         description=f"Make an experiment of store table `{table}` its next production version "
                     "(one commit; `rollback` undoes it).")
    def promote_job() -> None:
        promote_op()

    return promote_job
