"""Unfiltered kNN of a served version runs on an in-memory index, whatever path the
version's index policy chose for in-process searches (issue 26: one served version on
Lance's ANN path took the kNN p99 from sub-millisecond to 368 ms under 16 clients)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from embed_assets import Store, build_index
from embed_assets.index._build import record_config
from embed_assets.serve._snapshot import load
from embed_assets.store import index_config

N, DIM = 3000, 32


def _clustered(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, DIM)).astype(np.float32)
    return (centers[rng.integers(0, 30, N)] + 0.3 * rng.normal(size=(N, DIM))).astype(np.float32)


def _table(m: np.ndarray) -> pa.Table:
    return pa.table({"id": [f"k{i}" for i in range(N)], "grp": [i % 4 for i in range(N)],
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), DIM)})


def _lance_chosen(store: Store, name: str) -> int:
    """A version whose recorded policy is Lance's own ANN search (what build_index records
    when Lance's path timed faster than the probe): the probe's settings taken out."""
    t = store.table(name)
    build_index(t, recall=0.9, force_ann=True, graph=False, num_partitions=16, num_sub_vectors=8)
    cfg = index_config(t.refresh().dataset())
    assert cfg is not None and cfg["kind"] == "ann"
    cfg["params"] = {k: v for k, v in cfg["params"].items() if not k.startswith(("probe_", "graph_"))}
    cfg["params"].setdefault("nprobes", 4)
    return record_config(t, cfg)


def test_a_version_whose_policy_chose_lance_is_served_from_an_in_memory_probe(tmp_path):
    store = Store(tmp_path / "s")
    m = _clustered(0)
    store.write("t", _table(m), key="id")
    v = _lance_chosen(store, "t")
    t = store.table("t")
    _, plan = t.search(m[0], k=10, version=v, explain=True)
    assert plan.path == "lance" and plan.ann  # what the old server answered every kNN with

    snap = load(store, "t", v)
    assert snap.knn_path == "server-probe" and snap.probe is not None and snap.probe_nprobes >= 1
    assert snap.probe_recall is not None and snap.probe_recall >= 0.9

    # the answers: the store's shape (key, columns, distance, rank) and near-exact rows
    rng = np.random.default_rng(1)
    hits = 0
    for i in rng.integers(0, N, 40):
        got = snap.search(m[i], 10, None, ["grp"], False)
        assert got.column_names == ["id", "grp", "distance", "rank"]
        assert got.column("rank").to_pylist() == list(range(1, 11))
        exact = t.search(m[i], k=10, version=v, use_index=False, columns=["id", "grp"])
        hits += len(set(got.column("id").to_pylist()) & set(exact.column("id").to_pylist()))
        d = got.column("distance").to_numpy()
        assert np.all(np.diff(d) >= -1e-6)
        assert np.allclose(d[0], exact.column("distance").to_numpy()[0], atol=1e-4)
    assert hits / 400 >= 0.9
    # a filtered search still goes through the store (its filtered paths are exact)
    f = snap.search(m[0], 5, "grp = 1", ["grp"], False)
    assert set(f.column("grp").to_pylist()) == {1}


def test_an_in_memory_path_the_policy_chose_is_kept_and_an_unindexed_version_stays_exact(tmp_path):
    store = Store(tmp_path / "s")
    m = _clustered(2)
    store.write("t", _table(m), key="id")
    plain = load(store, "t", store.table("t").version)
    assert plain.knn_path == "exact" and plain.probe is None
    rep = build_index(store.table("t"), recall=0.9, force_ann=True, graph=False, num_partitions=16,
                      num_sub_vectors=8)
    snap = load(store, "t", rep.version)
    if "probe_nprobes" in rep.params:  # the policy's own probe, its recorded settings
        assert snap.knn_path == "probe" and snap.probe_nprobes == rep.params["probe_nprobes"]
        for i in (0, 7, 99):  # the answers the store's own search gives
            want = store.table("t").search(m[i], k=10, version=rep.version, columns=["id", "grp"])
            got = snap.search(m[i], 10, None, ["grp"], False)
            assert got.column("id").to_pylist() == want.column("id").to_pylist()
            assert np.allclose(got.column("distance").to_numpy(), want.column("distance").to_numpy(),
                               atol=1e-5)
    else:
        assert snap.knn_path == "server-probe"


def test_a_server_process_runs_its_kernels_on_one_thread():
    """torch's int8 scan (the probe's pre-scan) with a thread per core took a kNN from
    0.37 to 7.5 ms p50 on 2 busy cores; a server process sets one thread, on the thread
    that answers requests (issue 26)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import torch; from embed_assets.serve._server import _one_blas_thread; "
            "_one_blas_thread(); import threadpoolctl; "
            "print(torch.get_num_threads(), max([i['num_threads'] for i in "
            "threadpoolctl.threadpool_info() if i['user_api'] == 'blas'] or [1]))")
    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OPENBLAS_NUM_THREADS")}
    env["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env=env, check=True)
    assert out.stdout.split() == ["1", "1"], out.stdout


def test_a_batched_probe_scan_answers_as_one_query_at_a_time():
    from embed_assets.kernels import IvfProbe, normalize_rows

    m = normalize_rows(_clustered(3)[:2000])
    cents = m[np.random.default_rng(0).choice(len(m), 8, replace=False)]
    qs = normalize_rows(_clustered(4)[:20])
    for rank in (0, 16):  # a full-precision scan, and a projected int8/float pre-scan
        probe = IvfProbe.build(m, cents, "cosine", rank=rank, candidates=200)
        one = [probe.search(q, 10, 8) for q in qs]
        many = probe.search_batch(qs, 10, 8)
        same = sum(len(set(a[0]) & set(b[0])) for a, b in zip(one, many, strict=True))
        if rank == 0:
            assert all(np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1], atol=1e-6)
                       for a, b in zip(one, many, strict=True))
        else:  # the int8 pre-scan quantises the batch on one scale: near-identical shortlists
            assert same >= 0.97 * 10 * len(qs)
        # fewer partitions than a quarter: one search per query, the same answers
        few = probe.search_batch(qs, 10, 1)
        assert all(np.array_equal(a[0], probe.search(q, 10, 1)[0]) for a, q in zip(few, qs, strict=True))


