"""Building and tuning the HNSW graph of a version (see :mod:`embed_assets.store._graph`).

The graph is built from the version's own vectors (the tuner's matrix: unit rows for
cosine) with hnswlib, M=16 and ef_construction=200, on every core. ef_construction=200
rather than hnswlib's suggested 100: on 120k real MiniLM vectors it reaches recall 0.96 at
ef 48 where 100 needs ef 64, and 0.97 at ef 64 where 100 needs more than 96 (25% less
time per query at 0.96), for a build of 26 s on 2 threads against 34 s for 100 on one
(benchmarks/RESULTS.md). Its search width ``ef`` is tuned like the probe's
``nprobes``: the smallest ef on a ladder whose recall meets the target with two standard
errors to spare on the first held-out query set, timed on single queries.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..store import VECTOR_COLUMN
from ..store._graph import available, label_map_path, space
from ._truth import Truth, exact_truth

GRAPH_M = 16
EF_CONSTRUCTION = 200
# Steps of ~15-25%: a coarse step (64 -> 96) costs a third more time per query than needed.
EF_LADDER = (10, 16, 24, 32, 40, 48, 56, 64, 72, 80, 96, 112, 128, 160, 192, 256, 384, 512)


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


def save_graph(index: Any, path: Path, labels: np.ndarray | None = None) -> None:
    """Write the graph (and its label map, if any) atomically: a reader never loads half a
    file, and the map is in place before the graph that needs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mp = label_map_path(path)
    if labels is not None:
        tmp_map = mp.with_name(f"{mp.name}.tmp{os.getpid()}")
        with open(tmp_map, "wb") as f:
            np.save(f, np.asarray(labels, dtype=np.int64))
        os.replace(tmp_map, mp)
    else:
        mp.unlink(missing_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    index.save_index(str(tmp))
    os.replace(tmp, path)
    for old in [*path.parent.glob("*.hnsw"), *path.parent.glob("*.map.npy")]:
        if old not in (path, mp):  # graphs of earlier row sets: never read again
            old.unlink(missing_ok=True)


# Past this share of rows changed (deleted + added) since the graph was built, a refresh
# rebuilds it: marked-deleted nodes still route searches, and recall drifts.
MAX_UPDATE_SHARE = 0.3


def update_graph(old_ds: Any, new_ds: Any, old_key: Any, new_key: Any, path: Path,
                 new_path: Path, metric: str, rows: int) -> tuple[int, int, int] | None:
    """Bring the graph of ``old_ds``'s rows (file ``path``, ``rows`` labels) up to
    ``new_ds``: rows gone or rewritten since are marked deleted, new rows are added.
    Written to ``new_path`` with its label map. Returns (labels, deleted, added), or None
    when the graph must be rebuilt instead (no file, rows rewritten by a compaction, more
    than :data:`MAX_UPDATE_SHARE` of the rows changed)."""
    import hnswlib

    from ..store._cache import load_matrix
    from ..store._subsets import row_addresses

    if not path.exists():
        return None
    old_addr, new_addr = row_addresses(old_key, old_ds), row_addresses(new_key, new_ds)
    if old_addr is None or new_addr is None:
        return None
    mp = label_map_path(path)
    labels = np.load(mp) if mp.exists() else np.arange(rows, dtype=np.int64)
    if len(labels) != rows:
        return None
    # old offset -> new offset, through the row address (stable unless a fragment is rewritten)
    addr_of_old = np.empty(old_addr.rows, np.uint64)
    addr_of_old[old_addr.order] = old_addr.sorted
    pos = np.minimum(np.searchsorted(new_addr.sorted, addr_of_old), max(new_addr.rows - 1, 0))
    kept = new_addr.sorted[pos] == addr_of_old if new_addr.rows else np.zeros(old_addr.rows, bool)
    new_of_old = np.where(kept, new_addr.order[pos] if new_addr.rows else -1, -1)
    live = labels >= 0
    new_labels = np.full(rows, -1, np.int64)
    new_labels[live] = new_of_old[labels[live]]
    gone = np.flatnonzero(live & (new_labels < 0))
    seen = np.zeros(new_addr.rows, bool)
    seen[new_labels[new_labels >= 0]] = True
    added = np.flatnonzero(~seen)
    if (len(gone) + len(added)) > MAX_UPDATE_SHARE * max(new_addr.rows, 1):
        return None
    dim = new_ds.schema.field(VECTOR_COLUMN).type.list_size
    index = hnswlib.Index(space=space(metric), dim=dim)
    index.load_index(str(path), max_elements=rows + len(added))
    for label in gone:
        index.mark_deleted(int(label))
    if len(added):
        # a take of scattered rows costs a page read each; many rows are cheaper as a scan
        vecs = load_matrix(new_ds, metric)[added] if len(added) > 0.05 * new_addr.rows \
            else _vectors_at(new_ds, added, metric)
        index.set_num_threads(os.cpu_count() or 1)
        index.add_items(vecs, np.arange(rows, rows + len(added)))
    index.set_num_threads(1)
    save_graph(index, new_path, np.concatenate([new_labels, added]).astype(np.int64))
    return rows + len(added), len(gone), len(added)


def _vectors_at(ds: Any, offsets: np.ndarray, metric: str) -> np.ndarray:
    from ..kernels import normalize_rows

    t = ds.take(offsets.tolist(), columns=[VECTOR_COLUMN])
    dim = ds.schema.field(VECTOR_COLUMN).type.list_size
    m = t.column(VECTOR_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    m = m.reshape(len(offsets), dim).astype(np.float32)
    return normalize_rows(m) if metric == "cosine" else np.ascontiguousarray(m)


def graph_recall(index: Any, truth: Truth, ef: int) -> float:
    """Recall on queries that are rows of the graph (their own row excluded): read as the
    report's figure beside the tuned one, not used to choose ef."""
    index.set_ef(ef)
    return truth.recall([index.knn_query(q, k=truth.k + 1)[0][0] for q in truth.queries])
