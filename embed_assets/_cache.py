"""An in-memory cache of vector matrices per (table, version), for exact search.

Lance versions are immutable, so a matrix read for (uri, version) never goes stale; the
cache only needs a size bound (least recently used out first). An exact scan over a cached
float32 matrix is one GEMV, which below a few tens of thousands of rows beats both
Lance's flat scan (it decodes the column on every query) and an ANN probe's overhead.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import lance
import numpy as np

MAX_BYTES = int(os.environ.get("EMBED_ASSETS_CACHE_BYTES", str(2 << 30)))


class MatrixCache:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0

    def matrix(self, uri: str, ds: lance.LanceDataset, metric: str) -> np.ndarray | None:
        """Row-aligned matrix for ``ds`` (normalised for cosine), or None if it cannot fit."""
        key = (uri, ds.version, metric)
        with self._lock:
            m = self._items.get(key)
            if m is not None:
                self._items.move_to_end(key)
                return m
        rows = ds.count_rows()
        dim = ds.schema.field("vector").type.list_size
        if rows * dim * 4 > self.max_bytes:
            return None
        col = ds.to_table(columns=["vector"]).column("vector").combine_chunks()
        m = col.flatten().to_numpy(zero_copy_only=False).reshape(rows, dim).astype(np.float32)
        if metric == "cosine":
            m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
        m = np.ascontiguousarray(m)
        with self._lock:
            self._items[key] = m
            self._bytes += m.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return m

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


CACHE = MatrixCache()


def exact_topk(mat: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets and distances of the k nearest rows, with Lance's distance conventions:
    cosine ``1 - cos``, dot ``1 - dot``, l2 squared Euclidean."""
    if metric == "cosine":
        qn = q / max(float(np.linalg.norm(q)), 1e-30)
        dist = 1.0 - mat @ qn
    elif metric == "dot":
        dist = 1.0 - mat @ q
    else:
        dist = (mat * mat).sum(1) - 2 * (mat @ q) + float(q @ q)
    k = min(k, dist.shape[0])
    if k == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.argpartition(dist, k - 1)[:k] if k < dist.shape[0] else np.arange(dist.shape[0])
    order = np.argsort(dist[idx], kind="stable")
    idx = idx[order]
    return idx, dist[idx].astype(np.float32)
