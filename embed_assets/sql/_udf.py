"""Numpy kernels behind the Python-backed SQL functions that :func:`embed_assets.connect` adds.

DuckDB cannot define an aggregate or a table function from Python, so the fast paths are
scalar Arrow UDFs that take a whole list of vectors (``list(v)``) in one call and return a
list: a vectorised numpy kernel over one contiguous matrix beats any per-row SQL
formulation (see benchmarks/RESULTS.md, "SQL layer").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# similarity_join computes distances one block of left rows at a time so that a large
# join never materialises |left| x |right| floats at once (256 x 1M x 4 bytes = 1 GB max).
_BLOCK_ELEMENTS = 64_000_000

HIT_TYPE = pa.list_(pa.struct([("l", pa.int32()), ("r", pa.int32()),
                               ("distance", pa.float64()), ("rank", pa.int32())]))


def _combine(arr: Any) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _scalar(arr: Any, i: int = 0) -> Any:
    return _combine(arr)[i].as_py() if len(arr) else None


def vectors_matrix(vs: pa.Array, what: str = "vectors", dtype: Any = np.float32) -> np.ndarray:
    """A list-of-numbers Arrow array (one vector per slot, no NULL slots) -> (n, d) matrix.

    Raises ValueError naming both lengths when the vectors differ in dimension.
    """
    vs = _combine(vs)
    if len(vs) == 0:
        return np.zeros((0, 0), dtype)
    if pa.types.is_fixed_size_list(vs.type):
        d = vs.type.list_size
        flat = vs.flatten()
    else:
        lens = pc.list_value_length(vs).to_numpy(zero_copy_only=False)
        d = int(lens[0])
        if (lens != d).any():
            other = int(lens[lens != d][0])
            raise ValueError(f"{what}: dimension mismatch ({d} vs {other})")
        flat = vs.flatten()
    if flat.null_count:
        raise ValueError(f"{what}: vectors contain NULL elements")
    return flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(len(vs), d)


def list_vec_agg(vs: pa.Array, how: str) -> pa.Array:
    """Element-wise mean/sum of every list of vectors in ``vs`` (one result per row).

    Matches sql/vectors.sql: NULL vectors are skipped, an empty/NULL list gives NULL, a
    NULL element makes that position NULL, mixed dimensions raise.
    """
    vs = _combine(vs)
    out: list[list[float | None] | None] = []
    fn = "vec_mean" if how == "mean" else "vec_sum"
    for inner in _vector_lists(vs, min_vectors=1):
        if inner is None:
            out.append(None)
            continue
        lens = pc.list_value_length(inner).to_numpy(zero_copy_only=False)
        if (lens != lens[0]).any():
            dims = ", ".join(str(int(x)) for x in np.unique(lens))
            raise ValueError(f"{fn}: dimension mismatch (vectors of {dims} elements)")
        d = int(lens[0])
        flat = inner.flatten()
        if flat.null_count:
            m = flat.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, d)
            bad = np.isnan(m).any(axis=0)
            res = m.sum(axis=0) if how == "sum" else m.mean(axis=0)
            out.append([None if b else float(x) for x, b in zip(res, bad, strict=True)])
            continue
        m = flat.to_numpy(zero_copy_only=False).reshape(-1, d)
        # float64 accumulation: float32 sums over 100k rows drift past 1e-5.
        res = m.sum(axis=0, dtype=np.float64)
        if how == "mean":
            res /= m.shape[0]
        out.append(res)
    return pa.array(out, pa.list_(pa.float64()))


def _vector_lists(vs: pa.Array, min_vectors: int) -> Iterator[pa.Array | None]:
    """The non-NULL vectors of each list cell, or None for a NULL cell or one with fewer
    than ``min_vectors`` vectors (NULL vectors are skipped, as aggregates skip NULL rows)."""
    for i in range(len(vs)):
        cell = vs[i]
        if not cell.is_valid:
            yield None
            continue
        inner = cell.values
        if inner.null_count:
            inner = inner.filter(inner.is_valid())
        yield inner if len(inner) >= min_vectors else None


def list_vec_cov(vs: pa.Array) -> pa.Array:
    """Sample covariance matrix (rows of DOUBLE) of every list of vectors in ``vs``."""
    vs = _combine(vs)
    out: list[Any] = []
    for inner in _vector_lists(vs, min_vectors=2):
        if inner is None:
            out.append(None)
            continue
        m = vectors_matrix(inner, "vec_covariance", np.float64)
        out.append(list(np.atleast_2d(np.cov(m, rowvar=False))))
    return pa.array(out, pa.list_(pa.list_(pa.float64())))


def mat_inverse(ms: pa.Array) -> pa.Array:
    """Inverse (Moore-Penrose pseudo-inverse if singular) of every square matrix in ``ms``."""
    ms = _combine(ms)
    out: list[Any] = []
    for i in range(len(ms)):
        cell = ms[i]
        if not cell.is_valid:
            out.append(None)
            continue
        m = np.array(cell.as_py(), dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"mat_inverse: matrix must be square, got shape {m.shape}")
        # Embedding covariances are often rank-deficient (n <= d, collinear dims): there
        # inv() returns huge garbage rather than failing, so test the conditioning first.
        if m.size and np.linalg.cond(m) < 1e10:
            inv = np.linalg.inv(m)
        else:
            inv = np.linalg.pinv(m, hermitian=np.allclose(m, m.T))
        out.append(list(inv))
    return pa.array(out, pa.list_(pa.list_(pa.float64())))


# -- distances and top-k -----------------------------------------------------------------
def whitening(inv_cov: Any, d: int) -> np.ndarray:
    """W with W W' = inv_cov, so that ||(a-b) W|| is the Mahalanobis distance."""
    if inv_cov is None:
        raise ValueError("metric 'mahalanobis' needs inv_cov := <inverse covariance matrix>")
    m = np.asarray(inv_cov, dtype=np.float64)
    if m.shape != (d, d):
        raise ValueError(f"inv_cov has shape {m.shape}; vectors have dimension {d}")
    m = (m + m.T) / 2
    vals, vecs = np.linalg.eigh(m)
    return vecs * np.sqrt(np.clip(vals, 0, None))


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
    here (1,000 x 30,000 scores: ~500 ms against ~140 ms); ``torch.topk`` selects the same
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


