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
    debian_pairs,
    evaluate_direction,
    read_directions,
    write_directions,
)
from ._history import HistoryReport, next_item_hit_rate, simulate_history, user_vectors
from ._pca import PcaReport, fit_pca, load_pca, project
from ._recommend import RecommenderReport, fit_recommender, interactions_from_depends, recommend

__all__ = [
    "Direction",
    "HistoryReport",
    "PcaReport",
    "RecommenderReport",
    "apply_direction",
    "build_direction",
    "debian_pairs",
    "evaluate_direction",
    "fit_pca",
    "fit_recommender",
    "interactions_from_depends",
    "load_pca",
    "next_item_hit_rate",
    "project",
    "read_directions",
    "recommend",
    "simulate_history",
    "user_vectors",
    "write_directions",
]
