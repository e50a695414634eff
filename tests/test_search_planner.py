"""Filtered and partition search: the planner's choice, its explanation, and the recall
promise for every plan (issue 11).

Before the planner a filtered query went to Lance's prefiltered ANN search, which missed
the recall target the index was built for (0.82-0.89 at a 0.95 index on real Debian
vectors) and cost 20-80x an exact scan of the matching rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Store, ValidationError, build_index
from embed_assets.kernels import IvfProbe, normalize_rows
from embed_assets.store import CACHE, Plan

from .test_index import clustered

N = 12_000
# Section sizes: 0.5%, 5%, 44.5% and 50% of the rows.
SIZES = {"tiny": 60, "small": 600, "mid": 5_340, "big": 6_000}


def sections() -> np.ndarray:
    sec = np.concatenate([np.full(n, name) for name, n in SIZES.items()])
    return np.random.default_rng(5).permutation(sec)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    store = Store(str(tmp_path_factory.mktemp("planner")))
    mat = clustered(N, dim=48, clusters=60)
    sec = sections()
    store.write("t", pa.table({
        "id": np.arange(N), "section": sec,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), mat.shape[1])}),
        key="id")
    # graph=False: these tests are about the probe and the filtered paths
    rep = build_index(store.table("t"), recall=0.95, force_ann=True, graph=False)
    assert rep.kind == "ann"
    return store, mat, sec


def exact_ids(mat: np.ndarray, mask: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    ids = np.flatnonzero(mask)
    sims = normalize_rows(mat[ids]) @ (q / np.linalg.norm(q))
    return ids[np.argsort(-sims, kind="stable")[:k]].tolist()


@pytest.mark.parametrize("where,pick", [
    ("section = 'tiny'", lambda s: s == "tiny"),
    ("section = 'small'", lambda s: s == "small"),
    ("section = 'big'", lambda s: s == "big"),
    ("section <> 'tiny'", lambda s: s != "tiny"),
    ("section IN ('small', 'mid') AND id % 3 = 0", lambda s: np.isin(s, ["small", "mid"])),
])
def test_filtered_search_keeps_the_recall_target(indexed, where, pick):
    store, mat, sec = indexed
    t = store.table("t")
    mask = pick(sec)
    if "id % 3" in where:
        mask = mask & (np.arange(N) % 3 == 0)
    queries = clustered(60, dim=48, clusters=60, seed=77)
    hits = 0
    for q in queries:
        got = t.search(q, k=10, where=where, columns=["id", "section"])
        assert set(np.asarray(sec)[got.column("id").to_numpy()]) <= set(sec[mask])
        hits += len(set(got.column("id").to_pylist()) & set(exact_ids(mat, mask, q, 10)))
    assert hits / (10 * len(queries)) >= 0.95


def test_explain_names_the_plan_and_the_rows_matched(indexed):
    store, mat, sec = indexed
    t = store.table("t")
    q = mat[3]
    _, p = t.search(q, k=5, explain=True)
    assert isinstance(p, Plan) and p.path == "probe" and p.matching is None and p.rows == N
    rows, p = t.search(q, k=5, where="section = 'small'", explain=True)
    assert p.path == "filtered-exact" and p.matching == SIZES["small"]
    assert "5.0%" in p.reason and "exact scan" in p.reason
    assert rows.column("id").to_pylist() == exact_ids(mat, sec == "small", q, 5)
    _, p = t.search(q, k=5, where="section <> 'tiny'", explain=True)
    assert p.path == "filtered-probe" and p.matching == N - SIZES["tiny"]
    _, p = t.search(q, k=5, where="section = 'small'", nprobes=4, explain=True)
    assert p.path == "lance" and "nprobes" in p.reason
    _, p = t.search(q, k=5, use_index=False, explain=True)
    assert p.path == "exact" and "use_index=False" in p.reason
    assert set(p.to_dict()) >= {"path", "reason", "rows", "matching", "params"}


def test_a_filter_is_evaluated_once_per_version(indexed):
    store, mat, _ = indexed
    t = store.table("t")
    where = "section = 'tiny' AND id >= 0"
    key = t.cache_key(t.version)
    t.search(mat[0], k=3, where=where)
    kinds = [k for (vk, k) in CACHE._items if vk == key and where in k]
    assert kinds, "the filter's rows are cached for this version"
    before = len(CACHE)
    t.search(mat[1], k=3, where=where)
    assert len(CACHE) == before


def test_partition_search_equals_the_exact_answer(tmp_path):
    store = Store(str(tmp_path))
    mat = clustered(3000, dim=16)
    sec = sections()[:3000]
    for part in ("tiny", "small", "mid", "big"):
        rows = np.flatnonzero(sec == part)
        store.write("p", pa.table({
            "id": rows, "section": sec[rows],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat[rows].reshape(-1)), 16)}),
            key="id", mode="replace_partition", partition=("section", part))
    t = store.table("p")
    assert t.meta.partition_column == "section"
    for part in ("tiny", "small", "mid", "big"):
        for q in mat[:5]:
            got, p = t.search(q, k=7, partition=part, explain=True)
            assert p.path == "filtered-exact"
            assert got.column("id").to_pylist() == exact_ids(mat, sec == part, q, 7)
            same = t.search(q, k=7, where=f"section = '{part}'")
            assert same.column("id").to_pylist() == got.column("id").to_pylist()
    both = t.search(mat[0], k=50, partition=["tiny", "small"], where="id % 2 = 0")
    assert set(sec[both.column("id").to_numpy()]) <= {"tiny", "small"}
    assert all(i % 2 == 0 for i in both.column("id").to_pylist())
    explicit = t.search(mat[0], k=3, partition=("section", "mid"))
    assert explicit.column("id").to_pylist() == exact_ids(mat, sec == "mid", mat[0], 3)


def test_bad_partition_and_filter_requests(indexed, tmp_path):
    store, mat, _ = indexed
    t = store.table("t")
    before = t.version
    with pytest.raises(ValidationError, match="records no partition column"):
        t.search(mat[0], k=3, partition="tiny")
    with pytest.raises(ValidationError, match="'nope' is not a column"):
        t.search(mat[0], k=3, partition=("nope", 1))
    with pytest.raises(ValidationError, match="bad filter"):
        t.search(mat[0], k=3, where="no_such_column = 1")
    assert t.search(mat[0], k=3, where="section = 'absent'").num_rows == 0
    assert store.table("t").version == before


def test_probe_with_an_allowed_mask_is_exact_over_allowed_rows():
    mat = normalize_rows(clustered(5000, dim=64))
    cents = mat[np.random.default_rng(0).choice(5000, 40, replace=False)]
    probe = IvfProbe.build(mat, cents, "cosine", rank=0)
    allowed_rows = np.random.default_rng(1).random(5000) < 0.3
    mask = allowed_rows[probe.order]
    for q in mat[:20]:
        idx, _dist = probe.search(q, 10, nprobes=40, allowed=mask)
        assert allowed_rows[idx].all()
        assert idx.tolist() == exact_ids(mat, allowed_rows, q, 10)
    none = np.zeros(5000, bool)
    idx, _ = probe.search(mat[0], 10, nprobes=40, allowed=none)
    assert len(idx) == 0


def test_a_partition_sub_index_is_rebuilt_only_when_its_partition_changes(tmp_path):
    store = Store(str(tmp_path))
    mat = clustered(900, dim=16)
    sec = np.array(["a", "b", "c"])[np.arange(900) % 3]

    def write(part: str, rows: np.ndarray, vecs: np.ndarray) -> int:
        res = store.write("p", pa.table({
            "id": rows, "section": np.full(len(rows), part),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1)), 16)}),
            key="id", mode="replace_partition", partition=("section", part))
        return res.version

    written = {p: write(p, np.flatnonzero(sec == p), mat[sec == p]) for p in ("a", "b", "c")}
    t = store.table("p")
    q = mat[0]
    _, plan = t.search(q, k=5, partition="a", explain=True)
    assert f"gathered at version {written['a']}" in plan.reason
    # a write of partition b: a's block is carried over, b's is gathered again
    new_b = mat[sec == "b"][::-1].copy()
    v_b = write("b", np.flatnonzero(sec == "b"), new_b)
    t = store.table("p")
    got, plan = t.search(q, k=5, partition="a", explain=True)
    assert f"gathered at version {written['a']}" in plan.reason
    assert got.column("id").to_pylist() == exact_ids(mat, sec == "a", q, 5)
    _, plan = t.search(q, k=5, where="section = 'b'", explain=True)
    assert f"gathered at version {v_b}" in plan.reason
    # a key that moves from a to b (written with b) leaves a's carried block stale: the
    # block is checked against the version's rows and gathered again
    moved = int(np.flatnonzero(sec == "a")[0])
    b_rows = np.append(np.flatnonzero(sec == "b"), moved)
    write("b", b_rows, mat[b_rows])
    t = store.table("p")
    got = t.search(mat[moved], k=3, partition="a").column("id").to_pylist()
    assert moved not in got
    left = (sec == "a") & (np.arange(900) != moved)
    assert got == exact_ids(mat, left, mat[moved], 3)
    # an upsert (not a partition write) may touch every partition: a new epoch for all
    v_up = store.write("p", pa.table({
        "id": [1], "section": ["b"],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat[1]), 16)}), key="id").version
    _, plan = store.table("p").search(q, k=5, partition="a", explain=True)
    assert f"gathered at version {v_up}" in plan.reason


def test_the_hnsw_graph_serves_its_rows_and_steps_aside_after_a_write(tmp_path):
    """build_index tunes an HNSW graph (hnswlib) beside the IVF index; unfiltered searches
    use it while the rows are the ones it was built from."""
    from embed_assets import freshness

    store = Store(str(tmp_path))
    mat = clustered(6000, dim=32, clusters=50)
    store.write("g", pa.table({
        "id": np.arange(6000),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 32)}), key="id")
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert {"graph_ef", "graph_fingerprint"} <= set(rep.params) and rep.recall >= 0.95
    assert "HNSW graph" in rep.summary()
    t = store.table("g")
    indexed = t.version
    queries = clustered(40, dim=32, clusters=50, seed=9)
    hits = 0
    for q in queries:
        got, plan = t.search(q, k=10, explain=True)
        assert plan.path == "graph"
        hits += len(set(got.column("id").to_pylist()) & set(exact_ids(mat, np.ones(6000, bool), q, 10)))
    assert hits / 400 >= 0.95
    assert freshness(t)["graph"] == {"fresh": True, "ef": rep.params["graph_ef"]}
    # a write changes the rows: the probe answers, and the graph is reported stale
    store.write("g", pa.table({"id": [0], "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(mat[1]), 32)}), key="id")
    t = store.table("g")
    got = t.search(mat[1], k=2, columns=["id"])
    assert set(got.column("id").to_pylist()) == {0, 1}
    assert freshness(t)["graph"]["fresh"] is False
    # time travel to the indexed version reads its graph again
    _, plan = t.search(mat[3], k=3, version=indexed, explain=True)
    assert plan.path == "graph"
    # no graph file (another machine): the probe answers
    for f in (tmp_path / ".embed_assets" / "graphs").rglob("*.hnsw"):
        f.unlink()
    from embed_assets.store import CACHE as cache
    cache.clear()
    got, plan = store.table("g").search(mat[3], k=3, version=indexed, explain=True)
    assert got.column("id").to_pylist()[0] == 3
    assert plan.path == "probe" and "graph unavailable" in plan.reason
    no_graph = build_index(store.table("g"), recall=0.95, force_ann=True, graph=False)
    assert "graph_ef" not in no_graph.params
    build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert list((tmp_path / ".embed_assets" / "graphs").rglob("*.hnsw"))
    store.drop("g")
    assert not list((tmp_path / ".embed_assets" / "graphs").rglob("*.hnsw"))


def test_refresh_index_updates_the_graph_in_place_after_an_upsert(tmp_path):
    """Before: after any write the graph stepped aside until a full build_index (the
    probe answered). refresh_index now marks replaced rows deleted and adds the new ones."""
    from embed_assets import freshness, refresh_index

    store = Store(str(tmp_path))
    n, dim = 5000, 32
    mat = clustered(n, dim=dim, clusters=50)
    vec = lambda m: pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), dim)  # noqa: E731
    store.write("g", pa.table({"id": np.arange(n), "vector": vec(mat)}), key="id")
    build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    # 40 rows change, 60 are new
    changed = np.arange(100, 140)
    fresh = clustered(100, dim=dim, clusters=50, seed=5)
    store.write("g", pa.table({"id": np.concatenate([changed, np.arange(n, n + 60)]),
                               "vector": vec(fresh)}), key="id", mode="upsert")
    t = store.table("g")
    assert freshness(t)["graph"]["fresh"] is False
    _, plan = t.search(mat[0], k=3, explain=True)
    assert plan.path != "graph"
    out = refresh_index(t)
    assert out["graph"]["action"] == "updated"
    assert out["graph"]["deleted"] == 40 and out["graph"]["added"] == 100
    t = store.table("g")
    assert freshness(t)["graph"]["fresh"] is True
    now = mat.copy()
    now[changed] = fresh[:40]
    now = np.concatenate([now, fresh[40:]])
    hits = 0
    queries = clustered(40, dim=dim, clusters=50, seed=11)
    for q in queries:
        got, plan = t.search(q, k=10, explain=True)
        assert plan.path == "graph"
        hits += len(set(got.column("id").to_pylist()) & set(exact_ids(now, np.ones(len(now), bool), q, 10)))
    assert hits / 400 >= 0.95
    # a changed row is found at its new vector, never at its old one; a new row is found
    for i in (100, 139, n, n + 59):
        assert t.search(now[i], k=1, columns=["id"]).column("id").to_pylist() == [i]
    for i in (100, 139):
        rows = t.search(mat[i], k=1, columns=["id", "vector"])
        assert np.allclose(np.asarray(rows.column("vector")[0].as_py()), now[rows.column("id")[0].as_py()])
    # nothing changed since: a second refresh leaves it as it is
    assert refresh_index(t)["graph"] == {"action": "fresh"}
    # a new process reads the updated graph and its label map from disk
    CACHE.clear()
    got, plan = store.table("g").search(now[n + 1], k=1, explain=True)
    assert plan.path == "graph" and got.column("id").to_pylist() == [n + 1]
