"""The ANN index policy on real Lance tables: tuned recall, exact fallback, freshness, lookups."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Store, ValidationError, build_index, freshness, refresh_index
from embed_assets.index import EXACT_THRESHOLD_ROWS, needs_retrain
from embed_assets.store import index_config, search_defaults


def clustered(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around fixed cluster centres; ``seed`` varies the samples only."""
    centers = np.random.default_rng(1234).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    x = centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def table_of(mat: np.ndarray, start: int = 0, sec: list[str] | None = None) -> pa.Table:
    cols = {"id": np.arange(start, start + len(mat))}
    if sec is not None:
        cols["sec"] = sec
    cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])
    return pa.table(cols)


@pytest.fixture
def indexed(store: Store):
    mat = clustered(4000)
    store.write("t", table_of(mat, sec=["a" if i % 2 else "b" for i in range(4000)]), key="id",
                partition=None)
    rep = build_index(store.table("t"), recall=0.9, force_ann=True)
    return store, mat, rep


def test_small_tables_stay_exact_and_say_why(store):
    store.write("t", table_of(clustered(500)), key="id")
    rep = build_index(store.table("t"))
    assert rep.kind == "exact" and rep.recall == 1.0
    assert str(EXACT_THRESHOLD_ROWS) in rep.reason or "256" in rep.reason
    t = store.table("t")
    assert index_config(t.dataset())["kind"] == "exact"
    assert search_defaults(t.dataset()) is None
    assert t.versions(include_maintenance=True)[-1].properties["mode"] == "index"


def test_built_index_meets_target_and_agrees_with_an_independent_check(indexed):
    store, mat, rep = indexed
    assert rep.kind == "ann" and rep.recall >= 0.9
    assert rep.index_bytes > 0 and rep.build_seconds > 0 and rep.params["nprobes"] >= 1
    t = store.table("t")
    defaults = search_defaults(t.dataset())
    assert defaults == {k: rep.params[k] for k in ("nprobes", "refine_factor", "probe_nprobes",
                                                   "probe_rank", "probe_candidates", "graph_ef",
                                                   "graph_m", "graph_rows", "graph_fingerprint",
                                                   "graph_files")
                        if k in rep.params}
    assert rep.lance_recall is not None and rep.lance_recall >= 0.9
    # Independent check: fresh queries (not rows of the table), default search path.
    queries = clustered(100, seed=99)
    hits = 0
    for q in queries:
        truth = set(np.argsort(-(mat @ q))[:10].tolist())
        got = set(t.search(q, k=10, columns=["id"]).column("id").to_pylist())
        hits += len(truth & got)
    independent = hits / (10 * len(queries))
    assert abs(independent - rep.recall) <= 0.06, (independent, rep.recall)
    v = t.versions(include_maintenance=True)[-1]
    assert v.properties["index.kind"] == "ann"
    assert float(v.properties["index.recall"]) == pytest.approx(rep.recall, abs=1e-4)
    assert json.loads(v.properties["index.params"])["nprobes"] == rep.params["nprobes"]
    # The Lance path (used with filters) is checked independently too.
    hits = 0
    for q in queries:
        truth = set(np.argsort(-(mat @ q))[:10].tolist())
        got = set(t.search(q, k=10, columns=["id"], where="id >= 0").column("id").to_pylist())
        hits += len(truth & got)
    assert abs(hits / (10 * len(queries)) - rep.lance_recall) <= 0.06


def test_unreachable_target_stays_exact(store):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(1200, 64)).astype(np.float32)  # no structure at all
    store.write("t", table_of(noise), key="id")
    rep = build_index(store.table("t"), recall=1.0, force_ann=True, num_sub_vectors=2,
                      num_partitions=32)
    if rep.kind == "exact":
        assert "staying exact" in rep.reason
        assert not [i for i in store.table("t").dataset().describe_indices()
                    if i.field_names == ["vector"]]
    else:  # the ladder found a setting: then it must really be perfect
        assert rep.recall == 1.0


def test_freshness_and_incremental_fold_in(indexed):
    store, _, _ = indexed
    t = store.table("t")
    assert freshness(t)["unindexed_rows"] == 0
    store.write("t", table_of(clustered(300, seed=5), start=10_000,
                              sec=["a"] * 300), key="id", mode="append")
    f = freshness(t)
    assert f["unindexed_rows"] == 300 and 0 < f["share_unindexed"] < 0.1
    # Unindexed rows are still found (searched flat beside the index).
    q = clustered(300, seed=5)[7]
    assert t.search(q, k=1, columns=["id"]).column("id").to_pylist() == [10_007]
    out = refresh_index(t)
    assert out["action"] == "optimized" and out["rows_folded_in"] == 300
    assert freshness(t)["unindexed_rows"] == 0


def test_retrain_rule_fires_on_growth(indexed):
    store, _, _ = indexed
    t = store.table("t")
    assert needs_retrain(t) == (False, "partitions still fit the data")
    store.write("t", table_of(clustered(2500, seed=7), start=20_000, sec=["a"] * 2500),
                key="id", mode="append")
    retrain, why = needs_retrain(t)
    assert retrain and "grew" in why
    out = refresh_index(t)
    assert out["action"] == "retrained" and out["report"]["trained_rows"] == 6500


def test_filtered_search_is_a_prefiltered_subindex_query(indexed):
    store, mat, _ = indexed
    t = store.table("t")
    q = mat[11]
    res = t.search(q, k=5, where="sec = 'a'", columns=["id", "sec"])
    assert set(res.column("sec").to_pylist()) == {"a"} and res.num_rows == 5
    assert res.column("id").to_pylist()[0] == 11


