"""Search that is never silently wrong (issue 29): pinned index builds, the exact identity
of what a graph indexes, verified graph files, and every plan degrading to a correct one.

Each test checks answers against an exact numpy scan of the version searched
(:func:`check_answers`): every returned row is a row of that version, its distance is
its true distance, and recall meets the target.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Store, ValidationError, build_index, freshness, refresh_index
from embed_assets.index import _build
from embed_assets.index._refresh import refresh_graph
from embed_assets.store import CACHE, index_config
from embed_assets.store.graph import fingerprint, forget_unusable

from .test_index import clustered
from .test_s3 import bucket, s3  # noqa: F401 - the moto S3 server fixtures

DIM = 32


def vec(m: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(m).reshape(-1)), m.shape[1])


def rows(ids: np.ndarray, mat: np.ndarray, **extra: object) -> pa.Table:
    return pa.table({"id": np.asarray(ids, np.int64), **extra, "vector": vec(mat)})


def check_answers(t, queries: np.ndarray, k: int = 10, version=None, target: float = 0.9,
                  where_mask=None, **kw) -> tuple[float, list]:
    """Search each query at ``version`` and compare with an exact scan of that version's
    rows (restricted by ``where_mask(table) -> bool array`` when given). Asserts 0 rows
    not in the version, every distance true, recall >= ``target``; returns (recall, plans)."""
    truth_rows = t.read(version, columns=["id", "vector", *(["tenant"] if "tenant" in
                                                                t.dataset(version).schema.names else [])])
    ids = np.asarray(truth_rows.column("id").to_pylist())
    mat = np.stack(truth_rows.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    keep = where_mask(truth_rows) if where_mask is not None else np.ones(len(ids), bool)
    by_id = {int(i): r for r, i in enumerate(ids)}
    hits, total, plans = 0, 0, []
    for q in queries:
        got, plan = t.search(q, k=k, version=version, explain=True, columns=["id"], **kw)
        plans.append(plan)
        qn = q / np.linalg.norm(q)
        dist = 1 - unit @ qn
        dist[~keep] = np.inf
        want = ids[np.argsort(dist, kind="stable")[:min(k, int(keep.sum()))]]
        for gid, gd in zip(got.column("id").to_pylist(), got.column("distance").to_pylist(),
                           strict=True):
            assert gid in by_id, f"row {gid} is not a row of version {version} ({plan})"
            r = by_id[gid]
            assert keep[r], f"row {gid} is outside the filter ({plan})"
            assert abs(gd - dist[r]) < 1e-4, f"row {gid}: distance {gd} != {dist[r]} ({plan})"
        hits += len(set(got.column("id").to_pylist()) & set(want.tolist()))
        total += len(want)
    recall = hits / max(total, 1)
    assert recall >= target, f"recall {recall:.3f} < {target} ({plans[0]})"
    return recall, plans


@pytest.fixture
def base(tmp_path):
    store = Store(str(tmp_path))
    n = 6000
    mat = clustered(n, dim=DIM, clusters=50)
    store.write("g", rows(np.arange(n), mat), key="id")
    return store, mat


# -- deliverable 1: pinned builds -------------------------------------------------------
@pytest.mark.parametrize("stage", ["read", "trained", "tuned"])
@pytest.mark.parametrize("graph", [True, False])
def test_a_write_during_build_index_never_serves_old_rows(base, monkeypatch, stage, graph):
    """Defect 1: the graph was tuned on the rows read first and recorded under the
    fingerprint of the latest version (recall 0.16, distances wrong, freshness() "fresh");
    with graph=False the tuned probe was cached under the new version (recall 0.11)."""
    store, _mat = base
    moved = clustered(600, dim=DIM, clusters=50, seed=77)

    def write_now(at: str) -> None:
        if at == stage:
            store.write("g", rows(np.arange(600) * 4, moved), key="id")  # an upsert

    monkeypatch.setattr(_build, "BUILD_HOOK", write_now)
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=graph)
    monkeypatch.setattr(_build, "BUILD_HOOK", None)
    assert rep.kind == "ann" and rep.moved_to == rep.version and rep.built_from < rep.version
    assert "moved on during the build" in rep.reason
    t = store.table("g")
    queries = np.concatenate([moved[:30], clustered(30, dim=DIM, clusters=50, seed=3)])
    _, plans = check_answers(t, queries)
    assert all(p.path != "graph" for p in plans)
    if graph and "graph_ef" in rep.params:
        assert freshness(t)["graph"]["fresh"] is False
        # the graph still serves the version it was built from, exactly
        _, plans = check_answers(t, queries, version=rep.built_from)
    CACHE.clear()  # a fresh process
    check_answers(store.table("g"), queries)
    # refresh_index folds the write in; the graph then serves the latest rows
    refresh_index(store.table("g"))
    _, plans = check_answers(store.table("g"), queries)
    if graph and "graph_ef" in rep.params:
        assert all(p.path == "graph" for p in plans)


def test_a_build_with_no_write_records_where_it_was_built(base):
    store, _ = base
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert rep.moved_to is None and rep.built_from is not None
    assert rep.params["graph_version"] == rep.built_from
    assert fingerprint(store.table("g").dataset(rep.version)) == rep.params["graph_fingerprint"]


# -- deliverable 2: exact identity and verified files -----------------------------------
def test_two_histories_deleting_different_rows_never_share_a_graph(base):
    """Defect 2: the fingerprint hashed repr(DeletionFile), which says how many rows were
    deleted, not which: two histories deleting 3 different rows shared one graph file
    (recall 0.73, 67 of 300 distances wrong)."""
    store, mat = base
    t = store.table("g")
    build_index(t, recall=0.95, force_ann=True, graph=True)
    indexed = t.version
    ds = t.dataset()
    ds.delete("id IN (10, 20, 30)")
    refresh_index(store.table("g"))  # the graph of the first history
    first = store.table("g").version
    store.table("g").rollback(indexed)
    store.table("g").dataset().delete("id IN (11, 21, 31)")
    t = store.table("g")
    second = t.version
    assert fingerprint(t.dataset(first)) != fingerprint(t.dataset(second))
    queries = mat[[10, 11, 20, 21, 30, 31, 500, 900]]
    for v in (first, second):
        check_answers(t, queries, version=v)


def _graph_files(root: Path) -> list[Path]:
    return sorted((root / ".embed_assets" / "graphs").rglob("*.hnsw"))


def _map_files(root: Path) -> list[Path]:
    return sorted((root / ".embed_assets" / "graphs").rglob("*.map.npy"))


def _refreshed(store, mat):
    """A graph with a label map: built, then refreshed over an upsert."""
    build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    store.write("g", rows(np.arange(100, 140), clustered(40, dim=DIM, clusters=50, seed=5)),
                key="id")
    out = refresh_index(store.table("g"))
    assert out["graph"]["action"] == "updated"
    return store.table("g")


@pytest.mark.parametrize("damage", ["missing-map", "rotated-map", "planted-map", "truncated-map",
                                    "missing-graph", "truncated-graph", "planted-graph"])
def test_a_damaged_graph_file_is_never_used(base, tmp_path, damage):
    """Defect 4: a planted or rotated label map silently shifted every answer, and a graph
    whose map was missing was read with labels taken as row offsets."""
    store, mat = base
    t = _refreshed(store, mat)
    queries = clustered(30, dim=DIM, clusters=50, seed=21)
    _, plans = check_answers(t, queries)
    assert plans[0].path == "graph"
    (mp,), (gp,) = _map_files(tmp_path), _graph_files(tmp_path)
    labels = np.load(mp)
    if damage == "missing-map":
        mp.unlink()
    elif damage == "rotated-map":
        np.save(mp, np.roll(labels, 1))
    elif damage == "planted-map":
        np.save(mp, np.arange(len(labels), dtype=np.int64))
    elif damage == "truncated-map":
        mp.write_bytes(mp.read_bytes()[:-64])
    elif damage == "missing-graph":
        gp.unlink()
    elif damage == "truncated-graph":
        gp.write_bytes(gp.read_bytes()[:-4096])
    elif damage == "planted-graph":
        other = Store(str(tmp_path / "other"))
        other.write("g", rows(np.arange(6000), mat[::-1].copy()), key="id")
        build_index(other.table("g"), recall=0.95, force_ann=True, graph=True)
        shutil.copy(_graph_files(tmp_path / "other")[0], gp)
    CACHE.clear()
    forget_unusable()
    _, plans = check_answers(store.table("g"), queries)
    assert plans[0].path == "probe" and "graph unusable" in plans[0].reason, plans[0]


# -- deliverable 3: every plan degrades to a correct one --------------------------------
def _without_probe(t) -> None:
    """The config of a build that recorded no probe settings (2 of 4 builds in issue 29)."""
    cfg = index_config(t.dataset(), t.identity)
    params = {k: v for k, v in cfg["params"].items() if not k.startswith("probe_")}
    _build.record_config(t, {**cfg, "params": params})


@pytest.mark.parametrize("case", ["no-graph-file", "no-graph-file-no-probe", "unreadable-map",
                                  "no-probe-settings", "version-before-build",
                                  "cleaned-up-base-version", "old-fingerprint"])
def test_forced_fallbacks_answer_like_exact_search(base, tmp_path, case):
    """Defect 3: with the graph file absent and no probe settings recorded, every
    unfiltered search raised ``TypeError: ScannerBuilder.nearest() got an unexpected
    keyword argument 'graph_ef'``. Each fallback is forced and compared with exact."""
    store, mat = base
    before = store.table("g").version
    queries = clustered(30, dim=DIM, clusters=50, seed=8)
    version = None
    expect = {"probe", "exact"}
    if case in ("unreadable-map", "cleaned-up-base-version"):
        t = _refreshed(store, mat)
    else:
        t = store.table("g")
        build_index(t, recall=0.95, force_ann=True, graph=True)
    if case.startswith("no-graph-file"):
        for f in _graph_files(tmp_path):
            f.unlink()
        if case.endswith("no-probe"):
            _without_probe(store.table("g"))
            expect = {"exact"}
    elif case == "unreadable-map":
        _map_files(tmp_path)[0].write_bytes(b"not a numpy file")
    elif case == "no-probe-settings":
        _without_probe(store.table("g"))
        expect = {"graph"}
    elif case == "version-before-build":
        version, expect = before, {"exact"}
    elif case == "cleaned-up-base-version":
        # an upsert since the refresh; the graph's base version is cleaned up
        store.write("g", rows(np.arange(300, 320), clustered(20, dim=DIM, clusters=50, seed=6)),
                    key="id")
        store.table("g").cleanup(keep_last=1, grace=dt.timedelta(0))
        out = refresh_graph(store.table("g"))
        assert out["action"] == "stale" and "cleaned up" in out["reason"]
        expect = {"probe"}
    elif case == "old-fingerprint":
        # a config recorded by an older build: a fingerprint that counted deletions only
        cfg = index_config(store.table("g").dataset(), store.table("g").identity)
        params = dict(cfg["params"], graph_fingerprint="0" * 24)
        _build.record_config(store.table("g"), {**cfg, "params": params})
    CACHE.clear()
    forget_unusable()
    t = store.table("g")
    _, plans = check_answers(t, queries, version=version)
    assert {p.path for p in plans} <= expect, plans[0]
    # beside exact search: the same nearest row on an exact path, never a nearer one on an
    # approximate path (a distance better than exact would be a wrong distance)
    for q in queries[:5]:
        a, pa_ = t.search(q, k=1, version=version, columns=["id"], explain=True)
        b = t.search(q, k=1, version=version, columns=["id"], use_index=False)
        if pa_.path == "exact":
            assert a.column("id").to_pylist() == b.column("id").to_pylist()
        assert a.column("distance")[0].as_py() >= b.column("distance")[0].as_py() - 1e-6


# -- deliverable 4: filters parsed, not concatenated ------------------------------------
@pytest.fixture
def tenants(tmp_path):
    store = Store(str(tmp_path))
    n = 2000
    mat = clustered(n, dim=DIM, clusters=20)
    tenant = np.where(np.arange(n) % 2 == 0, "a", "b")
    store.write("p", rows(np.arange(n), mat, tenant=tenant), key="id")
    return store, mat, tenant


@pytest.mark.parametrize("where", ["1=1) OR (1=1", "id >= 0) OR (tenant = 'b'",
                                   "(1=1)) OR ((1=1", "id = 1 id = 2", "1=1 /* ", "id = ')'  OR (1=1",
                                   "tenant = 'a'; SELECT 1", "tenant = $$a$$"])
def test_where_can_never_widen_a_partition(tenants, where):
    """Defect 5: filters were joined as (where) AND (partition), and unbalanced
    parentheses passed validation: where="1=1) OR (1=1" returned tenant b's rows."""
    store, mat, _tenant = tenants
    t = store.table("p")
    try:
        got = t.search(mat[1], k=50, partition=("tenant", "a"), where=where, columns=["id", "tenant"])
    except ValidationError:
        return
    assert set(got.column("tenant").to_pylist()) <= {"a"}, where
    pytest.fail(f"{where!r} should be refused")


