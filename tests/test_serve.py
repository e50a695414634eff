"""`embed-assets serve` in a subprocess on a free loopback port: every endpoint, bad
requests, the token, tag moves under concurrent requests, rollback, a killed server
restarting on its pin, and a store on the moto S3 server."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Client, HashEmbedder, Store, ValidationError, embed_table
from embed_assets.serve import ServeError

from .s3_server import moto_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-t0ken-do-not-log"
DIM = 8
N = 300
SECTIONS = ["admin", "editors", "games"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rows(sign: float) -> pa.Table:
    rng = np.random.default_rng(0)
    mat = (sign * rng.normal(size=(N, DIM))).astype(np.float32)
    return pa.table({"id": [f"p{i:03d}" for i in range(N)],
                     "section": [SECTIONS[i % 3] for i in range(N)],
                     "size": list(range(N)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)})


def two_versions(store: Store, name: str) -> tuple[int, int]:
    """Version A (the vectors) and B (every vector negated), ``prod`` on A."""
    a = store.write(name, rows(1.0), key="id").version
    b = store.write(name, rows(-1.0), key="id", mode="upsert").version
    store.table(name).retag("prod", a)
    return a, b


class Server:
    def __init__(self, store: str, tables: list[str], tmp: Path, *, token: str | None = TOKEN,
                 extra: list[str] = (), env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tmp / f"serve-{self.port}.out"
        self.err = tmp / f"serve-{self.port}.err"
        e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        e.pop("EMBED_ASSETS_SERVE_TOKEN", None)
        if token:
            e["EMBED_ASSETS_SERVE_TOKEN"] = token
        with open(self.out, "wb") as o, open(self.err, "wb") as er:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "embed_assets.cli", "--store", store, "serve", *tables,
                 "--port", str(self.port), "--poll", "0.05", *extra], env=e, cwd=ROOT, stdout=o, stderr=er)
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.err.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready: {self.err.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)

    def logs(self) -> str:
        return self.out.read_text() + self.err.read_text()


def http(url: str, method: str = "GET", body: Any = None, *, token: str | None = TOKEN,
         raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("serve")
    store = Store(tmp / "store")
    a, b = two_versions(store, "pkgs")
    la, lb = two_versions(store, "live")
    embed_table(store, "docs", {"id": [1, 2, 3], "text": ["text editor", "web browser", "card game"]},
                key="id", text="text", embedder=HashEmbedder(dimension=16))
    store.table("docs").retag("prod")
    srv = Server(store.uri, ["pkgs", "live@prod", "docs"], tmp,
                 extra=["--text", "--max-k", "100", "--max-keys", "500", "--max-body", "65536"])
    try:
        yield {"server": srv, "store": store, "a": a, "b": b, "live": (la, lb), "tmp": tmp}
    finally:
        srv.stop()


@pytest.fixture
def client(served) -> Client:
    return Client(served["server"].url, token=TOKEN)


# -- every endpoint ----------------------------------------------------------------------------
def test_health_ready_tables_and_metrics(served, client):
    url = served["server"].url
    assert http(url + "/health", token=None)[0] == 200  # probes need no token
    st, _, body = http(url + "/ready", token=None)
    assert st == 200 and json.loads(body)["versions"]["pkgs"] == served["a"]
    tables = {t["name"]: t for t in client.tables()}
    assert tables["pkgs"]["version"] == served["a"] and tables["pkgs"]["pinned"] == "prod"
    assert tables["pkgs"]["rows"] == N and tables["pkgs"]["dimension"] == DIM
    assert tables["docs"]["text"] is True and tables["pkgs"]["text"] is False  # no model recorded
    assert client.table("pkgs")["key"] == "id"
    client.get("pkgs", ["p001"])
    text = client.metrics()
    assert 'embed_assets_requests_total{endpoint="get",status="200"}' in text
    assert f'embed_assets_served_version{{table="pkgs",pinned="prod"}} {served["a"]}' in text
    assert 'embed_assets_request_seconds_bucket{endpoint="get",le="+Inf"}' in text
    assert 'embed_assets_swaps_total{table="pkgs"} 0' in text


def test_get_in_order_with_missing_keys_as_arrow_polars_numpy_and_json(served, client):
    store = served["store"]
    want = store.table("pkgs").get(["p007", "p003"], version="prod")
    got, version = client.get("pkgs", ["p007", "nope", "p003"], columns=["section"], with_version=True)
    assert version == served["a"] == Client.version_of(got)
    assert got.column("id").to_pylist() == ["p007", "p003"]
    assert got.column("section").to_pylist() == want.column("section").to_pylist()
    assert got.column("vector").to_pylist() == want.column("vector").to_pylist()
    m = client.get("pkgs", ["p003"], output="numpy")
    assert m.shape == (1, DIM)
    assert np.array_equal(m[0], np.asarray(want.column("vector")[1].as_py(), np.float32))
    assert client.get("pkgs", ["p003"], output="polars")["id"].to_list() == ["p003"]
    st, headers, body = http(served["server"].url + "/v1/tables/pkgs/get",
                             "POST", {"keys": ["p003", "zzz"], "vectors": False, "columns": ["size"]})
    doc = json.loads(body)
    assert st == 200 and headers["x-embed-assets-version"] == str(served["a"])
    assert doc == {"table": "pkgs", "version": served["a"], "rows": [{"id": "p003", "size": 3}],
                   "missing": ["zzz"]}


def test_search_by_vector_key_text_and_filter(served, client):
    t = served["store"].table("pkgs")
    q = np.asarray(t.get(["p010"], version="prod").column("vector")[0].as_py(), np.float32)
    want = t.search(q, k=5, version="prod").column("id").to_pylist()
    got = client.search("pkgs", q, k=5)
    assert got.column("id").to_pylist() == want and got.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    # more like this: the key's own vector, the key itself left out
    mlt = client.search("pkgs", key="p010", k=4)
    assert mlt.column("id").to_pylist() == want[1:5] and mlt.column("rank").to_pylist() == [1, 2, 3, 4]
    # filtered, with columns and an operator
    f = client.search("pkgs", q, k=50, where={"section": "editors", "size": {"<": 100}},
                      columns=["section", "size"])
    assert f.num_rows == len([i for i in range(100) if i % 3 == 1])
    assert set(f.column("section").to_pylist()) == {"editors"} and max(f.column("size").to_pylist()) < 100
    assert client.search("pkgs", q, k=3, where={"section": ["admin", "games"]},
                         columns=["section"]).column("section").to_pylist() != []
    # text, with the table's own (hashing) model loaded by --text
    hit = client.search("docs", text="text editor", k=1)
    assert hit.column("id").to_pylist() == [1]
    # JSON answers carry the version too
    st, _, body = http(served["server"].url + "/v1/tables/pkgs/search", "POST",
                       {"vector": q.tolist(), "k": 2})
    assert st == 200 and json.loads(body)["version"] == served["a"] and len(json.loads(body)["rows"]) == 2


# -- bad requests --------------------------------------------------------------------------------
@pytest.mark.parametrize("path,body,status,words", [
    ("/v1/tables/nope/get", {"keys": ["a"]}, 404, "not served"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 3}, 400, "dimension 3"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 7 + [float("nan")]}, 400, "NaN"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 7 + [1e39]}, 400, "NaN or infinity"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "k": 0}, 400, "k must be"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "k": 10**9}, 400, "k must be"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "k": "5"}, 400, "k must be"),
    ("/v1/tables/pkgs/search", {"k": 5}, 400, "exactly one of"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "where": "section = 'a' OR 1=1"}, 400, "object"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "where": {"section = 'a' OR 1=1 --": "x"}},
     400, "not a column"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "where": {"size": {"; DROP": 1}}}, 400, "operator"),
    ("/v1/tables/pkgs/search", {"vector": [0.1] * 8, "where": {"size": None}}, 400, "filter value"),
    ("/v1/tables/pkgs/search", {"vector": "not base64!"}, 400, "base64"),
    ("/v1/tables/pkgs/search", {"key": "nope"}, 404, "not in version"),
    ("/v1/tables/pkgs/search", {"text": "editor"}, 400, "text queries are off"),
    ("/v1/tables/pkgs/get", {"keys": [1]}, 400, "not a str"),
    ("/v1/tables/pkgs/get", {"keys": []}, 400, "empty"),
    ("/v1/tables/pkgs/get", {"keys": ["p001"] * 501}, 400, "at most 500"),
    ("/v1/tables/pkgs/get", {"keys": ["p001"], "columns": ["nope"]}, 400, "no column"),
    ("/v1/tables/pkgs/get", {"keys": ["p001"], "vectors": "yes"}, 400, "true or false"),
    ("/v1/tables/pkgs/get", [1, 2], 400, "JSON object"),
    ("/nowhere", None, 404, "no route"),
])
def test_bad_requests_get_a_clear_4xx(served, path, body, status, words):
    method = "POST" if body is not None else "GET"
    st, _, out = http(served["server"].url + path, method, body)
    err = json.loads(out)["error"]
    assert st == status, out
    assert words in err["message"], err


def test_where_injection_in_a_value_is_only_a_value(served, client):
    q = np.ones(DIM, np.float32)
    assert client.search("pkgs", q, k=10, where={"section": "editors' OR '1'='1"}).num_rows == 0
    assert client.search("pkgs", q, k=10, where={"section": ["x') OR (1=1"]}).num_rows == 0


def test_not_json_huge_body_writes_and_tokens(served):
    url = served["server"].url
    assert http(url + "/v1/tables/pkgs/get", "POST", raw=b"{not json")[0] == 400
    st, _, out = http(url + "/v1/tables/pkgs/get", "POST", raw=b'{"keys": ["' + b"x" * 100_000 + b'"]}')
    assert st == 413 and b"at most 65536" in out
    for method in ("PUT", "DELETE", "PATCH"):
        st, _, out = http(url + "/v1/tables/pkgs/get", method, {"keys": ["p001"]})
        assert st == 405 and b"read-only" in out
    assert http(url + "/v1/tables/pkgs", "POST", {})[0] == 405
    st, h, out = http(url + "/v1/tables/pkgs/get", "POST", {"keys": ["p001"]}, token=None)
    assert st == 401 and h["www-authenticate"].startswith("Bearer") and TOKEN.encode() not in out
    st, _, out = http(url + "/v1/tables/pkgs/get", "POST", {"keys": ["p001"]}, token="badtoken-xyz")
    assert st == 401 and b"badtoken-xyz" not in out
    assert http(url + "/metrics", token=None)[0] == 401
    with pytest.raises(ServeError, match="401"):
        Client(url, token="wrong").get("pkgs", ["p001"])
    with pytest.raises(ValidationError, match="k must be"):
        Client(url, token=TOKEN).search("pkgs", np.ones(DIM), k=0)


def test_no_credential_in_logs_metrics_or_errors(served, client):
    url = served["server"].url
    http(url + f"/v1/tables/{TOKEN}/get", "POST", {"keys": ["p001"]}, token=TOKEN)
    http(url + "/v1/tables/pkgs/get", "POST", {"keys": ["p001"]}, token=TOKEN + "x")
    client.get("pkgs", ["p001"])
    assert TOKEN not in client.metrics()
    assert TOKEN not in repr(client)
    logs = served["server"].logs()
    lines = [json.loads(ln) for ln in served["server"].out.read_text().splitlines() if ln.startswith("{")]
    assert lines and {"ts", "method", "path", "status", "ms", "table", "version"} <= set(lines[-1])
    # the token only ever appears where the client itself put it in a path
    assert TOKEN not in logs.replace(f"/v1/tables/{TOKEN}/get", "")


# -- swaps -------------------------------------------------------------------------------------------
def _hammer(url: str, versions: dict[int, np.ndarray], stop: threading.Event, out: list) -> None:
    c = Client(url, token=TOKEN)
    rng = np.random.default_rng(threading.get_ident() % 1000)
    while not stop.is_set():
        keys = [f"p{i:03d}" for i in rng.integers(0, N, 5)]
        try:
            tbl, v = c.get("live", keys, with_version=True)
            got = tbl.column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
            ok = v in versions and np.array_equal(got, versions[v][[int(k[1:]) for k in keys]])
            _, sv = c.search("live", np.ones(DIM), k=3, columns=["section"], with_version=True)
            out.append((v, ok and sv in versions))
        except Exception as exc:  # counted: the test wants none
            out.append((None, repr(exc)))


def test_tag_moves_under_concurrent_requests_and_rollback(served):
    srv, store = served["server"], served["store"]
    la, lb = served["live"]
    base = rows(1.0).column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
    versions = {la: base, lb: -base}
    stop, out = threading.Event(), []
    workers = [threading.Thread(target=_hammer, args=(srv.url, versions, stop, out)) for _ in range(4)]
    for w in workers:
        w.start()
    t = store.table("live")
    client = Client(srv.url, token=TOKEN)
    try:
        for i in range(6):
            target = lb if i % 2 == 0 else la  # every other move rolls back
            t.retag("prod", target)
            deadline = time.monotonic() + 10
            while client.table("live")["version"] != target:
                assert time.monotonic() < deadline, "the server did not follow the tag"
                time.sleep(0.02)
            time.sleep(0.1)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert out and all(ok is True for _, ok in out), [o for o in out if o[1] is not True][:3]
    assert {v for v, _ in out} == {la, lb}
    assert 'embed_assets_swaps_total{table="live"} 6' in client.metrics()
    # a rollback through the store (a new version equal to A) with prod moved to it
    back = t.rollback(la)
    t.retag("prod", back)
    deadline = time.monotonic() + 10
    while client.table("live")["version"] != back:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    tbl = client.get("live", ["p005"])
    assert Client.version_of(tbl) == back
    assert np.array_equal(tbl.column("vector")[0].as_py(), base[5])


def test_a_killed_server_restarts_on_its_pin_and_a_version_pin_does_not_follow(tmp_path):
    store = Store(tmp_path / "store")
    a, b = two_versions(store, "t")
    store.table("t").retag("prod", b)
    srv = Server(store.uri, ["t@prod"], tmp_path, token=None)
    assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
    srv2 = Server(store.uri, ["t@prod"], tmp_path, token=None)
    pinned = Server(store.uri, [f"t@{a}"], tmp_path, token=None)
    try:
        c = Client(srv2.url)
        assert c.table("t")["version"] == b
        assert Client.version_of(c.get("t", ["p001"])) == b
        store.table("t").retag("prod", a)
        cp = Client(pinned.url)
        time.sleep(0.3)
        assert cp.table("t")["version"] == a and cp.table("t")["pinned"] == a
        # graceful: SIGTERM drains, stops the poller and ends the process (uvicorn re-raises
        # the signal once shut down, so a supervisor sees why it ended)
        assert srv2.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert "shut down: in-flight requests answered" in srv2.logs()
    finally:
        srv2.stop()
        pinned.stop()


def test_ready_waits_for_a_tag_that_does_not_exist_yet(tmp_path):
    store = Store(tmp_path / "store")
    store.write("t", rows(1.0), key="id")
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.pop("EMBED_ASSETS_SERVE_TOKEN", None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "embed_assets.cli", "--store", store.uri, "serve",
                             "t@prod", "--port", str(port), "--poll", "0.05", "--no-access-log"],
                            env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                st, _, body = http(url + "/ready", token=None)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert st == 503 and "no tag 'prod'" in json.loads(body)["error"]
        assert http(url + "/health", token=None)[0] == 200
        store.table("t").retag("prod")
        while http(url + "/ready", token=None)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)


def test_store_on_the_moto_s3_server(tmp_path):
    pytest.importorskip("moto.server")
    with moto_server(str(tmp_path)) as s3:
        bucket = s3.create_bucket("ea-serve")
        store = Store(f"s3://{bucket}/store", storage_options=s3.storage_options())
        a, b = two_versions(store, "t")
        srv = Server(store.uri, ["t@prod"], tmp_path, token=None, env=s3.env())
        try:
            c = Client(srv.url)
            assert c.table("t")["version"] == a
            want = store.table("t").get(["p002"], version=a).column("vector").to_pylist()
            assert c.get("t", ["p002"]).column("vector").to_pylist() == want
            store.table("t").retag("prod", b)
            deadline = time.monotonic() + 20
            while c.table("t")["version"] != b:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.search("t", key="p002", k=2).num_rows == 2
            assert srv.stop() in (0, -signal.SIGTERM)
        finally:
            srv.stop()


def test_import_embed_assets_loads_no_server_library():
    code = ("import sys, embed_assets; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('uvicorn', 'starlette', 'httptools', 'uvloop')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_client_refuses_bad_arguments():
    with pytest.raises(ValidationError):
        Client("ftp://x")
    with pytest.raises(ValidationError, match="output"):
        Client("http://127.0.0.1:9")._arrow("t", "get", {}, "csv", False)


def test_base64_vector_round_trip(served):
    q = np.ones(DIM, np.float32)
    st, _, body = http(served["server"].url + "/v1/tables/pkgs/search", "POST",
                       {"vector": base64.b64encode(q.tobytes()).decode(), "k": 1})
    assert st == 200 and len(json.loads(body)["rows"]) == 1


def test_two_worker_processes_share_the_port_and_both_follow_the_tag(tmp_path):
    store = Store(tmp_path / "store")
    a, b = two_versions(store, "t")
    rport = free_port()
    srv = Server(store.uri, ["t@prod"], tmp_path, token=TOKEN,
                 extra=["--workers", "2", "--resp-port", str(rport)])
    try:
        c = Client(srv.url, token=TOKEN)
        assert Client.version_of(c.get("t", ["p001"])) == a
        assert http(srv.url + "/v1/tables/t", token=None)[0] == 401  # the token reached the workers
        store.table("t").retag("prod", b)
        deadline = time.monotonic() + 20
        # fresh connections land on either worker: wait until 20 in a row answer from b
        streak = 0
        while streak < 20:
            assert time.monotonic() < deadline, "a worker did not follow the tag"
            st, h, _ = http(srv.url + "/v1/tables/t/get", "POST", {"keys": ["p001"]})
            streak = streak + 1 if st == 200 and h["x-embed-assets-version"] == str(b) else 0
        # both workers listen for RESP on the one port (SO_REUSEPORT): fresh connections
        # land on either, and each answers from b
        for _ in range(10):
            r = Resp(rport)
            assert r.call("AUTH", TOKEN) == "OK"
            assert r.call("EA.GET", "t", "p001")[0] == b
            r.call("QUIT")
    finally:
        assert srv.stop() in (0, -signal.SIGTERM)


@pytest.mark.parametrize("argv,words", [
    (["t@"], "give a tag or a version"),
    (["bad/name"], "path separator"),
    (["t@bad tag"], "must start with a letter"),
    (["t@0"], "version number >= 1"),
    (["t", "--max-k", "0"], "--max-k must be at least 1"),
    (["t", "--poll", "-1"], "--poll must be 0 or more"),
    (["t", "--token-file", "/nonexistent/token"], "cannot read --token-file"),
    (["t", "--resp-port", "0"], "--resp-port must be a port number"),
    (["t", "--port", "7001", "--resp-port", "7001"], "--resp-port must differ from --port"),
])
def test_serve_cli_refuses_bad_options_in_one_line(tmp_path, capsys, argv, words):
    from embed_assets.cli import main

    assert main(["--store", str(tmp_path / "s"), "serve", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_where_objects_become_quoted_literals_never_sql_text(tmp_path):
    from embed_assets.serve._snapshot import load

    store = Store(tmp_path / "store")
    store.write("t", rows(1.0), key="id")
    snap = load(store, "t", 1)
    assert snap.where_sql({"section": "x' OR '1'='1"}) == "(`section` = 'x'' OR ''1''=''1')"
    assert snap.where_sql({"size": {">=": 3, "<": 9}, "section": ["a", "b"]}) == \
        "(`size` >= 3) AND (`size` < 9) AND (`section` IN ('a', 'b'))"
    for bad in ({"vector": 1}, {"size": {"in": 3}}, {"size": float("inf")}, {"size": {"like": "%"}}, {}):
        with pytest.raises(ValidationError):
            snap.where_sql(bad)


def test_the_tag_poller_survives_any_failure_and_keeps_the_current_version(tmp_path):
    from embed_assets.serve._state import PinnedTable, Poller, TableSpec

    store = Store(tmp_path / "store")
    a, _ = two_versions(store, "t")
    pinned = PinnedTable(store, TableSpec("t"))
    pinned.sync()
    calls = []

    def boom() -> bool:
        calls.append(1)
        raise RuntimeError("an unexpected failure")

    pinned.sync = boom  # type: ignore[method-assign]
    poller = Poller([pinned], 0.01)
    poller.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 3:  # polled again after a failure: the thread lives
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        poller.stop()
    assert poller.errors >= 3 and "RuntimeError" in (pinned.last_error or "")
    assert pinned.current is not None and pinned.current.version == a


# -- key lookups over the Redis protocol (--resp-port) --------------------------------------------
def _resp_cmd(*args: bytes | str) -> bytes:
    bs = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(bs) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in bs)


class Resp:
    """A minimal RESP2 client: what any Redis client sends and reads."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")

    def read(self) -> Any:
        line = self.f.readline()
        if not line:
            raise ConnectionError("closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise AssertionError(line)

    def call(self, *args: bytes | str) -> Any:
        self.s.sendall(_resp_cmd(*args))
        return self.read()

    def closed(self) -> bool:
        try:
            return self.s.recv(1) == b""
        except OSError:
            return True


def test_resp_lookups_name_their_version_need_the_token_and_refuse_bad_commands(tmp_path):
    store = Store(tmp_path / "store")
    a, b = two_versions(store, "t")
    rport = free_port()
    srv = Server(store.uri, ["t@prod"], tmp_path, extra=["--resp-port", str(rport)])
    try:
        c = Resp(rport)
        no = c.call("EA.GET", "t", "p001")
        assert isinstance(no, RuntimeError) and "NOAUTH" in str(no)
        wrong = c.call("AUTH", "not-the-token")
        assert isinstance(wrong, RuntimeError) and "not-the-token" not in str(wrong)
        assert c.call("AUTH", TOKEN) == "OK" and c.call("PING") == "PONG"
        base = rows(1.0).column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
        got = c.call("EA.GET", "t", "p007", "missing", "p003")
        assert got[0] == a and got[2] is None
        assert np.frombuffer(got[1], "<f4").tolist() == base[7].tolist()
        assert np.frombuffer(got[3], "<f4").tolist() == base[3].tolist()
        many_keys = [f"p{i:03d}" for i in range(0, N, 3)]  # all stored: the one-take path
        got = c.call("EA.GET", "t", *many_keys)
        assert got[0] == a and np.array_equal(np.frombuffer(b"".join(got[1:]), "<f4").reshape(-1, DIM),
                                              base[::3])
        assert c.call("EA.GET", "t", "a\r\nb", "p001")[1] is None  # CRLF inside a key: parsed exactly
        # the tag moves: answers follow, each naming its version with that version's bytes
        store.table("t").retag("prod", b)
        deadline = time.monotonic() + 10
        while (got := c.call("EA.GET", "t", "p007"))[0] != b:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert np.frombuffer(got[1], "<f4").tolist() == (-base[7]).tolist()
        for cmd, words in [(("EA.GET", "nope", "k"), "not served"), (("EA.GET", "t"), "EA.GET table key"),
                           (("SET", "p001", "x"), "unknown command"), (("FLUSHALL",), "unknown command")]:
            err = c.call(*cmd)
            assert isinstance(err, RuntimeError) and words in str(err), (cmd, err)
        assert c.call("PING") == "PONG"  # an error answer keeps the connection
        text = Client(srv.url, token=TOKEN).metrics()
        assert 'embed_assets_requests_total{endpoint="resp_get",status="200"}' in text
        assert 'endpoint="resp_get",status="404"' in text
        # more keys than --max-keys, a malformed command, an oversized argument
        many = c.call("EA.GET", "t", *(["p001"] * 10_001))
        assert isinstance(many, RuntimeError) and "at most" in str(many) and c.closed()
        c = Resp(rport)
        c.s.sendall(b"PING\r\n")  # an inline command: not RESP arrays
        err = c.read()
        assert isinstance(err, RuntimeError) and "protocol error" in str(err) and c.closed()
        big = Resp(rport)
        big.s.sendall(b"*3\r\n$6\r\nEA.GET\r\n$1\r\nt\r\n$999999999\r\n")
        err = big.read()
        assert isinstance(err, RuntimeError) and "at most" in str(err) and big.closed()
        q = Resp(rport)
        assert q.call("QUIT") == "OK" and q.closed()
    finally:
        srv.stop()
    assert TOKEN not in srv.logs()


def test_graceful_shutdown_answers_requests_in_flight_refuses_new_ones_and_exits(tmp_path):
    """SIGTERM with an HTTP request and a RESP command half sent: no new connection is
    accepted on either port, both are answered once their rest arrives, and the process
    ends with the poller stopped."""
    store = Store(tmp_path / "store")
    a, _ = two_versions(store, "t")
    rport = free_port()
    srv = Server(store.uri, ["t@prod"], tmp_path, token=None, extra=["--resp-port", str(rport)])
    body = json.dumps({"keys": ["p004"]}).encode()
    h = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    h.sendall(b"POST /v1/tables/t/get HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n" % len(body) + body[:5])
    r = Resp(rport)
    whole = _resp_cmd("EA.GET", "t", "p004")
    r.s.sendall(whole[:12])
    time.sleep(0.5)  # both servers have read what was sent
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    refused = set()
    while len(refused) < 2:  # the listeners close at the signal
        assert time.monotonic() < deadline, f"still accepting after SIGTERM: {refused}"
        for name, port in (("http", srv.port), ("resp", rport)):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                refused.add(name)
        time.sleep(0.05)
    assert srv.proc.poll() is None  # still up: two requests are in flight
    h.sendall(body[5:])
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += h.recv(65536)
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"x-embed-assets-version: %d" % a in head
    r.s.sendall(whole[12:])
    got = r.read()
    assert got[0] == a and len(got[1]) == 4 * DIM
    assert r.closed()  # answered, then closed: the server is going away
    assert srv.proc.wait(30) in (0, -signal.SIGTERM)
    assert "shut down: in-flight requests answered, tag poller stopped" in srv.logs()


def test_a_resp_port_in_use_stops_the_server_at_startup_saying_so(tmp_path):
    store = Store(tmp_path / "store")
    two_versions(store, "t")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", store.uri, "serve", "t",
                              "--port", str(free_port()), "--resp-port", str(port)],
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert out.returncode != 0
    assert f"cannot listen for RESP on port {port}" in out.stderr and "address already in use" in out.stderr