def test_concurrent_knn_requests_are_answered_in_one_batch_each_with_its_own_rows(tmp_path):
    """The server's batcher: requests ready together share one scan; each answer is the
    one its own query gets alone, k and columns its own; a zero vector is still refused."""
    import asyncio
    import json

    from embed_assets.serve._app import App, ServeConfig
    from embed_assets.serve._state import TableSpec

    store = Store(tmp_path / "s")
    m = _clustered(5)
    store.write("t", _table(m), key="id")
    v = _lance_chosen(store, "t")
    store.table("t").retag("prod", v)
    app = App(ServeConfig(store=store.uri, tables=[TableSpec("t")], poll_interval=0, access_log=False))
    app._load_all()
    snap = app.tables["t"].current
    assert snap is not None and snap.probe is not None
    sizes: list[int] = []
    real = snap.probe.search_batch
    snap.probe.search_batch = lambda qs, k, n: (sizes.append(len(qs)), real(qs, k, n))[1]
    snap.probe_nprobes = max(snap.probe_nprobes, 4)  # a full scan: the batched GEMM path

    async def call(doc: dict) -> tuple[int, dict]:
        body = json.dumps(doc).encode()
        out: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict) -> None:
            out.append(msg)

        scope = {"type": "http", "method": "POST", "path": "/v1/tables/t/search", "headers": []}
        await app(scope, receive, send)
        return out[0]["status"], json.loads(out[1]["body"])

    async def main() -> list[tuple[int, dict]]:
        docs = [{"vector": m[i].tolist(), "k": 3 + i % 4, "columns": ["grp"]} for i in range(12)]
        docs.append({"vector": [0.0] * DIM})
        return await asyncio.gather(*(call(d) for d in docs))

    got = asyncio.run(main())
    assert sizes == [12]  # one scan for the twelve valid queries
    text = app.metrics.render({}, 0)
    assert "embed_assets_knn_batches_total 1\n" in text
    assert "embed_assets_knn_batched_queries_total 12\n" in text
    for i, (status, doc) in enumerate(got[:12]):
        alone = snap.probe.search(m[i], 3 + i % 4, snap.probe_nprobes)[0]
        assert status == 200 and doc["version"] == v
        assert [r["id"] for r in doc["rows"]] == [f"k{j}" for j in alone]
        assert [r["rank"] for r in doc["rows"]] == list(range(1, 4 + i % 4))
    status, doc = got[12]
    assert status == 400 and "all zeros" in doc["error"]["message"]
