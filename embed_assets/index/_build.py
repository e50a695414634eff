"""ANN index policy: build an index tuned to a recall target, or none where exact is faster.

How a build works
-----------------
1. Below :data:`EXACT_THRESHOLD_ROWS` rows the table stays exact: an in-memory numpy scan
   of a few tens of thousands of vectors costs about what one Lance ANN probe costs in
   per-query overhead here (see benchmarks/RESULTS.md, "ANN index").
2. Otherwise an IVF-PQ index (or IVF_HNSW_SQ) is trained with parameters derived from
   the row count and dimension (``sqrt(n)`` partitions, ``dim/4`` PQ sub-vectors: Lance's
   defaults gave recall@10 ~0.56 on MiniLM vectors, 4 dimensions per code was what worked).
3. Held-out queries (sampled rows, their own row excluded from the truth) are searched
   exactly with numpy and through the index over a ladder of ``nprobes`` x ``refine_factor``
   (``ef`` for HNSW), and through the in-memory probe (:mod:`._ivf`) over ``nprobes`` x
   projection x shortlist; the fastest setting whose measured recall@k meets the target
   with two standard errors to spare wins. The recall recorded is then measured on a
   second, disjoint set of queries, so choosing the setting does not flatter it. Recall
   counts ties: a found row is a hit when it is as near as the k-th exact neighbour.
   If no setting meets the target, the index is dropped and the table stays exact: a
   promise of recall is never silently broken.
4. The result (recall achieved, parameters, build seconds, index bytes) is written into the
   table's Lance config in a commit that carries the same facts as transaction properties,
   so ``versions`` shows it and every later search uses it by default.

Freshness
---------
Rows appended after a build are searched exactly by Lance (flat) beside the index, so
results stay correct; :func:`refresh_index` folds them in. The retrain rule: rebuild from
scratch when the table has grown by more than 50% since training, or when new vectors sit
farther from their nearest IVF centroid than the trained ones (mean distance ratio above
1.25), i.e. the partitions no longer describe the data; otherwise ``optimize_indices``
adds the new rows to the existing partitions incrementally.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import lance
import numpy as np
from lance import LanceOperation

from ..errors import ValidationError

if TYPE_CHECKING:
    from ..store._store import EmbeddingTable

# Rows below which no ANN index is built. Found on this machine (2 cores) by
# `benchmarks/bench_index.py --only threshold` on real MiniLM vectors: the cached exact
# scan's p50 beats the tuned index at 10k rows (1.0 vs 1.5 ms) and loses from 20k
# (2.5 vs 0.8 ms), so the line sits between them. (Before the probe's int8 projection
# the crossover was between 20k and 40k, and this was 30,000.)
EXACT_THRESHOLD_ROWS = int(os.environ.get("EMBED_ASSETS_EXACT_THRESHOLD", "15000"))
INDEX_TYPES = ("IVF_PQ", "IVF_HNSW_SQ")
CONFIG_KEY = "embed_assets.index"
VECTOR_INDEX_NAME = "vector_idx"
_NPROBES_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_REFINE_LADDER = (1, 5, 10, 20, 40)
_EF_LADDER = (20, 40, 60, 80, 120, 160, 240, 320, 640)
# Keep Lance from copying every centroid into index statistics.
os.environ.setdefault("LANCE_INCLUDE_VECTOR_CENTROIDS", "false")


@dataclass
class IndexReport:
    """What :func:`build_index` decided and measured."""

    table: str
    kind: str  # "ann" or "exact"
    target_recall: float
    recall: float
    k: int
    rows: int
    index_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    tune_seconds: float = 0.0
    index_bytes: int = 0
    queries: int = 0
    p50_ms: float | None = None
    lance_recall: float | None = None
    lance_p50_ms: float | None = None
    reason: str = ""
    version: int | None = None
    trained_rows: int = 0
    centroid_distance: float | None = None
    built_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.kind == "exact":
            return f"{self.table}: exact search ({self.reason}); recall 1.0"
        lance = (f"; Lance path (filters) recall {self.lance_recall:.3f} p50 "
                 f"{self.lance_p50_ms:.2f} ms" if self.lance_recall is not None else "")
        return (f"{self.table}: {self.index_type} recall@{self.k} {self.recall:.3f} "
                f"(target {self.target_recall}) p50 {self.p50_ms or 0:.2f} ms{lance}, built in "
                f"{self.build_seconds:.1f}s + tuned in {self.tune_seconds:.1f}s, "
                f"{self.index_bytes / 1e6:.1f} MB, params {self.params}")


def default_params(rows: int, dim: int, index_type: str = "IVF_PQ") -> dict[str, Any]:
    """Index-build parameters from row count and dimension (search params are tuned later)."""
    if index_type == "IVF_HNSW_SQ":
        # Each IVF partition holds an HNSW graph; fewer, larger partitions keep graphs useful.
        return {"num_partitions": max(1, min(256, rows // 50_000))}
    partitions = max(1, min(4096, round(math.sqrt(rows))))
    sub = next((dim // d for d in (4, 8, 2, 16) if dim % d == 0 and dim // d >= 1), 1)
    params: dict[str, Any] = {"num_partitions": partitions, "num_sub_vectors": sub, "num_bits": 8}
    if rows >= 500_000:
        # Lance trains kmeans on 256 samples per partition for up to 50 iterations; at 1M x
        # 384 that alone took 117-139 s of a 3-minute build budget here. 128 samples and 20
        # iterations took 66 s, and the tuned search still met 0.95 with one probe
        # (benchmarks/RESULTS.md, synthetic 1M).
        params.update(sample_rate=128, max_iters=20)
    return params


def _metric(meta_metric: str) -> str:
    return {"cosine": "cosine", "dot": "dot", "l2": "l2"}[meta_metric]


# Similarity ties: a returned row counts as a true neighbour when it is as near as the
# k-th exact neighbour (ann-benchmarks' definition). Real text tables hold exact duplicates
# (Debian "-dev"/"-doc" descriptions), and counting ids alone turns their arbitrary order
# into recall noise: it made the build-time figure 0.02 lower than held-out queries gave.
TIE_EPS = 1e-5


@dataclass
class _Truth:
    """Exact neighbours of the held-out queries, and a tie-aware recall of found rows."""

    mat: np.ndarray  # the table's vectors (normalised for cosine)
    queries: np.ndarray
    exclude: np.ndarray  # each query's own row
    ids: np.ndarray  # (queries, k) exact top-k row offsets
    kth: np.ndarray  # (queries,) similarity of the k-th exact neighbour
    metric: str

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def _sim(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        s = rows @ q
        return 2 * s - (rows * rows).sum(1) if self.metric == "l2" else s

    def hits(self, i: int, got: list[int] | np.ndarray) -> float:
        got = [g for g in list(got) if g != self.exclude[i]][: self.k]
        if not got:
            return 0.0
        s = self._sim(self.mat[got], self.queries[i])
        return min(self.k, int((s >= self.kth[i] - TIE_EPS).sum())) / self.k

    def recall(self, found: list[list[int]] | list[np.ndarray]) -> float:
        return float(np.mean([self.hits(i, f) for i, f in enumerate(found)]))

    def meets(self, found: list[list[int]] | list[np.ndarray], target: float) -> tuple[bool, float]:
        """Whether the recall of ``found`` meets ``target`` with two standard errors to
        spare (the tuner keeps the cheapest setting that passes, which would otherwise
        favour settings that were lucky on these queries), and the recall."""
        h = np.array([self.hits(i, f) for i, f in enumerate(found)])
        se = float(h.std() / np.sqrt(len(h))) if len(h) > 1 else 0.0
        return float(h.mean()) - 2 * se >= target - 1e-9, float(h.mean())

    def __getitem__(self, sl: slice) -> _Truth:
        return _Truth(self.mat, self.queries[sl], self.exclude[sl], self.ids[sl], self.kth[sl],
                      self.metric)


def _exact_truth(data: np.ndarray, queries: np.ndarray, exclude: np.ndarray, k: int,
                 metric: str) -> _Truth:
    """Exact top-k for each query, its own row excluded (``data`` and ``queries`` already
    normalised for cosine)."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    kth = np.empty(len(queries), dtype=np.float32)
    sq = (data * data).sum(1) if metric == "l2" else None
    for i in range(0, len(queries), 50):  # bounded (50 x rows) score blocks
        q = queries[i:i + 50]
        scores = q @ data.T
        if sq is not None:
            scores = 2 * scores - sq[None, :]
        scores[np.arange(len(q)), exclude[i:i + 50]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        ids[i:i + 50] = top
        kth[i:i + 50] = np.take_along_axis(scores, top, axis=1).min(1)
    return _Truth(data, queries, exclude, ids, kth, metric)


def _ann_recall(ds: lance.LanceDataset, truth: _Truth, metric: str, **search: Any) -> float:
    """Mean recall@k of the index over the held-out queries (one batched Lance query)."""
    return truth.recall(_ann_offsets(ds, truth.queries, truth.k + 1, metric, **search))


def _ann_offsets(ds: lance.LanceDataset, queries: np.ndarray, k: int, metric: str,
                 **search: Any) -> list[list[int]]:
    """Row offsets found by the index for each query (via a ``_rowoffset`` column)."""
    res = ds.to_table(
        nearest={"column": "vector", "q": queries, "k": k, "metric": metric, **search},
        columns=["_rowoffset"],
    )
    qi = res.column("query_index").to_numpy()
    off = res.column("_rowoffset").to_numpy()
    out: list[list[int]] = [[] for _ in range(len(queries))]
    for q, o in zip(qi.tolist(), off.tolist(), strict=True):
        out[q].append(o)
    return out


def _single_query_p50(ds: lance.LanceDataset, queries: np.ndarray, k: int, metric: str,
                      reps: int = 30, **search: Any) -> float:
    times = []
    for q in queries[:reps]:
        t0 = time.perf_counter()
        ds.to_table(nearest={"column": "vector", "q": q, "k": k, "metric": metric, **search},
                    columns=["_rowid"])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def build_index(
    table: EmbeddingTable,
    *,
    recall: float = 0.95,
    index_type: str = "IVF_PQ",
    k: int = 10,
    sample_queries: int = 200,
    force_ann: bool = False,
    seed: int = 0,
    **overrides: Any,
) -> IndexReport:
    """Build the vector index of ``table`` (latest version) to meet ``recall``@``k``.

    Parameters
    ----------
    recall : float
        Target recall@k, measured at build time on held-out queries against exact search.
    index_type : {"IVF_PQ", "IVF_HNSW_SQ"}
    force_ann : bool
        Build an index even below :data:`EXACT_THRESHOLD_ROWS` rows.
    **overrides
        Build parameters (``num_partitions``, ``num_sub_vectors``...) to use instead of the
        derived ones.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from embed_assets import Store
    >>> s = Store(tempfile.mkdtemp())
    >>> v = np.random.default_rng(0).normal(size=(2000, 16)).astype("float32")
    >>> _ = s.write("t", {"id": list(range(2000)), "vector": list(v)}, key="id")
    >>> build_index(s.table("t")).kind  # small table: exact is faster
    'exact'
    """
    if index_type not in INDEX_TYPES:
        raise ValidationError(
            f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if not 0 < recall <= 1:
        raise ValidationError(f"recall target must be in (0, 1], got {recall}")
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")
    ds = table.dataset()
    rows = ds.count_rows()
    meta = table.meta
    metric = _metric(meta.metric)
    now = dt.datetime.now(dt.UTC).isoformat()
    report = IndexReport(table=table.name, kind="exact", target_recall=recall, recall=1.0, k=k,
                         rows=rows, built_at=now)
    ensure_scalar_indexes(table)
    ds = table.dataset()
    if rows < 256 or (rows < EXACT_THRESHOLD_ROWS and not force_ann):
        report.reason = (f"{rows} rows is below the exact threshold of "
                         f"{EXACT_THRESHOLD_ROWS if rows >= 256 else 256}")
        _drop_vector_index(ds)
        return _record(table, report)

    data = ds.to_table(columns=["vector"]).column("vector").combine_chunks()
    mat = data.flatten().to_numpy(zero_copy_only=False).reshape(rows, meta.dimension)
    if metric == "cosine":  # once, for the exact truth and the probe alike
        mat = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-30)
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    rng = np.random.default_rng(seed)
    # Exact truth for the held-out queries is a (queries x rows) GEMM plus a partial sort;
    # above 500k rows half the queries keep the build inside its time budget.
    nq = min(sample_queries if rows < 500_000 else sample_queries // 2, max(10, rows // 40))
    # Two disjoint query sets: one to choose the search settings, one to report the recall
    # they reach (choosing and reporting on the same queries overstates it).
    q_idx = rng.choice(rows, size=2 * nq, replace=False)
    queries = mat[q_idx].astype(np.float32)
    both = _exact_truth(mat, queries, q_idx, k, metric)
    truth, check = both[:nq], both[nq:]

    params = {**default_params(rows, meta.dimension, index_type), **overrides}
    t0 = time.perf_counter()
    ds = ds.create_index("vector", index_type, name=VECTOR_INDEX_NAME, metric=metric,
                         replace=True, **params)
    report.build_seconds = time.perf_counter() - t0
    report.index_type = index_type
    report.trained_rows = rows
    report.queries = nq

    t1 = time.perf_counter()
    cents = _centroids(ds)
    probe_best, probe_top = (None, 0.0)
    if cents is not None:
        probe_best, probe_top = _tune_probe(cents, truth, meta.metric, recall)
    # When the in-memory probe already serves unfiltered queries, Lance's own path only
    # serves filtered ones: tune it on fewer queries and one refine level (batched Lance
    # queries dominated build time at 300k+ rows otherwise).
    quick = probe_best is not None and index_type == "IVF_PQ"
    nl = min(nq, 50) if quick else nq
    lance_best, lance_top = _tune_lance(ds, truth[:nl], metric, recall, index_type,
                                        int(params.get("num_partitions", 1)),
                                        inner=(10,) if quick else None)
    report.tune_seconds = time.perf_counter() - t1
    if lance_best is None and probe_best is None:
        report.reason = (f"no tested setting of {index_type} reached recall {recall} "
                         f"(best {max(lance_top, probe_top):.3f}); staying exact")
        _drop_vector_index(table.dataset())
        report.params = params
        return _record(table, report)
    report.kind = "ann"
    report.params = dict(params)
    if lance_best is not None:
        p50, sp, _ = lance_best
        report.params.update(sp)
        report.lance_recall = _ann_recall(ds, check[:nl], metric, **sp)
        report.lance_p50_ms = p50
    # Unfiltered searches take whichever path met the target faster: the in-memory probe
    # wins with IVF-PQ (Lance's per-query overhead dominates), Lance's own HNSW graph
    # search can win with IVF_HNSW_SQ (few partitions make the probe a full scan).
    if probe_best is not None and (lance_best is None or probe_best[0] <= lance_best[0]):
        p50, npb, _, tuned_probe = probe_best
        r = check.recall([tuned_probe.search(q, k + 1, npb)[0] for q in check.queries])
        report.params["probe_nprobes"] = npb
        report.params["probe_rank"] = tuned_probe.rank
        report.params["probe_candidates"] = tuned_probe.candidates
        report.recall, report.p50_ms = r, p50
    else:
        report.recall, report.p50_ms = report.lance_recall or 0.0, report.lance_p50_ms
    report.index_bytes = _index_bytes(table.dataset())
    report.centroid_distance = _mean_centroid_distance(table.dataset(), queries)
    report = _record(table, report)
    if probe_best is not None and "probe_nprobes" in report.params:
        # The probe tuned above is exactly what the first search would rebuild (same rows,
        # same centroids): hand it to the cache under the version just committed.
        from ..store._cache import CACHE

        CACHE.put(table.uri, report.version or 0, meta.metric, probe_best[3])
    return report


def _ladder(partitions: int) -> list[int]:
    return [p for p in _NPROBES_LADDER if p < partitions] + [partitions]


def _tune_lance(ds: lance.LanceDataset, truth: _Truth, metric: str, recall: float,
                index_type: str, partitions: int, inner: tuple[int, ...] | None = None,
                ) -> tuple[tuple[float, dict[str, Any], float] | None, float]:
    """Fastest (nprobes, refine_factor | ef) of Lance's own search meeting ``recall``."""
    best: tuple[float, dict[str, Any], float] | None = None
    top = 0.0
    k = truth.k
    probes = _ladder(partitions)
    inner = inner or (_REFINE_LADDER if index_type == "IVF_PQ" else _EF_LADDER)
    inner_key = "refine_factor" if index_type == "IVF_PQ" else "ef"
    for val in inner:
        # Recall grows with nprobes, so binary-search the cheapest rung of the ladder.
        lo, hi, found = 0, len(probes) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            sp = {"nprobes": probes[mid], inner_key: max(val, k) if inner_key == "ef" else val}
            ok, r = truth.meets(_ann_offsets(ds, truth.queries, k + 1, metric, **sp), recall)
            top = max(top, r)
            if ok:
                found, hi = (sp, r), mid - 1
            else:
                lo = mid + 1
        if found is not None:
            sp, r = found
            p50 = _single_query_p50(ds, truth.queries, k, metric, **sp)
            if best is None or p50 < best[0]:
                best = (p50, sp, r)
            probes = probes[: probes.index(sp["nprobes"]) + 1]  # never need more from here on
    return best, top


# The in-memory probe's pre-scan settings tried at build time: projection sizes as
# fractions of the dimension, shortlist sizes as multiples of k. 0 = full precision.
_RANK_DIVISORS = (6, 4, 3)
_SHORTLIST_LADDER = (20, 50, 200)
# A probe setting this fast (median single query, inside the tuner) is not worth beating:
# the rest of a search (opening the version, fetching the k rows) costs more.
_GOOD_ENOUGH_MS = 0.5


def _tune_probe(cents: np.ndarray, truth: _Truth, metric: str, recall: float,
                ) -> tuple[tuple[float, int, float, Any] | None, float]:
    """Fastest setting of the in-memory probe (:mod:`._ivf`) meeting ``recall``: for each
    (projection, shortlist) pair the smallest ``nprobes`` that meets it, timed on single
    queries; full-precision scans (no projection) are one of the pairs, which is what wins
    on data whose inner products do not concentrate in a few directions (isotropic noise).
    """
    from ..kernels._ivf import IvfProbe

    k = truth.k
    d = truth.mat.shape[1]
    ranks = sorted({max(16, d // r) for r in _RANK_DIVISORS})
    built = IvfProbe.build(truth.mat, cents, metric, rank=0)
    options: list[tuple[int, int]] = [(0, 0)]
    options += [(r, c * k) for r in ranks for c in _SHORTLIST_LADDER]
    best: tuple[float, int, float, Any] | None = None
    top = 0.0
    # From a quarter of the partitions on, the probe scans every row (see _ivf).
    ladder = [p for p in _ladder(len(cents)) if 4 * p < len(cents)] + [len(cents)]
    for rank, cand in options:
        if rank and best is not None and best[0] <= _GOOD_ENOUGH_MS:
            break  # full precision on a few partitions already: a projection saves nothing
        if rank and built.low is None:
            built.project(ranks[-1])  # once, and only when full precision was not enough
            if built.low is None:
                break
        probe = built.with_settings(rank, cand)

        def rec(npb: int, probe: IvfProbe = probe) -> tuple[bool, float]:
            return truth.meets([probe.search(q, k + 1, npb)[0] for q in truth.queries], recall)

        lo, hi, found = 0, len(ladder) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            ok, r = rec(ladder[mid])
            top = max(top, r)
            if ok:
                found, hi = (ladder[mid], r), mid - 1
            else:
                lo = mid + 1
        if found is None:
            continue
        npb, r = found
        times = []
        for q in truth.queries[:50]:
            t0 = time.perf_counter()
            probe.search(q, k, npb)
            times.append(time.perf_counter() - t0)
        p50 = float(np.median(times) * 1e3)
        if best is None or p50 < best[0]:
            best = (p50, npb, r, probe)
    return best, top


def _drop_vector_index(ds: lance.LanceDataset) -> None:
    for idx in ds.describe_indices():
        if idx.name == VECTOR_INDEX_NAME:
            ds.drop_index(VECTOR_INDEX_NAME)


def _index_bytes(ds: lance.LanceDataset) -> int:
    return sum(int(i.total_size_bytes or 0) for i in ds.describe_indices()
               if i.name == VECTOR_INDEX_NAME)


def _centroids(ds: lance.LanceDataset) -> np.ndarray | None:
    try:
        c = ds.centroids(index_name=VECTOR_INDEX_NAME)
    except Exception:
        return None
    if c is None:
        return None
    if hasattr(c, "flatten"):  # a FixedSizeListArray
        arr = c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), -1).astype(np.float32)
    else:
        arr = np.asarray(c, dtype=np.float32)
    return arr if arr.ndim == 2 and arr.size else None


def _mean_centroid_distance(ds: lance.LanceDataset, vecs: np.ndarray) -> float | None:
    cents = _centroids(ds)
    if cents is None or not len(vecs):
        return None
    d2 = (vecs**2).sum(1)[:, None] - 2 * vecs @ cents.T + (cents**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0)).mean())


def _record(table: EmbeddingTable, report: IndexReport) -> IndexReport:
    """Store the report in the table config, with the same facts as transaction properties."""
    from ..store._store import PROP_PREFIX

    ds = table.dataset()
    payload = json.dumps(report.to_dict(), sort_keys=True)
    txn = lance.Transaction(
        read_version=ds.version,
        operation=LanceOperation.UpdateConfig(
            config_updates=LanceOperation.UpdateMap({CONFIG_KEY: payload}, replace=False)),
    )
    txn.transaction_properties = {
        f"{PROP_PREFIX}mode": "index",
        f"{PROP_PREFIX}index.kind": report.kind,
        f"{PROP_PREFIX}index.recall": f"{report.recall:.4f}",
        f"{PROP_PREFIX}index.target_recall": str(report.target_recall),
        f"{PROP_PREFIX}index.params": json.dumps(report.params, sort_keys=True),
        f"{PROP_PREFIX}index.build_seconds": f"{report.build_seconds:.2f}",
        f"{PROP_PREFIX}index.bytes": str(report.index_bytes),
        f"{PROP_PREFIX}written_at": report.built_at,
    }
    new = lance.LanceDataset.commit(ds, txn)
    report.version = new.version
    table.refresh()
    return report


# Versions are immutable, so what a version says about its indexes never changes: keep it
# (describe_indices and config() cost ~0.1 ms each, on every search otherwise).
_FACTS: dict[tuple[str, int], tuple[dict[str, Any] | None, bool]] = {}


def _facts(ds: lance.LanceDataset) -> tuple[dict[str, Any] | None, bool]:
    key = (ds.uri, ds.version)
    got = _FACTS.get(key)
    if got is None:
        raw = ds.config().get(CONFIG_KEY) if callable(getattr(ds, "config", None)) else None
        has = any(i.name == VECTOR_INDEX_NAME or "Vector" in i.type_url
                  for i in ds.describe_indices())
        got = (json.loads(raw) if raw else None, has)
        if len(_FACTS) > 4096:
            _FACTS.clear()
        _FACTS[key] = got
    return got


def forget_facts(uri: str) -> None:
    for key in [k for k in _FACTS if k[0] == uri]:
        _FACTS.pop(key, None)


def index_config(ds: lance.LanceDataset) -> dict[str, Any] | None:
    """The stored index report of a dataset version, if any."""
    cfg = _facts(ds)[0]
    return dict(cfg) if cfg else None


def has_vector_index(ds: lance.LanceDataset) -> bool:
    return _facts(ds)[1]


def search_defaults(ds: lance.LanceDataset) -> dict[str, Any] | None:
    """Search parameters to use for this version: None means search exactly."""
    cfg = index_config(ds)
    if not cfg or cfg.get("kind") != "ann" or not has_vector_index(ds):
        return None
    p = cfg.get("params", {})
    keys = ("nprobes", "refine_factor", "ef", "probe_nprobes", "probe_rank", "probe_candidates",
            "probe_two_stage")
    return {key: p[key] for key in keys if key in p}


def ensure_scalar_indexes(table: EmbeddingTable) -> list[str]:
    """BTREE on the key (fast lookups by key), BITMAP on the partition column (prefilters)."""
    ds = table.dataset()
    meta = table.meta
    have = {tuple(i.field_names) for i in ds.describe_indices()}
    made = []
    if meta.key in ds.schema.names and (meta.key,) not in have:
        ds.create_scalar_index(meta.key, "BTREE")
        made.append(meta.key)
    pcol = meta.partition_column
    if pcol and pcol in ds.schema.names and (pcol,) not in have:
        table.dataset().create_scalar_index(pcol, "BITMAP")
        made.append(pcol)
    if made:
        table.refresh()
    return made


def freshness(table: EmbeddingTable) -> dict[str, Any]:
    """How much of the table the vector index covers."""
    ds = table.dataset()
    rows = ds.count_rows()
    if not has_vector_index(ds):
        return {"indexed": False, "rows": rows, "unindexed_rows": rows if index_config(ds) and
                index_config(ds).get("kind") == "ann" else 0, "share_unindexed": 0.0}
    stats = ds.stats.index_stats(VECTOR_INDEX_NAME)
    unindexed = int(stats.get("num_unindexed_rows", 0))
    return {"indexed": True, "rows": rows, "unindexed_rows": unindexed,
            "share_unindexed": unindexed / rows if rows else 0.0}


def needs_retrain(table: EmbeddingTable) -> tuple[bool, str]:
    """The retrain rule (see the module docstring)."""
    ds = table.dataset()
    cfg = index_config(ds) or {}
    trained = int(cfg.get("trained_rows") or 0)
    rows = ds.count_rows()
    if trained and rows > 1.5 * trained:
        return True, f"table grew from {trained} to {rows} rows since training"
    base = cfg.get("centroid_distance")
    if base:
        fresh = freshness(table)
        if fresh["unindexed_rows"]:
            new = ds.to_table(columns=["vector"], limit=2000,
                              offset=max(0, rows - fresh["unindexed_rows"]))
            vecs = np.stack(new.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
            if table.meta.metric == "cosine":  # the baseline was measured on unit vectors
                vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-30)
            cur = _mean_centroid_distance(ds, vecs)
            if cur is not None and cur > 1.25 * base:
                return True, f"new rows sit {cur / base:.2f}x farther from the IVF centroids"
    return False, "partitions still fit the data"


def refresh_index(table: EmbeddingTable) -> dict[str, Any]:
    """Fold unindexed rows into the index, or retrain it when the rule says so."""
    ds = table.dataset()
    cfg = index_config(ds)
    if not cfg or cfg.get("kind") != "ann":
        return {"action": "none", "reason": "table is searched exactly"}
    if not has_vector_index(ds):
        rep = build_index(table, recall=cfg["target_recall"], index_type=cfg["index_type"],
                          k=cfg["k"], force_ann=True)
        return {"action": "rebuilt", "reason": "index missing", "report": rep.to_dict()}
    retrain, why = needs_retrain(table)
    if retrain:
        # The table was judged worth an index before; keep one after growth.
        rep = build_index(table, recall=cfg["target_recall"], index_type=cfg["index_type"],
                          k=cfg["k"], force_ann=True)
        return {"action": "retrained", "reason": why, "report": rep.to_dict()}
    before = freshness(table)["unindexed_rows"]
    if before:
        ds.optimize.optimize_indices(index_names=[VECTOR_INDEX_NAME])
        table.refresh()
    return {"action": "optimized" if before else "none", "reason": why,
            "rows_folded_in": before}
