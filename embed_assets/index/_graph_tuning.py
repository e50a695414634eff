"""Tuning the HNSW graph of a version to a recall target (the graph itself, its files and
its identity live in :mod:`embed_assets.store.graph`).

Its search width ``ef`` is tuned like the probe's ``nprobes``: the smallest ef on a ladder
whose recall meets the target with two standard errors to spare on the first held-out
query set, timed on single queries.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..store.graph import add_items, available, build_graph
from ._truth import Truth

# Steps of ~15-25%: a coarse step (64 -> 96) costs a third more time per query than needed.
EF_LADDER = (10, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128, 160, 192, 256, 384, 512)


def tune_graph(truth: Truth, metric: str, recall: float, held_out: np.ndarray, reps: int = 50,
               ) -> tuple[tuple[float, int, Any, float, float] | None, float]:
    """((p50 ms, ef, index, build seconds, recall) of the cheapest ef meeting ``recall``, or None;
    the best recall seen). None as well when hnswlib is not installed.

    The graph is tuned without the ``held_out`` query rows (a query that is a node of the
    graph finds its neighbours more easily than a new vector: recall measured that way
    read 0.95+ where fresh queries got 0.93), which are then added for serving."""
    if not available() or truth.rows < 2:
        return None, 0.0
    t0 = time.perf_counter()
    held = np.unique(held_out)
    rest = np.setdiff1d(np.arange(truth.rows), held)
    index = build_graph(truth.mat, metric, rest, where=truth.where)
    built = time.perf_counter() - t0
    # The answers the tuning graph can give: the exact neighbours among its own rows.
    truth = truth.without(held)
    k = truth.k
    top = 0.0
    for ef in EF_LADDER:
        index.set_ef(max(ef, k + 1))
        found = [index.knn_query(q, k=k + 1)[0][0] for q in truth.queries]
        ok, got = truth.meets(found, recall)
        top = max(top, got)
        if ok:
            times = []
            for q in truth.queries[:reps]:
                t1 = time.perf_counter()
                index.knn_query(q, k=k)
                times.append(time.perf_counter() - t1)
            t2 = time.perf_counter()
            add_items(index, truth.vectors(held), held)
            built += time.perf_counter() - t2
            return (float(np.median(times) * 1e3), max(ef, k + 1), index, built, got), top
    return None, top


def graph_recall(index: Any, truth: Truth, ef: int) -> float:
    """Recall on queries that are rows of the graph (their own row excluded): read as the
    report's figure beside the tuned one, not used to choose ef."""
    index.set_ef(ef)
    return truth.recall([index.knn_query(q, k=truth.k + 1)[0][0] for q in truth.queries])
