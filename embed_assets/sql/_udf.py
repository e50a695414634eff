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

from ..kernels import pair_distances

HIT_TYPE = pa.list_(pa.struct([("l", pa.int32()), ("r", pa.int32()),
                               ("distance", pa.float64()), ("rank", pa.int32())]))


def _combine(arr: Any) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _scalar(arr: Any, i: int = 0) -> Any:
    return _combine(arr)[i].as_py() if len(arr) else None


def matrix_value(ms: Any, i: int = 0) -> np.ndarray | None:
    """Cell ``i`` of a list-of-lists Arrow array (a DOUBLE[][] argument such as inv_cov)
    as a float64 matrix, without a trip through Python lists; None for a NULL cell."""
    ms = _combine(ms)
    if i >= len(ms) or not ms[i].is_valid:
        return None
    rows = ms[i].values
    if len(rows) == 0:
        return np.zeros((0, 0))
    if rows.null_count:
        raise ValueError("inv_cov: the matrix has NULL rows")
    return vectors_matrix(rows, "inv_cov", np.float64)


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
        try:
            m = np.array(cell.as_py(), dtype=np.float64)
        except (TypeError, ValueError):  # rows of different lengths, NULL elements
            raise ValueError("mat_inverse: the matrix must be square, its rows numbers of one "
                             "length") from None
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
            raise ValueError(f"knn: dimension mismatch (query {b.shape[1]} vs table {a.shape[1]})")
        if not np.isfinite(b).all():  # else every distance is NaN: rows ranked by nothing
            raise ValueError("knn: the query vector has NULL or NaN elements")
        d = pair_distances(a, b, metric, matrix_value(invs) if metric == "mahalanobis" else None)
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
