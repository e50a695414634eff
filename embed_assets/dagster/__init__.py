"""Dagster integration for embed_assets: resources, an IO manager, an embedding-asset
factory, asset checks and rollback/tag jobs.

This is the only part of embed_assets that imports Dagster; the store does not.

In a dg project, ``EmbeddingsComponent`` configures all of it from a ``defs.yaml``
(``dg scaffold defs embed_assets.dagster.EmbeddingsComponent NAME``; docs/dagster.md).

Examples
--------
.. code-block:: python

    from dagster import Definitions, asset
    from embed_assets.dagster import (EmbedderResource, EmbedStoreResource, LanceDBIOManager,
                                      build_embedding_asset, build_embedding_checks)

    embeddings = build_embedding_asset("doc_vectors", source="docs", key_column="id",
                                       text_column="body")
    store = EmbedStoreResource()  # one store configuration, shared by the IO manager
    defs = Definitions(
        assets=[docs, embeddings],
        asset_checks=[build_embedding_checks(embeddings.key)],
        resources={"embed_store": store, "embedder": EmbedderResource(),
                   "lance_io_manager": LanceDBIOManager(store=store)},
    )
"""

from .._extras import require

# Without the extra, one line naming it instead of a ModuleNotFoundError from a submodule.
require("dagster", "the Dagster integration (embed_assets.dagster)", "dagster")
# ruff: noqa: E402

from ._quiet import quiet_dagster_internal_warnings

quiet_dagster_internal_warnings()

from .assets import EmbedConfig, build_embedding_asset
from .checks import (
    INTEGRITY_CHECKS,
    WARN_CHECKS,
    EmbeddingCheckSettings,
    build_embedding_checks,
    evaluate_embedding_checks,
)
from .component import EmbeddingsComponent, EmbeddingTableSpec, ExperimentSpec, model_identity
from .experiments import (
    PromoteConfig,
    build_experiment_asset,
    build_promotion_job,
    comparison_metadata,
    promote_job_name,
)
from .io_manager import (
    LanceArrowTypeHandler,
    LanceDbClient,
    LanceDBIOManager,
    LancePandasTypeHandler,
    LancePolarsTypeHandler,
)
from .jobs import (
    PREVIOUS,
    RollbackConfig,
    TableRollbackConfig,
    TagConfig,
    build_table_jobs,
    build_version_jobs,
    resolve_rollback_target,
    rollback_job_name,
    rollback_link,
)
from .metadata import (
    PROJECTION_KEY,
    RUN_TAG_PREFIX,
    VERSION_KEY,
    lance_table_name,
    run_for_version,
    table_metadata,
    versions_for_run,
)
from .resources import EmbedderResource, EmbedStoreResource
from .serving import build_serving_promotion

__all__ = [
    "INTEGRITY_CHECKS",
    "PREVIOUS",
    "PROJECTION_KEY",
    "RUN_TAG_PREFIX",
    "VERSION_KEY",
    "WARN_CHECKS",
    "EmbedConfig",
    "EmbedStoreResource",
    "EmbedderResource",
    "EmbeddingCheckSettings",
    "EmbeddingTableSpec",
    "EmbeddingsComponent",
    "ExperimentSpec",
    "LanceArrowTypeHandler",
    "LanceDBIOManager",
    "LanceDbClient",
    "LancePandasTypeHandler",
    "LancePolarsTypeHandler",
    "PromoteConfig",
    "RollbackConfig",
    "TableRollbackConfig",
    "TagConfig",
    "build_embedding_asset",
    "build_embedding_checks",
    "build_experiment_asset",
    "build_promotion_job",
    "build_serving_promotion",
    "build_table_jobs",
    "build_version_jobs",
    "comparison_metadata",
    "evaluate_embedding_checks",
    "lance_table_name",
    "model_identity",
    "promote_job_name",
    "resolve_rollback_target",
    "rollback_job_name",
    "rollback_link",
    "run_for_version",
    "table_metadata",
    "versions_for_run",
]