def test_key_lookups_use_the_scalar_index_at_any_version(indexed):
    store, mat, _ = indexed
    t = store.table("t")
    ds = t.dataset()
    plan = ds.scanner(filter="id IN (1, 2, 3)").explain_plan()
    assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan
    got = t.get([3, 1, 2], columns=["id", "vector"])
    assert sorted(got.column("id").to_pylist()) == [1, 2, 3]
    store.write("t", table_of(clustered(3, seed=8), start=1, sec=["a"] * 3), key="id",
                mode="upsert")
    old = t.get([1], version=1).column("vector").to_pylist()[0]
    assert np.allclose(old, mat[1])


def test_exact_cached_path_equals_lance_flat_search(store):
    mat = clustered(1500, dim=16)
    store.write("t", table_of(mat), key="id")
    store.write("t", table_of(mat[:0]), key="id", mode="upsert", delete_keys=list(range(0, 1500, 3)))
    t = store.table("t")
    q = clustered(1, dim=16, seed=3)[0]
    cached = t.search(q, k=20)  # no filter: numpy path over a cached matrix
    flat = t.search(q, k=20, where="id >= 0")  # filter: Lance's own flat scan
    assert cached.column("id").to_pylist() == flat.column("id").to_pylist()
    assert np.allclose(cached.column("distance").to_numpy(), flat.column("distance").to_numpy(),
                       atol=1e-5)
    assert set(cached.column_names) == set(flat.column_names)


@pytest.mark.parametrize("metric", ["dot", "l2"])
def test_other_metrics_match_lance(tmp_path, metric):
    store = Store(tmp_path)
    mat = clustered(800, dim=8) * 3
    store.write("t", table_of(mat), key="id", metric=metric)
    t = store.table("t")
    q = clustered(1, dim=8, seed=4)[0]
    a = t.search(q, k=5)
    b = t.search(q, k=5, where="id >= 0")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert np.allclose(a.column("distance").to_numpy(), b.column("distance").to_numpy(), atol=1e-4)


def test_bad_index_requests(store):
    store.write("t", table_of(clustered(300)), key="id")
    t = store.table("t")
    with pytest.raises(ValidationError, match="recall target"):
        build_index(t, recall=1.5)
    with pytest.raises(ValidationError, match="unknown index type"):
        build_index(t, index_type="FLAT")
    with pytest.raises(ValidationError, match="no vector index"):
        t.search(clustered(1)[0], use_index=True)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_ivf_probe_two_stage_scan_matches_exact(metric):
    from embed_assets.kernels import IvfProbe, exact_topk

    mat = clustered(3000, dim=192, clusters=20)
    if metric != "cosine":
        mat = mat * np.random.default_rng(2).uniform(0.5, 2.0, size=(3000, 1)).astype(np.float32)
    cents = mat[np.random.default_rng(0).choice(3000, 16, replace=False)]
    probe = IvfProbe.build(mat, cents, metric)
    assert probe.low is not None and probe.low.shape == (3000, 64)  # d/3 pre-scan in use
    hits = 0
    for q in clustered(40, dim=192, clusters=20, seed=9):
        want, wd = exact_topk(mat, q, 10, metric)
        got, gd = probe.search(q, 10, nprobes=16)  # all partitions: only the pre-scan can miss
        hits += len(set(want.tolist()) & set(got.tolist()))
        common = np.intersect1d(want, got)
        assert np.allclose(np.sort(gd)[: len(common)], np.sort(wd)[: len(common)], atol=1e-3) \
            or len(common) < 10
    assert hits / 400 >= 0.98


def test_hnsw_option_meets_target_through_lance(store):
    mat = clustered(3000)
    store.write("t", table_of(mat), key="id")
    t = store.table("t")
    rep = build_index(t, recall=0.9, index_type="IVF_HNSW_SQ", force_ann=True)
    assert rep.kind == "ann" and rep.index_type == "IVF_HNSW_SQ" and rep.recall >= 0.9
    assert "ef" in rep.params and rep.lance_recall is not None
    hits = 0
    queries = clustered(50, seed=77)
    for q in queries:
        truth = set(np.argsort(-(mat @ q))[:10].tolist())
        hits += len(truth & set(t.search(q, k=10, columns=["id"]).column("id").to_pylist()))
    assert hits / 500 >= rep.recall - 0.08


def test_offsets_stay_aligned_across_fragments_and_deletions(store, monkeypatch):
    """The cached and probe paths map row offsets back with take(): with several fragments
    and deletion vectors the rows must still be the right ones."""
    import embed_assets.store._writes as store_mod

    monkeypatch.setattr(store_mod, "MAX_ROWS_PER_FILE", 1000)
    mat = clustered(3500)
    store.write("t", table_of(mat), key="id")
    store.write("t", table_of(mat[:0]), key="id", mode="upsert", delete_keys=list(range(0, 3500, 7)))
    t = store.table("t")
    assert len(t.dataset().get_fragments()) == 4
    build_index(t, recall=0.9, force_ann=True)
    for q in clustered(20, seed=31):
        flat = t.search(q, k=5, where="id >= 0", use_index=False, nprobes=1)  # Lance's own scan
        cached = t.search(q, k=5, use_index=False)
        probe = t.search(q, k=5)
        assert cached.column("id").to_pylist() == flat.column("id").to_pylist()
        for res in (cached, probe):
            ids = res.column("id").to_pylist()
            vecs = np.stack(res.column("vector").to_pylist())
            assert np.allclose(vecs, mat[ids], atol=1e-6)  # the row really is that key's
    got = t.get([7 * 3 + 1, 7, 3499])  # 7 was deleted
    assert got.column("id").to_pylist() == [22, 3499]
