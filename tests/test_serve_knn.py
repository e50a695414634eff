"""Unfiltered kNN of a served version runs on an in-memory index, whatever path the
version's index policy chose for in-process searches (issue 26: one served version on
Lance's ANN path took the kNN p99 from sub-millisecond to 368 ms under 16 clients)."""

from __future__ import annotations

import json
import time

import numpy as np
import pyarrow as pa

from embed_assets import Client, Store, build_index
from embed_assets.index._build import record_config
from embed_assets.serve._snapshot import load
from embed_assets.store import index_config

N, DIM = 3000, 32


def _clustered(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(30, DIM)).astype(np.float32)
    return (centers[rng.integers(0, 30, N)] + 0.3 * rng.normal(size=(N, DIM))).astype(np.float32)


def _table(m: np.ndarray) -> pa.Table:
    n = len(m)
    return pa.table({"id": [f"k{i}" for i in range(n)], "grp": [i % 4 for i in range(n)],
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

    store = Store(tmp_path / "s")
    m = _clustered(5)
    store.write("t", _table(m), key="id")
    v = _lance_chosen(store, "t")
    app, snap = _app_serving(store, v)
    assert snap is not None and snap.probe is not None
    sizes: list[int] = []
    real = snap.probe.search_batch
    snap.probe.search_batch = lambda qs, k, n: (sizes.append(len(qs)), real(qs, k, n))[1]
    snap.probe_nprobes = max(snap.probe_nprobes, 4)  # a full scan: the batched GEMM path

    async def call(doc: dict) -> tuple[int, dict]:
        return await _post_search(app, doc)

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


# -- the HNSW graph on the served path (issue 26: kNN p99 at 63k under 16 clients) ---------------
def _graph_version(store: Store, name: str, m: np.ndarray, mode: str = "upsert") -> int:
    store.write(name, _table(m), key="id", mode=mode)
    rep = build_index(store.table(name), recall=0.9, force_ann=True, graph=True, num_partitions=16,
                      num_sub_vectors=8)
    assert "graph_ef" in rep.params
    return rep.version


def test_a_graph_version_is_served_from_the_stores_own_verified_graph(tmp_path):
    """The snapshot holds the graph the store's searches load (the same object, from
    graph.load: files and row identity checked), and answers as the store does."""
    from embed_assets.store import CACHE

    store = Store(tmp_path / "s")
    m = _clustered(6)
    v = _graph_version(store, "t", m)
    snap = load(store, "t", v)
    assert snap.knn_path == "graph" and snap.graph is not None and snap.probe is None
    t = store.table("t")
    g, why = t.unfiltered_graph(v)
    assert g is snap.graph and why == ""
    for i in (0, 5, 77, 2999):
        want = t.search(m[i], k=10, version=v, columns=["id", "grp"])
        got = snap.search(m[i], 10, None, ["grp"], False)
        assert got.column_names == want.column_names
        assert got.column("id").to_pylist() == want.column("id").to_pylist()
        assert np.allclose(got.column("distance").to_numpy(), want.column("distance").to_numpy(),
                           atol=1e-5)
    # many queries in one call: each row the same as alone
    many = snap.knn_batch(m[:7], 10)
    assert [list(r) for r, _ in many] == [list(snap.graph.search(q, 10)[0]) for q in m[:7]]

    # a graph whose file is not the one recorded is never served: the probe answers
    (f,) = (tmp_path / "s" / ".embed_assets" / "graphs").rglob("*.hnsw")
    f.write_bytes(f.read_bytes()[:-4096])
    CACHE.clear()
    from embed_assets.store.graph import forget_unusable

    forget_unusable()
    bad = load(store, "t", v)
    assert bad.graph is None and bad.knn_path != "graph"


def test_the_graph_of_a_tagged_version_survives_the_next_build(tmp_path):
    """A build deleted every older graph: a server rolled back to the tagged version then
    served it through the probe (28 ms kNN p99 at 63k rows against ~1 ms on a graph).
    The graphs of versions a tag names are kept; an untagged version's still go."""
    store = Store(tmp_path / "s")
    m = _clustered(7)
    a = _graph_version(store, "t", m)
    store.table("t").retag("prod", a)
    b = _graph_version(store, "t", -m, mode="overwrite")
    t = store.table("t")
    _, plan = t.search(m[0], k=10, version=a, explain=True)
    assert plan.path == "graph", plan
    assert load(store, "t", a).graph is not None and load(store, "t", b).graph is not None
    # prod moves to B; A's graph goes with the next build, as before
    t.retag("prod", b)
    _graph_version(store, "t", m * 2, mode="overwrite")
    from embed_assets.store import CACHE
    from embed_assets.store.graph import forget_unusable

    CACHE.clear()
    forget_unusable()
    _, plan = store.table("t").search(m[0], k=10, version=a, explain=True)
    assert plan.path != "graph" and "missing" in plan.reason
    _, plan = store.table("t").search(m[0], k=10, version=b, explain=True)
    assert plan.path == "graph", plan


def test_concurrent_knn_requests_on_a_graph_version_are_one_knn_query(tmp_path):
    """Before: a graph version's kNN requests went one at a time through the store's
    search (planning, a row gather, an Arrow table each) on the event loop; now the
    requests ready together are one hnswlib call, each answer its own rows."""
    import asyncio

    store = Store(tmp_path / "s")
    m = _clustered(8)
    v = _graph_version(store, "t", m)
    app, snap = _app_serving(store, v)
    assert snap is not None and snap.graph is not None
    sizes: list[int] = []
    real = snap.graph.index.knn_query

    class Spy:  # hnswlib's Index cannot take attributes: wrap it
        def __getattr__(self, name: str):
            return getattr(real.__self__, name)

        def knn_query(self, qs, k=1, num_threads=-1, filter=None):
            sizes.append(len(np.atleast_2d(qs)))
            return real(qs, k=k, num_threads=num_threads)

    snap.graph.index = Spy()

    async def call(doc: dict) -> tuple[int, dict]:
        return await _post_search(app, doc)

    async def main() -> list[tuple[int, dict]]:
        docs: list[dict] = [{"vector": m[i].tolist(), "k": 3 + i % 4, "columns": ["grp"]}
                            for i in range(12)]
        docs.append({"key": "k5", "k": 4})  # more like this, in the same batch
        docs.append({"vector": [0.0] * DIM})
        return await asyncio.gather(*(call(d) for d in docs))

    got = asyncio.run(main())
    assert sizes == [13]  # one knn_query for the thirteen valid queries
    t = store.table("t")
    for i, (status, doc) in enumerate(got[:12]):
        want = t.search(m[i], k=3 + i % 4, version=v, columns=["id"]).column("id").to_pylist()
        assert status == 200 and doc["version"] == v
        assert [r["id"] for r in doc["rows"]] == want
        assert [r["rank"] for r in doc["rows"]] == list(range(1, 4 + i % 4))
    status, doc = got[12]
    want = t.search(m[5], k=5, version=v, columns=["id"]).column("id").to_pylist()
    assert status == 200 and [r["id"] for r in doc["rows"]] == [x for x in want if x != "k5"][:4]
    status, doc = got[13]
    assert status == 400 and "all zeros" in doc["error"]["message"]


# -- kNN over the Redis protocol (EA.KNN, EA.KNNKEY) -----------------------------------------------
def _pairs(reply: list) -> tuple[int, list, list[float]]:
    assert isinstance(reply, list), reply
    return reply[0], reply[1::2], [float(d) for d in reply[2::2]]


def test_resp_knn_names_its_version_answers_as_the_store_and_refuses_bad_queries(tmp_path):
    from .test_serve import TOKEN, Resp, Server, free_port

    store = Store(tmp_path / "s")
    m = _clustered(9)
    a = _graph_version(store, "t", m)
    store.table("t").retag("prod", a)
    b = _graph_version(store, "t", -m, mode="overwrite")
    plain = store.write("flat", _table(m[:200]), key="id").version  # no index: exact
    store.table("flat").retag("prod", plain)
    rport = free_port()
    srv = Server(store.uri, ["t@prod", "flat@prod"], tmp_path,
                 extra=["--resp-port", str(rport), "--max-k", "50"])
    try:
        c = Resp(rport)
        no = c.call("EA.KNN", "t", "10", m[0].tobytes())
        assert isinstance(no, RuntimeError) and "NOAUTH" in str(no)
        assert c.call("AUTH", TOKEN) == "OK"
        t = store.table("t")
        for i in (0, 11, 2999):
            version, keys, dist = _pairs(c.call("EA.KNN", "t", "10", m[i].astype("<f4").tobytes()))
            want = t.search(m[i], k=10, version=a, columns=["id"])
            assert version == a and [k.decode() for k in keys] == want.column("id").to_pylist()
            assert np.allclose(dist, want.column("distance").to_numpy(), atol=1e-5)
        version, keys, _ = _pairs(c.call("EA.KNNKEY", "t", "5", "k11"))
        want = t.search(m[11], k=6, version=a, columns=["id"]).column("id").to_pylist()
        assert version == a and [k.decode() for k in keys] == [x for x in want if x != "k11"][:5]
        # a version without a graph or probe (exact) answers the same way, inline
        version, keys, dist = _pairs(c.call("EA.KNN", "flat", "3", m[4].tobytes()))
        assert version == plain and keys[0] == b"k4" and dist[0] < 1e-5 and len(keys) == 3
        # commands pipelined behind a kNN are answered after it, in order
        c.s.sendall(b"".join(_cmd(*x) for x in [("EA.KNN", "t", "2", m[1].tobytes()),
                                                 ("EA.GET", "t", "k1"), ("PING",),
                                                 ("EA.KNN", "t", "1", m[2].tobytes())]))
        first, second, third, fourth = c.read(), c.read(), c.read(), c.read()
        assert first[0] == a and first[1] == b"k1" and len(first) == 5
        assert second[0] == a and np.frombuffer(second[1], "<f4").tolist() == m[1].tolist()
        assert third == "PONG" and fourth[1] == b"k2"
        bad = [(("EA.KNN", "t", "10", m[0][:-1].tobytes()), "dimension 31"),
               (("EA.KNN", "t", "10", b"\x00\x00\xc0\x7f" * DIM), "NaN"),
               (("EA.KNN", "t", "10", b"\x00" * 5), "multiple of 4"),
               (("EA.KNN", "t", "10", b"\x00" * (4 * DIM)), "all zeros"),
               (("EA.KNN", "t", "0", m[0].tobytes()), "k must be an integer from 1 to 50"),
               (("EA.KNN", "t", "1000000000", m[0].tobytes()), "from 1 to 50"),
               (("EA.KNN", "t", "ten", m[0].tobytes()), "got ten"),
               (("EA.KNN", "nope", "10", m[0].tobytes()), "not served"),
               (("EA.KNN", "t", "10"), "EA.KNN table k vector"),
               (("EA.KNNKEY", "t", "10", "no-such-key"), f"not in version {a}")]
        for cmd, words in bad:
            err = c.call(*cmd)
            assert isinstance(err, RuntimeError) and words in str(err), (cmd, err)
        assert c.call("PING") == "PONG"  # errors keep the connection
        # the tag moves: kNN answers follow, each naming the version its rows are from
        store.table("t").retag("prod", b)
        deadline = time.monotonic() + 20
        while (got := c.call("EA.KNN", "t", "10", m[0].tobytes()))[0] != b:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        want = store.table("t").search(m[0], k=10, version=b, columns=["id"]).column("id").to_pylist()
        assert [k.decode() for k in got[1::2]] == want
        text = Client(srv.url, token=TOKEN).metrics()
        assert 'embed_assets_requests_total{endpoint="resp_knn",status="200"}' in text
        assert 'endpoint="resp_knn",status="400"' in text
        assert "embed_assets_knn_batched_queries_total" in text
    finally:
        srv.stop()
    assert TOKEN not in srv.logs()


def _cmd(*args: bytes | str) -> bytes:
    bs = [x.encode() if isinstance(x, str) else x for x in args]
    return b"*%d\r\n" % len(bs) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in bs)


def test_a_resp_knn_in_flight_at_sigterm_is_answered_then_the_connection_closes(tmp_path):
    """Graceful shutdown with a kNN command half received: the listener stops accepting
    at the signal, the command is answered through the batcher once its rest arrives, then
    the connection closes and the process exits."""
    import signal
    import socket

    from .test_serve import Resp, Server, free_port

    store = Store(tmp_path / "s")
    m = _clustered(10)
    a = _graph_version(store, "t", m)
    store.table("t").retag("prod", a)
    rport = free_port()
    srv = Server(store.uri, ["t@prod"], tmp_path, token=None, extra=["--resp-port", str(rport)])
    r = Resp(rport)
    whole = _cmd("EA.KNN", "t", "3", m[5].tobytes())
    r.s.sendall(whole[:20])
    time.sleep(0.5)
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while True:  # the RESP listener closes at the signal
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        try:
            socket.create_connection(("127.0.0.1", rport), timeout=1).close()
        except ConnectionRefusedError:
            break
        time.sleep(0.05)
    assert srv.proc.poll() is None  # a command is in flight
    r.s.sendall(whole[20:])
    got = r.read()
    assert got[0] == a and b"k5" in got[1::2] and len(got) == 7
    assert r.closed()
    assert srv.proc.wait(30) in (0, -signal.SIGTERM)


async def _post_search(app, doc: dict) -> tuple[int, dict]:
    """POST ``doc`` to the app's /v1/tables/t/search in process (ASGI): (status, body)."""
    body = json.dumps(doc).encode()
    out: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict) -> None:
        out.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/tables/t/search", "headers": []}
    await app(scope, receive, send)
    return out[0]["status"], json.loads(out[1]["body"])


def _app_serving(store: Store, version: int):
    """An in-process server app with table ``t`` pinned to ``prod`` at ``version``, loaded;
    (app, its snapshot)."""
    from embed_assets.serve._app import App, ServeConfig
    from embed_assets.serve._state import TableSpec

    store.table("t").retag("prod", version)
    app = App(ServeConfig(store=store.uri, tables=[TableSpec("t")], poll_interval=0, access_log=False))
    app._load_all()
    return app, app.tables["t"].current
