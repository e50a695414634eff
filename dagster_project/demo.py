"""The demo pipeline on the shipped Debian slice, built once for both code locations.

descriptions (2,040 real package synopses, 12 sections)
  -> embeddings (an EmbeddingsComponent in YAML: defs/debian_embeddings/defs.yaml, or
     by_section/embeddings.yaml with one Dagster partition per section)
  -> section_centroids (mean vector per section)
  -> semantic_search (example queries: nearest packages and nearest section)
and, in the unpartitioned location, the recipes (dagster_project/recipes.py): recommender
embeddings, install histories -> user vectors, direction vectors, PCA.

The Python here is what a component cannot express: the source asset, the centroids,
the searches, the prod tag and the recipes. The embeddings and their checks, rollback,
restore and tag jobs come from the component, and so do the resources
(``embed_store``, ``embedder``, ``lance_io_manager``) the Python assets use.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    BackfillPolicy,
    BetaWarning,
    Config,
    Definitions,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
    build_defs_for_component,
    in_process_executor,
)
from pydantic import Field

from embed_assets._demo import demo_source
from embed_assets.dagster import (
    EmbeddingsComponent,
    build_embedding_checks,
    build_version_jobs,
    rollback_link,
)
from embed_assets.dagster.metadata import column_schema, preview_markdown, standard_table_metadata

from .recipes import build_recipe_assets

# Set to "hash-bow" for a fast run with no model weights (tests, smoke checks); unset uses
# the shipped all-MiniLM-L6-v2. The component YAML reads it ({{ env('EMBED_ASSETS_MODEL', '') }}).
ENV_MODEL = "EMBED_ASSETS_MODEL"
HERE = Path(__file__).resolve().parent
# The embeddings of each location, declared in YAML (EmbeddingsComponent).
EMBEDDINGS_YAML = {"debian": HERE / "defs" / "debian_embeddings" / "defs.yaml",
                   "debian_by_section": HERE / "by_section" / "embeddings.yaml"}
SOURCE_COLUMNS = ["package", "section", "priority", "installed_size_kb", "version", "description"]
DEFAULT_QUERIES = [
    "edit source code with syntax highlighting",
    "play chess against the computer",
    "convert audio files to mp3",
    "monitor network traffic",
]


def sections() -> list[str]:
    """The Debian sections in the shipped slice: the static partitions."""
    return sorted(demo_source()["section"].unique().to_list())


class DescriptionsConfig(Config):
    """Where the package descriptions come from."""

    path: str = Field(default="", description="a parquet file with the slice's columns; "
                      "empty: the slice shipped in embed_assets/data")


class SearchConfig(Config):
    queries: list[str] = Field(default=DEFAULT_QUERIES, description="texts to search for")
    k: int = Field(default=5, description="neighbours per query")


def _asset(**kwargs: Any) -> Any:
    """``@asset(...)`` without the BetaWarning ``backfill_policy`` raises in Dagster 1.13:
    printed at every import of the code location (three times per partitioned launch), it
    tells a user of the demo nothing. It is raised when the decorator is made, so only
    that call is quietened."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BetaWarning)
        return asset(**kwargs)


def build_demo_definitions(prefix: str = "debian", *, partitioned: bool = False,
                           tag_prod: bool = False) -> Definitions:
    """The demo's whole location under asset key prefix ``prefix``: the embeddings
    component of its YAML (:data:`EMBEDDINGS_YAML`) merged with :func:`build_pipeline`.
    What ``dg`` loads from the defs folder, built from Python (tests, the by-section
    location)."""
    attributes = yaml.safe_load(EMBEDDINGS_YAML[prefix].read_text())["attributes"]
    component = EmbeddingsComponent.from_attributes_dict(attributes=attributes)
    return Definitions.merge(build_defs_for_component(component),
                             build_pipeline(prefix, partitioned=partitioned, tag_prod=tag_prod))


