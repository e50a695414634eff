"""The numerical kernels every layer shares: normalising rows, distances, top-k selection.

Distance conventions
--------------------
Two conventions exist and each function says which it returns:

* *Lance's* (what an index and the store's search rank by): cosine ``1 - cos``, dot
  ``1 - dot``, l2 **squared** Euclidean. The store converts l2 to Euclidean for users.
* *SQL's* (``sql/vectors.sql`` and every result a user sees): cosine ``1 - cos``, dot
  ``1 - dot``, l2 and mahalanobis Euclidean (not squared).

Ties: every top-k here returns equal distances in row order (a stable order), so the same
query on the same version always returns the same rows.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = [
    "batch_distances",
    "exact_topk",
    "join_topk",
    "mahalanobis_topk",
    "normalize",
    "normalize_rows",
    "pair_distances",
    "scan_distances",
    "smallest_k",
    "top_k",
    "top_k_rows",
    "whitening",
    "whitening_key",
]

# join_topk computes distances one block of left rows at a time so that a large join never
# materialises |left| x |right| floats at once (256 x 1M x 4 bytes = 1 GB max).
_BLOCK_ELEMENTS = 64_000_000
# Zero rows have no direction: dividing by this instead of 0 keeps them zero.
_TINY = 1e-30


def normalize_rows(m: np.ndarray) -> np.ndarray:
    """A contiguous float32 copy of ``m`` with unit rows (zero rows stay zero)."""
    m = np.asarray(m, dtype=np.float32)
    return np.ascontiguousarray(m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), _TINY))


def normalize(q: np.ndarray) -> np.ndarray:
    """``q`` as a unit float32 vector (a zero vector stays zero)."""
    q = np.asarray(q, dtype=np.float32)
    return q / max(float(np.linalg.norm(q)), _TINY)


def top_k(dist: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` smallest values of a 1-D array, nearest first, ties in
    position order. ``argpartition`` first: a full sort of 100k+ values costs ~10x more."""
    n = dist.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64)
    idx = np.argpartition(dist, k - 1)[:k] if k < n else np.arange(n)
    return idx[np.lexsort((idx, dist[idx]))].astype(np.int64)


def top_k_rows(score: np.ndarray, k: int) -> np.ndarray:
    """Per row of a 2-D array, the column positions of its ``k`` smallest values, nearest
    first, ties in position order."""
    k = min(int(k), score.shape[1])
    idx = smallest_k(score, k) if k < score.shape[1] else \
        np.broadcast_to(np.arange(score.shape[1]), score.shape).copy()
    part = np.take_along_axis(score, idx, axis=1)
    order = np.lexsort((idx, part), axis=-1)
    return np.take_along_axis(idx, order, axis=1)