def test_closed_filters_still_combine_with_a_partition(tenants):
    store, mat, _tenant = tenants
    t = store.table("p")
    for where in ["id >= 0 -- every row", "(id % 3 = 0) OR (id % 5 = 0)", "id IN (1, 2, 3, 4)",
                  "tenant <> ')'"]:
        _, _plans = check_answers(t, mat[:10], k=5, partition=("tenant", "a"), where=where,
                                 target=1.0, where_mask=lambda r, w=where: _mask(r, w))
    with pytest.raises(ValidationError):
        t.search(mat[0], k=5, where="id = 1 id = 2")  # Lance would read only "id = 1"


def _mask(r: pa.Table, where: str) -> np.ndarray:
    ids = np.asarray(r.column("id").to_pylist())
    ten = np.asarray(r.column("tenant").to_pylist())
    base = ten == "a"
    if where.startswith("(id % 3"):
        return base & ((ids % 3 == 0) | (ids % 5 == 0))
    if where.startswith("id IN"):
        return base & np.isin(ids, [1, 2, 3, 4])
    return base


# -- graphs of an object store live on the store ----------------------------------------
def test_graphs_of_an_object_store_table_are_found_by_every_reader(s3, bucket, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    """Before, the graph of an S3 table lived only in the builder's ~/.cache: every other
    host read no file (and, with no probe settings, raised defect 3's TypeError)."""
    from embed_assets.store._objstore import list_objects

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "builder-cache"))
    uri = f"s3://{bucket}/stores/main"
    store = Store(uri, storage_options=s3.storage_options())
    mat = clustered(6000, dim=DIM, clusters=50)
    store.write("g", rows(np.arange(6000), mat), key="id")
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    name = rep.params["graph_files"]["graph"]["name"]
    on_store = [m["path"] for m in list_objects(uri, s3.storage_options(), ".embed_assets/graphs")]
    assert any(p.endswith(name) for p in on_store)
    # another host: an empty cache, a new process
    shutil.rmtree(tmp_path / "builder-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "reader-cache"))
    CACHE.clear()
    forget_unusable()
    reader = Store(uri, storage_options=s3.storage_options())
    queries = clustered(20, dim=DIM, clusters=50, seed=4)
    _, plans = check_answers(reader.table("g"), queries)
    assert {p.path for p in plans} == {"graph"}
    # a planted copy in the reader's cache is refetched from the store, never used
    (cached,) = (tmp_path / "reader-cache").rglob("*.hnsw")
    cached.write_bytes(b"x" * cached.stat().st_size)
    CACHE.clear()
    _, plans = check_answers(reader.table("g"), queries)
    assert {p.path for p in plans} == {"graph"}
    reader.drop("g")
    assert not list_objects(uri, s3.storage_options(), ".embed_assets/graphs")


# -- the batch API ----------------------------------------------------------------------
def test_search_batch_answers_like_one_search_per_query(base, tenants):
    """search_batch: one plan and one call for many queries, the same rows as search()
    per query on every path (graph, probe, exact, filtered, Lance)."""
    store, _mat = base
    t = store.table("g")
    qs = clustered(12, dim=DIM, clusters=50, seed=33)
    build_index(t, recall=0.95, force_ann=True, graph=True)
    t = store.table("g")
    for kw in ({}, {"use_index": False}, {"where": "id % 2 = 0"}, {"where": "id < 5000"},
               {"version": 1}):
        got, plan = t.search_batch(qs, k=7, explain=True, columns=["id"], **kw)
        assert got.column_names == ["id", "distance", "rank", "query"]
        assert got.column("query").to_pylist() == np.repeat(np.arange(12), 7).tolist()
        assert got.column("rank").to_pylist() == np.tile(np.arange(1, 8), 12).tolist()
        for i, q in enumerate(qs):
            one, p1 = t.search(q, k=7, explain=True, columns=["id"], **kw)
            assert p1.path == plan.path
            mine = got.filter(pa.compute.equal(got.column("query"), i))
            assert mine.column("id").to_pylist() == one.column("id").to_pylist(), (kw, plan)
            assert np.allclose(mine.column("distance").to_numpy(), one.column("distance").to_numpy(),
                               atol=1e-5)
    assert t.search_batch(qs, k=3, threads=2).num_rows == 36
    _, plan = t.search_batch(qs, k=3, explain=True)
    assert plan.path == "graph"
    # texts need an embedder; bad shapes are refused in user terms
    with pytest.raises(ValidationError, match="matrix"):
        t.search_batch(qs[0], k=3)
    with pytest.raises(ValidationError, match="dimension"):
        t.search_batch(np.ones((2, DIM + 1), np.float32), k=3)
    with pytest.raises(ValidationError, match="embedder"):
        t.search_batch(["a text"], k=3)
    store2, pmat, _ = tenants
    got = store2.table("p").search_batch(pmat[:3], k=4, partition=("tenant", "a"),
                                         columns=["id", "tenant"])
    assert set(got.column("tenant").to_pylist()) == {"a"} and got.num_rows == 12


def test_search_sees_every_commit_made_through_another_handle(tmp_path):
    """search() skips asking Lance for the latest version while the table's _versions
    folder is unchanged (a stat instead of a listing); a commit by any other handle or
    process changes the folder, quickly after the last one or long after."""
    import time

    mat = clustered(200, dim=DIM, clusters=10)
    Store(str(tmp_path)).write("w", rows(np.arange(200), mat), key="id")
    reader = Store(str(tmp_path)).table("w")
    writer = Store(str(tmp_path))
    fresh = clustered(12, dim=DIM, clusters=10, seed=9)
    for i in range(12):
        reader.search(mat[0], k=1)
        if i % 3 == 0:
            time.sleep(0.08)  # past the settle time: the stat alone decides
            reader.search(mat[0], k=1)
            assert reader._watch is not None and reader._watch.unchanged()
        writer.write("w", rows([1000 + i], fresh[i:i + 1]), key="id", mode="append")
        got = reader.search(fresh[i], k=1, columns=["id"]).column("id").to_pylist()
        assert got == [1000 + i], i


def test_a_graph_is_saved_and_loaded_without_a_second_copy_in_memory(base, monkeypatch):
    """Saving a graph read hnswlib's file back as one bytes object, and loading it read
    the file whole to hash it before hnswlib read it again: two copies of the graph at
    the build's and the load's peak (1.6 GB more at 1M rows, against the floors of 2.5x
    and 1.5x the matrix). Both now hash the file as a stream."""
    store, mat = base
    real = Path.read_bytes

    def no_graph_bytes(self: Path) -> bytes:
        assert not self.name.endswith(".hnsw"), f"{self.name} read whole into memory"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", no_graph_bytes)
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert "graph_files" in rep.params
    CACHE.clear()
    forget_unusable()
    _, plans = check_answers(store.table("g"), mat[:20])
    assert {p.path for p in plans} == {"graph"}


def test_a_graph_build_never_copies_the_whole_matrix(base, monkeypatch):
    """build_graph indexed ``mat[rows]``: a copy of the whole matrix at the build's peak
    (build_index at 250k rows peaked at 4.2x the matrix, floor 2.5x). Rows now go to
    hnswlib in blocks, and the graph answers as before."""
    import hnswlib

    from embed_assets.store import graph as graph_mod

    store, mat = base
    monkeypatch.setattr(graph_mod, "ADD_BLOCK", 1000, raising=False)
    sizes: list[int] = []
    real = hnswlib.Index.add_items

    def spy(self, data, *a, **k):
        sizes.append(len(data))
        return real(self, data, *a, **k)

    monkeypatch.setattr(hnswlib.Index, "add_items", spy)
    build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert sizes and max(sizes) <= 1000, sizes
    CACHE.clear()
    forget_unusable()
    _, plans = check_answers(store.table("g"), mat[:20])
    assert {p.path for p in plans} == {"graph"}


def test_the_tuned_probe_is_let_go_before_the_graph_is_built(base, monkeypatch):
    """The tuned IVF probe (its own copy of the rows) stayed alive while the graph was
    built beside the cached matrix: three copies of the rows at the build's peak (3.3x
    the matrix at 250k rows, floor 2.5x). Searches stay correct on every path after."""
    import gc

    from embed_assets.index import _graph_tuning
    from embed_assets.kernels import IvfProbe

    store, mat = base
    alive: list[int] = []
    real = _graph_tuning.build_graph

    def spy(*a, **k):
        gc.collect()
        alive.append(sum(isinstance(o, IvfProbe) for o in gc.get_objects()))
        return real(*a, **k)

    monkeypatch.setattr(_graph_tuning, "build_graph", spy)
    CACHE.clear()
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
    assert alive == [0], alive
    assert "probe_nprobes" in rep.params
    CACHE.clear()
    forget_unusable()
    check_answers(store.table("g"), mat[:10])
    check_answers(store.table("g"), mat[:10], use_index=True, nprobes=None)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_the_matrix_is_read_batch_by_batch_into_one_array(tmp_path, monkeypatch, metric):
    """load_matrix read the whole vector column as one table, combined its chunks, cast
    and normalised it: up to four copies of the rows at once (build_index at 250k rows
    peaked at 4.2x the matrix; a 1M load at 3.9x, floor 1.5x). It now fills one array
    batch by batch, with the same values."""
    import lance

    from embed_assets.store._cache import load_matrix

    store = Store(str(tmp_path))
    m = clustered(3000, dim=DIM, clusters=20) * 3.0
    store.write("m", rows(np.arange(3000), m), key="id")
    store.write("m", rows(np.arange(3000, 3500), m[:500]), key="id", mode="append")
    ds = store.table("m").dataset()

    def whole_column(self, *a, **k):
        raise AssertionError("the vector column was read whole")

    monkeypatch.setattr(lance.LanceDataset, "to_table", whole_column)
    got = load_matrix(ds, metric)
    want = np.concatenate([m, m[:500]]).astype(np.float32)
    if metric == "cosine":
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_a_build_tunes_its_probe_on_the_rows_it_read_without_a_copy(base, monkeypatch):
    """build_index held the version's matrix and the probe's partition-ordered copy of it
    at once, beside what Lance's training left (3.9x the matrix at 250k rows, floor
    2.5x). The rows are now read in partition order and the tuned probe scans them in
    place; it is the probe a search would build from the version's matrix."""
    from embed_assets.kernels import IvfProbe
    from embed_assets.store import centroids, load_matrix

    store, _mat = base
    seen: dict = {}
    real = _build.tune_probe

    def spy(cents, truth, metric, recall, *a, **k):
        best, top = real(cents, truth, metric, recall, *a, **k)
        seen.update(mat=truth.mat, best=best)
        return best, top

    monkeypatch.setattr(_build, "tune_probe", spy)
    rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=False)
    probe = seen["best"][3]
    assert np.shares_memory(probe.block, seen["mat"])
    ds = store.table("g").dataset(rep.version)
    ref = IvfProbe.build(load_matrix(ds, "cosine"), centroids(ds), "cosine", rank=0)
    assert np.array_equal(probe.order, ref.order) and np.array_equal(probe.bounds, ref.bounds)
    assert np.array_equal(probe.block, ref.block)
    CACHE.clear()
    check_answers(store.table("g"), clustered(20, dim=DIM, clusters=50, seed=5))


