"""Numerical kernels shared by every layer: distances, normalising, top-k, the in-memory IVF probe."""

from ._ivf import Int8Rows, IvfProbe, assign_rows, default_rank, partition_bounds, prepare_centroids
from ._topk import (
    batch_distances,
    exact_topk,
    exact_topk_batch,
    join_topk,
    mahalanobis_topk,
    normalize,
    normalize_rows,
    pair_distances,
    scan_distances,
    smallest_k,
    top_k,
    top_k_rows,
    whitening,
    whitening_key,
)

__all__ = [
    "Int8Rows",
    "IvfProbe",
    "assign_rows",
    "batch_distances",
    "default_rank",
    "exact_topk",
    "exact_topk_batch",
    "join_topk",
    "mahalanobis_topk",
    "normalize",
    "normalize_rows",
    "pair_distances",
    "partition_bounds",
    "prepare_centroids",
    "scan_distances",
    "smallest_k",
    "top_k",
    "top_k_rows",
    "whitening",
    "whitening_key",
]
