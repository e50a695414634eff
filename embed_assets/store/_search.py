"""Search planning: which path answers a nearest-neighbour query on one version.

Paths, cheapest first when they apply:

* ``graph``: the version's HNSW graph (:mod:`._graph`), when the index policy found it
  met the recall target faster than the probe, for an unfiltered query in the table's
  metric on the rows it was built from;
* ``probe``: the tuned in-memory IVF probe (:class:`embed_assets.kernels.IvfProbe`),
  when the index policy recorded probe settings for this version and the query has no
  filter and the table's metric;
* ``exact``: one scan of the version's cached matrix (exact, no index, no filter);
* ``filtered-exact``: a filter (``where``, a partition) selecting at most
  :data:`BROAD_FILTER` of the rows: one exact scan of just those rows, gathered once per
  version and filter (:mod:`._subsets`); exact, so the recall target holds by construction;
* ``filtered-probe``: a broader filter on a table searched through the probe: the probe
  restricted to the matching rows, with ``nprobes`` raised in proportion to the rows the
  filter removes, so the probed partitions hold as many candidates as unfiltered;
* ``lance``: Lance's own search: the ANN index with its recorded parameters, or a flat
  scan, with a prefilter when there is a ``where`` (what is left when the rows do not fit
  in memory, or when the caller forces ``nprobes``/``refine_factor``).

``search(..., explain=True)`` returns the :class:`Plan` that ran beside the rows: which
path, why, and how many rows the filter selected.

Everything here reads the version being searched: its facts (model, dimension, metric)
and its index facts, never the latest version's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from ..errors import SchemaMismatchError, ValidationError, describe
from ..kernels import default_rank, exact_topk, exact_topk_batch
from ._cache import CACHE, VersionKey, take_rows, version_fact
from ._filters import conjunction
from ._filters import eq as filter_eq
from ._filters import in_list as filter_in
from ._identity import fingerprint
from ._index_facts import centroids, has_vector_index, search_defaults
from ._meta import METRICS, VECTOR_COLUMN, TableMeta
from ._subsets import RowSubset, subset
from .graph import Graph, GraphHome
from .graph import load as load_graph


@dataclass(frozen=True)
class VersionContext:
    """The one version a search reads, and what the planner needs to know about it: the
    table's name (for messages), the pinned dataset, its cache key (uri, table identity,
    version), its facts, where its graphs live, and how to find the version a partition
    was last written at (``epoch_of``: a partition filter -> (canonical filter, key))."""

    name: str
    ds: lance.LanceDataset
    key: VersionKey
    meta: TableMeta
    home: GraphHome
    epoch_of: Callable[[str], tuple[str, VersionKey] | None] | None = None

    @property
    def table_id(self) -> str:
        return self.key.table_id


@dataclass
class SearchRequest:
    query: Any
    k: int
    where: str | None = None  # the filter Lance evaluates (see combine_filters)
    columns: list[str] | None = None
    embedder: Any = None
    use_index: bool | None = None
    nprobes: int | None = None
    refine_factor: int | None = None
    metric: str | None = None
    # The closed filters ``where`` is the conjunction of (the user's, the partition's).
    where_parts: tuple[str, ...] = ()


# A filter selecting more than this share of the rows is searched through the probe
# restricted to them when the table has one (an exact scan of them would cost more than
# the unfiltered probe); at most this share, exactly over just those rows.
BROAD_FILTER = 0.25


@dataclass
class Plan:
    """How one search ran: ``path`` (see the module docstring), why, and the filter's rows.

    Attributes
    ----------
    path : {"graph", "probe", "exact", "filtered-exact", "filtered-probe", "lance", "text", "hybrid"}
    reason : str
        One sentence: why this path.
    rows : int
        Rows in the version searched.
    matching : int or None
        Rows the filter selected (None without a filter, or when Lance applied it).
    params : dict
        The search parameters used (``nprobes``...).
    """

    path: str
    ann: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    rows: int = 0
    matching: int | None = None
    subset: RowSubset | None = field(default=None, repr=False, compare=False)

    def fall_back(self, path: str, why: str) -> None:
        """The path that runs instead of the planned one (explain reports what ran)."""
        self.reason = f"{self.reason}; {self.path} unavailable ({why}): {path}"
        self.path = path
        if path == "lance":
            if self.subset is None:
                self.ann = self.ann and bool(lance_only(self.params))
            self.params = lance_only(self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "rows": self.rows,
                "matching": self.matching, "ann": self.ann, "params": dict(self.params)}

    def __str__(self) -> str:
        sel = "" if self.matching is None else f", {self.matching:,} of {self.rows:,} rows match"
        return f"{self.path}: {self.reason}{sel}"


def partition_filter(name: str, meta: TableMeta, ds: lance.LanceDataset, partition: Any) -> str | None:
    """The filter of ``search(partition=...)``: a value of the table's recorded partition
    column, or an explicit ``(column, value)``."""
    if partition is None:
        return None
    if isinstance(partition, tuple):
        if len(partition) != 2 or not isinstance(partition[0], str):
            raise ValidationError("partition must be a value or a (column, value) pair")
        column, value = partition
    else:
        column, value = meta.partition_column, partition
        if column is None:
            raise ValidationError(
                f"table {name!r} records no partition column (it was not created by a "
                "partition write): pass partition=(column, value)")
    if column not in ds.schema.names:
        raise ValidationError(f"partition column {column!r} is not a column of {name!r}; "
                              f"columns: {', '.join(ds.schema.names)}")
    if isinstance(value, list | set | frozenset):
        return filter_in(column, sorted(value))
    return filter_eq(column, value)


def combine_filters(*wheres: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The filter Lance evaluates for ``where=`` and ``partition=``, and its parts. Each
    part must be one closed expression and is wrapped in its own parentheses
    (:func:`._filters.conjunction`), so no text of ``where`` can widen the partition."""
    parts = tuple(w for w in wheres if w)
    return conjunction(*parts), parts


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
    if query is None:  # refused alike by SQL knn (a NULL query vector)
        raise ValidationError("query vector is None: give a vector or a text")
    if isinstance(query, str):
        q = np.asarray(_embed(name, meta, [query], embedder)[0], dtype=np.float32)
    else:
        try:
            q = np.asarray(query, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError):
            raise ValidationError("query must be a text or a numeric vector") from None
    if len(q) == meta.dimension:
        # One dot product tells a finite, non-zero vector (NaN or inf make it NaN or inf,
        # zeros make it 0): ~1 us where the element-wise checks cost ~3 us per search.
        # Anything else (or a sum that overflows float32) takes the checks that say which.
        ss = float(np.dot(q, q))
        if 0.0 < ss < np.inf:
            return q
    return _checked(name, meta, q[None, :], metric)[0]


