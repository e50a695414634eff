"""Serving under load: `embed-assets serve` beside Redis and the library in process.

Loopback only, bounded in time. Run it under the shared benchmark lock:

    flock /work/bench.lock python benchmarks/bench_serve.py            # the full run
    python benchmarks/bench_serve.py --protocols       # HTTP vs Arrow Flight vs RESP vs Redis

The data: the 63,666 real Debian MiniLM vectors (../shared/data/debian_minilm.npz) with
section / priority / installed size from debian_packages.parquet, in a store cached under
benchmarks/.cache/serve_store_v3. Two versions serve as the tag's two targets: A (the vectors,
``gen`` = ``gen-A-marker``) and B (the same vectors given to other keys, ``gen`` =
``gen-B-marker``), each with its own tuned index (``build_index``, recall 0.95).

Clients: ``--clients`` (16) OS processes, forked before any server starts, each one
closed-loop synchronous connection over a raw socket (requests built before the fork,
no client library on either side), so the HTTP server and Redis pay the same, minimal, client cost.
They share the 2 cores with the server they measure. Every answer is checked: for a
lookup, the vector bytes of the version its header names must be in the body (and not
the other version's); for a search over HTTP, the ``gen`` marker of that version and not
the other; for a kNN over RESP (keys and distances), each key's vector in the version
named at the distance answered (and the recall: answers within the exact 10th distance).

Phases (each ``--phase`` seconds, 15 by default: 7 x 15 = 105 s of serving), after both
versions were loaded and warmed (the tag moved to B and back, see warm_both): serve 1-key
over HTTP, 1-key over RESP (``EA.GET``, ``--resp-port``), 100-key over HTTP, 100-key over
RESP, kNN k=10 over HTTP, kNN k=10 over RESP (``EA.KNN``), filtered kNN (``section`` = a
random section), with the ``prod`` tag moved between A and B every
105/``--moves`` seconds throughout; then Redis GET (1 key)
and MGET (100 keys) with the same client code; then the library in process
(16 threads calling ``t.get`` / ``t.search`` at the pinned version).
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import datasets

# "_graph": built with the graph (a cache of the earlier graph=False build is not reused)
STORE = datasets.CACHE / "serve_store_v3"
TABLE = "deb"
MARK = {"A": "gen-A-7f3kq9", "B": "gen-B-x2m8w4"}


KINDS = ("get1", "resp1", "get100", "resp100", "knn", "resp_knn", "knn_where")


# -- data ---------------------------------------------------------------------------------
def load_data() -> tuple[list[str], np.ndarray, pa.Table]:
    with np.load(datasets.SHARED / "debian_minilm.npz", allow_pickle=True) as z:
        pk = z["package"].tolist()
        vec = z["vector"].astype(np.float32)
    t = pq.read_table(datasets.SHARED / "debian_packages.parquet",
                      columns=["package", "section", "priority", "installed_size_kb"])
    pos = {p: i for i, p in enumerate(t.column("package").to_pylist())}
    t = t.take([pos[p] for p in pk])
    return pk, vec, t


def prepare() -> tuple[int, int]:
    """The store with versions A and B (indexed); cached. Returns their version numbers."""
    from embed_assets import Store, build_index

    done = STORE / "versions.json"
    if done.exists():
        d = json.loads(done.read_text())
        return d["A"], d["B"]
    shutil.rmtree(STORE, ignore_errors=True)
    _, vec, t = load_data()
    s = Store(str(STORE))

    def rows(m: np.ndarray, gen: str) -> pa.Table:
        return t.append_column("gen", pa.array([gen] * t.num_rows)).append_column(
            "vector", pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1]))

    t0 = time.perf_counter()
    # build_index as a user calls it, with its defaults (the HNSW graph tuned beside the
    # IVF index and kept where it meets the target faster than the probe: what
    # docs/search.md describes). Serving uses whatever the store's index policy chose:
    # warm_both prints it. (Runs before 2026-12-08 built a coarser IVF on 100 queries
    # with graph=False: the full tuning took 35 min a version at load 30.)
    fast = dict(recall=0.95)
    s.write(TABLE, rows(vec, MARK["A"]), key="package")
    a = build_index(s.table(TABLE), **fast).version
    # promoted before B is built, as a pipeline does (docs/serving.md): the graph of a
    # tagged version is kept when the next version's graph is saved (a rollback target)
    s.table(TABLE).retag("prod", a)
    # overwrite, not upsert: an upsert of all 63,666 rows failed in Lance's merge_insert
    # ("Resources exhausted ... HashJoinInput", its 300 MB pool) on this machine
    s.write(TABLE, rows(version_b(vec), MARK["B"]), key="package", mode="overwrite")
    b = build_index(s.table(TABLE), **fast).version
    s.table(TABLE).retag("prod", a)
    done.write_text(json.dumps({"A": a, "B": b}))
    print(f"prepared the store in {time.perf_counter() - t0:.0f} s: A = version {a}, B = version {b}",
          file=sys.stderr)
    return a, b


# -- raw-socket clients ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Http:
    """One keep-alive HTTP/1.1 connection; a request is pre-built bytes."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def request(path: str, doc: dict) -> bytes:
        body = json.dumps(doc).encode()
        return (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                f"accept: application/vnd.apache.arrow.stream\r\ncontent-length: {len(body)}\r\n\r\n"
                ).encode() + body

    def call(self, req: bytes) -> tuple[int, int, bytes]:
        """(status, version header or -1, body)."""
        self.s.sendall(req)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        head = buf[:end].lower()
        status = int(head[9:12])
        i = head.find(b"content-length:")
        n = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
        j = head.find(b"x-embed-assets-version:")
        version = int(head[j + 23:head.find(b"\r\n", j) if head.find(b"\r\n", j) > 0 else None]) \
            if j >= 0 else -1
        body = buf[end + 4:]
        while len(body) < n:
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            body += chunk
        self.buf = body[n:]
        return status, version, body[:n]


