"""Keeping an index fresh: rows appended after a build, and the rule for retraining.

Rows appended after a build are searched exactly by Lance (flat) beside the index, so
results stay correct; :func:`refresh_index` folds them in. The retrain rule: rebuild from
scratch when the table has grown by more than 50% since training, or when new vectors sit
farther from their nearest IVF centroid than the trained ones (mean distance ratio above
1.25), i.e. the partitions no longer describe the data; otherwise ``optimize_indices``
adds the new rows to the existing partitions incrementally.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..kernels import normalize_rows
from ..store import (
    BROAD_FILTER,
    VECTOR_INDEX_NAME,
    EmbeddingTable,
    has_vector_index,
    index_config,
    row_addresses,
)
from ..store.graph import fingerprint, tagged_files, update_graph
from ._build import build_index, mean_centroid_distance, record_config


def freshness(table: EmbeddingTable) -> dict[str, Any]:
    """How much of the table the vector index covers, and whether a rollback left an
    index rebuild unfinished (``pending_rebuild``: the report of the lost index; the
    table is searched exactly until :func:`refresh_index` rebuilds it)."""
    ds = table.dataset()
    rows = ds.count_rows()
    pending = None if has_vector_index(ds, table.identity) else table.index_pending()
    if not has_vector_index(ds, table.identity):
        cfg = index_config(ds, table.identity)
        ann = bool(pending) or bool(cfg and cfg.get("kind") == "ann")
        return {"indexed": False, "rows": rows, "unindexed_rows": rows if ann else 0,
                "share_unindexed": 1.0 if ann and rows else 0.0, "pending_rebuild": pending,
                "graph": None}
    stats = ds.stats.index_stats(VECTOR_INDEX_NAME)
    unindexed = int(stats.get("num_unindexed_rows", 0))
    cfg = index_config(ds, table.identity)
    # An index without a recorded tuning: a build stopped between training the index and
    # recording what it measured. Searches stay exact (correct) until it is tuned.
    untuned = None if cfg and cfg.get("kind") == "ann" else {
        "reason": "the vector index exists but its tuning was never recorded (an interrupted "
                  "build_index)", "target_recall": (cfg or {}).get("target_recall", 0.95)}
    p = (cfg or {}).get("params", {})
    # The HNSW graph serves the rows it was built from; after a write searches use the
    # probe until refresh_index updates it (or build_index builds a new one).
    graph = None if "graph_fingerprint" not in p else {
        "fresh": fingerprint(ds) == p["graph_fingerprint"] and "graph_files" in p,
        "ef": p.get("graph_ef")}
    return {"indexed": True, "rows": rows, "unindexed_rows": unindexed,
            "share_unindexed": unindexed / rows if rows else 0.0, "pending_rebuild": untuned,
            "graph": graph}


def partition_freshness(table: EmbeddingTable) -> list[dict[str, Any]]:
    """Per partition of the recorded partition column: its rows, the version that last
    wrote it, the plan a search of it takes, and its rows outside the vector index (rows
    in fragments the index does not cover; searched exactly either way)."""
    ds = table.dataset()
    parts = table.partitions()
    if not parts:
        return []
    covered: set[int] = set()
    if has_vector_index(ds, table.identity):
        for idx in ds.list_indices():
            if idx.get("name") == VECTOR_INDEX_NAME:
                covered = {int(f) for f in idx.get("fragment_ids") or []}
    total = max(ds.count_rows(), 1)
    column = table.meta.partition_column
    out = []
    for p in parts:
        outside = [f for f in p["fragments"] if f not in covered]
        unindexed = 0
        if covered and outside:
            for f in outside:
                frag = ds.get_fragment(f)
                if frag is None or column is None:  # gone since the listing; no partitions
                    continue
                vals = frag.to_table(columns=[column]).column(column).to_pylist()
                unindexed += sum(1 for v in vals if v == p["value"])
        share = p["rows"] / total
        out.append({"value": p["value"], "rows": p["rows"], "last_written": p["last_written"],
                    "plan": "filtered-probe" if covered and share > BROAD_FILTER else "filtered-exact",
                    "unindexed_rows": unindexed if covered else 0})
    return out


def needs_retrain(table: EmbeddingTable) -> tuple[bool, str]:
    """The retrain rule (see the module docstring)."""
    ds = table.dataset()
    cfg = index_config(ds, table.identity) or {}
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
                vecs = normalize_rows(vecs)
            cur = mean_centroid_distance(ds, vecs)
            if cur is not None and cur > 1.25 * base:
                return True, f"new rows sit {cur / base:.2f}x farther from the IVF centroids"
    return False, "partitions still fit the data"


def refresh_index(table: EmbeddingTable) -> dict[str, Any]:
    """Fold unindexed rows into the index, or retrain it when the rule says so."""
    ds = table.dataset()
    pending = None if has_vector_index(ds, table.identity) else table.index_pending()
    if pending:  # a rollback's rebuild was interrupted: finish it
        rep = build_index(table, recall=pending.get("target_recall", 0.95),
                          index_type=pending.get("index_type") or "IVF_PQ", k=pending.get("k", 10),
                          force_ann=True)
        return {"action": "rebuilt", "reason": "a rollback's index rebuild was interrupted",
                "report": rep.to_dict()}
    cfg = index_config(ds, table.identity)
    if has_vector_index(ds, table.identity) and (not cfg or cfg.get("kind") != "ann"):
        # an index whose build stopped before its tuning was recorded: tune it now
        rep = build_index(table, recall=(cfg or {}).get("target_recall", 0.95), force_ann=True)
        return {"action": "rebuilt", "reason": "an index build was interrupted before tuning",
                "report": rep.to_dict()}
    if not cfg or cfg.get("kind") != "ann":
        return {"action": "none", "reason": "table is searched exactly"}
    if not has_vector_index(ds, table.identity):
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
    out: dict[str, Any] = {"action": "optimized" if before else "none", "reason": why,
                           "rows_folded_in": before}
    graph = refresh_graph(table)
    if graph is not None:
        out["graph"] = graph
    return out


def refresh_graph(table: EmbeddingTable) -> dict[str, Any] | None:
    """Bring the HNSW graph up to the latest version's rows (see
    :func:`~embed_assets.store.graph.update_graph`); None if the table has no graph.

    ``{"action": "fresh"}``: it already serves these rows; ``"updated"``: rows marked
    deleted and added, its new labels and files recorded in a config commit; ``"stale"``:
    it cannot be updated (the reason says why) and searches use the probe until
    ``build_index``. The update is of one pinned version: if a write lands meanwhile, the
    graph recorded still serves only the pinned rows (``moved_to`` says so).
    """
    ds = table.dataset()  # pinned
    cfg = index_config(ds, table.identity) or {}
    p = dict(cfg.get("params") or {})
    if "graph_fingerprint" not in p or "graph_rows" not in p:
        return None
    fp = fingerprint(ds)
    if fp == p["graph_fingerprint"] and "graph_files" in p:
        return {"action": "fresh"}
    if "graph_files" not in p:
        return {"action": "stale", "reason": "the graph was recorded by an older embed_assets "
                "(no checked files, a fingerprint that counted deletions, not which rows): "
                "build_index rebuilds it"}
    old = _version_with(table, p["graph_fingerprint"], p.get("graph_version"))
    if old is None:
        return {"action": "stale", "reason": "the version the graph was built from is gone "
                "(cleaned up); build_index rebuilds it"}
    got = update_graph(old, ds, table.cache_key(old.version), table.cache_key(ds.version),
                       table.graph_home(), p, table.meta_at(ds.version).metric, row_addresses,
                       tagged_files(ds))
    if isinstance(got, str):
        return {"action": "stale", "reason": f"{got}: build_index rebuilds it"}
    files, labels, deleted, added = got
    p.update(graph_fingerprint=fp, graph_rows=labels, graph_version=ds.version, graph_files=files)
    version = record_config(table, {**cfg, "params": p})
    out: dict[str, Any] = {"action": "updated", "deleted": deleted, "added": added,
                           "labels": labels}
    if fingerprint(table.dataset(version)) != fp:
        out["moved_to"] = version
    return out


def _version_with(table: EmbeddingTable, fp: str, hint: Any) -> Any:
    """The dataset of a version whose rows have fingerprint ``fp`` (the recorded
    ``graph_version``, else the newest such among the last 100 versions)."""
    candidates = [int(hint)] if hint is not None else \
        sorted((v["version"] for v in table.dataset().versions()), reverse=True)[:100]
    for v in candidates:
        try:
            ds = table.dataset(v)
        except Exception:  # cleaned up
            continue
        if fingerprint(ds) == fp:
            return ds
    return None
