"""The standing fault-injection suite: writers killed with SIGKILL at points spread over
every operation, concurrent writers, readers during writes and cleanup.

CI runs a short pass; ``make stress`` (``EMBED_ASSETS_STRESS=full``) runs the long one.
Each test adds its counts to :data:`COUNTS`, printed at the end of the session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embed_assets import Store, connect, freshness

from .conftest import COUNTS

FULL = os.environ.get("EMBED_ASSETS_STRESS") == "full"
WORKER = Path(__file__).with_name("fault_worker.py")
OPS = ("overwrite", "append", "upsert", "replace_partition", "rollback", "cleanup", "index")
KILLS_PER_OP = 15 if FULL else 4
ENV = {**os.environ, "LANCE_LOG": "error", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _content(store: Store) -> str:
    """A digest of the latest version: keys, sections and vectors, in key order."""
    t = store.table("t").read().sort_by("id")
    h = hashlib.sha256()
    for c in ("id", "section", "vector"):
        h.update(str(t.column(c).to_pylist()).encode())
    return h.hexdigest()


def _worker(op: str, path: Path, seed: int = 7) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), op, str(path), str(seed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _wait_ready(p: subprocess.Popen) -> None:
    line = p.stdout.readline() if p.stdout else ""
    assert line.strip() == "READY", (line, p.stderr.read() if p.stderr else "")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "store"
    subprocess.run([sys.executable, str(WORKER), "prepare", str(path)], check=True, env=ENV,
                   timeout=300)
    return path


def _check_invariants(path: Path, allowed: set[str], op: str) -> str:
    """What must hold after any kill: the table opens, every listed version reads, keys
    are unique, the latest content is the state before or after the operation, and the
    table answers a search."""
    store = Store(path)
    t = store.table("t")
    for v in t.versions(with_properties=False):
        assert t.read(v.version).num_rows > 0, f"{op}: version {v.version} is listed but empty"
    ids = t.read(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"{op}: {len(ids) - len(set(ids))} duplicate keys"
    digest = _content(store)
    assert digest in allowed, f"{op}: the latest version is neither the old nor the new state"
    assert t.search(np.ones(16, np.float32), k=3).num_rows == 3
    freshness(t)  # the index state is readable, whatever the kill left
    return digest


@pytest.mark.parametrize("op", OPS)
def test_sigkill_at_points_spread_over_each_operation(op: str, template: Path, tmp_path: Path) -> None:
    before = _content(Store(template))
    # One uninterrupted run: the state after, and how long the operation takes.
    done = tmp_path / "done"
    shutil.copytree(template, done)
    p = _worker(op, done)
    _wait_ready(p)
    t0 = time.perf_counter()
    line = p.stdout.readline() if p.stdout else ""  # the operation's end, not the exit's
    duration = time.perf_counter() - t0
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0 and line.strip() == "DONE", err
    allowed = {before, _content(Store(done))}
    if op == "rollback":
        allowed.add(_content_at(template, 1))
    states = {"old": 0, "new": 0}
    for i in range(KILLS_PER_OP):
        path = tmp_path / f"kill{i}"
        shutil.copytree(template, path)
        p = _worker(op, path)
        _wait_ready(p)
        time.sleep(duration * 1.1 * (i + 0.5) / KILLS_PER_OP)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        digest = _check_invariants(path, allowed, op)
        states["old" if digest == before else "new"] += 1
        if op == "cleanup":  # an interrupted cleanup must be safe to rerun
            rep = Store(path).table("t").cleanup(keep_last=1, grace=dt.timedelta(0))
            assert len(Store(path).table("t").versions()) <= 2, rep  # the latest and the tag
            _check_invariants(path, allowed, op)
        if op in ("index", "rollback"):  # the next refresh repairs an interrupted index
            from embed_assets import refresh_index

            refresh_index(Store(path).table("t"))
            _check_invariants(path, allowed, op)
        shutil.rmtree(path)
    COUNTS["kills"] += KILLS_PER_OP
    COUNTS[f"kills/{op}"] = states


def _content_at(path: Path, version: int) -> str:
    t = Store(path).table("t").read(version).sort_by("id")
    h = hashlib.sha256()
    for c in ("id", "section", "vector"):
        h.update(str(t.column(c).to_pylist()).encode())
    return h.hexdigest()


# -- concurrent writers ------------------------------------------------------------------------
def _writer(path: str, w: int, rounds: int, out: Any) -> None:
    sys.path.insert(0, str(WORKER.parent))
    import fault_worker as fw

    store = Store(path)
    failures, retries = 0, 0
    for r in range(rounds):
        keys = np.arange(100_000 * (w + 1) + 50 * r, 100_000 * (w + 1) + 50 * (r + 1))
        writes = (
            {"data": fw.rows(keys, r), "mode": "upsert"},
            {"data": fw.rows(keys[:25] + 50_000, r, [f"w{w}"] * 25), "mode": "replace_partition",
             "partition": ("section", f"w{w}")},
        )
        for kw in writes:
            try:
                retries += store.write("t", key="id", **kw).retries
            except Exception:
                failures += 1
                traceback.print_exc()
    out.put((failures, retries))


def test_four_concurrent_writers_never_fail_or_duplicate(template: Path, tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(template, path)
    rounds = 20 if FULL else 3
    base = Store(path).table("t").count_rows()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, rounds, out)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    results = [out.get(timeout=10) for _ in procs]
    assert sum(f for f, _ in results) == 0, results
    t = Store(path).table("t")
    ids = t.read(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    # every upserted key, plus each writer's partition holding exactly its last round
    assert len(ids) == base + 4 * rounds * 50 + 4 * 25
    COUNTS["writers"] += 4
    COUNTS["writes"] += 4 * rounds * 2
    COUNTS["commit_retries"] += sum(r for _, r in results)


# -- readers during writes and cleanup ----------------------------------------------------------
def _reader(path: str, seconds: float, sql: bool, out: Any) -> None:
    store = Store(path)
    con = connect(store, extensions=()) if sql else None
    reads, errors = 0, []
    q = np.ones(16, np.float32)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            t = store.table("t")
            v = t.version
            t.read(v, columns=["id"])
            t.search(q, k=5, version=v)
            if con is not None:
                con.execute("SELECT id FROM knn('t', ?, 5)", [q.tolist()]).fetchall()
            reads += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    out.put((reads, errors[:5], len(errors)))


def _churn(path: str, seconds: float, out: Any) -> None:
    sys.path.insert(0, str(WORKER.parent))
    import fault_worker as fw

    store = Store(path)
    end, n, cleanups = time.monotonic() + seconds, 0, 0
    while time.monotonic() < end:
        store.write("t", fw.rows(np.arange(n * 10, n * 10 + 10) + 200_000, n), key="id", mode="upsert")
        n += 1
        if n % 3 == 0:
            store.table("t").cleanup(keep_last=1, grace=dt.timedelta(seconds=2))
            cleanups += 1
    out.put((n, cleanups))


def test_readers_never_fail_while_writers_and_cleanup_run(template: Path, tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(template, path)
    seconds = 60.0 if FULL else 8.0
    ctx = mp.get_context("spawn")
    out, churn_out = ctx.Queue(), ctx.Queue()
    readers = [ctx.Process(target=_reader, args=(str(path), seconds, i == 0, out)) for i in range(2)]
    churn = ctx.Process(target=_churn, args=(str(path), seconds, churn_out))
    for p in (*readers, churn):
        p.start()
    for p in (*readers, churn):
        p.join(seconds + 300)
        assert p.exitcode == 0
    got = [out.get(timeout=10) for _ in readers]
    writes, cleanups = churn_out.get(timeout=10)
    assert cleanups >= 1 and writes >= 3
    assert sum(n for _, _, n in got) == 0, [e for _, e, _ in got]
    assert all(r > 0 for r, _, _ in got)
    COUNTS["reads"] += sum(r for r, _, _ in got)
    COUNTS["reader_errors"] += sum(n for _, _, n in got)
    COUNTS["cleanups_under_readers"] += cleanups