class Redis:
    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @staticmethod
    def command(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)

    def _read(self, buf: bytes, n_values: int) -> list[bytes]:
        """Read one reply: a bulk string (n_values = 0) or an array of n bulk strings."""
        out: list[bytes] = []
        pos = 0

        def need(k: int) -> None:
            nonlocal buf
            while len(buf) < k:
                chunk = self.s.recv(262144)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                buf += chunk

        def line() -> bytes:
            nonlocal pos, buf
            while (e := buf.find(b"\r\n", pos)) < 0:
                need(len(buf) + 1)
            ln = buf[pos:e]
            pos = e + 2
            return ln

        if n_values:
            hdr = line()
            assert hdr[:1] == b"*", hdr
            count = int(hdr[1:])
        else:
            count = 1
        for _ in range(count):
            hdr = line()
            if hdr[:1] in (b"+", b":"):  # +OK, or EA.GET's :version
                out.append(hdr[1:])
                continue
            if hdr[:1] == b"-":
                raise ValueError(hdr.decode(errors="replace"))
            size = int(hdr[1:])
            if size < 0:
                out.append(b"")
                continue
            need(pos + size + 2)
            out.append(buf[pos:pos + size])
            pos += size + 2
        return out

    def call(self, req: bytes, n_values: int = 0) -> list[bytes]:
        self.s.sendall(req)
        return self._read(b"", n_values)

    def call_flat(self, req: bytes, lines: int) -> list[bytes]:
        """A reply of exactly ``lines`` CRLF-terminated lines (an array of bulk strings
        holding no CRLF, e.g. EA.KNN's keys and distances), split once: the lean reader,
        so the clients' parsing takes less of the cores they share with the server."""
        self.s.sendall(req)
        buf = self.s.recv(262144)
        while buf.count(b"\r\n") < lines:
            if buf[:1] == b"-" and b"\r\n" in buf:
                raise ValueError(buf.decode(errors="replace"))
            chunk = self.s.recv(262144)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        toks = buf.split(b"\r\n")
        return [toks[1][1:], *toks[3:lines:2]]  # :version, then each bulk string's bytes


# -- one phase of closed-loop clients ---------------------------------------------------------
SHARED: dict = {}  # set before forking: data the client processes read


