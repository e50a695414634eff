"""A partition-sorted, in-memory probe over the Lance index's IVF centroids.

Why: at these sizes a Lance ANN query spends most of its time in per-query overhead
(planning, async bridge, decoding), not distance work; see DESIGN.md and
benchmarks/RESULTS.md. The Lance IVF-PQ index stays the persistent, shareable index
(LanceDB and DuckDB's ``lance_vector_search`` use it), and its trained centroids are the
coarse quantiser here: the vectors of one *immutable* version are grouped by nearest
centroid into one contiguous float32 block.

A query then costs, for the ``nprobes`` nearest partitions (a quarter of them or more is
one contiguous scan of all rows):

1. a pre-scan on a ``rank``-dimensional projection (the top principal components of the
   vectors), in int8 for full scans: the scan is memory-bound, and real text embeddings
   keep most of their inner-product structure in a sixth to a third of their dimensions;
2. a shortlist of about ``candidates`` rows, chosen by a threshold estimated on a strided
   sample of the scores (an exact ``argpartition`` over 100k+ scores costs ~1 ms,
   the threshold ~0.1 ms);
3. an exact re-rank of the shortlist on the full-precision vectors.

``rank=0`` skips the projection (full-precision scans of the probed partitions). The
index tuner (:func:`._index.build_index`) picks ``nprobes``, ``rank`` and ``candidates``
from measured recall and latency.

Every row of the version is assigned, including rows appended after the index was
trained, so this path has no "unindexed rows".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._topk import normalize, normalize_rows, top_k


class Int8Rows:
    """A row-quantised int8 copy of a matrix (one scale per row) whose product with a
    float vector runs in fbgemm's int8 GEMV: ~4x less memory traffic than float32, which
    is what a memory-bound scan costs (0.17 vs 0.70 ms for 120k x 64 on 2 x86-64 cores).
    Used for the pre-scan only: its scores pick a shortlist that is re-ranked exactly."""

    def __init__(self, mat: np.ndarray) -> None:
        import torch

        scale = np.maximum(np.abs(mat).max(1), 1e-30) / 127.0
        with warnings.catch_warnings():  # torch flags its quantised tensors as deprecated
            warnings.simplefilter("ignore")
            qw = torch.quantize_per_channel(torch.from_numpy(np.ascontiguousarray(mat)),
                                            torch.from_numpy(scale.astype(np.float64)),
                                            torch.zeros(len(mat), dtype=torch.long), 0,
                                            torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qw, None)
        self._torch = torch
        self.nbytes = int(mat.size + 8 * len(mat))

    @classmethod
    def try_build(cls, mat: np.ndarray) -> Int8Rows | None:
        """None where this torch build has no fbgemm/onednn int8 kernels."""
        try:
            rows = cls(mat)
            got = rows @ np.ones(mat.shape[1], np.float32)
            want = mat.sum(1)
            if not np.allclose(got, want, atol=0.05 * (1 + np.abs(want).max())):
                return None
            return rows
        except Exception:  # any missing kernel means: scan in float32
            return None

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        x = self._torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None]
        return self._torch.ops.quantized.linear_dynamic(x, self._packed)[0].numpy()

    def times_rows(self, vs: np.ndarray) -> np.ndarray:
        """(len(vs), rows): every row's product with each of ``vs``, one int8 GEMM."""
        x = self._torch.from_numpy(np.ascontiguousarray(vs, dtype=np.float32))
        return self._torch.ops.quantized.linear_dynamic(x, self._packed).numpy()