def query_matrix(name: str, meta: TableMeta, queries: Any, embedder: Any,
                 metric: str = "cosine") -> np.ndarray:
    """Many queries as one float32 (n, d) matrix: texts (embedded in one call, with the
    version's model) or vectors (a 2-D array or a sequence of vectors)."""
    if isinstance(queries, str):
        raise ValidationError("search_batch takes a list of texts or vectors, not one text")
    if isinstance(queries, list | tuple) and queries and all(isinstance(x, str) for x in queries):
        m = np.asarray(_embed(name, meta, list(queries), embedder), dtype=np.float32)
    else:
        try:
            m = np.asarray(queries, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValidationError("queries must be texts or numeric vectors of one dimension") from None
        if m.ndim != 2:
            raise ValidationError(f"queries must be a (n, {meta.dimension}) matrix, got shape {m.shape}")
    return _checked(name, meta, m, metric)


def _embed(name: str, meta: TableMeta, texts: list[str], embedder: Any) -> Any:
    if any(not t.strip() for t in texts):
        raise ValidationError("search text is empty")
    if embedder is None:
        raise ValidationError(
            f"searching {name!r} by text needs an embedder (its model is {meta.model!r})")
    if not callable(getattr(embedder, "embed", None)) or not isinstance(getattr(embedder, "name", None), str):
        raise ValidationError(f"embedder must be an Embedder (with .name and .embed()), got "
                              f"{type(embedder).__name__} {embedder!r}")
    if meta.model and embedder.name != meta.model:
        raise SchemaMismatchError(
            f"this version of {name!r} was embedded with {meta.model!r}; "
            f"the query embedder is {embedder.name!r}")
    return embedder.embed(texts)


def _checked(name: str, meta: TableMeta, m: np.ndarray, metric: str) -> np.ndarray:
    if m.shape[1] != meta.dimension:
        raise ValidationError(
            f"query vector has dimension {m.shape[1]}; table {name!r} has {meta.dimension}")
    if not np.isfinite(m).all():
        raise ValidationError("query vector has NaN or infinite values")
    if metric == "cosine" and not np.any(m, axis=1).all():
        raise ValidationError("query vector is all zeros: it has no cosine distance to any row")
    return m


def plan(ctx: VersionContext, req: SearchRequest, metric: str) -> Plan:
    """Choose the path (see the module docstring)."""
    ds, meta, tid, key = ctx.ds, ctx.meta, ctx.table_id, ctx.key
    rows = _rows(key, ds)
    # A version's index facts never change: read them once per version.
    defaults = (version_fact(key, "search_defaults", lambda: search_defaults(ds, tid)) or {}) \
        if req.use_index is not False else {}
    ann = req.use_index is True or (req.use_index is None and bool(defaults))
    if ann and not version_fact(key, "has_vector_index", lambda: has_vector_index(ds, tid)):
        if req.use_index is True:
            raise ValidationError(
                f"table {ctx.name!r} has no vector index at this version; "
                "build one with build_index() or `embed-assets index`")
        ann = False
    forced = req.nprobes is not None or req.refine_factor is not None
    probe_ok = (ann and metric == meta.metric and not forced and "probe_nprobes" in defaults)
    graph_ok = ann and metric == meta.metric and not forced and "graph_ef" in defaults
    if req.where is None and graph_ok:
        return Plan("graph", True, dict(defaults), "the index policy chose the tuned HNSW graph of "
                    "these rows", rows)
    if req.where is None and metric == meta.metric and probe_ok:
        return Plan("probe", True, dict(defaults), "the index policy chose the tuned in-memory "
                    "IVF probe for this version", rows)
    lance_params = lance_only(defaults)
    if ann and req.use_index is None and not lance_params and req.nprobes is None \
            and not probe_ok:
        ann = False  # the tuner found no Lance setting meeting the target: stay exact
    if req.where is None and not ann:
        why = ("use_index=False" if req.use_index is False else
               "no ANN index is recorded for this version" if not defaults else
               f"metric {metric!r} is not the index's {meta.metric!r}")
        return Plan("exact", False, {}, f"exact scan of the cached matrix ({why})", rows)
    if req.where is not None and not forced:
        got = _filtered_plan(ctx, req, metric, rows, probe_ok, defaults)
        if got is not None:
            return got
    if ann:
        if req.nprobes is not None:
            lance_params["nprobes"] = req.nprobes
        if req.refine_factor is not None:
            lance_params["refine_factor"] = req.refine_factor
    why = ("nprobes/refine_factor were given" if forced and ann else
           "the filter's rows do not fit in the cache" if req.where is not None else
           f"metric {metric!r} is not the index's {meta.metric!r}")
    return Plan("lance", ann, lance_params,
                f"Lance {'ANN' if ann else 'flat'} search{' with a prefilter' if req.where else ''}"
                f" ({why})", rows)


def _rows(key: VersionKey | None, ds: lance.LanceDataset) -> int:
    if key is None:
        return ds.count_rows()
    return version_fact(key, "rows", ds.count_rows)


def _filtered_plan(ctx: VersionContext, req: SearchRequest, metric: str, rows: int,
                   probe_ok: bool, defaults: dict[str, Any]) -> Plan | None:
    ds, key = ctx.ds, ctx.key
    where = req.where
    assert where is not None
    # A filter that is just one partition of the recorded partition column: its block,
    # kept since the partition was last written.
    part = ctx.epoch_of(req.where_parts[0]) \
        if ctx.epoch_of is not None and len(req.where_parts) == 1 else None
    try:
        if part is not None:
            where, epoch = part
            sub = subset(key, ds, where, metric, with_vectors=True, epoch=epoch)
        else:
            # Row offsets first: a broad filter on a probed table needs no gathered vectors.
            sub = subset(key, ds, where, metric, with_vectors=False)
    except (ValueError, OSError) as exc:
        shown = where if part is not None else " AND ".join(req.where_parts)
        raise ValidationError(f"search on {ctx.name!r}: bad filter {shown!r}: "
                              f"{describe(exc)}") from None
    if sub is None:
        return None
    if probe_ok and sub.selectivity > BROAD_FILTER:
        params = dict(defaults)
        base = int(params["probe_nprobes"])
        # The probed partitions hold a `selectivity` share of matching rows: probe that
        # many more partitions so the shortlist sees as many candidates as unfiltered.
        params["probe_nprobes"] = int(np.ceil(base / max(sub.selectivity, 1e-9)))
        return Plan("filtered-probe", True, params,
                    f"the filter keeps {sub.selectivity:.1%} of the rows (> {BROAD_FILTER:.0%}): "
                    "the tuned IVF probe over the matching rows only", rows, sub.rows, sub)
    full = sub if sub.matrix is not None else subset(key, ds, where, metric, with_vectors=True)
    if full is None:
        return None
    kept = (f"partition {where} (gathered at version {part[1].version}, when it was last "
            "written)" if part is not None else "cached for this version and filter")
    return Plan("filtered-exact", False, {},
                f"the filter keeps {full.selectivity:.1%} of the rows: an exact scan of just "
                f"those rows ({kept})", rows, full.rows, full)


def lance_only(params: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters Lance's own search takes."""
    return {k: v for k, v in params.items() if not k.startswith(("probe_", "graph_"))}


def run(ctx: VersionContext, q: np.ndarray, req: SearchRequest, metric: str, p: Plan) -> pa.Table:
    """Execute a plan. A path that cannot run degrades to a correct one, and the plan says
    why: the graph to the probe (or an exact scan when no probe was tuned), a cached path
    that cannot fit in memory to Lance. No parameter of one path reaches another."""
    ds, key = ctx.ds, ctx.key
    if p.path == "graph":
        g, why = _graph_of(ctx, metric, p.params)
        if g is not None:
            idx, dist = g.search(q, req.k)  # hnswlib normalises a cosine query
            return rows_at(key, ds, idx, dist, req.columns, metric)
        _graph_fallback(p, why)
    if p.path in ("probe", "filtered-probe"):
        allowed = p.subset if p.path == "filtered-probe" else None
        got = _probe(ds, key, q, req.k, metric, p.params, allowed)
        if got is not None:
            return rows_at(key, ds, *got, req.columns, metric)
        p.fall_back("lance", "the probe does not fit in the cache")
    sub = p.subset
    if p.path == "filtered-exact" and sub is not None and sub.matrix is not None:
        idx, dist = exact_topk(sub.matrix, q, req.k, metric)
        return rows_at(key, ds, sub.offsets[idx], dist, req.columns, metric)
    if p.path == "exact":
        mat = CACHE.matrix(key, ds, metric)
        if mat is not None:
            return rows_at(key, ds, *exact_topk(mat, q, req.k, metric), req.columns, metric)
        p.fall_back("lance", "the matrix does not fit in the cache")
    return _lance(ctx.name, ds, q, req, metric, p)


def _graph_fallback(p: Plan, why: str) -> None:
    if "probe_nprobes" in p.params:
        p.fall_back("probe", why)
    else:
        p.fall_back("exact", why)
        p.ann, p.params = False, {}


QUERY_COLUMN = "query"


def run_batch(ctx: VersionContext, qs: np.ndarray, req: SearchRequest, metric: str,
              p: Plan, threads: int = 1) -> pa.Table:
    """Execute one plan for many query vectors (``qs``: (n, d)): the rows of each query,
    nearest first, with a ``query`` column (the query's position). The graph answers all
    of them in one hnswlib call and an exact scan in one GEMM per block; the other paths
    answer one query at a time on the same plan. One gather of the rows for all."""
    ds, key = ctx.ds, ctx.key
    got: tuple[np.ndarray, np.ndarray] | None = None
    if p.path == "graph":
        g, why = _graph_of(ctx, metric, p.params)
        if g is not None:
            got = g.search_batch(qs, req.k, threads)
        else:
            _graph_fallback(p, why)
    if got is None and p.path == "exact":
        mat = CACHE.matrix(key, ds, metric)
        if mat is not None:
            got = exact_topk_batch(mat, qs, req.k, metric)
    if got is None and p.path == "filtered-exact" and p.subset is not None \
            and p.subset.matrix is not None:
        idx, dist = exact_topk_batch(p.subset.matrix, qs, req.k, metric)
        got = p.subset.offsets[idx], dist
    if got is None:
        parts = [run(ctx, q, req, metric, p) for q in qs]
        parts = [t.append_column(QUERY_COLUMN, pa.array(np.full(t.num_rows, i, np.int32)))
                 for i, t in enumerate(parts)]
        return pa.concat_tables(parts) if parts else rows_at(key, ds, np.zeros(0, np.int64),
                                                             np.zeros(0, np.float32), req.columns,
                                                             metric)
    idx, dist = got
    n, k = idx.shape
    extra = [*_rank_columns(dist.reshape(-1), metric, k),
             (pa.field(QUERY_COLUMN, pa.int32()), pa.array(np.repeat(np.arange(n, dtype=np.int32), k)))]
    return take_rows(key, ds, idx.reshape(-1), req.columns, extra)


def unfiltered_graph(ctx: VersionContext) -> tuple[Graph | None, str]:
    """The graph an unfiltered search of this version in the table's metric runs on (the
    plan's ``graph`` path: the index policy chose it, it indexes exactly these rows and
    its files are the ones recorded), for a caller that batches queries itself (a
    server); else (None, why)."""
    p = plan(ctx, SearchRequest(None, 1), ctx.meta.metric)
    if p.path != "graph":
        return None, p.reason
    return _graph_of(ctx, ctx.meta.metric, p.params)


def _graph_of(ctx: VersionContext, metric: str, params: dict[str, Any]) -> tuple[Graph | None, str]:
    """The graph recorded for this version, when it indexes exactly this version's rows
    and its files are the ones recorded; else (None, why)."""
    key, ds = ctx.key, ctx.ds
    fp = version_fact(key, "fingerprint", lambda: fingerprint(ds))
    if fp != params.get("graph_fingerprint"):
        return None, "the HNSW graph indexes other rows than this version's (a write since)"
    dim = version_fact(key, "dim", lambda: ds.schema.field(VECTOR_COLUMN).type.list_size)
    return load_graph(key, ctx.home, dim, metric, params, _rows(key, ds))


def _probe(ds: lance.LanceDataset, key: VersionKey, q: np.ndarray, k: int, metric: str,
           params: dict[str, Any], allowed: RowSubset | None = None,
           ) -> tuple[np.ndarray, np.ndarray] | None:
    if "probe_rank" in params:
        rank = int(params["probe_rank"])
    else:  # recorded before per-table projections: the fixed d/3 pre-scan, or none
        rank = default_rank(len(q)) if params.get("probe_two_stage", True) else 0
    probe = CACHE.probe(key, ds, metric, lambda: centroids(ds), rank,
                        int(params.get("probe_candidates", 0)))
    if probe is None:
        return None
    mask = allowed.mask_for(probe.order) if allowed is not None else None
    return probe.search(q, k, int(params["probe_nprobes"]), mask)


def _lance(name: str, ds: lance.LanceDataset, q: np.ndarray, req: SearchRequest, metric: str,
           p: Plan) -> pa.Table:
    # Only Lance's own parameters: a graph's or probe's never reach ScannerBuilder.nearest
    # (issue 29, defect 3: graph_ef raised a TypeError on every fallback).
    nearest: dict[str, Any] = {"column": VECTOR_COLUMN, "q": q, "k": req.k, "metric": metric,
                               "use_index": p.ann, **(lance_only(p.params) if p.ann else {})}
    try:
        # prefilter=True costs ~5 ms per query even with no filter (IVF_HNSW_SQ at 120k
        # rows), so ask for it only when there is a filter.
        res = ds.to_table(nearest=nearest, filter=req.where, prefilter=req.where is not None,
                          columns=req.columns)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"search on {name!r} failed: {describe(exc)}") from None
    res = res.rename_columns([("distance" if c == "_distance" else c) for c in res.column_names])
    res = res.sort_by([("distance", "ascending")])
    i = res.column_names.index("distance")
    dist = res.column(i).to_numpy(zero_copy_only=False)
    return _with_rank(res.remove_column(i), dist, metric)


def rows_at(key: VersionKey, ds: lance.LanceDataset, idx: np.ndarray, dist: np.ndarray,
            columns: list[str] | None, metric: str) -> pa.Table:
    return take_rows(key, ds, idx, columns, _rank_columns(dist, metric))


_DISTANCE = pa.field("distance", pa.float32())
_RANK = pa.field("rank", pa.int32())


def _rank_columns(dist: np.ndarray, metric: str, per: int | None = None,
                  ) -> list[tuple[pa.Field, pa.Array]]:
    """``distance`` and ``rank`` columns; ``per``: ranks restart every ``per`` rows (a
    batch of queries, ``per`` rows each)."""
    if metric == "l2":  # Lance ranks by squared L2; users see Euclidean everywhere
        dist = np.sqrt(np.maximum(dist, 0))
    n = len(dist)
    if per is not None:
        ranks = pa.array(np.tile(np.arange(1, per + 1, dtype=np.int32), n // per if per else 0))
    else:
        ranks = _ranks(n)
    return [(_DISTANCE, pa.array(np.asarray(dist, np.float32))), (_RANK, ranks)]


@functools.lru_cache(maxsize=64)
def _ranks(n: int) -> pa.Array:
    """1..n as an int32 Arrow array (immutable: one per k, shared by every search)."""
    return pa.array(np.arange(1, n + 1, dtype=np.int32))


def _with_rank(rows: pa.Table, dist: np.ndarray, metric: str) -> pa.Table:
    for f, a in _rank_columns(dist, metric):
        rows = rows.append_column(f, a)
    return rows