def _client(kind: str, port: int, seconds: float, seed: int, out: mp.Queue) -> None:
    d = SHARED
    rng = np.random.default_rng(seed)
    lat = np.empty(2_000_000, dtype=np.float64)
    count = errors = mixed = 0
    seen: dict[int, int] = {}
    first_error = ""
    hits = answered = 0  # kNN over RESP: neighbours found of the exact top 10
    by_version = {d["versions"]["A"]: "A", d["versions"]["B"]: "B"}
    vec = {"A": d["vec"], "B": d["vec_b"]}  # made before the fork: shared, not copied
    try:
        conn: Http | Redis = Redis(port) if kind.startswith(("redis", "resp")) else Http(port)
    except OSError as exc:
        out.put((kind, np.zeros(0), 0, 1, 0, {}, f"connect: {exc}", 0, 0))
        return
    end = time.perf_counter() + seconds
    reqs: list[tuple[np.ndarray, bytes]] = d["requests"]
    while True:
        # requests made before the fork (see build_requests): the clients spend the
        # cores they share with the server on sending, reading and checking only
        rows, req = reqs[rng.integers(len(reqs))]
        qi = int(rows[0])  # kNN kinds: the query's index
        t0 = time.perf_counter()
        try:
            if kind.startswith("redis"):
                vals = conn.call(req, 0 if kind == "redis1" else 100)  # type: ignore[call-arg]
                t1 = time.perf_counter()
                if b"".join(vals) != vec["A"][rows].tobytes():
                    mixed += 1
            elif kind == "resp_knn":
                vals = conn.call_flat(req, 42)  # type: ignore[union-attr]
                t1 = time.perf_counter()
                version = int(vals[0])
                seen[version] = seen.get(version, 0) + 1
                g = by_version.get(version)
                # the version named must be the one the rows and distances are from: each
                # key's vector in that version at the distance answered (a key's vector
                # differs between A and B); recall: answers within the exact 10th distance
                if g is None:
                    mixed += 1
                else:
                    rows = [d["row_of"][x] for x in vals[1::2]]
                    dist = np.array([float(x) for x in vals[2::2]])
                    want = 1 - d["unit"][g][rows] @ d["query_np"][qi]
                    if len(rows) != 10 or np.abs(dist - want).max() > 2e-3:
                        mixed += 1
                    else:
                        hits += int((dist <= d["kth"][g][qi] + 1e-4).sum())
                        answered += 1
            elif kind.startswith("resp"):
                vals = conn.call(req, len(rows) + 1)  # type: ignore[call-arg]
                t1 = time.perf_counter()
                version = int(vals[0])
                seen[version] = seen.get(version, 0) + 1
                g = by_version.get(version)
                if g is None or b"".join(vals[1:]) != vec[g][rows].tobytes():
                    mixed += 1
            else:
                status, version, body = conn.call(req)  # type: ignore[call-arg]
                t1 = time.perf_counter()
                if status != 200:
                    errors += 1
                    first_error = first_error or f"{status} {body[:200]!r}"
                else:
                    seen[version] = seen.get(version, 0) + 1
                    g = by_version.get(version)
                    other = "B" if g == "A" else "A"
                    if g is None:
                        mixed += 1
                    elif kind.startswith("get"):
                        if vec[g][rows].tobytes() not in body or vec[other][rows].tobytes() in body:
                            mixed += 1
                    elif MARK[g].encode() not in body or MARK[other].encode() in body:
                        mixed += 1
        except (OSError, ValueError, AssertionError) as exc:
            t1 = time.perf_counter()
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            try:
                conn = Redis(port) if kind.startswith(("redis", "resp")) else Http(port)
            except OSError:
                time.sleep(0.01)
        if count < len(lat):
            lat[count] = t1 - t0
        count += 1
        if t1 > end:
            break
    out.put((kind, lat[:min(count, len(lat))].copy(), count, errors, mixed, seen, first_error,
             hits, answered))