def default_rank(dim: int) -> int:
    """The projection used when a stored index predates per-table ranks."""
    return max(16, dim // 3)


def prepare_centroids(centroids: np.ndarray, metric: str) -> np.ndarray:
    """The centroids as the probe compares rows with them (unit rows for cosine)."""
    return normalize_rows(centroids) if metric == "cosine" else np.asarray(centroids, np.float32)


def assign_rows(mat: np.ndarray, cents: np.ndarray, step: int = 65_536) -> np.ndarray:
    """Each row's nearest centroid (``cents`` from :func:`prepare_centroids`, rows
    normalised for cosine): argmin ||x - c||^2 = argmax (x.c - |c|^2 / 2), the same
    partitions as Lance's L2 IVF."""
    assign = np.empty(len(mat), dtype=np.int32)
    half_sq = 0.5 * (cents * cents).sum(1)
    for i in range(0, len(mat), step):
        assign[i : i + step] = np.argmax(mat[i : i + step] @ cents.T - half_sq, axis=1)
    return assign


def partition_bounds(assign: np.ndarray, partitions: int) -> np.ndarray:
    """Where each partition starts in partition order (``partitions + 1`` offsets)."""
    counts = np.bincount(assign, minlength=partitions)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass
class IvfProbe:
    centroids: np.ndarray  # (P, d), normalised for cosine
    order: np.ndarray  # (n,) row offsets, sorted by partition
    bounds: np.ndarray  # (P + 1,) start of each partition in ``order``/``block``
    block: np.ndarray  # (n, d) vectors in partition order (normalised for cosine)
    sq_norms: np.ndarray | None  # (n,) squared norms, l2 only
    metric: str
    basis: np.ndarray | None = None  # (rank, d) principal directions for the pre-scan
    center: np.ndarray | None = None  # (d,) the mean the directions were found around
    low: np.ndarray | None = None  # (n, rank) = (block - center) @ basis.T
    candidates: int = 0  # shortlist size for the exact re-rank (0: 40 * k)
    low8: Int8Rows | None = field(default=None, repr=False)  # ``low`` in int8, full scans

    @property
    def rank(self) -> int:
        return 0 if self.basis is None else int(self.basis.shape[0])

    @property
    def nbytes(self) -> int:
        low = self.low.nbytes if self.low is not None else 0
        low += self.low8.nbytes if self.low8 is not None else 0
        return self.block.nbytes + self.order.nbytes + self.centroids.nbytes + low

    @classmethod
    def build(cls, mat: np.ndarray, centroids: np.ndarray, metric: str,
              rank: int | None = None, candidates: int = 0) -> IvfProbe:
        """Assign every row of ``mat`` (already normalised for cosine) to its nearest centroid.

        ``rank`` is the pre-scan's projection size: None picks ``dim / 3``, 0 disables it
        (it is also disabled for small or low-dimensional data, where it saves nothing).
        """
        cents = prepare_centroids(centroids, metric)
        assign = assign_rows(mat, cents)
        order = np.argsort(assign, kind="stable").astype(np.int64)
        return cls.from_sorted(np.ascontiguousarray(mat[order]), order,
                               partition_bounds(assign, len(cents)), cents, metric, rank,
                               candidates)

    @classmethod
    def from_sorted(cls, block: np.ndarray, order: np.ndarray, bounds: np.ndarray,
                    cents: np.ndarray, metric: str, rank: int | None = None,
                    candidates: int = 0) -> IvfProbe:
        """A probe over rows already in partition order: ``block[i]`` is row ``order[i]``,
        partition ``p`` spans ``bounds[p]:bounds[p + 1]``; ``cents`` as
        :func:`prepare_centroids` gives them."""
        sq = (block * block).sum(1) if metric == "l2" else None
        probe = cls(cents, order, bounds, block, sq, metric, candidates=candidates)
        rank = default_rank(block.shape[1]) if rank is None else rank
        if rank:
            probe.project(rank)
        return probe

    def project(self, rank: int) -> None:
        """Add the pre-scan projection (skipped for small or low-dimensional data, where
        it saves nothing)."""
        n, d = self.block.shape
        if d < 64 or n < 4 * d:
            return
        rank = min(rank, d)
        rng = np.random.default_rng(0)
        sample = self.block[rng.choice(n, size=min(n, 20_000), replace=False)]
        center = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - center, full_matrices=False)
        self.center = center.astype(np.float32)
        self.basis = np.ascontiguousarray(vt[:rank], dtype=np.float32)
        low = np.empty((n, rank), dtype=np.float32)
        for i in range(0, n, 65_536):
            low[i : i + 65_536] = (self.block[i : i + 65_536] - self.center) @ self.basis.T
        self.low = low
        self.low8 = Int8Rows.try_build(low)

    def with_settings(self, rank: int, candidates: int) -> IvfProbe:
        """The same partitioning with a smaller projection (a prefix of the components) or
        none; shares the full-precision block."""
        if rank and (self.low is None or rank > self.rank):
            raise ValueError(f"rank {rank} exceeds the probe's projection ({self.rank})")
        low = np.ascontiguousarray(self.low[:, :rank]) if rank and self.low is not None else None
        basis = self.basis[:rank] if rank and self.basis is not None else None
        low8 = self.low8 if rank == self.rank else (
            Int8Rows.try_build(low) if low is not None and self.low8 is not None else None)
        return IvfProbe(self.centroids, self.order, self.bounds, self.block, self.sq_norms,
                        self.metric, basis, self.center if rank else None, low, candidates, low8)

    def search(self, q: np.ndarray, k: int, nprobes: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and distances (Lance conventions) of the k nearest rows among the probed
        partitions; with ``allowed`` (a boolean mask in partition order, see ``order``),
        among the allowed rows only (fewer than k when fewer are allowed)."""
        q = normalize(q) if self.metric == "cosine" else np.asarray(q, dtype=np.float32)
        if k < 1 or not len(self.block):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        spans = self._spans(q, nprobes)
        keep = None
        if allowed is not None:
            keep = allowed if spans is None else np.concatenate(
                [allowed[a:b] for a, b in zip(*spans, strict=True)] or [np.zeros(0, bool)])
        if self.low is not None and self.basis is not None and self.center is not None:
            lq = self.basis @ q
            low = self.low8 if spans is None and self.low8 is not None else self.low
            lowscore = self._scores(low, lq, spans, float(self.center @ q))
            if keep is not None:
                # Disallowed rows sort last, so the shortlist's threshold is a quantile of
                # the allowed rows: ~candidates of them pass.
                lowscore = np.where(keep, lowscore, -np.inf)
            short = self._shortlist(lowscore, max(self.candidates, 40 * k))
            if keep is not None:
                short = short[keep[short]]
            pos = self._positions(spans, short)
            s = self._exact_scores(pos, q)  # larger is nearer
        else:
            s = self._scores(self.block, q, spans, 0.0)
            if keep is not None:
                s = np.where(keep, s, -np.inf)
            pos = None
        top = top_k(-s, min(k, len(s)))
        if keep is not None:
            top = top[np.isfinite(s[top])]
        pos = self._positions(spans, top) if pos is None else pos[top]
        best = s[top]
        # Lance conventions: cosine 1 - cos, dot 1 - dot, l2 squared Euclidean.
        dist = float(q @ q) - 2 * best if self.metric == "l2" else 1.0 - best
        return self.order[pos], dist.astype(np.float32)

    def search_batch(self, qs: np.ndarray, k: int, nprobes: int,
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """:meth:`search` of each row of ``qs``. When the probe scans
        every row (``nprobes`` a quarter of the partitions or more), the pre-scan (or the
        full-precision scan) of all queries is one matrix product: the scan is memory-bound,
        so a batch of queries costs little more than one (a server batches the kNN requests
        that arrive together). The same answers, except that the int8 pre-scan quantises
        the batch's projected queries on one scale instead of each on its own, which can
        move a borderline row in or out of a shortlist (the shortlist is re-ranked
        exactly). Otherwise one :meth:`search` per query."""
        qs = np.asarray(qs, dtype=np.float32)
        if len(qs) <= 1 or k < 1 or not len(self.block) or 4 * nprobes < len(self.centroids):
            return [self.search(q, k, nprobes) for q in qs]
        if self.metric == "cosine":
            qs = normalize_rows(qs)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        if self.low is not None and self.basis is not None and self.center is not None:
            lqs = qs @ self.basis.T
            low = self.low8.times_rows(lqs) if self.low8 is not None else lqs @ self.low.T
            low += (qs @ self.center)[:, None]
            if self.metric == "l2":
                assert self.sq_norms is not None
                low -= 0.5 * self.sq_norms[None, :]
            for q, lowscore in zip(qs, low, strict=True):
                short = self._shortlist(lowscore, max(self.candidates, 40 * k))
                out.append(self._ranked(q, short, self._exact_scores(short, q), k))
            return out
        s_all = qs @ self.block.T
        if self.metric == "l2":
            assert self.sq_norms is not None
            s_all -= 0.5 * self.sq_norms[None, :]
        for q, s in zip(qs, s_all, strict=True):
            out.append(self._ranked(q, None, s, k))
        return out

    def _ranked(self, q: np.ndarray, pos: np.ndarray | None, s: np.ndarray, k: int,
                ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of scores ``s`` (at block positions ``pos``, or all rows), as
        :meth:`search` answers them."""
        top = top_k(-s, min(k, len(s)))
        best = s[top]
        pos = top if pos is None else pos[top]
        dist = float(q @ q) - 2 * best if self.metric == "l2" else 1.0 - best
        return self.order[pos], dist.astype(np.float32)

    def _spans(self, q: np.ndarray, nprobes: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(starts, ends) of the probed partitions, or None for all of them (one scan)."""
        cents = self.centroids
        if 4 * nprobes >= len(cents):
            # A quarter of the partitions or more: one contiguous scan of every row is
            # cheaper than that many small scans (and can only find more).
            return None
        cd = (cents * cents).sum(1) - 2 * (cents @ q)
        probes = np.argpartition(cd, max(nprobes, 1) - 1)[: max(nprobes, 1)]
        return self.bounds[probes], self.bounds[probes + 1]

    def _scores(self, mat: Any, v: np.ndarray, spans: tuple[np.ndarray, np.ndarray] | None,
                offset: float) -> np.ndarray:
        """Similarity (larger is nearer) of the spanned rows of ``mat`` to ``v``: the inner
        product, or ``x.q - |x|^2 / 2`` (same order as -L2) for l2."""
        if spans is None:
            s = mat @ v
            if offset:
                s += offset
            if self.metric == "l2":
                assert self.sq_norms is not None
                s -= 0.5 * self.sq_norms
            return s
        parts = [mat[a:b] @ v for a, b in zip(*spans, strict=True)]
        s = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if offset:
            s += offset
        if self.metric == "l2":
            assert self.sq_norms is not None
            s -= 0.5 * np.concatenate([self.sq_norms[a:b] for a, b in zip(*spans, strict=True)])
        return s

    def _exact_scores(self, pos: np.ndarray, q: np.ndarray) -> np.ndarray:
        s = self.block[pos] @ q
        if self.metric == "l2":
            assert self.sq_norms is not None
            s -= 0.5 * self.sq_norms[pos]
        return s

    @staticmethod
    def _positions(spans: tuple[np.ndarray, np.ndarray] | None, idx: np.ndarray) -> np.ndarray:
        """Map indexes into the concatenated spans back to positions in the block."""
        if spans is None:
            return idx
        starts, ends = spans
        seg_start = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        seg = np.searchsorted(seg_start, idx, side="right") - 1
        return starts[seg] + (idx - seg_start[seg])

    @staticmethod
    def _shortlist(s: np.ndarray, c: int) -> np.ndarray:
        """Indexes of about the ``c`` largest scores (at least ``c`` when possible)."""
        n = len(s)
        if c >= n:
            return np.arange(n)
        step = c // 32
        if step >= 2:
            # Threshold at the c/n quantile of a strided sample (~32 samples above it),
            # then keep everything above: a compare and a nonzero, no selection.
            sample = s[::step]
            j = max(1, (c * len(sample)) // n)
            thr = np.partition(sample, len(sample) - j)[len(sample) - j]
            idx = np.flatnonzero(s >= thr)
            if len(idx) >= c // 2:
                return idx
        return np.argpartition(-s, c - 1)[:c]
