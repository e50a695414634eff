"""ANN index policy: build an index tuned to a recall target, or none where exact is faster.

How a build works
-----------------
1. Below the exact threshold (``$EMBED_ASSETS_EXACT_THRESHOLD``, 15,000 rows) the table
   stays exact: an in-memory scan of a few tens of thousands of vectors costs about what
   one Lance ANN probe costs in per-query overhead (benchmarks/RESULTS.md, "ANN index").
2. Otherwise an IVF-PQ index (or IVF_HNSW_SQ) is trained with parameters derived from
   the row count and dimension (``sqrt(n)`` partitions, ``dim/4`` PQ sub-vectors: Lance's
   defaults gave recall@10 ~0.56 on MiniLM vectors, 4 dimensions per code was what worked).
3. Held-out queries (sampled rows, their own row excluded from the truth) are searched
   exactly and through the index over a ladder of ``nprobes`` x ``refine_factor`` (``ef``
   for HNSW), and through the in-memory probe over ``nprobes`` x projection x shortlist;
   the fastest setting whose measured recall@k meets the target with two standard errors
   to spare wins (:mod:`._tune`). The recall recorded is then measured on a second,
   disjoint set of queries, so choosing the setting does not flatter it. Recall counts
   ties (:mod:`._truth`). If no setting meets the target, the index is dropped and the
   table stays exact: a promise of recall is never silently broken.
4. The report (recall achieved, parameters, build seconds, index bytes) is written into the
   table's Lance config in a commit that carries the same facts as transaction properties,
   so ``versions`` shows it and every later search uses it by default.

Pinned to one version
---------------------
A build reads, trains, tunes and fingerprints one version, pinned when it starts
(``report.built_from``); the graph and the cached probe are recorded only for the rows
of that version (the graph under their exact identity, :func:`embed_assets.store.graph.
fingerprint`). A write that lands during the build moves the table on: the report says so
(``report.moved_to``), the planner finds the graph's rows are not the latest version's
and answers through the probe or exactly, and :func:`refresh_index` folds the write in.
Before, the graph was tuned on the rows read first and recorded under the fingerprint of
the latest version: an upsert during a build left searches at recall 0.16 (issue 29).

Memory
------
One copy of the rows at a time, where a build held three (issue 29's floor: a peak of
2.5x the float32 rows): Lance trains first, before any row is read; the rows are then
read in IVF partition order (:func:`embed_assets.store.load_partitioned`), and the tuned
probe, the exact truth and the graph all read that one block; large allocations get
pages of their own for the build (:func:`embed_assets.store.large_allocations_unpooled`).
At 250k rows the peak went from 3.9x to 2.2x the rows (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
from lance import LanceOperation

from .._config import settings
from ..errors import ValidationError
from ..store import (
    CACHE,
    CONFIG_KEY,
    PROP_PREFIX,
    VECTOR_COLUMN,
    VECTOR_INDEX_NAME,
    EmbeddingTable,
    TableMeta,
    centroids,
    ensure_scalar_indexes,
    index_config,
    large_allocations_unpooled,
    load_matrix,
    load_partitioned,
    probe_kind,
    release_freed_memory,
)
from ..store.graph import GRAPH_M, fingerprint, save_graph, tagged_files
from ._graph_tuning import graph_recall, tune_graph
from ._report import INDEX_TYPES, IndexReport, default_params
from ._truth import Truth, exact_truth
from ._tune import GOOD_ENOUGH_MS, ann_recall, tune_lance, tune_probe

# The default of $EMBED_ASSETS_EXACT_THRESHOLD (see exact_threshold_rows).
EXACT_THRESHOLD_ROWS = 15_000


def exact_threshold_rows() -> int:
    """Rows below which no ANN index is built. Found by `benchmarks/bench_index.py --only
    threshold` on real MiniLM vectors (2 cores): the cached exact scan's p50 beats the
    tuned index at 10k rows (1.0 vs 1.5 ms) and loses from 20k (2.5 vs 0.8 ms)."""
    return settings().exact_threshold_rows


# The rows a build never indexes below, whatever ``force_ann`` says: IVF training needs
# a few hundred points.
MIN_ANN_ROWS = 256


@dataclass
class _Sample:
    """The version's rows and the held-out queries: one set to choose settings, one to
    report their recall."""

    mat: np.ndarray  # the rows, in partition order where ``bounds`` is set (see Truth)
    choose: Truth
    check: Truth
    queries: np.ndarray
    bounds: np.ndarray | None = None  # where each IVF partition starts in ``mat``


def build_index(
    table: EmbeddingTable,
    *,
    recall: float = 0.95,
    index_type: str = "IVF_PQ",
    k: int = 10,
    sample_queries: int = 200,
    force_ann: bool = False,
    seed: int = 0,
    graph: bool | None = None,
    **overrides: Any,
) -> IndexReport:
    """Build the vector index of ``table`` (latest version) to meet ``recall``@``k``.

    Parameters
    ----------
    recall : float
        Target recall@k, measured at build time on held-out queries against exact search.
    index_type : {"IVF_PQ", "IVF_HNSW_SQ"}
    force_ann : bool
        Build an index even below the exact threshold.
    graph : bool, optional
        Also build an HNSW graph of the version (hnswlib) and let unfiltered searches use
        it: by default when it meets the target faster than the IVF probe (from
        ``GRAPH_OPTIONAL_ROWS``, 500k rows, only tried where the probe is slower than
        0.5 ms a query: a graph then takes most of the build's time), with ``True``
        whenever it meets the target, with ``False`` never. The graph serves the
        version's rows until the next write; the Lance IVF index stays the persistent one.
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
    _check_args(recall, index_type, k)
    with large_allocations_unpooled():
        return _build(table, recall, index_type, k, sample_queries, force_ann, seed, graph,
                      overrides)


def _build(table: EmbeddingTable, recall: float, index_type: str, k: int, sample_queries: int,
           force_ann: bool, seed: int, graph: bool | None, overrides: dict[str, Any],
           ) -> IndexReport:
    made_scalar = ensure_scalar_indexes(table.dataset(), table.meta.key, table.meta.partition_column)
    if made_scalar:
        table.refresh()
    pinned = table.dataset()  # every read, fingerprint and record below is of this version
    meta = TableMeta.infer(pinned.schema)
    rows = pinned.count_rows()
    report = IndexReport(table=table.name, kind="exact", target_recall=recall, recall=1.0, k=k,
                         rows=rows, built_at=dt.datetime.now(dt.UTC).isoformat(),
                         built_from=pinned.version)
    threshold = exact_threshold_rows()
    if rows < MIN_ANN_ROWS or (rows < threshold and not force_ann):
        report.reason = (f"{rows} rows is below the exact threshold of "
                         f"{threshold if rows >= MIN_ANN_ROWS else MIN_ANN_ROWS}")
        dropped = _drop_vector_index(pinned)
        current = index_config(pinned)
        if not (made_scalar or dropped) and current is not None and current.get("kind") == "exact":
            # Nothing changed: the table was exact and stays exact. Committing the same
            # verdict again would only add a version that records nothing.
            report.version = pinned.version
            return report
        return _record(table, report)
    pinned_fp = fingerprint(pinned)
    params = {**default_params(rows, meta.dimension, index_type), **overrides}
    # Lance trains before the rows are read: create_index peaks at 1.7x the float32 rows
    # (IVF shuffle, PQ codes of every row), which stacked on the held rows made 3.1x at
    # 250k rows (issue 29's floor is 2.5x). create_index moves the handle it is called on
    # to the version it commits: train on a handle of its own, so `pinned` stays the
    # version read.
    ds = _train(pinned.checkout_version(pinned.version), index_type, meta.metric, params, report)
    release_freed_memory()
    hook("trained")
    cents = centroids(ds)
    sample = _held_out(pinned, meta.metric, k, sample_queries, seed, cents)
    report.trained_rows = sample.mat.shape[0]
    report.queries = len(sample.choose.queries)
    hook("read")
    probe_best, lance_best = _tune(ds, cents, sample, meta.metric, recall, index_type, params,
                                   report)
    if lance_best is None and probe_best is None:
        _drop_vector_index(table.refresh().dataset())
        report.params = params
        return _record(table, report)
    _choose(ds, sample, report, params, probe_best, lance_best)
    if _wants_graph(graph, rows, report):
        # The tuned probe scans the build's rows in place, but its projections are copies:
        # it is let go before the graph is built; the first search that needs the probe
        # builds it again from the version's rows.
        probe_best = None
        _add_graph(table, pinned, pinned_fp, sample, report, recall, prefer=graph is True)
    hook("tuned")
    report.index_bytes = _index_bytes(ds)
    report.centroid_distance = mean_centroid_distance(ds, sample.queries)
    report = _record(table, report, pinned_fp)
    if probe_best is not None and "probe_nprobes" in report.params and not report.moved_to:
        # The probe tuned above is what the first search of the recorded version would
        # rebuild (same rows, same centroids): hand it to the cache under that version,
        # never under a version with other rows.
        probe = probe_best[3]
        CACHE.put(table.cache_key(report.version or 0),
                  probe_kind(meta.metric, probe.rank, probe.candidates), probe)
    return report


# From this many rows a default build (``graph=None``) adds a graph only where the path
# tuned so far is slower than GOOD_ENOUGH_MS a query. At 1M synthetic 384-d rows the
# in-memory probe answered fresh queries at 0.29 ms p50 (recall 0.997), and building a
# graph (hnswlib, 130 s; FAISS HNSW took 124 s, usearch f16 261 s) took build_index
# from 57 s, 2.2x FAISS IVF-PQ's train+add, to 184 s (benchmarks/RESULTS.md, issue 29).
# Below it a graph builds in about a minute or less and answers 2x faster than the probe.
GRAPH_OPTIONAL_ROWS = 500_000


def _wants_graph(graph: bool | None, rows: int, report: IndexReport) -> bool:
    if graph is not None:
        return graph
    return rows < GRAPH_OPTIONAL_ROWS or not report.p50_ms or report.p50_ms > GOOD_ENOUGH_MS


# Test seam: called with a stage name ("read", "trained", "tuned") between a build's steps, so a
# test can commit a write at an exact point of a build. None in normal use.
BUILD_HOOK: Callable[[str], None] | None = None


def hook(stage: str) -> None:
    if BUILD_HOOK is not None:
        BUILD_HOOK(stage)


def _check_args(recall: float, index_type: str, k: int) -> None:
    if index_type not in INDEX_TYPES:
        raise ValidationError(
            f"unknown index type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    if isinstance(recall, bool) or not isinstance(recall, int | float) or not 0 < recall <= 1:
        raise ValidationError(f"recall target must be a number in (0, 1], got {recall!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")


def _held_out(ds: lance.LanceDataset, metric: str, k: int, sample_queries: int, seed: int,
              cents: np.ndarray | None) -> _Sample:
    """The version's rows (unit rows for cosine) and two disjoint sets of held-out queries
    with their exact neighbours. With the index's centroids the rows are read in partition
    order (:func:`load_partitioned`), which the probe tuned on them keeps as they are:
    one copy of the rows, not a matrix and the probe's reordered copy of it."""
    bounds = order = None
    if cents is not None:
        mat, order, bounds = load_partitioned(ds, metric, cents)
    else:
        mat = load_matrix(ds, metric)
    rows = mat.shape[0]
    rng = np.random.default_rng(seed)
    # Exact truth is a (queries x rows) GEMM plus a partial sort; above 500k rows half the
    # queries keep the build inside its time budget.
    nq = min(sample_queries if rows < 500_000 else sample_queries // 2, max(10, rows // 40))
    q_idx = rng.choice(rows, size=2 * nq, replace=False)  # row offsets
    both = exact_truth(mat, None, q_idx, k, metric, order=order)
    queries = both.queries
    return _Sample(mat, both[:nq], both[nq:], queries, bounds)


def _train(ds: lance.LanceDataset, index_type: str, metric: str, params: dict[str, Any],
           report: IndexReport) -> lance.LanceDataset:
    t0 = time.perf_counter()
    ds = ds.create_index(VECTOR_COLUMN, index_type, name=VECTOR_INDEX_NAME, metric=metric,
                         replace=True, **params)
    report.build_seconds = time.perf_counter() - t0
    report.index_type = index_type
    return ds


def _tune(ds: lance.LanceDataset, cents: np.ndarray | None, sample: _Sample, metric: str,
          recall: float, index_type: str, params: dict[str, Any], report: IndexReport,
          ) -> tuple[Any, Any]:
    """The best probe setting and the best Lance setting (either may be None); ``cents``:
    the index's IVF centroids."""
    t1 = time.perf_counter()
    probe_best, probe_top = tune_probe(cents, sample.choose, metric, recall, sample.bounds) \
        if cents is not None else (None, 0.0)
    # When the in-memory probe already serves unfiltered queries, Lance's own path only
    # serves filtered ones: tune it on fewer queries and one refine level (batched Lance
    # queries dominated build time at 300k+ rows otherwise).
    quick = probe_best is not None and index_type == "IVF_PQ"
    nl = min(len(sample.choose.queries), 50) if quick else len(sample.choose.queries)
    lance_best, lance_top = tune_lance(ds, sample.choose[:nl], metric, recall, index_type,
                                       int(params.get("num_partitions", 1)),
                                       inner=(10,) if quick else None)
    report.tune_seconds = time.perf_counter() - t1
    if lance_best is None and probe_best is None:
        report.reason = (f"no tested setting of {index_type} reached recall {recall} "
                         f"(best {max(lance_top, probe_top):.3f}); staying exact")
    return probe_best, lance_best


def _choose(ds: lance.LanceDataset, sample: _Sample, report: IndexReport, params: dict[str, Any],
            probe_best: Any, lance_best: Any) -> None:
    """Record the settings unfiltered and filtered searches will use, and their recall on
    the second query set. Unfiltered searches take whichever path met the target faster:
    the in-memory probe wins with IVF-PQ (Lance's per-query overhead dominates), Lance's
    own HNSW graph search can win with IVF_HNSW_SQ (few partitions make the probe a full
    scan)."""
    k = report.k
    report.kind = "ann"
    report.params = dict(params)
    nl = min(len(sample.check.queries), 50)
    if lance_best is not None:
        p50, sp, _ = lance_best
        report.params.update(sp)
        report.lance_recall = ann_recall(ds, sample.check[:nl], sample.check.metric, **sp)
        report.lance_p50_ms = p50
    if probe_best is not None and (lance_best is None or probe_best[0] <= lance_best[0]):
        p50, npb, _, probe = probe_best
        report.recall = sample.check.recall([probe.search(q, k + 1, npb)[0]
                                             for q in sample.check.queries])
        report.p50_ms = p50
        report.params.update(probe_nprobes=npb, probe_rank=probe.rank,
                             probe_candidates=probe.candidates)
    else:
        report.recall, report.p50_ms = report.lance_recall or 0.0, report.lance_p50_ms


def _add_graph(table: EmbeddingTable, pinned: lance.LanceDataset, fp: str, sample: _Sample,
               report: IndexReport, recall: float, prefer: bool = False) -> None:
    """Tune an HNSW graph of the pinned version's rows on the same held-out queries; keep
    it when it beats the path chosen so far, or whenever it meets the target with
    ``prefer`` (its files where every reader finds them, their sizes and hashes and the
    rows' identity in the report)."""
    held = np.concatenate([sample.choose.exclude, sample.check.exclude])
    best, _ = tune_graph(sample.choose, sample.choose.metric, recall, held)
    if best is None or (not prefer and report.p50_ms and best[0] >= report.p50_ms):
        return
    p50, ef, index, built, best_recall = best
    files = save_graph(index, table.graph_home(), fp, keep=tagged_files(pinned))
    # The check set was held out of tuning, but its rows are nodes of the final graph:
    # the figure of record is the tuned recall on queries the graph never held.
    report.recall = min(graph_recall(index, sample.check, ef), best_recall)
    report.p50_ms = p50
    report.build_seconds += built
    report.params.update(graph_ef=ef, graph_m=GRAPH_M, graph_rows=len(sample.mat),
                         graph_fingerprint=fp, graph_version=pinned.version, graph_files=files)


def _drop_vector_index(ds: lance.LanceDataset) -> bool:
    """Drop the vector index if there is one; whether one was dropped (a commit)."""
    if any(idx.name == VECTOR_INDEX_NAME for idx in ds.describe_indices()):
        ds.drop_index(VECTOR_INDEX_NAME)
        return True
    return False


def _index_bytes(ds: lance.LanceDataset) -> int:
    return sum(int(i.total_size_bytes or 0) for i in ds.describe_indices()
               if i.name == VECTOR_INDEX_NAME)


def mean_centroid_distance(ds: lance.LanceDataset, vecs: np.ndarray) -> float | None:
    """Mean distance of ``vecs`` to their nearest IVF centroid (the retrain rule's gauge)."""
    cents = centroids(ds)
    if cents is None or not len(vecs):
        return None
    d2 = (vecs**2).sum(1)[:, None] - 2 * vecs @ cents.T + (cents**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0)).mean())


def _record(table: EmbeddingTable, report: IndexReport, pinned_fp: str | None = None) -> IndexReport:
    """Store the report in the table config, with the same facts as transaction
    properties; say so when the rows recorded under are not the pinned ones."""
    report.version = record_config(table, report.to_dict())
    if pinned_fp is not None:
        now = table.dataset(report.version)
        if fingerprint(now) != pinned_fp:
            report.moved_to = report.version
            report.reason = (f"the table moved on during the build (built from version "
                             f"{report.built_from}, recorded at {report.version}): the graph and "
                             "tuned probe serve the rows built from only; searches of the new "
                             "rows take the probe or an exact scan until refresh_index")
    return report


def record_config(table: EmbeddingTable, cfg: dict[str, Any]) -> int:
    """Commit an index report (a dict, as :func:`index_config` returns it) as the table's
    config; the new version's number."""
    ds = table.dataset()
    txn = lance.Transaction(
        read_version=ds.version,
        operation=LanceOperation.UpdateConfig(config_updates=LanceOperation.UpdateMap(
            {CONFIG_KEY: json.dumps(cfg, sort_keys=True)}, replace=False)),
    )
    params = cfg.get("params") or {}
    txn.transaction_properties = {
        f"{PROP_PREFIX}mode": "index",
        f"{PROP_PREFIX}index.kind": str(cfg.get("kind")),
        f"{PROP_PREFIX}index.recall": f"{float(cfg.get('recall') or 0.0):.4f}",
        f"{PROP_PREFIX}index.target_recall": str(cfg.get("target_recall")),
        f"{PROP_PREFIX}index.params": json.dumps(params, sort_keys=True),
        f"{PROP_PREFIX}index.build_seconds": f"{float(cfg.get('build_seconds') or 0.0):.2f}",
        f"{PROP_PREFIX}index.bytes": str(cfg.get("index_bytes")),
        f"{PROP_PREFIX}written_at": str(cfg.get("built_at")),
    }
    version = lance.LanceDataset.commit(ds, txn).version
    table.refresh()
    return version


def rebuild_after_rollback(table: EmbeddingTable, report: dict[str, Any], index_type: str) -> None:
    """The store's index keeper: a rollback to a version older than the index rebuilds it
    to the recall target the lost index was tuned for."""
    build_index(table, recall=report.get("target_recall", 0.95),
                index_type=report.get("index_type") or index_type, k=report.get("k", 10),
                force_ann=True)


__all__ = ["EXACT_THRESHOLD_ROWS", "MIN_ANN_ROWS", "build_index", "exact_threshold_rows",
           "mean_centroid_distance", "rebuild_after_rollback"]
