"""The jobs an embedding store exists for, on top of the store: recommender embeddings
(truncated SVD), users as the mean of their last N items, named direction vectors, PCA.

Sits above the SQL layer and below the Dagster integration (``dagster_project`` turns
each into an asset). Imported on its own (``from embed_assets.recipes import ...``):
``import embed_assets`` does not load scikit-learn.
"""

from ._directions import (
    Direction,
    apply_direction,
    build_direction,
    evaluate_direction,
    read_directions,
    write_directions,
)
from ._history import HistoryReport, next_item_hit_rate, user_vectors
from ._pca import PcaReport, fit_pca, load_pca, project
from ._recommend import RecommenderReport, fit_recommender, recommend

__all__ = [
    "Direction",
    "HistoryReport",
    "PcaReport",
    "RecommenderReport",
    "apply_direction",
    "build_direction",
    "evaluate_direction",
    "fit_pca",
    "fit_recommender",
    "load_pca",
    "next_item_hit_rate",
    "project",
    "read_directions",
    "recommend",
    "user_vectors",
    "write_directions",
]


def __getattr__(name: str) -> object:
    # The demo's data generators moved to the demo (issue 22); the README used
    # simulate_history from here, so the old names resolve, with a warning.
    homes = {"debian_pairs": "_directions", "simulate_history": "_history",
             "interactions_from_depends": "_recommend"}
    if name in homes:
        import importlib
        import warnings

        warnings.warn(f"embed_assets.recipes.{name} is demo data, not library API: it moved "
                      "to embed_assets._demo", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(f"{__name__}.{homes[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
