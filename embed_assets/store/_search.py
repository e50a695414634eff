"""Search planning: which path answers a nearest-neighbour query on one version.

Paths, cheapest first when they apply:

* ``probe``: the tuned in-memory IVF probe (:class:`embed_assets.kernels.IvfProbe`),
  when the index policy recorded probe settings for this version and the query has no
  filter and the table's metric;
* ``exact``: one scan of the version's cached matrix (exact, no index, no filter);
* ``lance``: Lance's own search: the ANN index with its recorded parameters, or a flat
  scan, with a prefilter when there is a ``where``.

Everything here reads the version being searched: its facts (model, dimension, metric)
and its index facts, never the latest version's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from ..errors import SchemaMismatchError, ValidationError, first_line
from ..kernels import default_rank, exact_topk
from ._cache import CACHE, VersionKey, take_rows
from ._index_facts import centroids, has_vector_index, search_defaults
from ._meta import METRICS, VECTOR_COLUMN, TableMeta


@dataclass
class SearchRequest:
    query: Any
    k: int
    where: str | None = None
    columns: list[str] | None = None
    embedder: Any = None
    use_index: bool | None = None
    nprobes: int | None = None
    refine_factor: int | None = None
    metric: str | None = None


@dataclass
class Plan:
    path: str  # "probe", "exact" or "lance"
    ann: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def check_request(req: SearchRequest, meta: TableMeta) -> str:
    """The metric to rank by; refuses a bad k or metric."""
    if not isinstance(req.k, int) or isinstance(req.k, bool) or req.k < 1:
        raise ValidationError(f"k must be a positive integer, got {req.k!r}")
    metric = req.metric or meta.metric
    if metric not in METRICS:
        raise ValidationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def query_vector(name: str, meta: TableMeta, query: Any, embedder: Any,
                 metric: str = "cosine") -> np.ndarray:
    """The query as a float32 vector: a text is embedded with the model of the version
    being searched (``meta``), and another embedder is refused."""
    if isinstance(query, str):
        if not query.strip():
            raise ValidationError("search text is empty")
        if embedder is None:
            raise ValidationError(
                f"searching {name!r} by text needs an embedder (its model is {meta.model!r})")
        if meta.model and embedder.name != meta.model:
            raise SchemaMismatchError(
                f"this version of {name!r} was embedded with {meta.model!r}; "
                f"the query embedder is {embedder.name!r}")
        q = np.asarray(embedder.embed([query])[0], dtype=np.float32)
    else:
        try:
            q = np.asarray(query, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ValidationError("query must be a text or a numeric vector") from None
    if q.shape[0] != meta.dimension:
        raise ValidationError(
            f"query vector has dimension {q.shape[0]}; table {name!r} has {meta.dimension}")
    if not np.isfinite(q).all():
        raise ValidationError("query vector has NaN or infinite values")
    if metric == "cosine" and not np.any(q):
        raise ValidationError("query vector is all zeros: it has no cosine distance to any row")
    return q


def plan(name: str, table_id: str, ds: lance.LanceDataset, req: SearchRequest, metric: str,
         meta: TableMeta) -> Plan:
    """Choose the path (see the module docstring)."""
    tid = table_id
    defaults = (search_defaults(ds, tid) or {}) if req.use_index is not False else {}
    ann = req.use_index is True or (req.use_index is None and bool(defaults))
    if ann and not has_vector_index(ds, tid):
        if req.use_index is True:
            raise ValidationError(
                f"table {name!r} has no vector index at this version; "
                "build one with build_index() or `embed-assets index`")
        ann = False
    plain = req.where is None and metric == meta.metric
    if (ann and plain and req.nprobes is None and req.refine_factor is None
            and "probe_nprobes" in defaults):
        return Plan("probe", True, defaults)
    lance_params = {k: v for k, v in defaults.items() if not k.startswith("probe_")}
    if ann and req.use_index is None and not lance_params and req.nprobes is None:
        ann = False  # the tuner found no Lance setting meeting the target: stay exact
    if not ann and plain:
        return Plan("exact")
    if ann:
        if req.nprobes is not None:
            lance_params["nprobes"] = req.nprobes
        if req.refine_factor is not None:
            lance_params["refine_factor"] = req.refine_factor
    return Plan("lance", ann, lance_params)


def run(name: str, ds: lance.LanceDataset, key: VersionKey, q: np.ndarray,
        req: SearchRequest, metric: str, p: Plan) -> pa.Table:
    """Execute a plan; a cached path that cannot fit in memory falls back to Lance."""
    if p.path == "probe":
        got = _probe(ds, key, q, req.k, metric, p.params)
        if got is not None:
            return rows_at(key, ds, *got, req.columns, metric)
        p = Plan("lance", True, {k: v for k, v in p.params.items() if not k.startswith("probe_")})
    if p.path == "exact":
        mat = CACHE.matrix(key, ds, metric)
        if mat is not None:
            return rows_at(key, ds, *exact_topk(mat, q, req.k, metric), req.columns, metric)
        p = Plan("lance")
    return _lance(name, ds, q, req, metric, p)


def _probe(ds: lance.LanceDataset, key: VersionKey, q: np.ndarray, k: int, metric: str,
           params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    if "probe_rank" in params:
        rank = int(params["probe_rank"])
    else:  # recorded before per-table projections: the fixed d/3 pre-scan, or none
        rank = default_rank(len(q)) if params.get("probe_two_stage", True) else 0
    probe = CACHE.probe(key, ds, metric, lambda: centroids(ds), rank,
                        int(params.get("probe_candidates", 0)))
    if probe is None:
        return None
    return probe.search(q, k, int(params["probe_nprobes"]))


def _lance(name: str, ds: lance.LanceDataset, q: np.ndarray, req: SearchRequest, metric: str,
           p: Plan) -> pa.Table:
    nearest: dict[str, Any] = {"column": VECTOR_COLUMN, "q": q, "k": req.k, "metric": metric,
                               "use_index": p.ann, **(p.params if p.ann else {})}
    try:
        # prefilter=True costs ~5 ms per query even with no filter (IVF_HNSW_SQ at 120k
        # rows), so ask for it only when there is a filter.
        res = ds.to_table(nearest=nearest, filter=req.where, prefilter=req.where is not None,
                          columns=req.columns)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"search on {name!r} failed: {first_line(exc)}") from None
    res = res.rename_columns([("distance" if c == "_distance" else c) for c in res.column_names])
    res = res.sort_by([("distance", "ascending")])
    i = res.column_names.index("distance")
    dist = res.column(i).to_numpy(zero_copy_only=False)
    return _with_rank(res.remove_column(i), dist, metric)


def rows_at(key: VersionKey, ds: lance.LanceDataset, idx: np.ndarray, dist: np.ndarray,
            columns: list[str] | None, metric: str) -> pa.Table:
    return _with_rank(take_rows(key, ds, idx, columns), dist, metric)


def _with_rank(rows: pa.Table, dist: np.ndarray, metric: str) -> pa.Table:
    if metric == "l2":  # Lance ranks by squared L2; users see Euclidean everywhere
        dist = np.sqrt(np.maximum(dist, 0))
    rows = rows.append_column("distance", pa.array(np.asarray(dist, np.float32), pa.float32()))
    return rows.append_column("rank", pa.array(np.arange(1, rows.num_rows + 1), pa.int32()))
