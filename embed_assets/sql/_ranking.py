"""How SQL's ``knn`` and ``similarity_join`` rank against store views: through the store's
own search (tuned index or cached exact scan), the cached matrix of the view's version, or
one batched search of the store for every left row (``approximate := true``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels import join_topk, mahalanobis_topk, whitening, whitening_key
from ..store import CACHE, VECTOR_COLUMN, EmbeddingTable
from . import _udf as udf
from ._views import JoinSide, View


def join_side(info: View) -> tuple[np.ndarray, pa.Array]:
    """(float32 matrix, keys as strings) of a view's non-NULL vectors, in Lance order,
    from the library's cache of immutable versions: a join against the same version
    then costs the GEMM only."""
    key = info.meta.key

    def build() -> JoinSide:
        tbl = info.dataset.to_table(columns=[key, VECTOR_COLUMN],
                                    filter=f"{VECTOR_COLUMN} IS NOT NULL")
        mat = udf.vectors_matrix(tbl.column(VECTOR_COLUMN), "similarity_join")
        return JoinSide(mat, pc.cast(tbl.column(key), pa.string()).combine_chunks())

    side = CACHE.get_or_build(info.dataset.cache_key, f"join/{key}",
                              lambda: info.dataset.count_rows() * (info.meta.dimension * 4 + 16),
                              build)
    if side is None:  # larger than the cache: build it for this call only
        side = build()
    return side.mat, side.keys

def knn_hits(table: EmbeddingTable, info: View, qs: np.ndarray, k: int, metric: str,
             use_index: bool, where: str | None = None) -> list[list[dict[str, Any]]]:
    """The k nearest rows of a store view for each query vector (rows of ``qs``), by one
    batched search of the store (its planner: tuned index path, cached exact scan, or the
    rows ``where`` selects): key (``ki`` for integer keys, ``ks`` for strings), distance
    and rank. The macro then fetches those rows by key."""
    if metric not in ("cosine", "dot", "l2"):
        raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")
    meta = info.meta
    res = table.search_batch(qs, k=int(k), version=info.version, columns=[meta.key],
                             metric=metric, where=where,
                             use_index=None if use_index and metric == meta.metric else False)
    keys = res.column(meta.key).to_pylist()
    dist = res.column("distance").to_pylist()
    rank = res.column("rank").to_pylist()
    query = res.column("query").to_pylist()
    integer = pa.types.is_integer(res.schema.field(meta.key).type)
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(qs))]
    for qi, key, d, r in zip(query, keys, dist, rank, strict=True):
        out[qi].append({"ki": key} if integer else {"ks": str(key)})
        out[qi][-1].update(distance=d, rank=r)
    return out


@dataclass
class _Whitened:
    mat: np.ndarray  # float32, the view's vectors @ W
    sq: np.ndarray  # their squared norms, float64

    @property
    def nbytes(self) -> int:
        return int(self.mat.nbytes + self.sq.nbytes)


def mahalanobis_hits(info: View, q: np.ndarray, k: int, inv_cov: Any) -> list[dict[str, Any]]:
    """knn in the Mahalanobis metric on a store view: the version's cached matrix is
    whitened once per inverse covariance (cached beside it), then ranked like l2."""
    mat, keys = join_side(info)
    d = info.meta.dimension
    if inv_cov is None:
        raise ValueError("metric 'mahalanobis' needs inv_cov := <inverse covariance matrix>")
    w = whitening(udf.matrix_value(inv_cov) if isinstance(inv_cov, pa.Array | pa.ChunkedArray)
                  else inv_cov, d)
    if mat.shape[0] == 0:
        return []

    def build() -> _Whitened:
        mw = (mat.astype(np.float64) @ w).astype(np.float32)
        return _Whitened(mw, np.einsum("ij,ij->i", mw, mw, dtype=np.float64))

    white = CACHE.get_or_build(info.dataset.cache_key, f"whitened/{whitening_key(w)}",
                               lambda: mat.nbytes + mat.shape[0] * 8, build) or build()
    idx, dist = mahalanobis_topk(mat, q, k, w, white.mat, white.sq)
    key_type = info.dataset.schema.field(info.meta.key).type
    hit_keys = keys.take(pa.array(idx, pa.int64())).to_pylist()
    if pa.types.is_integer(key_type):
        return [{"ki": int(kv), "distance": float(dv), "rank": i + 1}
                for i, (kv, dv) in enumerate(zip(hit_keys, dist, strict=True))]
    return [{"ks": kv, "distance": float(dv), "rank": i + 1}
            for i, (kv, dv) in enumerate(zip(hit_keys, dist, strict=True))]


def exact_join(side: tuple[np.ndarray, pa.Array], left: np.ndarray, sql_keys: pa.Array, k: int,
               metric: str, inv_cov: Any) -> pa.Array:
    """similarity_join against a store view's cached matrix, hits as SQL list positions."""
    mat, lance_keys = side
    li, ri, dist = join_topk(left, mat, k, metric, inv_cov)
    # Lance row order -> position in the SQL list of right keys.
    pos = pc.index_in(lance_keys, value_set=udf._combine(sql_keys)).to_numpy(zero_copy_only=False)
    return udf.hits_array(li, pos[ri].astype(np.int64), dist, min(int(k), mat.shape[0]))


def ann_join(table: EmbeddingTable, info: View, left: np.ndarray, sql_keys: pa.Array, k: int,
             metric: str) -> pa.Array | None:
    """Approximate join: one batched search of the store for every left row, on the path
    its index policy chose (the tuned HNSW graph answers all rows in one call; a version
    with no tuned ANN path is searched exactly, so the approximate join is never slower
    than the exact one). Before: LanceDB's IVF-PQ probed per block of 256 rows, 11x
    slower than the exact join (benchmarks/RESULTS.md, issue 29). None when a left row
    cannot be a query (NaN, or a zero vector for cosine): the exact join answers those."""
    if metric not in ("cosine", "dot", "l2") or not len(left):
        return None
    if not np.isfinite(left).all() or (metric == "cosine" and not np.any(left, axis=1).all()):
        return None
    key = info.meta.key
    res = table.search_batch(left, k=int(k), version=info.version, columns=[key], metric=metric,
                             threads=os.cpu_count() or 1)
    li = res.column("query").to_numpy().astype(np.int64)
    pos = pc.index_in(pc.cast(res.column(key), pa.string()), value_set=udf._combine(sql_keys))
    dist = res.column("distance").to_numpy().astype(np.float64)
    return _hits_with_rank(li, pos.to_numpy(zero_copy_only=False), dist,
                           res.column("rank").to_numpy())


def _hits_with_rank(li: np.ndarray, ri: np.ndarray, dist: np.ndarray, rank: np.ndarray) -> pa.Array:
    st = pa.StructArray.from_arrays(
        [pa.array(li + 1, pa.int32()), pa.array(ri + 1, pa.int32()),
         pa.array(dist.astype(np.float64)), pa.array(rank, pa.int32())],
        fields=list(udf.HIT_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array([0, len(li)], pa.int32()), st)