def build_pipeline(prefix: str = "debian", *, partitioned: bool = False,
                   tag_prod: bool = False) -> Definitions:
    """The demo's Python assets around the embeddings asset ``<prefix>/embeddings`` (made
    by the EmbeddingsComponent), with the jobs over both tables and no resources of its
    own: the component provides them.

    ``tag_prod``: add a ``prod_tag`` asset that tags the embeddings version the run left
    as ``prod`` (the demo location does, so ``"<prefix>_embeddings@prod"`` reads in SQL).
    """
    group = prefix
    # The CLI runs a partition range in one run only if every selected asset says so.
    policy = BackfillPolicy.single_run() if partitioned else None
    descriptions_key = AssetKey([prefix, "descriptions"])
    embeddings_key = AssetKey([prefix, "embeddings"])
    centroids_key = AssetKey([prefix, "section_centroids"])
    emb_table, cent_table = "_".join(embeddings_key.path), "_".join(centroids_key.path)

    @_asset(key=descriptions_key, group_name=group, kinds={"polars"}, backfill_policy=policy,
           description="Debian bookworm packages: name, section, priority, size, one-line description.")
    def descriptions(context: AssetExecutionContext, config: DescriptionsConfig) -> pl.DataFrame:
        df = pl.read_parquet(config.path) if config.path else demo_source()
        df = df.select(SOURCE_COLUMNS)
        context.add_output_metadata({
            **standard_table_metadata(row_count=df.height, column_schema=column_schema(df.to_arrow().schema)),
            "sections": MetadataValue.int(df["section"].n_unique()),
            "preview": MetadataValue.md(preview_markdown(df.head(8).to_arrow())),
        })
        return df

    # The same settings as the component's checks: a rollback from rollback_table runs them.
    checks = build_embedding_checks(embeddings_key)

    @_asset(key=centroids_key, group_name=group, io_manager_key="lance_io_manager", backfill_policy=policy,
           kinds={"lancedb", "polars"},
           ins={"embeddings": AssetIn(key=embeddings_key, metadata={"columns": ["section", "vector"]})},
           metadata={"key": "section", "write_mode": "overwrite"},
           description=("The mean (re-normalised) embedding of each Debian section.\n\n"
                        f"[Roll back this asset]({rollback_link(cent_table)})"))
    def section_centroids(embeddings: pl.DataFrame) -> pl.DataFrame:
        rows = []
        for (section,), part in embeddings.group_by(["section"], maintain_order=True):
            mat = np.stack(part["vector"].to_list()).astype(np.float32)
            c = mat.mean(axis=0)
            n = float(np.linalg.norm(c))
            rows.append({"section": section, "packages": part.height,
                         "vector": (c / n if n else c).tolist()})
        return pl.DataFrame(rows).sort("section")

    @_asset(key=AssetKey([prefix, "semantic_search"]), group_name=group, backfill_policy=policy,
           deps=[embeddings_key, centroids_key], required_resource_keys={"embed_store", "embedder"},
           kinds={"lancedb"},
           description="Example semantic searches: nearest packages and the nearest section centroid.")
    def semantic_search(context: AssetExecutionContext, config: SearchConfig) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        embedder = context.resources.embedder.get_embedder()
        table = store.table("_".join(embeddings_key.path))
        cents = store.table("_".join(centroids_key.path))
        qv = embedder.embed(config.queries)
        lines = []
        results: list[dict[str, Any]] = []
        for q, v in zip(config.queries, qv, strict=True):
            hits = table.search(v, k=config.k, columns=["package", "section", "description"])
            near = cents.search(v, k=1, columns=["section"]).column("section")[0].as_py()
            lines.append(f"**{q}** (nearest section: `{near}`)\n")
            for r in hits.to_pylist():
                results.append({"query": q, **{k: r[k] for k in ("rank", "package", "section",
                                                                  "distance")}})
                lines.append(f"{r['rank']}. `{r['package']}` ({r['section']}, "
                             f"{r['distance']:.3f}): {r['description']}")
            lines.append("")
        return MaterializeResult(metadata={
            "results": MetadataValue.md("\n".join(lines)),
            "hits": MetadataValue.json(results),
            "searched_version": MetadataValue.int(table.version),
            "model": MetadataValue.text(embedder.name),
        })

    @_asset(key=AssetKey([prefix, "prod_tag"]), group_name=group, backfill_policy=policy,
           deps=[embeddings_key], required_resource_keys={"embed_store"}, kinds={"lancedb"},
           description="Tags the embeddings version this run left as `prod` (moved each run).")
    def prod_tag(context: AssetExecutionContext) -> MaterializeResult:
        table = context.resources.embed_store.get_store().table("_".join(embeddings_key.path))
        version = table.versions(with_properties=False)[-1].version  # the latest user version
        table.retag("prod", version)
        context.log.info(f"{table.name}: version {version} tagged 'prod'")
        return MaterializeResult(metadata={"lance/version": MetadataValue.int(version),
                                           "tag": MetadataValue.text("prod")})

    extra = [prod_tag] if tag_prod else []
    # The recipes (recommender, histories, directions, PCA) join the unpartitioned demo, so
    # that one `--select '*'` materialises all of it.
    recipes = [] if partitioned else build_recipe_assets(prefix, embeddings_key, f"{group}_recipes")
    parts = ({emb_table: (StaticPartitionsDefinition(sections()), "section")} if partitioned else None)
    return Definitions(
        # Four small steps: a process per step (the default executor) costs more than the
        # work itself, and the model would load once per process.
        executor=in_process_executor,
        assets=[descriptions, section_centroids, semantic_search, *extra, *recipes],
        # rollback_table and tag_table_version offer both tables; rollback_<table> for the
        # centroids (the component makes the embeddings' own rollback, restore and tag jobs);
        # a rollback of the embeddings runs their checks on the new version.
        jobs=build_version_jobs(tables={emb_table: embeddings_key, cent_table: centroids_key},
                                checks=[checks], per_table=[cent_table], partitioned=parts),
    )