def build_requests(kind: str, n_sets: int = 4000) -> list[tuple[np.ndarray, bytes]]:
    """(rows or [query index], request bytes) for every request a phase's clients may send:
    every key for a 1-key kind, ``n_sets`` random sets of 100 keys, every query (and for a
    filtered kNN, ``n_sets`` query and section pairs). Made once, before the clients fork:
    made per request in the clients (a JSON document with a base64 vector per kNN), they
    took client CPU from the 2 cores the server runs on."""
    d = SHARED
    pk: list[str] = d["pk"]
    rng = np.random.default_rng(11)
    n = len(pk)
    out: list[tuple[np.ndarray, bytes]] = []
    if kind in ("get1", "get100", "redis1", "redis100", "resp1", "resp100"):
        sets = np.arange(n)[:, None] if kind.endswith("1") else rng.integers(0, n, (n_sets, 100))
        for rows in sets:
            if kind.startswith("redis"):
                keys = [pk[r].encode() for r in rows]
                req = Redis.command(b"GET", keys[0]) if len(keys) == 1 else Redis.command(b"MGET", *keys)
            elif kind.startswith("resp"):
                req = Redis.command(b"EA.GET", TABLE.encode(), *[pk[r].encode() for r in rows])
            else:
                req = Http.request(f"/v1/tables/{TABLE}/get", {"keys": [pk[r] for r in rows]})
            out.append((rows, req))
        return out
    nq = len(d["queries"])
    for i in range(nq if kind != "knn_where" else n_sets):
        qi = i % nq
        if kind == "resp_knn":
            req = Redis.command(b"EA.KNN", TABLE.encode(), b"10", d["query_bytes"][qi])
        else:
            doc = {"vector": d["queries"][qi], "k": 10, "columns": ["gen"]}
            if kind == "knn_where":
                doc["where"] = {"section": d["sections"][rng.integers(len(d["sections"]))]}
            req = Http.request(f"/v1/tables/{TABLE}/search", doc)
        out.append((np.array([qi]), req))
    return out


def phase(kind: str, port: int, seconds: float, clients: int) -> dict:
    SHARED["requests"] = build_requests(kind)
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_client, args=(kind, port, seconds, 1000 + i, q)) for i in range(clients)]
    for p in procs:
        p.start()
    got = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join()
    lat = np.concatenate([g[1] for g in got]) * 1e3
    seen: dict[int, int] = {}
    for g in got:
        for v, c in g[5].items():
            seen[v] = seen.get(v, 0) + c
    res = {"kind": kind, "requests": sum(g[2] for g in got), "errors": sum(g[3] for g in got),
           "mixed": sum(g[4] for g in got), "versions_seen": seen,
           "first_error": next((g[6] for g in got if g[6]), ""),
           "throughput": sum(g[2] for g in got) / seconds}
    if sum(g[8] for g in got):
        res["recall_at_10"] = round(sum(g[7] for g in got) / (10 * sum(g[8] for g in got)), 4)
    res.update(_pcts(lat))
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res


def _pcts(lat_ms: np.ndarray) -> dict:
    if not len(lat_ms):
        return {"p50": float("nan"), "p99": float("nan"), "p999": float("nan")}
    p = np.percentile(lat_ms, [50, 99, 99.9])
    return {"p50": round(float(p[0]), 3), "p99": round(float(p[1]), 3), "p999": round(float(p[2]), 3)}


