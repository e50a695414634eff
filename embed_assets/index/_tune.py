"""Tuning search settings to a recall target: Lance's own search (nprobes x refine_factor
or ef) and the in-memory probe (nprobes x projection x shortlist). Each tuner keeps the
fastest setting whose measured recall meets the target with two standard errors to spare.
"""

from __future__ import annotations

import time
from typing import Any

import lance
import numpy as np

from ..kernels import IvfProbe, prepare_centroids
from ._truth import Truth

_NPROBES_LADDER = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_REFINE_LADDER = (1, 5, 10, 20, 40)
_EF_LADDER = (20, 40, 60, 80, 120, 160, 240, 320, 640)


def ann_recall(ds: lance.LanceDataset, truth: Truth, metric: str, **search: Any) -> float:
    """Mean recall@k of the index over the held-out queries (one batched Lance query)."""
    return truth.recall(ann_offsets(ds, truth.queries, truth.k + 1, metric, **search))


def ann_offsets(ds: lance.LanceDataset, queries: np.ndarray, k: int, metric: str,
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


def single_query_p50(ds: lance.LanceDataset, queries: np.ndarray, k: int, metric: str,
                      reps: int = 30, **search: Any) -> float:
    times = []
    for q in queries[:reps]:
        t0 = time.perf_counter()
        ds.to_table(nearest={"column": "vector", "q": q, "k": k, "metric": metric, **search},
                    columns=["_rowid"])
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def ladder(partitions: int) -> list[int]:
    return [p for p in _NPROBES_LADDER if p < partitions] + [partitions]


def tune_lance(ds: lance.LanceDataset, truth: Truth, metric: str, recall: float,
                index_type: str, partitions: int, inner: tuple[int, ...] | None = None,
                ) -> tuple[tuple[float, dict[str, Any], float] | None, float]:
    """Fastest (nprobes, refine_factor | ef) of Lance's own search meeting ``recall``."""
    best: tuple[float, dict[str, Any], float] | None = None
    top = 0.0
    k = truth.k
    probes = ladder(partitions)
    inner = inner or (_REFINE_LADDER if index_type == "IVF_PQ" else _EF_LADDER)
    inner_key = "refine_factor" if index_type == "IVF_PQ" else "ef"
    for val in inner:
        # Recall grows with nprobes, so binary-search the cheapest rung of the ladder.
        lo, hi, found = 0, len(probes) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            sp = {"nprobes": probes[mid], inner_key: max(val, k) if inner_key == "ef" else val}
            ok, r = truth.meets(ann_offsets(ds, truth.queries, k + 1, metric, **sp), recall)
            top = max(top, r)
            if ok:
                found, hi = (sp, r), mid - 1
            else:
                lo = mid + 1
        if found is not None:
            sp, r = found
            p50 = single_query_p50(ds, truth.queries, k, metric, **sp)
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
GOOD_ENOUGH_MS = 0.5


def tune_probe(cents: np.ndarray, truth: Truth, metric: str, recall: float,
               bounds: np.ndarray | None = None,
               ) -> tuple[tuple[float, int, float, Any] | None, float]:
    """Fastest setting of the in-memory probe (:mod:`._ivf`) meeting ``recall``: for each
    (projection, shortlist) pair the smallest ``nprobes`` that meets it, timed on single
    queries; full-precision scans (no projection) are one of the pairs, which is what wins
    on data whose inner products do not concentrate in a few directions (isotropic noise).

    ``bounds``: where each partition starts in ``truth.mat`` when its rows are already in
    partition order (``truth.order`` their offsets): the probe then scans them in place.
    """
    k = truth.k
    d = truth.mat.shape[1]
    ranks = sorted({max(16, d // r) for r in _RANK_DIVISORS})
    if bounds is not None and truth.order is not None:
        built = IvfProbe.from_sorted(truth.mat, truth.order, bounds,
                                     prepare_centroids(cents, metric), metric, rank=0)
    else:
        built = IvfProbe.build(truth.mat, cents, metric, rank=0)
    options: list[tuple[int, int]] = [(0, 0)]
    options += [(r, c * k) for r in ranks for c in _SHORTLIST_LADDER]
    best: tuple[float, int, float, Any] | None = None
    top = 0.0
    # From a quarter of the partitions on, the probe scans every row (see _ivf).
    rungs = [p for p in ladder(len(cents)) if 4 * p < len(cents)] + [len(cents)]
    for rank, cand in options:
        if rank and best is not None and best[0] <= GOOD_ENOUGH_MS:
            break  # full precision on a few partitions already: a projection saves nothing
        if rank and built.low is None:
            built.project(ranks[-1])  # once, and only when full precision was not enough
            if built.low is None:
                break
        probe = built.with_settings(rank, cand)

        def rec(npb: int, probe: IvfProbe = probe) -> tuple[bool, float]:
            return truth.meets([probe.search(q, k + 1, npb)[0] for q in truth.queries], recall)

        lo, hi, found = 0, len(rungs) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            ok, r = rec(rungs[mid])
            top = max(top, r)
            if ok:
                found, hi = (rungs[mid], r), mid - 1
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


def tune_memory_probe(mat: np.ndarray, cents: np.ndarray, metric: str, recall: float, *,
                      k: int = 10, queries: int = 200, seed: int = 0,
                      ) -> tuple[IvfProbe, int, float] | None:
    """An in-memory probe of ``mat`` (normalised for cosine) over the index's centroids,
    tuned to ``recall`` on held-out rows of ``mat``: (probe, nprobes, measured recall), or
    None when no setting meets it.

    For a process that holds a version in memory anyway (a server) where the version's
    index policy chose Lance's own ANN search: the policy compared the two paths on one
    query at a time in process, where Lance's per-query overhead is its whole cost; a
    server answering concurrent requests on one event loop pays that overhead in latency
    of every queued request (benchmarks/RESULTS.md, serving)."""
    from ._truth import exact_truth

    rows = mat.shape[0]
    if rows < 2 or cents is None or not len(cents):
        return None
    rng = np.random.default_rng(seed)
    nq = min(queries, max(10, rows // 40))
    q_idx = rng.choice(rows, size=nq, replace=False)
    truth = exact_truth(mat, mat[q_idx].astype(np.float32), q_idx, k, metric)
    best, _ = tune_probe(cents, truth, metric, recall)
    if best is None:
        return None
    _, nprobes, got, probe = best
    return probe, nprobes, got