def test_a_partitioned_read_is_the_probe_of_the_version_matrix(base):
    """load_partitioned (two reads of the column, one copy of the rows) gives the layout
    IvfProbe.build gives over the version's matrix, for every metric."""
    from embed_assets.kernels import IvfProbe
    from embed_assets.store import load_matrix, load_partitioned

    store, _mat = base
    ds = store.table("g").dataset()
    cents = clustered(40, dim=DIM, clusters=40, seed=9)
    for metric in ("cosine", "l2", "dot"):
        block, order, bounds = load_partitioned(ds, metric, cents)
        ref = IvfProbe.build(load_matrix(ds, metric), cents, metric, rank=0)
        assert np.array_equal(order, ref.order) and np.array_equal(bounds, ref.bounds)
        assert np.allclose(block, ref.block)


def test_a_large_default_build_skips_the_graph_where_the_probe_is_fast(base, monkeypatch):
    """At 1M rows a default build spent 130 of its 184 s on a graph that answered no
    faster than the tuned probe (0.36 vs 0.29 ms): from GRAPH_OPTIONAL_ROWS a default
    build tries the graph only where the tuned path is slower than 0.5 ms a query;
    ``graph=True`` still builds it, and below the bound the default still tries it."""
    from embed_assets.index import _graph_tuning

    store, mat = base
    tried: list[int] = []
    real = _build.tune_graph

    def spy(*a, **k):
        tried.append(1)
        return real(*a, **k)

    monkeypatch.setattr(_build, "tune_graph", spy)
    monkeypatch.setattr(_build, "GRAPH_OPTIONAL_ROWS", 1000)
    rep = build_index(store.table("g"), recall=0.95, force_ann=True)
    assert tried == [] and "graph_ef" not in rep.params
    assert rep.p50_ms is not None and rep.p50_ms <= _build.GOOD_ENOUGH_MS
    CACHE.clear()
    _, plans = check_answers(store.table("g"), mat[:20])
    assert {p.path for p in plans} == {"probe"}
    if _graph_tuning.available():
        rep = build_index(store.table("g"), recall=0.95, force_ann=True, graph=True)
        assert tried == [1] and "graph_ef" in rep.params
        monkeypatch.setattr(_build, "GRAPH_OPTIONAL_ROWS", 10**9)
        build_index(store.table("g"), recall=0.95, force_ann=True)
        assert tried == [1, 1]
