"""How SQL's ``knn`` and ``similarity_join`` rank against store views: through the store's
own search (tuned index or cached exact scan), the cached matrix of the view's version, or
batched probes of its ANN index (``approximate := true``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels import join_topk, mahalanobis_topk, pair_distances, whitening, whitening_key
from ..store import CACHE, VECTOR_COLUMN, EmbeddingTable, Store, search_defaults
from . import _udf as udf
from ._views import JoinSide, View

# the metrics LanceDB's vector query takes (the store's own, checked before a search)
DistanceType = Literal["l2", "cosine", "dot"]


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

def knn_hits(table: EmbeddingTable, info: View, q: np.ndarray, k: int, metric: str,
             use_index: bool, where: str | None = None) -> list[dict[str, Any]]:
    """The k nearest rows of a store view by the store's own search (its planner: tuned
    index path, cached exact scan, or the rows ``where`` selects): key (``ki`` for integer
    keys, ``ks`` for strings), distance and rank. The macro then fetches those rows by key."""
    if metric not in ("cosine", "dot", "l2"):
        raise ValueError(f"unknown metric {metric!r}; choose cosine, dot, l2 or mahalanobis")
    meta = info.meta
    res = table.search(q, k=int(k), version=info.version, columns=[meta.key], metric=metric,
                       where=where,
                       use_index=None if use_index and metric == meta.metric else False)
    keys = res.column(meta.key).to_pylist()
    dist = res.column("distance").to_pylist()
    field = "ki" if pa.types.is_integer(res.schema.field(meta.key).type) else "ks"
    return [{field: key if field == "ki" else str(key), "distance": d, "rank": i + 1}
            for i, (key, d) in enumerate(zip(keys, dist, strict=True))]

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


def index_serves(info: View, metric: str) -> bool:
    """Whether the view's ANN index can answer an approximate join in ``metric`` (not on an
    experiment's version: LanceDB's ``checkout`` takes production's version numbers only)."""
    if not isinstance(info.version, int):
        return False
    return metric in ("cosine", "dot", "l2") and _index_metric(info.dataset) == metric


def exact_join(side: tuple[np.ndarray, pa.Array], left: np.ndarray, sql_keys: pa.Array, k: int,
               metric: str, inv_cov: Any) -> pa.Array:
    """similarity_join against a store view's cached matrix, hits as SQL list positions."""
    mat, lance_keys = side
    li, ri, dist = join_topk(left, mat, k, metric, inv_cov)
    # Lance row order -> position in the SQL list of right keys.
    pos = pc.index_in(lance_keys, value_set=udf._combine(sql_keys)).to_numpy(zero_copy_only=False)
    return udf.hits_array(li, pos[ri].astype(np.int64), dist, min(int(k), mat.shape[0]))


def ann_join(store: Store, info: View, left: np.ndarray, sql_keys: pa.Array, k: int,
             metric: str) -> pa.Array:
    """Approximate join: batched index probes, then exact distances on the candidates."""
    import lancedb  # only this path needs LanceDB's query builder; importing it costs ~0.3 s
    from lancedb.query import LanceVectorQueryBuilder

    key = info.meta.key
    db = lancedb.connect(store.uri, storage_options=store.storage_options)
    tbl = db.open_table(info.table)
    tbl.checkout(cast(int, info.version))  # (index_serves: never an experiment's)
    li_parts, ri_parts, d_parts = [], [], []
    value_set = udf._combine(sql_keys)
    params = _search_params(info.dataset)
    for s in range(0, left.shape[0], 256):
        block = left[s:s + 256]
        query = tbl.search(list(block), vector_column_name=VECTOR_COLUMN)
        assert isinstance(query, LanceVectorQueryBuilder)  # a query by vectors
        search = (query.distance_type(cast(DistanceType, metric)).limit(int(k))
                  .refine_factor(params["refine_factor"]))
        if "nprobes" in params:
            search = search.nprobes(params["nprobes"])
        res = search.select([key, VECTOR_COLUMN]).to_arrow()
        qi = res.column("query_index").to_numpy() + s
        cand = udf.vectors_matrix(res.column(VECTOR_COLUMN))
        d = pair_distances(left[qi], cand, metric)
        pos = pc.index_in(pc.cast(res.column(key), pa.string()), value_set=value_set)
        li_parts.append(qi)
        ri_parts.append(pos.to_numpy(zero_copy_only=False))
        d_parts.append(d)
    li = np.concatenate(li_parts) if li_parts else np.zeros(0, np.int64)
    ri = np.concatenate(ri_parts) if ri_parts else np.zeros(0, np.int64)
    dist = np.concatenate(d_parts) if d_parts else np.zeros(0)
    order = np.lexsort((dist, li))
    li, ri, dist = li[order], ri[order], dist[order]
    rank = np.ones(len(li), np.int64)
    if len(li):
        starts = np.r_[True, li[1:] != li[:-1]]
        grp = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        rank = np.arange(len(li)) - first[grp] + 1
    return _hits_with_rank(li, ri, dist, rank)


def _hits_with_rank(li: np.ndarray, ri: np.ndarray, dist: np.ndarray, rank: np.ndarray) -> pa.Array:
    st = pa.StructArray.from_arrays(
        [pa.array(li + 1, pa.int32()), pa.array(ri + 1, pa.int32()),
         pa.array(dist.astype(np.float64)), pa.array(rank, pa.int32())],
        fields=list(udf.HIT_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array([0, len(li)], pa.int32()), st)


def _index_metric(ds: Any) -> str | None:
    """Metric of the dataset's vector index, or None if it has none."""
    try:
        for idx in ds.describe_indices():
            fields = getattr(idx, "field_names", None) or getattr(idx, "fields", [])
            if VECTOR_COLUMN in fields:
                details = getattr(idx, "details", None) or {}
                if isinstance(details, str):
                    try:
                        details = json.loads(details)
                    except ValueError:
                        details = {}
                m = str(details.get("metric_type") or details.get("distance_type") or "").lower()
                return m or "l2"
    except AttributeError:
        for idx in ds.list_indices():
            if VECTOR_COLUMN in idx.get("fields", []):
                return str(idx.get("metric_type", "l2")).lower()
    return None


def _search_params(ds: Any) -> dict[str, Any]:
    """ANN search parameters: those the index policy stored with the version when it tuned
    the index to a recall target, else a refine step (PQ codes alone ranked poorly on MiniLM vectors:
    recall@10 ~0.56 on MiniLM without refine)."""
    params: dict[str, Any] = {"refine_factor": 4}
    try:
        tuned = search_defaults(ds, ds.cache_key.table_id) or {}
    except Exception:  # an index built outside embed_assets has no stored policy
        tuned = {}
    params.update({k: v for k, v in tuned.items() if k in ("nprobes", "refine_factor") and v})
    return params
