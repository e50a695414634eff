"""A partition-sorted, in-memory probe over the Lance index's IVF centroids.

Why: on this machine a Lance ANN query spends most of its time in per-query overhead
(planning, async bridge, decoding), not distance work; see DESIGN.md and
benchmarks/RESULTS.md. The Lance IVF-PQ index stays the persistent, shareable index
(LanceDB and DuckDB's ``lance_vector_search`` use it), and its trained centroids are the
coarse quantiser here: the vectors of one *immutable* version are grouped by nearest
centroid into one contiguous float32 block, so a query is ``nprobes`` small GEMVs over
exact vectors (no PQ error, so no refine step) and one argpartition.

Every row of the version is assigned, including rows appended after the index was
trained, so this path has no "unindexed rows".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IvfProbe:
    centroids: np.ndarray  # (P, d), normalised for cosine
    order: np.ndarray  # (n,) row offsets, sorted by partition
    bounds: np.ndarray  # (P + 1,) start of each partition in ``order``/``block``
    block: np.ndarray  # (n, d) vectors in partition order (normalised for cosine)
    sq_norms: np.ndarray | None  # (n,) squared norms, l2 only
    metric: str
    basis: np.ndarray | None = None  # (r, d) projection for the low-dimensional pre-scan
    low: np.ndarray | None = None  # (n, r) = block @ basis.T

    @property
    def nbytes(self) -> int:
        low = self.low.nbytes if self.low is not None else 0
        return self.block.nbytes + self.order.nbytes + self.centroids.nbytes + low

    @classmethod
    def build(cls, mat: np.ndarray, centroids: np.ndarray, metric: str,
              two_stage: bool = True) -> IvfProbe:
        """Assign every row of ``mat`` (already normalised for cosine) to its nearest centroid."""
        cents = np.asarray(centroids, dtype=np.float32)
        if metric == "cosine":
            cents = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-30)
        assign = np.empty(len(mat), dtype=np.int32)
        c_sq = (cents * cents).sum(1)
        step = 65_536
        for i in range(0, len(mat), step):
            chunk = mat[i : i + step]
            # argmin ||x - c||^2 = argmax (x.c - |c|^2 / 2); same partitions as Lance's L2 IVF.
            assign[i : i + step] = np.argmax(chunk @ cents.T - 0.5 * c_sq, axis=1)
        order = np.argsort(assign, kind="stable").astype(np.int64)
        counts = np.bincount(assign, minlength=len(cents))
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        block = np.ascontiguousarray(mat[order])
        sq = (block * block).sum(1) if metric == "l2" else None
        basis = low = None
        d = block.shape[1]
        if two_stage and d >= 128 and len(block) >= 4 * d:
            # The scan is memory-bound: score candidates on a d/3-dimensional projection
            # that preserves inner products best (top right singular vectors of a sample),
            # then re-rank a short list with the exact vectors.
            rng = np.random.default_rng(0)
            sample = block[rng.choice(len(block), size=min(len(block), 20_000), replace=False)]
            _, _, vt = np.linalg.svd(sample, full_matrices=False)
            basis = np.ascontiguousarray(vt[: max(16, d // 3)], dtype=np.float32)
            low = np.ascontiguousarray(block @ basis.T)
        return cls(cents, order, bounds, block, sq, metric, basis, low)

    def search(self, q: np.ndarray, k: int, nprobes: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and distances (Lance conventions) of the k nearest rows among the probed
        partitions."""
        q = np.asarray(q, dtype=np.float32)
        if self.metric == "cosine":
            q = q / max(float(np.linalg.norm(q)), 1e-30)
        cents = self.centroids
        cd = (cents * cents).sum(1) - 2 * (cents @ q)
        nprobes = min(nprobes, len(cents))
        probes = np.argpartition(cd, nprobes - 1)[:nprobes] if nprobes < len(cents) else \
            np.arange(len(cents))
        starts, ends = self.bounds[probes], self.bounds[probes + 1]
        if self.low is not None and self.basis is not None:
            return self._search_two_stage(q, k, starts, ends)
        if self.metric == "l2":
            sq = self.sq_norms
            assert sq is not None
            parts = [sq[s:e] - 2 * (self.block[s:e] @ q) for s, e in zip(starts, ends, strict=True)]
        else:
            parts = [-(self.block[s:e] @ q) for s, e in zip(starts, ends, strict=True)]
        scores = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        k = min(k, len(scores))
        if k == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        top = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(scores[top], kind="stable")]
        # Map positions in the concatenated scores back to positions in the block.
        seg_start = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        seg = np.searchsorted(seg_start, top, side="right") - 1
        pos = starts[seg] + (top - seg_start[seg])
        s = scores[top]
        if self.metric == "cosine":
            dist = 1.0 + s  # s = -cos
        elif self.metric == "dot":
            dist = 1.0 + s  # s = -dot
        else:
            dist = s + float(q @ q)
        return self.order[pos], dist.astype(np.float32)

    def _search_two_stage(self, q: np.ndarray, k: int, starts: np.ndarray,
                          ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.low is not None and self.basis is not None
        lq = self.basis @ q
        sq = self.sq_norms
        if self.metric == "l2":
            assert sq is not None
            parts = [sq[s:e] - 2 * (self.low[s:e] @ lq) for s, e in zip(starts, ends, strict=True)]
        else:
            parts = [-(self.low[s:e] @ lq) for s, e in zip(starts, ends, strict=True)]
        scores = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not len(scores):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        c = min(len(scores), max(40 * k, 256))
        cand = np.argpartition(scores, c - 1)[:c] if c < len(scores) else np.arange(len(scores))
        seg_start = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        seg = np.searchsorted(seg_start, cand, side="right") - 1
        pos = starts[seg] + (cand - seg_start[seg])
        exact = self.block[pos] @ q
        if self.metric == "l2":
            assert sq is not None
            full = sq[pos] - 2 * exact
        else:
            full = -exact
        k = min(k, len(full))
        top = np.argpartition(full, k - 1)[:k] if k < len(full) else np.arange(len(full))
        top = top[np.argsort(full[top], kind="stable")]
        s = full[top]
        dist = s + float(q @ q) if self.metric == "l2" else 1.0 + s
        return self.order[pos[top]], dist.astype(np.float32)
