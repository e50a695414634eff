"""Building and tuning the HNSW graph of a version (see :mod:`embed_assets.store._graph`).

The graph is built from the version's own vectors (the tuner's matrix: unit rows for
cosine) with hnswlib, M=16 and ef_construction=100 (hnswlib's recommended defaults for
this dimension range), on every core. Its search width ``ef`` is tuned like the probe's
``nprobes``: the smallest ef on a ladder whose recall meets the target with two standard
errors to spare on the first held-out query set, timed on single queries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..store._graph import available, space
from ._truth import Truth, exact_truth

GRAPH_M = 16
EF_CONSTRUCTION = 100
EF_LADDER = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def build_graph(mat: np.ndarray, metric: str, rows: np.ndarray, m: int = GRAPH_M,
                seed: int = 0) -> Any:
    """A graph over ``mat[rows]`` (labels: the row offsets), with room for every row."""
    import hnswlib

    index = hnswlib.Index(space=space(metric), dim=mat.shape[1])
    index.init_index(max_elements=len(mat), M=m, ef_construction=EF_CONSTRUCTION, random_seed=seed)
    index.set_num_threads(os.cpu_count() or 1)
    index.add_items(mat[rows], rows)
    index.set_num_threads(1)
    return index


def tune_graph(truth: Truth, metric: str, recall: float, held_out: np.ndarray, reps: int = 50,
               ) -> tuple[tuple[float, int, Any, float, float] | None, float]:
    """((p50 ms, ef, index, build seconds, recall) of the cheapest ef meeting ``recall``, or None;
    the best recall seen). None as well when hnswlib is not installed.

    The graph is tuned without the ``held_out`` query rows (a query that is a node of the
    graph finds its neighbours more easily than a new vector: recall measured that way
    read 0.95+ where fresh queries got 0.93), which are then added for serving."""
    if not available() or len(truth.mat) < 2:
        return None, 0.0
    t0 = time.perf_counter()
    held = np.unique(held_out)
    rest = np.setdiff1d(np.arange(len(truth.mat)), held)
    index = build_graph(truth.mat, metric, rest)
    built = time.perf_counter() - t0
    # The answers the tuning graph can give: the exact neighbours among its own rows.
    truth = exact_truth(truth.mat, truth.queries, truth.exclude, truth.k, metric, without=held)
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
            index.set_num_threads(os.cpu_count() or 1)
            index.add_items(truth.mat[held], held)
            index.set_num_threads(1)
            built += time.perf_counter() - t2
            return (float(np.median(times) * 1e3), max(ef, k + 1), index, built, got), top
    return None, top


def save_graph(index: Any, path: Path) -> None:
    """Write the graph atomically: a reader never loads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    index.save_index(str(tmp))
    os.replace(tmp, path)
    for old in path.parent.glob("*.hnsw"):  # graphs of earlier row sets: never read again
        if old != path:
            old.unlink(missing_ok=True)


def graph_recall(index: Any, truth: Truth, ef: int) -> float:
    """Recall on queries that are rows of the graph (their own row excluded): read as the
    report's figure beside the tuned one, not used to choose ef."""
    index.set_ef(ef)
    return truth.recall([index.knn_query(q, k=truth.k + 1)[0][0] for q in truth.queries])