def scan_distances(mat: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    """Distances (Lance's convention) from ``q`` to every row of ``mat``; for cosine,
    ``mat`` rows are already unit (see :func:`normalize_rows`)."""
    if metric == "cosine":
        return 1.0 - mat @ normalize(q)
    if metric == "dot":
        return 1.0 - mat @ q
    return (mat * mat).sum(1) - 2 * (mat @ q) + float(q @ q)


def batch_distances(queries: np.ndarray, mat: np.ndarray, metric: str) -> np.ndarray:
    """(queries x rows) distances, Lance's convention, one GEMM: rows and queries are
    normalised here for cosine."""
    q = np.asarray(queries, dtype=np.float32)
    m = np.asarray(mat, dtype=np.float32)
    if metric == "cosine":
        return 1.0 - normalize_rows(q) @ normalize_rows(m).T
    if metric == "dot":
        return 1.0 - q @ m.T
    return (q * q).sum(1)[:, None] - 2 * (q @ m.T) + (m * m).sum(1)[None, :]


def exact_topk(mat: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets and distances (Lance's convention) of the k nearest rows of ``mat``."""
    dist = scan_distances(mat, q, metric)
    idx = top_k(dist, k)
    return idx, dist[idx].astype(np.float32)


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str, inv_cov: Any = None) -> np.ndarray:
    """Distance of each row of ``a`` to the same row of ``b``, in float64, SQL's convention
    (NaN for the cosine of a zero vector)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, 1.0 - np.einsum("ij,ij->i", a, b) / den, np.nan)
    if metric == "dot":
        return 1.0 - np.einsum("ij,ij->i", a, b)
    if metric == "l2":
        return np.linalg.norm(a - b, axis=1)
    if metric == "mahalanobis":
        return np.linalg.norm((a - b) @ whitening(inv_cov, a.shape[1]), axis=1)
    raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")


# Whitening matrices of recent inverse covariances, by content: one SQL statement calls
# the kernels once per chunk of rows with the same inv_cov, and an eigendecomposition of a
# 384 x 384 matrix costs ~40 ms on 2 cores, more than ranking 2,000 rows with it.
_WHITENING: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
_WHITENING_MAX = 8
_WHITENING_LOCK = threading.Lock()


def whitening(inv_cov: Any, d: int) -> np.ndarray:
    """W with W W' = inv_cov, so that ||(a-b) W|| is the Mahalanobis distance.

    Cached by the matrix's content (a few recent ones); the result is read-only."""
    if inv_cov is None:
        raise ValueError("metric 'mahalanobis' needs inv_cov := <inverse covariance matrix>")
    m = np.ascontiguousarray(inv_cov, dtype=np.float64)
    if m.shape != (d, d):
        raise ValueError(f"inv_cov has shape {m.shape}; vectors have dimension {d}")
    key = (d, hashlib.blake2b(m.tobytes(), digest_size=16).hexdigest())
    with _WHITENING_LOCK:
        w = _WHITENING.get(key)
        if w is not None:
            _WHITENING.move_to_end(key)
            return w
    if not np.isfinite(m).all():
        raise ValueError("inv_cov holds NULL, NaN or infinite elements")
    sym = (m + m.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    w = vecs * np.sqrt(np.clip(vals, 0, None))
    w.flags.writeable = False
    with _WHITENING_LOCK:
        _WHITENING[key] = w
        while len(_WHITENING) > _WHITENING_MAX:
            _WHITENING.popitem(last=False)
    return w


def whitening_key(w: np.ndarray) -> str:
    """A short content digest of a whitening matrix (to cache data whitened with it)."""
    return hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).hexdigest()


def mahalanobis_topk(mat: np.ndarray, q: np.ndarray, k: int, w: np.ndarray,
                     whitened: np.ndarray | None = None,
                     whitened_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets and Mahalanobis distances (Euclidean, not squared, float64) of the k
    nearest rows of ``mat`` to ``q``, nearest first, ties in row order.

    Ranks like l2 on whitened vectors (``mat @ w``, pass it precomputed as ``whitened``
    with its squared row norms to rank a cached matrix): one GEMV in float32 picks
    candidates, which are then measured exactly in float64 from the raw vectors, so the
    distances equal ``sqrt((x-q)' inv_cov (x-q))`` to float64 rounding.
    """
    n = mat.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0)
    if whitened is None:  # candidates only: a float32 GEMM is ~2x faster than float64
        whitened = np.asarray(mat, np.float32) @ w.astype(np.float32)
    if whitened_sq is None:
        whitened_sq = np.einsum("ij,ij->i", whitened, whitened, dtype=np.float64)
    q64 = np.asarray(q, np.float64)
    qw = (q64 @ w).astype(np.float32)
    score = whitened_sq - 2.0 * (whitened @ qw).astype(np.float64)
    # float32 rounding may swap near-ties: measure a margin of candidates exactly.
    cand = top_k(score, min(n, 2 * k + 16))
    diff = (np.asarray(mat[cand], np.float64) - q64) @ w
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.lexsort((cand, dist))[:k]
    return cand[order], dist[order]


def _prepare(x: np.ndarray, metric: str, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(matrix to multiply, per-row squared norms) for a metric; cosine rows unit-normed."""
    if metric == "mahalanobis":
        assert w is not None
        x = (x.astype(np.float64) @ w).astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    if metric == "cosine":
        with np.errstate(divide="ignore", invalid="ignore"):
            x = x * (1.0 / np.sqrt(sq)).astype(np.float32)[:, None]
    return x, sq


def smallest_k(score: np.ndarray, k: int) -> np.ndarray:
    """Column indexes of the k smallest scores of every row, unordered.

    ``np.argpartition`` is the numpy baseline's selection and costs more than the GEMM
    (1,000 x 30,000 scores: ~500 ms against ~140 ms on 2 cores); ``torch.topk`` selects the same
    set ~10x faster. torch is already installed (sentence-transformers), but importing it
    costs a second or two, so small blocks stay on numpy.
    """
    if score.size < (1 << 20):
        return np.argpartition(score, k - 1, axis=1)[:, :k]
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return np.argpartition(score, k - 1, axis=1)[:, :k]
    got = torch.topk(torch.from_numpy(np.ascontiguousarray(score)), k, dim=1, largest=False,
                     sorted=False)
    return got.indices.numpy()


def join_topk(left: np.ndarray, right: np.ndarray, k: int, metric: str,
              inv_cov: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact k nearest right rows of every left row: (left index, right index, distance).

    Rows come grouped by left row, nearest first; distances as in sql/vectors.sql
    (cosine 1 - cos, dot 1 - dot, l2 and mahalanobis Euclidean; NaN where undefined).
    One GEMM per block of left rows, then argpartition on a score with the same order as
    the distance (-dot, or |r|^2 - 2 q.r for Euclidean), so the full distance matrix is
    never built: the same work as the numpy baseline of the benchmark.
    """
    metric = metric.lower()
    if metric not in ("cosine", "dot", "l2", "mahalanobis"):
        raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")
    nl, nr = left.shape[0], right.shape[0]
    if nl == 0 or nr == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0)
    if left.shape[1] != right.shape[1]:
        raise ValueError(f"similarity_join: dimension mismatch ({left.shape[1]} vs {right.shape[1]})")
    w = whitening(inv_cov, left.shape[1]) if metric == "mahalanobis" else None
    lq, _ = _prepare(left, metric, w)
    rq, rsq = _prepare(right, metric, w)
    euclid = metric in ("l2", "mahalanobis")
    r_bias = rsq.astype(np.float32) if euclid else None
    # Zero vectors have no cosine: rank them last and report NaN (SQL NULL).
    r_bad = ~np.isfinite(rq).all(axis=1) if metric == "cosine" else None
    if r_bad is not None and r_bad.any():
        rq = np.where(r_bad[:, None], 0, rq).astype(np.float32)
    else:
        r_bad = None
    l_bad = ~np.isfinite(lq).all(axis=1) if metric == "cosine" else np.zeros(nl, bool)
    if l_bad.any():
        lq = np.where(l_bad[:, None], 0, lq).astype(np.float32)
    k = min(int(k), nr)
    block = max(1, min(nl, _BLOCK_ELEMENTS // max(nr, 1)))
    li_parts, ri_parts, d_parts = [], [], []
    for s in range(0, nl, block):
        g = lq[s:s + block] @ rq.T
        if euclid:
            score = g
            score *= -2.0
            score += r_bias
        else:
            score = np.negative(g, out=g)
        if r_bad is not None:
            score[:, r_bad] = np.inf
        idx = smallest_k(score, k) if k < nr else \
            np.broadcast_to(np.arange(nr), (score.shape[0], nr)).copy()
        part = np.take_along_axis(score, idx, axis=1)
        if euclid:
            # |q|^2 + |r|^2 - 2 q.r cancels badly near 0 in float32 (a self-distance came
            # out 1.6e-4): recompute the k winners directly, in float64.
            diff = lq[s:s + block, None, :].astype(np.float64) - rq[idx].astype(np.float64)
            part = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
        # Equal distances (duplicate texts are common) in index order, as a stable sort gives.
        order = np.lexsort((idx, part), axis=-1)
        idx = np.take_along_axis(idx, order, axis=1)
        part = np.take_along_axis(part, order, axis=1).astype(np.float64)
        if euclid:
            dist = part
        else:
            dist = 1.0 + part
            dist[~np.isfinite(part)] = np.nan
            dist[l_bad[s:s + block]] = np.nan
        li_parts.append(np.repeat(np.arange(s, s + score.shape[0]), k))
        ri_parts.append(idx.ravel())
        d_parts.append(dist.ravel())
    return np.concatenate(li_parts), np.concatenate(ri_parts), np.concatenate(d_parts)


def exact_topk_batch(mat: np.ndarray, queries: np.ndarray, k: int, metric: str,
                     block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk` of many queries: (n, k) row offsets and distances, one GEMM per
    block of queries (``mat`` rows unit for cosine, as the cache keeps them)."""
    k = min(int(k), mat.shape[0])
    n = len(queries)
    idx_out = np.zeros((n, k), np.int64)
    dist_out = np.zeros((n, k), np.float32)
    sq = (mat * mat).sum(1)[None, :] if metric not in ("cosine", "dot") else None
    for s in range(0, n, block):
        q = np.asarray(queries[s:s + block], dtype=np.float32)
        if metric == "cosine":
            d = 1.0 - normalize_rows(q) @ mat.T
        elif metric == "dot":
            d = 1.0 - q @ mat.T
        else:
            d = (q * q).sum(1)[:, None] - 2 * (q @ mat.T) + sq
        idx = top_k_rows(d, k)
        idx_out[s:s + block] = idx
        dist_out[s:s + block] = np.take_along_axis(d, idx, axis=1)
    return idx_out, dist_out