def test_a_resp_client_that_never_reads_cannot_grow_the_server_without_bound(tmp_path):
    """Pipelined lookups with no reads: once the answers back up the server stops reading
    from that connection (transport flow control) instead of holding every answer in
    memory, and keeps answering everyone else."""
    store = Store(tmp_path / "store")
    a, _ = two_versions(store, "t")
    rport = free_port()
    srv = Server(store.uri, ["t@prod"], tmp_path, token=None, extra=["--resp-port", str(rport)])
    try:
        hog = socket.create_connection(("127.0.0.1", rport))
        hog.setblocking(False)
        cmd = _resp_cmd("EA.GET", "t", *[f"p{i:03d}" for i in range(N)]) * 20  # 4x in answers

        def push(seconds: float) -> int:
            """Bytes of commands the server took in ``seconds`` (64 MB at most)."""
            sent, end = 0, time.monotonic() + seconds
            while time.monotonic() < end and sent < 64 << 20:
                try:
                    sent += hog.send(cmd)
                except BlockingIOError:
                    time.sleep(0.02)
            return sent

        push(3.0)  # fills the kernel's buffers, and the server's if it keeps reading
        later = push(3.0)
        # nothing more is read from a connection whose answers are not read
        assert later < 512 << 10, f"the server read {later} more bytes with no answer read"
        ok = Resp(rport)
        assert ok.call("EA.GET", "t", "p001")[0] == a  # others are still answered
        hog.close()
    finally:
        srv.stop()
