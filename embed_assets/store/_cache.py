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
from collections.abc import Callable
from typing import Any

import lance
import numpy as np
import pyarrow as pa

VECTOR = "vector"
OFFSET_COLUMN = "__ea_offset"
MAX_BYTES = int(os.environ.get("EMBED_ASSETS_CACHE_BYTES", str(4 << 30)))


class MatrixCache:
    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0

    def _get_or_build(self, key: tuple[str, int, str], size: Callable[[], int],
                      build: Callable[[], Any | None]) -> Any | None:
        """The cached item, else ``build()``'s (cached), or None when its estimated
        ``size()`` exceeds the budget or ``build()`` returns None. ``size`` is only asked
        on a miss: it may read the dataset."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        if size() > self.max_bytes:
            return None
        item = build()
        if item is None:
            return None
        with self._lock:
            self._items[key] = item
            self._bytes += item.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
        return item

    @staticmethod
    def _vector_bytes(ds: lance.LanceDataset) -> int:
        return ds.count_rows() * ds.schema.field(VECTOR).type.list_size * 4

    def matrix(self, uri: str, ds: lance.LanceDataset, metric: str) -> np.ndarray | None:
        """Row-aligned matrix for ``ds`` (normalised for cosine), or None if it cannot fit."""
        return self._get_or_build((uri, ds.version, metric), lambda: self._vector_bytes(ds),
                                  lambda: load_matrix(ds, metric))

    def probe(self, uri: str, ds: lance.LanceDataset, metric: str,
              centroids: Callable[[], np.ndarray | None], rank: int, candidates: int,
              ) -> Any | None:
        """The partition-sorted in-memory IVF probe of ``ds`` (see :mod:`._ivf`)."""
        from ..kernels._ivf import IvfProbe

        def build() -> IvfProbe | None:
            cents = centroids()
            if cents is None:
                return None
            return IvfProbe.build(load_matrix(ds, metric), cents, metric, rank=rank,
                                  candidates=candidates)

        return self._get_or_build((uri, ds.version, f"{metric}/ivf/{rank}/{candidates}"),
                                  lambda: self._vector_bytes(ds), build)

    def put(self, uri: str, version: int, metric: str, probe: Any) -> None:
        """Seed the cache with a probe built elsewhere (the index tuner)."""
        self._get_or_build((uri, version, f"{metric}/ivf/{probe.rank}/{probe.candidates}"),
                           lambda: probe.nbytes, lambda: probe)

    def key_index(self, uri: str, ds: lance.LanceDataset, key: str) -> KeyIndex | None:
        """Sorted keys and their row offsets for ``ds`` (one scan of the key column)."""
        return self._get_or_build((uri, ds.version, "key:" + key), lambda: ds.count_rows() * 16,
                                  lambda: KeyIndex.build(ds, key))

    def scalars(self, uri: str, ds: lance.LanceDataset) -> pa.Table | None:
        """Every column but the vector of ``ds``, in memory (None if it cannot fit), plus
        :data:`OFFSET_COLUMN`, each row's offset in the version."""
        names = [n for n in ds.schema.names if n != VECTOR]

        def build() -> pa.Table:
            t = ds.to_table(columns=names, filter="true").combine_chunks()
            return t.append_column(OFFSET_COLUMN, pa.array(np.arange(t.num_rows, dtype=np.int64)))

        return self._get_or_build((uri, ds.version, "scalars"),
                                  lambda: ds.count_rows() * 32 * max(1, len(names)), build)

    def forget(self, uri: str) -> None:
        """Drop every entry of one table (it was deleted: a new table of the same name
        starts again at version 1)."""
        with self._lock:
            for key in [k for k in self._items if k[0] == uri]:
                self._bytes -= self._items.pop(key).nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class KeyIndex:
    """Key -> row offset of one immutable version, by binary search over sorted keys.

    A Lance BTREE lookup through the scanner plans a query each time (milliseconds); the
    "fetch these ids now" case wants a take() of known offsets instead.
    """

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        self.keys = keys
        self.offsets = offsets
        self.nbytes = int(keys.nbytes + offsets.nbytes) if keys.dtype != object else \
            int(offsets.nbytes * 8)

    @classmethod
    def build(cls, ds: lance.LanceDataset, key: str) -> KeyIndex:
        col = ds.to_table(columns=[key]).column(key).combine_chunks()
        arr = col.to_numpy(zero_copy_only=False)
        order = np.argsort(arr, kind="stable")
        return cls(arr[order], order.astype(np.int64))

    def lookup(self, wanted: list[Any]) -> np.ndarray:
        """Row offsets of the wanted keys that exist, in the order asked."""
        if not wanted or not len(self.keys):
            return np.zeros(0, np.int64)
        try:
            w = np.asarray(wanted, dtype=self.keys.dtype)
        except (TypeError, ValueError):
            return np.zeros(0, np.int64)
        pos = np.searchsorted(self.keys, w)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = self.keys[pos] == w
        return self.offsets[pos[hit]]


CACHE = MatrixCache()


def take_rows(uri: str, ds: lance.LanceDataset, offsets: np.ndarray,
              columns: list[str] | None) -> pa.Table:
    """The rows at ``offsets`` of one version, in that order.

    A Lance ``take`` of k random rows costs ~0.8 ms here (a page read and decode per row);
    the version's scalar columns are kept in memory instead (:meth:`MatrixCache.scalars`),
    so a search that does not ask for the vector column never goes back to Lance.
    """
    names = list(columns) if columns else ds.schema.names
    unknown = [c for c in names if c not in ds.schema.names]
    if unknown:
        from ..errors import ValidationError

        raise ValidationError(f"unknown column(s) {', '.join(map(repr, unknown))}; "
                              f"columns: {', '.join(ds.schema.names)}")
    small = [c for c in names if c != VECTOR]
    mem = CACHE.scalars(uri, ds) if small else None
    if small and mem is None:
        return ds.take(offsets.tolist(), columns=names)
    idx = pa.array(np.asarray(offsets, dtype=np.int64))
    got = mem.select(small).take(idx) if mem is not None else None
    vec = ds.take(offsets.tolist(), columns=[VECTOR]) if VECTOR in names else None
    arrays = [(vec if c == VECTOR else got).column(c) for c in names]  # type: ignore[union-attr]
    return pa.Table.from_arrays(arrays, schema=pa.schema([ds.schema.field(c) for c in names]))


def load_matrix(ds: lance.LanceDataset, metric: str) -> np.ndarray:
    rows = ds.count_rows()
    dim = ds.schema.field("vector").type.list_size
    col = ds.to_table(columns=["vector"], filter="true").column("vector").combine_chunks()
    m = col.flatten().to_numpy(zero_copy_only=False).reshape(rows, dim).astype(np.float32)
    if metric == "cosine":
        m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)
    return np.ascontiguousarray(m)


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
