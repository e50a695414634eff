"""The recipes as assets of the demo (``embed_assets.recipes``): recommender embeddings from
the real dependency graph, simulated install histories and users as the mean of their
last N packages, named direction vectors ("-dev", "-doc"), PCA of the text embeddings.

Each asset writes versioned store tables (a new version per materialisation, so a worse
model can be rolled back) and reports its figure beside its baseline as metadata.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
from typing import Any

import numpy as np
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from embed_assets._demo import debian_pairs, demo_source, interactions_from_depends, simulate_history
from embed_assets.dagster import build_embedding_asset
from embed_assets.dagster.metadata import projection_markdown, projection_png
from embed_assets.recipes import (
    build_direction,
    evaluate_direction,
    fit_pca,
    fit_recommender,
    next_item_hit_rate,
    user_vectors,
    write_directions,
)


class RecommenderConfig(Config):
    rank: int = Field(default=8, description="SVD components")
    holdout: float = Field(default=0.1, description="share of each package's edges held out")
    seed: int = Field(default=0)


class HistoryConfig(Config):
    users: int = Field(default=300, description="simulated users")
    seed: int = Field(default=0)


class UserVectorsConfig(Config):
    last_n: int = Field(default=5, description="a user is the mean of its last N packages")


class PcaConfig(Config):
    k: int = Field(default=32, description="components kept")


def _f(x: float) -> MetadataValue:
    return MetadataValue.float(round(float(x), 4))


def build_recipe_assets(prefix: str, embeddings_key: AssetKey, group: str) -> list[AssetsDefinition]:
    """The recipe assets, reading the text embeddings table behind ``embeddings_key``."""
    emb_table = "_".join(embeddings_key.path)
    users_table, items_table = f"{prefix}_package_factors", f"{prefix}_dependency_factors"
    pairs_source_key = AssetKey([prefix, "pair_descriptions"])
    pairs_key = AssetKey([prefix, "pair_embeddings"])
    history_key = AssetKey([prefix, "install_history"])

    @asset(key=AssetKey([prefix, "recommender"]), group_name=group, kinds={"lancedb", "scikitlearn"},
           required_resource_keys={"embed_store"},
           description=(f"Truncated-SVD embeddings of the package x dependency matrix: packages in "
                        f"`{users_table}`, dependencies in `{items_table}`; dot product = link score."))
    def recommender(context: AssetExecutionContext, config: RecommenderConfig) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        rep = fit_recommender(store, interactions_from_depends(demo_source()), rank=config.rank,
                              holdout=config.holdout, seed=config.seed, users_table=users_table,
                              items_table=items_table, run_id=context.run.run_id)
        context.log.info(rep.summary())
        return MaterializeResult(metadata={
            "summary": MetadataValue.text(rep.summary()),
            "lance/version": MetadataValue.int(rep.users_version),
            "items_version": MetadataValue.int(rep.items_version),
            "hit_at_10": _f(rep.hit_at_10), "popularity_hit_at_10": _f(rep.popularity_hit_at_10),
            "auc": _f(rep.auc), "popularity_auc": _f(rep.popularity_auc),
            "explained_variance": _f(rep.explained_variance),
            "heldout_edges": MetadataValue.int(rep.heldout_edges),
            "dagster/row_count": MetadataValue.int(rep.users),
        })

    # Not a store table (the store holds vectors): Dagster's default IO manager keeps it.
    @asset(key=history_key, group_name=group, kinds={"polars"},
           description="A seeded, simulated install log over the real packages (see "
                       "embed_assets.recipes.simulate_history for the procedure).")
    def install_history(context: AssetExecutionContext, config: HistoryConfig) -> pl.DataFrame:
        hist = simulate_history(demo_source(), users=config.users, seed=config.seed)
        hist = hist.with_row_index("event").with_columns(pl.col("event").cast(pl.Int64))
        context.add_output_metadata({"users": MetadataValue.int(hist["user"].n_unique()),
                                     "dagster/row_count": MetadataValue.int(hist.height)})
        return hist

    @asset(key=AssetKey([prefix, "user_vectors"]), group_name=group, kinds={"lancedb"},
           ins={"history": AssetIn(key=history_key)}, deps=[embeddings_key],
           required_resource_keys={"embed_store"},
           description=f"Each user as the mean of its last N packages' vectors (`{emb_table}`); "
                       "incremental: only users whose window changed are recomputed.")
    def user_vectors_asset(context: AssetExecutionContext, config: UserVectorsConfig,
                           history: pl.DataFrame) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        hist = history.select("user", "package", "ts")
        rep = user_vectors(store, hist, emb_table, last_n=config.last_n, table=f"{prefix}_user_vectors",
                           run_id=context.run.run_id)
        hits = next_item_hit_rate(hist, store, emb_table)
        context.log.info(rep.summary())
        return MaterializeResult(metadata={
            "summary": MetadataValue.text(rep.summary()),
            "lance/version": MetadataValue.int(rep.version),
            "users_recomputed": MetadataValue.int(rep.users_recomputed),
            "users_unchanged": MetadataValue.int(rep.users_unchanged),
            **{f"next_item_{k.replace('@', '_at_')}": _f(v) for k, v in hits.items()},
        })

    @asset(key=pairs_source_key, group_name=group, kinds={"polars"},
           description="Packages of real '-dev' and '-doc' pairs (same Debian source).")
    def pair_descriptions() -> pl.DataFrame:
        return debian_pairs()[0]

    pair_embeddings = build_embedding_asset(
        pairs_key, source=pairs_source_key, key_column="package", text_column="description",
        columns=["section", "source", "description"], group_name=group, label_column="section")

    @asset(key=AssetKey([prefix, "directions"]), group_name=group, kinds={"lancedb"},
           deps=[pairs_key], required_resource_keys={"embed_store"},
           description="Named direction vectors: 'dev' (library -> its -dev package) and 'doc' "
                       "(package -> its -doc package), mean differences over real pairs.")
    def directions(context: AssetExecutionContext) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        table = store.table("_".join(pairs_key.path))
        _, pairs = debian_pairs()
        md: dict[str, Any] = {}
        built = []
        for name, kind_pairs in sorted(pairs.items()):
            ev = evaluate_direction(table, kind_pairs, name=name)
            md.update({f"{name}_hit_at_1": _f(ev["hit@1"]), f"{name}_hit_at_10": _f(ev["hit@10"]),
                       f"{name}_plain_nn_hit_at_1": _f(ev["baseline_hit@1"]),
                       f"{name}_plain_nn_hit_at_10": _f(ev["baseline_hit@10"])})
            built.append(build_direction(table, kind_pairs, name=name))
        w = write_directions(store, built, table=f"{prefix}_directions", run_id=context.run.run_id)
        return MaterializeResult(metadata={**md, "lance/version": MetadataValue.int(w.version)})

    @asset(key=AssetKey([prefix, "pca"]), group_name=group, kinds={"lancedb", "scikitlearn"},
           deps=[embeddings_key], required_resource_keys={"embed_store"},
           description=f"PCA of `{emb_table}`: the model as a versioned table, explained variance.")
    def pca(context: AssetExecutionContext, config: PcaConfig) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        table = store.table(emb_table)
        rep = fit_pca(table, config.k, store=store, name=f"{emb_table}_pca{config.k}")
        ratios = rep.explained_variance_ratio
        sample = table.read(columns=["section", "vector"])
        xy = rep.transform(np.asarray(sample.column("vector").to_pylist(), np.float32))[:, :2]
        png = projection_png(np.asarray(xy), sample.column("section").to_pylist(),
                             title=f"{emb_table} v{rep.source_version}: PCA 1-2")
        return MaterializeResult(metadata={
            "lance/version": MetadataValue.int(rep.model_version or 0),
            "explained_variance": _f(rep.explained),
            "explained_variance_2": _f(float(np.sum(ratios[:2]))),
            "projection": projection_markdown(png),
        })

    return [recommender, install_history, user_vectors_asset, pair_descriptions, pair_embeddings,
            directions, pca]