def topk(left: np.ndarray, right: np.ndarray, k: int, metric: str,
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


def hits_array(li: np.ndarray, ri: np.ndarray, dist: np.ndarray, k: int) -> pa.Array:
    """One SQL list of STRUCT(l, r, distance, rank), 1-based indexes for DuckDB lists."""
    n = len(li)
    dist = np.where(np.isinf(dist), np.nan, dist).astype(np.float64)
    rank = (np.arange(n) % max(k, 1)) + 1 if n else np.zeros(0, np.int64)
    st = pa.StructArray.from_arrays(
        [pa.array(li + 1, pa.int32()), pa.array(ri + 1, pa.int32()),
         pa.array(dist, pa.float64(), from_pandas=True), pa.array(rank, pa.int32())],
        fields=list(HIT_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), st)


def pair_distance(vs: pa.Array, qs: pa.Array, metrics: pa.Array, invs: pa.Array) -> pa.Array:
    """Distance of each row's vector to its query vector, in float64, as in
    sql/vectors.sql's ``vec_distance``: NULL for a NULL vector or an undefined cosine (a
    zero vector); NULL elements and mixed dimensions raise.

    The exact ``knn`` of a connect()ed session ranks and reports with this: the SQL
    ``vec_distance`` expands every metric's formula around its arguments, and binding that
    cost ~15 ms per query, more than the scan itself.
    """
    vs, qs = _combine(vs), _combine(qs)
    n = len(vs)
    out = np.full(n, np.nan)
    ok = np.asarray(pc.and_(vs.is_valid(), qs.is_valid()), dtype=bool) if n else np.zeros(0, bool)
    idx = np.flatnonzero(ok)
    if len(idx):
        metric = str(_scalar(metrics) or "cosine").lower()
        a = vectors_matrix(vs.take(idx), "knn", np.float64)
        b = vectors_matrix(qs.take(idx), "knn", np.float64)
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"knn: dimension mismatch ({a.shape[1]} vs {b.shape[1]})")
        if metric == "cosine":
            den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(den > 0, 1.0 - np.einsum("ij,ij->i", a, b) / den, np.nan)
        elif metric == "dot":
            d = 1.0 - np.einsum("ij,ij->i", a, b)
        elif metric == "l2":
            d = np.linalg.norm(a - b, axis=1)
        elif metric == "mahalanobis":
            w = whitening(_scalar(invs), a.shape[1])
            d = np.linalg.norm((a - b) @ w, axis=1)
        else:
            raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")
        out[idx] = d
    return pa.array(out, pa.float64(), mask=~np.isfinite(out))


def packed_matrix(blobs: pa.Array, what: str = "similarity_join") -> np.ndarray:
    """The float32 matrix in the first cell of a BLOB column from ``__ea_vec_pack`` (ea_vec
    extension): an 8-byte header (uint32 dimension, uint32 0), then the rows, row-major.
    A NULL cell (no vectors) is an empty matrix. Zero-copy."""
    blobs = _combine(blobs)
    if not len(blobs) or not blobs[0].is_valid:
        return np.zeros((0, 0), np.float32)
    buf = blobs[0].as_buffer()
    dim = int(np.frombuffer(buf, dtype="<u4", count=1)[0])
    if dim == 0 or (len(buf) - 8) % (4 * dim):
        raise ValueError(f"{what}: malformed packed vectors ({len(buf)} bytes, dimension {dim})")
    return np.frombuffer(buf, dtype="<f4", offset=8).reshape(-1, dim)
