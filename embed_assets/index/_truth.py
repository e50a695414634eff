"""Exact neighbours of held-out queries, and the tie-aware recall the tuner measures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..kernels import smallest_k

# Similarity ties: a returned row counts as a true neighbour when it is as near as the
# k-th exact neighbour (ann-benchmarks' definition). Real text tables hold exact duplicates
# (Debian "-dev"/"-doc" descriptions), and counting ids alone turns their arbitrary order
# into recall noise: it made the build-time figure 0.02 lower than held-out queries gave.
TIE_EPS = 1e-5


@dataclass
class Truth:
    """Exact neighbours of the held-out queries, and a tie-aware recall of found rows.

    Every row number here (``exclude``, ``ids``, what a search found) is a row offset of
    the version. ``mat`` holds the version's rows in any order: row ``r`` is
    ``mat[where[r]]`` (an index build holds them in partition order only, see
    :func:`embed_assets.store.load_partitioned`), or ``mat[r]`` when ``where`` is None."""

    mat: np.ndarray  # the table's vectors (normalised for cosine)
    queries: np.ndarray
    exclude: np.ndarray  # each query's own row
    ids: np.ndarray  # (queries, k) exact top-k row offsets
    kth: np.ndarray  # (queries,) similarity of the k-th exact neighbour
    metric: str
    where: np.ndarray | None = None  # row offset -> position in ``mat``
    order: np.ndarray | None = None  # position in ``mat`` -> row offset

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    @property
    def rows(self) -> int:
        return int(self.mat.shape[0])

    def vectors(self, offsets: np.ndarray) -> np.ndarray:
        """The vectors of these row offsets."""
        return self.mat[offsets if self.where is None else self.where[offsets]]

    def _sim(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        s = rows @ q
        return 2 * s - (rows * rows).sum(1) if self.metric == "l2" else s

    def hits(self, i: int, got: list[int] | np.ndarray) -> float:
        found = np.asarray(got, dtype=np.int64).reshape(-1)
        found = found[found != self.exclude[i]][: self.k]
        if not len(found):
            return 0.0
        s = self._sim(self.vectors(found), self.queries[i])
        return min(self.k, int((s >= self.kth[i] - TIE_EPS).sum())) / self.k

    def recall(self, found: Sequence[list[int] | np.ndarray]) -> float:
        return float(np.mean([self.hits(i, f) for i, f in enumerate(found)]))

    def meets(self, found: Sequence[list[int] | np.ndarray], target: float) -> tuple[bool, float]:
        """Whether the recall of ``found`` meets ``target`` with two standard errors to
        spare (the tuner keeps the cheapest setting that passes, which would otherwise
        favour settings that were lucky on these queries), and the recall."""
        h = np.array([self.hits(i, f) for i, f in enumerate(found)])
        se = float(h.std() / np.sqrt(len(h))) if len(h) > 1 else 0.0
        return float(h.mean()) - 2 * se >= target - 1e-9, float(h.mean())

    def __getitem__(self, sl: slice) -> Truth:
        return Truth(self.mat, self.queries[sl], self.exclude[sl], self.ids[sl], self.kth[sl],
                     self.metric, self.where, self.order)

    def without(self, rows: np.ndarray) -> Truth:
        """The exact neighbours again, ``rows`` (offsets) being no answer for any query."""
        return exact_truth(self.mat, self.queries, self.exclude, self.k, self.metric,
                           without=rows, order=self.order)


def exact_truth(data: np.ndarray, queries: np.ndarray | None, exclude: np.ndarray, k: int,
                metric: str, without: np.ndarray | None = None,
                order: np.ndarray | None = None) -> Truth:
    """Exact top-k for each query, its own row excluded (``data`` and ``queries`` already
    normalised for cosine; ``queries`` None: the rows ``exclude`` themselves); ``without``:
    rows that are no answer for any query; ``order``: the row offset of each row of
    ``data`` when they are not in offset order."""
    where = None
    if order is not None:
        where = np.empty(len(order), np.int64)
        where[order] = np.arange(len(order))

    def pos(offsets: np.ndarray) -> np.ndarray:
        return offsets if where is None else where[offsets]

    if queries is None:
        queries = data[pos(exclude)].astype(np.float32)

    ids = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float32)
    sq = (data * data).sum(1) if metric == "l2" else None
    # Bounded score blocks (a few copies of queries x rows floats live while one is
    # ranked): 50 queries at 1M rows held 0.6 GB, 0.4x the rows, at a build's peak.
    step = max(8, min(50, 8_000_000 // max(1, len(data))))
    for i in range(0, len(queries), step):
        q = queries[i:i + step]
        scores = q @ data.T
        if sq is not None:
            scores = 2 * scores - sq[None, :]
        scores[np.arange(len(q)), pos(exclude[i:i + step])] = -np.inf
        if without is not None:
            scores[:, pos(without)] = -np.inf
        top = smallest_k(-scores, k)
        ids[i:i + step] = top if order is None else order[top]
        kth[i:i + step] = np.take_along_axis(scores, top, axis=1).min(1)
    return Truth(data, queries, exclude, ids, kth, metric, where, order)