def version_b(vec: np.ndarray, seed: int = 3) -> np.ndarray:
    """B's vectors: A's, each given to another key (a permutation with no key keeping a
    vector equal to its own). Why not A negated, as before: the kNN queries are A's rows,
    which lie outside a negated version's cone of vectors, and the HNSW graph tuned on
    B's own rows found 0.63 of their exact neighbours (0.99 on A); permuted, B has A's
    distribution and every query is one a pipeline of that version would send, while
    each key's vector (what lookups check) and each query's neighbours (what kNN checks)
    still differ between the two versions."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(vec))
    for _ in range(1000):
        same = np.flatnonzero((vec[perm] == vec).all(axis=1))
        if not len(same):
            return np.ascontiguousarray(vec[perm])
        other = rng.integers(0, len(vec), len(same))
        perm[same], perm[other] = perm[other], perm[same].copy()
    raise AssertionError("no permutation found")


def kth_distance(mat: np.ndarray, qrows: np.ndarray, vec: np.ndarray, k: int = 10) -> np.ndarray:
    """Each query's exact k-th nearest cosine distance in a version's vectors."""
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    q = vec[qrows] / np.linalg.norm(vec[qrows], axis=1, keepdims=True)
    return np.sort(1 - q @ unit.T, axis=1)[:, k - 1]


# -- the tag mover ---------------------------------------------------------------------------
class Mover(threading.Thread):
    """Moves ``prod`` between A and B every ``every`` seconds, ``total`` times at most."""

    def __init__(self, a: int, b: int, every: float, total: int) -> None:
        super().__init__(daemon=True)
        from embed_assets import Store

        self.t = Store(str(STORE)).table(TABLE)
        self.a, self.b, self.every, self.total = a, b, every, total
        self.moves = 0
        self.stop = threading.Event()
        self.go = threading.Event()

    def run(self) -> None:
        cur = self.a
        while self.moves < self.total and not self.stop.is_set():
            self.go.wait()
            if self.stop.wait(self.every):
                break
            if not self.go.is_set():
                continue
            cur = self.b if cur == self.a else self.a
            self.t.retag("prod", cur)  # a move to A is a rollback of the move to B
            self.moves += 1


# -- in process -------------------------------------------------------------------------------
def in_process(kind: str, seconds: float, threads: int, version: int) -> dict:
    from embed_assets import Store

    t = Store(str(STORE)).table(TABLE)
    d = SHARED
    pk, queries, sections = d["pk"], d["queries_np"], d["sections"]
    t.get(pk[:1], version=version)
    t.search(queries[0], k=10, version=version)
    lats: list[list[float]] = [[] for _ in range(threads)]
    end = time.perf_counter() + seconds

    def work(i: int) -> None:
        rng = np.random.default_rng(i)
        out = lats[i]
        while True:
            t0 = time.perf_counter()
            if kind == "get1":
                t.get([pk[rng.integers(len(pk))]], version=version)
            elif kind == "get100":
                t.get([pk[r] for r in rng.integers(0, len(pk), 100)], version=version)
            elif kind == "knn":
                t.search(queries[rng.integers(len(queries))], k=10, version=version,
                         columns=["package", "gen"])
            else:
                t.search(queries[rng.integers(len(queries))], k=10, version=version,
                         columns=["package", "gen"],
                         where=f"section = '{sections[rng.integers(len(sections))]}'")
            t1 = time.perf_counter()
            out.append(t1 - t0)
            if t1 > end:
                return

    ths = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    lat = np.concatenate([np.asarray(x) for x in lats]) * 1e3
    res = {"kind": "inproc_" + kind, "requests": len(lat), "throughput": len(lat) / seconds,
           "errors": 0, "mixed": 0}
    res.update(_pcts(lat))
    print(json.dumps(res), file=sys.stderr, flush=True)
    return res


# -- the servers ------------------------------------------------------------------------------
def start_server(port: int, poll: float, workers: int = 1, resp: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, LANCE_LOG="error", HF_HUB_OFFLINE="1")
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    # a file, not a pipe: nobody reads a pipe during the run, and a full one blocks every
    # server thread that logs
    err = open(datasets.CACHE / f"serve-{port}.err", "wb")  # noqa: SIM115 (the server's lifetime)
    p = subprocess.Popen([sys.executable, "-m", "embed_assets.cli", "--store", str(STORE), "serve",
                          f"{TABLE}@prod", "--port", str(port), "--poll", str(poll), "--no-access-log",
                          "--workers", str(workers), *(["--resp-port", str(resp)] if resp else [])],
                         env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=err)
    wait_ready(port, p)
    return p


def warm_both(port: int, a: int, b: int, workers: int, timeout: float = 300) -> dict:
    """Move the tag to B and back to A, each time until every worker answers from it
    (the warm-up: loading and, where the version's policy chose Lance, tuning the server's
    in-memory probe); returns each version's unfiltered kNN path as the server reports it."""
    import urllib.request

    from embed_assets import Store

    t = Store(str(STORE)).table(TABLE)
    paths: dict = {}
    for v in (b, a):
        t.retag("prod", v)
        deadline = time.monotonic() + timeout
        streak = 0
        # several workers answer in turn: wait for 4 * workers answers in a row from v
        while streak < 4 * workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not swap to version {v} in {timeout} s")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/tables/{TABLE}") as r:
                doc = json.loads(r.read())
            if doc["version"] == v:
                streak += 1
                paths[v] = doc.get("knn")
            else:
                streak = 0
                time.sleep(0.2)
    print(f"both versions warm; unfiltered kNN paths {paths}", file=sys.stderr, flush=True)
    return paths


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}; see benchmarks/.cache/serve-{port}.err")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


