"""What the store reads about a version's ANN index: the tuned report the index policy
recorded (:mod:`embed_assets.index`), whether a vector index exists, its centroids.

Building and tuning an index live above the store (``embed_assets.index``); the store
only needs these facts to plan a search and to keep an index through a rollback.
"""

from __future__ import annotations

import json
from typing import Any

import lance
import numpy as np

from ._cache import STATE, VersionKey
from ._meta import VECTOR_COLUMN

# The table config entry holding the index report (JSON), and the index's name.
CONFIG_KEY = "embed_assets.index"
VECTOR_INDEX_NAME = "vector_idx"
SEARCH_KEYS = ("nprobes", "refine_factor", "ef", "probe_nprobes", "probe_rank",
               "probe_candidates", "probe_two_stage", "graph_ef", "graph_m", "graph_rows",
               "graph_fingerprint", "graph_files")


def _facts(ds: lance.LanceDataset, table_id: str) -> tuple[dict[str, Any] | None, bool]:
    """What a version says about its indexes (describe_indices and config() cost ~0.1 ms
    each, on every search otherwise): a fact of the version, kept in STATE.facts."""

    def read() -> tuple[dict[str, Any] | None, bool]:
        raw = ds.config().get(CONFIG_KEY)
        has = any(i.name == VECTOR_INDEX_NAME or "Vector" in i.type_url
                  for i in ds.describe_indices())
        return (json.loads(raw) if raw else None, has)

    return STATE.facts.get(VersionKey(ds.uri, table_id, ds.version), "index", read)


def index_config(ds: lance.LanceDataset, table_id: str = "") -> dict[str, Any] | None:
    """The index report stored with a dataset version, if any."""
    cfg = _facts(ds, table_id)[0]
    return dict(cfg) if cfg else None


def has_vector_index(ds: lance.LanceDataset, table_id: str = "") -> bool:
    return _facts(ds, table_id)[1]


def search_defaults(ds: lance.LanceDataset, table_id: str = "") -> dict[str, Any] | None:
    """Search parameters recorded for this version; None means search exactly."""
    cfg = index_config(ds, table_id)
    if not cfg or cfg.get("kind") != "ann" or not has_vector_index(ds, table_id):
        return None
    p = cfg.get("params", {})
    return {key: p[key] for key in SEARCH_KEYS if key in p}


def vector_index_type(ds: lance.LanceDataset) -> str | None:
    """The type of the vector column's ANN index (``"IVF_PQ"``...), or None."""
    for idx in ds.describe_indices():
        if VECTOR_COLUMN in idx.field_names and "Vector" in idx.type_url:
            return str(idx.index_type)
    return None


def has_scalar_index(ds: lance.LanceDataset) -> bool:
    return any("Vector" not in i.type_url for i in ds.describe_indices())


def centroids(ds: lance.LanceDataset) -> np.ndarray | None:
    """The IVF centroids of the vector index, as a float32 matrix, or None."""
    try:
        c = ds.centroids(index_name=VECTOR_INDEX_NAME)
    except Exception:  # no index, or an index type without IVF centroids
        return None
    if c is None:
        return None
    if hasattr(c, "flatten"):  # a FixedSizeListArray
        arr = c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), -1).astype(np.float32)
    else:
        arr = np.asarray(c, dtype=np.float32)
    return arr if arr.ndim == 2 and arr.size else None


def ensure_scalar_indexes(ds: lance.LanceDataset, key: str, partition_column: str | None) -> bool:
    """BTREE on the key (fast lookups by key), BITMAP on the partition column (prefilters).
    Each creation commits a version; returns whether any was made."""
    have = {tuple(i.field_names) for i in ds.describe_indices()}
    made = False
    if key in ds.schema.names and (key,) not in have:
        ds.create_scalar_index(key, "BTREE")
        made = True
    if partition_column and partition_column in ds.schema.names and (partition_column,) not in have:
        ds.create_scalar_index(partition_column, "BITMAP")
        made = True
    return made