def start_redis(pk: list[str], vec: np.ndarray) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--protected-mode", "yes"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            r = Redis(port)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    for i in range(0, len(pk), 1000):
        args = [b"MSET"]
        for j in range(i, min(i + 1000, len(pk))):
            args += [pk[j].encode(), vec[j].tobytes()]  # 1,536-byte values
        assert r.call(Redis.command(*args)) == [b"OK"]
    return p, port


def stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()


# -- protocol choice ----------------------------------------------------------------------------
def protocols(n: int) -> None:
    """One sequential client: a 1-key lookup and a kNN through the HTTP server and through an
    Arrow Flight server over the same in-memory snapshot (pyarrow.flight, do_get); a 1-key
    lookup over RESP (EA.GET) beside Redis GET."""
    import pyarrow.flight as fl

    from embed_assets import Store
    from embed_assets.serve._snapshot import load

    a, _ = prepare()
    pk, vec, _ = load_data()
    snap = load(Store(str(STORE)), TABLE, a)

    class Flight(fl.FlightServerBase):
        def do_get(self, context, ticket):  # type: ignore[override]
            req = json.loads(ticket.ticket)
            if "keys" in req:
                rows, _ = snap.lookup(req["keys"])
                tbl = snap.rows_table(rows, [], True)
            else:
                q = np.frombuffer(base64.b64decode(req["vector"]), "<f4")
                tbl = snap.search(q, 10, None, ["gen"], False)
            return fl.RecordBatchStream(tbl)

    fport = free_port()
    fs = Flight(f"grpc://127.0.0.1:{fport}")
    threading.Thread(target=fs.serve, daemon=True).start()
    hport = free_port()
    rsport = free_port()
    hs = start_server(hport, 0, resp=rsport)
    redis, redport = start_redis(pk, vec)
    rc, ec = Redis(redport), Redis(rsport)
    rng = np.random.default_rng(0)
    queries = [base64.b64encode(vec[i].tobytes()).decode() for i in rng.integers(0, len(pk), 200)]
    fc = fl.connect(f"grpc://127.0.0.1:{fport}")
    hc = Http(hport)
    out = {}
    for name, fn in [
        ("http get1", lambda i: hc.call(Http.request(f"/v1/tables/{TABLE}/get",
                                                     {"keys": [pk[i % len(pk)]]}))),
        ("flight get1", lambda i: fc.do_get(fl.Ticket(json.dumps({"keys": [pk[i % len(pk)]]}))).read_all()),
        ("resp EA.GET 1", lambda i: ec.call(Redis.command(b"EA.GET", TABLE.encode(),
                                                          pk[i % len(pk)].encode()), 2)),
        ("redis GET 1", lambda i: rc.call(Redis.command(b"GET", pk[i % len(pk)].encode()))),
        ("http knn", lambda i: hc.call(Http.request(
            f"/v1/tables/{TABLE}/search", {"vector": queries[i % 200], "k": 10, "columns": ["gen"]}))),
        ("flight knn", lambda i: fc.do_get(fl.Ticket(json.dumps({"vector": queries[i % 200]}))).read_all()),
        ("resp EA.KNN", lambda i: ec.call(Redis.command(b"EA.KNN", TABLE.encode(), b"10",
                                                        base64.b64decode(queries[i % 200])), 21)),
    ]:
        for i in range(50):
            fn(i)
        ts = []
        for i in range(n):
            t0 = time.perf_counter()
            fn(i * 7919)
            ts.append(time.perf_counter() - t0)
        out[name] = _pcts(np.asarray(ts) * 1e3)
        print(name, out[name], file=sys.stderr, flush=True)
    stop(hs)
    stop(redis)
    fs.shutdown()
    print(json.dumps({"uptime": _uptime(), "protocols": out}, indent=1))


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--phase", type=float, default=15.0, help="seconds per phase (default 15)")
    ap.add_argument("--moves", type=int, default=100, help="tag moves during the serve phases")
    ap.add_argument("--poll", type=float, default=0.1, help="the server's tag poll interval")
    ap.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    ap.add_argument("--protocols", action="store_true", help="only compare HTTP with Arrow Flight")
    ap.add_argument("-n", type=int, default=2000, help="requests per protocol measurement")
    ap.add_argument("--prepare", action="store_true", help="only build the cached store")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help="serve phases to run, comma-separated (a quick look; the record runs all)")
    ap.add_argument("--no-baselines", action="store_true", help="skip Redis and the library in process")
    args = ap.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")
    if not datasets.available():
        raise SystemExit("../shared/data/debian_minilm.npz is absent: nothing to measure")
    if args.prepare:
        prepare()
        return
    if args.protocols:
        protocols(args.n)
        return
    a, b = prepare()
    pk, vec, t = load_data()
    rng = np.random.default_rng(7)
    qrows = rng.integers(0, len(pk), 500)
    vec_b = version_b(vec)
    SHARED.update(pk=pk, vec=vec, vec_b=vec_b, versions={"A": a, "B": b},
                  row_of={p.encode(): i for i, p in enumerate(pk)},
                  unit={g: m / np.linalg.norm(m, axis=1, keepdims=True)
                        for g, m in (("A", vec), ("B", vec_b))},
                  queries=[base64.b64encode(vec[i].tobytes()).decode() for i in qrows],
                  query_bytes=[vec[i].astype("<f4").tobytes() for i in qrows],
                  query_np=vec[qrows] / np.linalg.norm(vec[qrows], axis=1, keepdims=True),
                  kth={"A": kth_distance(vec, qrows, vec), "B": kth_distance(vec_b, qrows, vec)},
                  queries_np=vec[qrows], sections=sorted(set(t.column("section").to_pylist())))
    before = _uptime()
    results: list[dict] = []
    from embed_assets import Store

    Store(str(STORE)).table(TABLE).retag("prod", a)
    port, rport_ = free_port(), free_port()
    server = start_server(port, args.poll, args.workers, rport_)
    # Both versions loaded and warmed before the clock starts (a server holds the last
    # --keep-versions loaded: a move between them swaps without reading anything).
    knn_paths = warm_both(port, a, b, args.workers)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    serve_seconds = len(kinds) * args.phase
    mover = Mover(a, b, serve_seconds / args.moves, args.moves)
    mover.start()
    mover.go.set()
    try:
        for kind in kinds:
            results.append(phase(kind, rport_ if kind.startswith("resp") else port, args.phase,
                                 args.clients))
    finally:
        mover.stop.set()
        mover.join()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
            metrics = r.read().decode()
        stop(server)
    swaps = [ln for ln in metrics.splitlines() if ln.startswith(("embed_assets_swaps_total",
                                                                 "embed_assets_knn_batch"))]
    if not args.no_baselines:
        redis, rport = start_redis(pk, vec)
        try:
            for kind in ("redis1", "redis100"):
                results.append(phase(kind, rport, args.phase, args.clients))
        finally:
            stop(redis)
        for kind in ("get1", "get100", "knn", "knn_where"):
            results.append(in_process(kind, args.phase / 3, args.clients, a))
    doc = {"uptime_before": before, "uptime_after": _uptime(), "clients": args.clients,
           "workers": args.workers,
           "phase_seconds": args.phase, "tag_moves": mover.moves, "server_swaps": swaps,
           "poll_seconds": args.poll, "knn_paths": knn_paths, "results": results}
    by = {r["kind"]: r for r in results}
    doc["knn_p99_ms"] = {n: by[k]["p99"] for n, k in (("http", "knn"), ("resp", "resp_knn"))
                         if k in by}
    doc["ratios_p99"] = {f"{a}/{b}": round(by[a]["p99"] / by[b]["p99"], 2)
                         for a, b in (("get1", "redis1"), ("resp1", "redis1"),
                                      ("get100", "redis100"), ("resp100", "redis100"))
                         if a in by and b in by}
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
