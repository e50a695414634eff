"""Writers coordinated by Lance itself (issue 21): fenced commits, no lease, the writer
lock off. A writer that stalls after planning, concurrent writers of every mode against
a sequential oracle, cleanup racing rollback / tags / writes / index builds.

Every test here runs with the local writer lock disabled (``EMBED_ASSETS_WRITER_LOCK=0``):
the lock is a throughput optimisation, never what keeps the table right. The long
variants run under ``make stress`` (``EMBED_ASSETS_STRESS=full``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from embed_assets import Store, ValidationError
from embed_assets.errors import ConflictError

from .concurrency_worker import rows
from .conftest import COUNTS

FULL = os.environ.get("EMBED_ASSETS_STRESS") == "full"
WORKER = Path(__file__).with_name("concurrency_worker.py")
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "LANCE_LOG": "error", "HF_HUB_OFFLINE": "1", "EMBED_ASSETS_WRITER_LOCK": "0",
       "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def _no_writer_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_ASSETS_WRITER_LOCK", "0")


def _ids(store: Store) -> list[int]:
    return store.table("t").read(columns=["id"]).column("id").to_pylist()


def _assert_unique(store: Store) -> list[int]:
    ids = _ids(store)
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate keys"
    return ids


def _worker(path: str, mode: str, keys: list[int], seed: int, *, pause: bool = False,
            options: dict[str, str] | None = None) -> subprocess.Popen:
    args = [sys.executable, str(WORKER), path, mode, ",".join(map(str, keys)), str(seed)]
    if pause:
        args.append("--pause-before-commit")
    if options is not None:
        args += ["--options", json.dumps(options)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _outcome(p: subprocess.Popen, timeout: float = 300) -> dict[str, Any]:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err
    got = json.loads(out.strip().splitlines()[-1])
    assert got["outcome"] != "error", got
    return got


def paused_writer_round(path: str, mode: str, pause_s: float,
                        options: dict[str, str] | None = None) -> tuple[dict, dict]:
    """A plans a write of 200 new keys and is stopped before its commit; B writes the
    same keys and commits; A resumes after ``pause_s``. Returns both outcomes."""
    keys = list(range(1000, 1200))
    a = _worker(path, mode, keys, seed=1, pause=True, options=options)
    assert a.stdout is not None
    line = a.stdout.readline()
    assert line.strip() == "PLANNED", (line, a.stderr.read() if a.stderr else "")
    b = _outcome(_worker(path, mode, keys, seed=2, options=options))
    time.sleep(pause_s)
    a.send_signal(signal.SIGCONT)
    return _outcome(a), b


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_writer_paused_after_planning_never_commits_its_stale_plan(tmp_path: Path, mode: str) -> None:
    """Issue 21, defect 1 (local disk): 0 duplicate keys, no lost update; the paused
    writer re-plans (upsert: its rows become updates) or is refused (append)."""
    store = Store(tmp_path / "s")
    store.write("t", rows([0, 1], seed=0), key="id")
    a, b = paused_writer_round(str(tmp_path / "s"), mode, pause_s=35.0 if FULL else 2.0)
    ids = _assert_unique(store)
    assert sorted(ids) == [0, 1, *range(1000, 1200)]
    assert b["outcome"] == "committed" and b["inserted"] == 200
    src = set(store.table("t").read(columns=["src"], where="id >= 1000").column("src").to_pylist())
    if mode == "append":
        assert a["outcome"] == "refused" and "already exist" in a["message"]
        assert src == {"s2"}
    else:  # A re-planned on B's version: its rows updated B's, none inserted twice
        assert a["outcome"] == "committed" and a["retries"] >= 1
        assert (a["inserted"], a["updated"]) == (0, 200)
        assert src == {"s1"}
        assert store.table("t").properties(a["version"])["retries"] == str(a["retries"])
    COUNTS["paused_writers"] += 1


# -- 8 writers of every mode against a sequential oracle ----------------------------------------
_SECTIONS = ("p0", "p1", "p2")


def _mixed_writer(path: str, w: int, rounds: int, out: Any) -> None:
    os.environ["EMBED_ASSETS_WRITER_LOCK"] = "0"
    os.environ.setdefault("LANCE_LOG", "error")
    sys.path.insert(0, str(ROOT))
    from embed_assets import Store, ValidationError
    from embed_assets.errors import ConflictError
    from tests.concurrency_worker import rows

    store = Store(path)
    rng = random.Random(w)
    log: list[tuple] = []
    failures: list[str] = []
    for r in range(rounds):
        seed = 100 * w + r + 10
        kind = rng.choice(("append", "upsert", "upsert", "replace_partition", "rollback"))
        try:
            if kind == "append":
                keys = rng.sample(range(200, 260), 4)  # overlapping: some appends are refused
                data = rows(keys, seed)
                res = store.write("t", data, key="id", mode="append")
                payload: Any = [(k, f"s{seed}", s) for k, s in zip(keys, data["section"].to_pylist(),
                                                                   strict=True)]
            elif kind == "upsert":
                keys = rng.sample(range(0, 120), 6)
                dels = rng.sample(range(0, 120), 2)
                dels = [k for k in dels if k not in keys]
                data = rows(keys, seed)
                res = store.write("t", data, key="id", mode="upsert", delete_keys=dels or None)
                payload = ([(k, f"s{seed}", s) for k, s in zip(keys, data["section"].to_pylist(),
                                                               strict=True)], dels)
            elif kind == "replace_partition":
                sec = rng.choice(_SECTIONS)
                keys = rng.sample(range(0, 120), 5)
                res = store.write("t", rows(keys, seed, sec), key="id", mode="replace_partition",
                                  partition=("section", sec))
                payload = (sec, [(k, f"s{seed}", sec) for k in keys])
            else:
                t = store.table("t")
                versions = [v.version for v in t.versions(with_properties=False)]
                target = rng.choice(versions[:-1] or versions)
                run = f"w{w}r{r}"
                v = t.rollback(target, run_id=run)
                # a rollback to what is already current makes no version (and returns the latest)
                if t.properties(v).get("run_id") == run:
                    log.append((v, "rollback", target))
                continue
            if res.committed:
                log.append((res.version, kind, payload))
        except ValidationError as exc:
            if kind != "append" or "already exist" not in str(exc):
                failures.append(f"{kind}: {exc}")
        except ConflictError as exc:  # a retryable conflict given up: must not happen
            failures.append(f"{kind}: {exc}")
        except Exception:
            failures.append(traceback.format_exc())
    out.put((w, log, failures))


def _replay(initial: dict[int, tuple[str, str]], log: list[tuple]) -> dict[int, dict[int, tuple[str, str]]]:
    """The state after every committed version, applying each operation to the state
    before it, in version order."""
    states = {1: dict(initial)}
    for version, kind, payload in sorted(log, key=lambda e: e[0]):
        state = dict(states[version - 1])
        if kind == "append":
            for k, src, sec in payload:
                assert k not in state, f"v{version}: append of stored key {k}"
                state[k] = (src, sec)
        elif kind == "upsert":
            upserts, dels = payload
            for k in dels:
                state.pop(k, None)
            for k, src, sec in upserts:
                state[k] = (src, sec)
        elif kind == "replace_partition":
            sec, data = payload
            keys = {k for k, _, _ in data}
            for k in [k for k, (_, s) in state.items() if s == sec and k not in keys]:
                del state[k]
            for k, src, s in data:
                state[k] = (src, s)
        else:
            state = dict(states[payload])
        states[version] = state
    return states


def _content(store: Store, version: int) -> dict[int, tuple[str, str]]:
    t = store.table("t").read(version, columns=["id", "src", "section"])
    ids = t.column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"version {version}: duplicate keys"
    return dict(zip(ids, zip(t.column("src").to_pylist(), t.column("section").to_pylist(), strict=True),
                    strict=True))


def test_eight_writers_of_every_mode_equal_a_sequential_oracle(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = Store(path)
    store.write("t", rows(list(range(0, 120)), seed=0), key="id", mode="overwrite")
    rounds = 20 if FULL else 3
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_mixed_writer, args=(str(path), w, rounds, out)) for w in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    failures = [f for _, _, fs in results for f in fs]
    assert failures == [], failures
    log = [e for _, entries, _ in results for e in entries]
    latest = store.table("t").version
    versions = sorted(v for v, _, _ in log)
    # one version per committed write, none shared, none unaccounted for
    dups = sorted((v, k, str(p)[:80]) for v, k, p in log if versions.count(v) > 1)
    assert versions == list(range(2, latest + 1)), (dups, sorted(set(range(2, latest + 1)) - set(versions)))
    states = _replay(_content(store, 1), log)
    for v in range(1, latest + 1):
        assert _content(store, v) == states[v], f"version {v} differs from the oracle"
    COUNTS["oracle_writes"] += len(log)
    COUNTS["oracle_writers"] += 8


# -- fences, one process ---------------------------------------------------------------------
def test_two_plans_on_one_version_conflict_and_the_second_replans(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence in isolation: writer B commits between A's plan and A's commit (forced
    with a hook on Lance's commit); A's first commit conflicts, its second plan sees B."""
    import lance

    store = Store(tmp_path / "s")
    store.write("t", rows([0, 1, 2], seed=0), key="id")
    real = lance.LanceDataset.commit
    between: list[tuple[list[int], int]] = [([5, 6], 2)]  # what B writes before A's commit

    def interleave(*args, **kwargs):
        if between:  # A has planned: B writes first
            keys, seed = between.pop()
            monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(real))
            Store(tmp_path / "s").write("t", rows(keys, seed=seed), key="id", mode="append")
            monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(interleave))
        return real(*args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(interleave))
    with pytest.raises(ValidationError, match="already exist"):
        store.write("t", rows([5, 6], seed=1), key="id", mode="append")
    between.append(([7], 4))
    res = store.write("t", rows([6, 7], seed=3), key="id", mode="upsert")
    assert res.retries == 1 and (res.rows_inserted, res.rows_updated) == (0, 2)
    assert sorted(_assert_unique(store)) == [0, 1, 2, 5, 6, 7]


def test_a_write_that_keeps_conflicting_gives_up_with_a_conflict_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lance.commit import CommitConflictError

    from embed_assets.store import _commits

    store = Store(tmp_path / "s")
    store.write("t", rows([0], seed=0), key="id")
    monkeypatch.setattr(_commits, "MAX_ATTEMPTS", 3)
    monkeypatch.setattr(_commits, "_BACKOFF_S", 0.0)

    def always(*_a, **_k):
        raise CommitConflictError("Retryable commit conflict", retryable=True)

    import lance

    monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(always))
    with pytest.raises(ConflictError, match="kept conflicting"):
        store.write("t", rows([1], seed=1), key="id", mode="append")
    monkeypatch.undo()
    assert _ids(store) == [0] and store.table("t").version == 1
    data = Path(tmp_path / "s" / "t.lance" / "data")
    assert len(list(data.iterdir())) == 1  # the refused append's files are gone


def test_new_tables_declare_the_key_as_lances_primary_key(tmp_path: Path) -> None:
    import lance

    from embed_assets.store._writes import has_primary_key

    store = Store(tmp_path / "s")
    store.write("t", rows([1, 2], seed=0), key="id")
    ds = store.table("t").dataset()
    assert has_primary_key(ds.schema, "id") and not ds.schema.field("id").nullable
    # Lance's own merge_insert (a writer outside embed_assets) now keeps keys unique
    # even when two of them insert the same key at once
    a, b = lance.dataset(ds.uri), lance.dataset(ds.uri)
    a.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows([9], 1))
    b.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows([9], 2))
    assert sorted(_assert_unique(store)) == [1, 2, 9]


# -- cleanup racing rollback, tags, writes and an index build ----------------------------------
def _history(store: Store, n: int = 6) -> None:
    """n versions: an overwrite, then upserts and a delete (deletion files to lose)."""
    store.write("t", rows(list(range(40)), seed=0), key="id", mode="overwrite")
    for i in range(1, n):
        store.write("t", rows([i, 100 + i], seed=i), key="id", mode="upsert", delete_keys=[20 + i])


def _check_readable(store: Store, tags: dict[str, int] | None = None) -> None:
    """The latest and every tagged version read, search and pass Lance's validate()."""
    t = store.table("t")
    for ref in [None, *(tags or {})]:
        ds = t.dataset(ref)
        ds.validate()
        ids = t.read(ref, columns=["id"]).column("id").to_pylist()
        assert ids and len(ids) == len(set(ids)), ref
        assert t.search(rows([1], seed=1)["vector"][0].values.to_numpy(), k=3, version=ref).num_rows == 3


def _paused_cleanup(store: Store, seconds: float, monkeypatch: pytest.MonkeyPatch):
    """Start ``cleanup(keep_last=1, grace=0)`` in a thread that pauses ``seconds`` between
    choosing its versions and deleting them (as a slow S3 listing does)."""
    import datetime as dt
    import threading

    from embed_assets.store import _retention

    chosen = threading.Event()
    box: dict[str, Any] = {}

    def pause(remove: list[int]) -> None:
        box["chosen"] = list(remove)
        chosen.set()
        time.sleep(seconds)

    monkeypatch.setattr(_retention, "before_delete", pause)

    def run() -> None:
        try:
            box["report"] = Store(store.uri).table("t").cleanup(keep_last=1, grace=dt.timedelta(0))
        except BaseException as exc:  # reported by the test
            box["error"] = exc

    th = threading.Thread(target=run)
    th.start()
    assert chosen.wait(60)
    return th, box


def test_a_rollback_during_a_cleanup_keeps_the_latest_version_readable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, defect 2: cleanup chose versions 1-5, a rollback to 3 commits meanwhile:
    the Restore's files must survive (the old cleanup deleted them: every read failed)."""
    store = Store(tmp_path / "s")
    _history(store)
    th, box = _paused_cleanup(store, 2.0, monkeypatch)
    assert 3 in box["chosen"]
    v = store.table("t").rollback(3)
    th.join(120)
    assert "error" not in box, box
    _check_readable(store)
    assert store.table("t").version == v
    assert sorted(store.table("t").read().column("id").to_pylist()) == \
        sorted(Store(tmp_path / "s").table("t").read(v).column("id").to_pylist())
    COUNTS["cleanup_races"] += 1


def test_a_tag_created_during_a_cleanup_protects_its_version(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, defect 3: tag("pin", 5) while a cleanup that chose version 5 runs."""
    store = Store(tmp_path / "s")
    _history(store)
    th, box = _paused_cleanup(store, 2.0, monkeypatch)
    assert 5 in box["chosen"]
    store.table("t").tag("pin", 5)
    th.join(120)
    assert "error" not in box, box
    assert 5 not in box["report"].removed_versions
    _check_readable(store, {"pin": 5})
    assert store.table("t").read("pin").num_rows == store.table("t").read(5).num_rows
    COUNTS["cleanup_races"] += 1


def test_writes_and_an_index_build_during_a_cleanup(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from embed_assets import build_index

    store = Store(tmp_path / "s")
    store.write("t", rows(list(range(600)), seed=0), key="id", mode="overwrite")
    for i in range(1, 4):
        store.write("t", rows([i, 1000 + i], seed=i), key="id", mode="upsert", delete_keys=[300 + i])
    th, box = _paused_cleanup(store, 2.0, monkeypatch)
    for i in range(4, 7):
        store.write("t", rows([i, 1000 + i], seed=i), key="id", mode="upsert", delete_keys=[300 + i])
    build_index(store.table("t"), force_ann=True, recall=0.8)
    store.write("t", rows([2000], seed=9), key="id", mode="append")
    th.join(120)
    assert "error" not in box, box
    _check_readable(store)
    ids = _assert_unique(store)
    assert 2000 in ids and 1006 in ids and 306 not in ids
    COUNTS["cleanup_races"] += 1


def test_a_rollback_to_a_version_a_cleanup_removed_is_refused_clearly(tmp_path: Path) -> None:
    import datetime as dt

    from embed_assets import VersionNotFoundError

    store = Store(tmp_path / "s")
    _history(store, 4)
    t = store.table("t")
    assert t.read(2).num_rows  # this handle resolved version 2 before the cleanup
    Store(tmp_path / "s").table("t").cleanup(keep_last=1, grace=dt.timedelta(0))
    with pytest.raises(VersionNotFoundError, match="version 2"):
        t.rollback(2)
    with pytest.raises(VersionNotFoundError, match="version 2"):
        t.tag("late", 2)
    assert "late" not in t.tags()
    _check_readable(store)


# -- a handle across another process's drop and re-create; error classes ------------------------
def test_a_handle_kept_across_a_drop_and_recreate_serves_the_new_table(tmp_path: Path) -> None:
    """Issue 21, defect 4: get() returned a row of the dropped table; read, search and
    SQL count failed with "Not found"."""
    from embed_assets import connect

    store = Store(tmp_path / "s")
    store.write("t", rows([1, 2, 3], seed=0), key="id")
    t = store.table("t")
    assert t.get([1]).column("src").to_pylist() == ["s0"]  # key index cached for version 1
    con = connect(store, extensions=())
    assert con.sql("SELECT count(*) FROM t").fetchone()[0] == 3
    code = ("import sys; sys.path.insert(0, {root!r}); from embed_assets import Store; "
            "from tests.concurrency_worker import rows; s = Store({path!r}); s.drop('t'); "
            "s.write('t', rows([1, 7], seed=5), key='id')").format(root=str(ROOT), path=str(tmp_path / "s"))
    subprocess.run([sys.executable, "-c", code], check=True, env=ENV, timeout=120)
    assert t.version == 1  # the same version number, another table
    assert t.get([1, 2]).column("src").to_pylist() == ["s5"]
    assert sorted(t.read().column("id").to_pylist()) == [1, 7]
    assert t.search(rows([1, 7], seed=5)["vector"][1].values.to_numpy(), k=1).column("id").to_pylist() == [7]
    assert con.sql("SELECT count(*) FROM t").fetchone()[0] == 2
    con.close()


def test_failure_paths_raise_the_documented_error_classes(tmp_path: Path) -> None:
    """Issue 21, defect 5."""
    from embed_assets import StorageError
    from embed_assets.store._validation import validate_table_name

    store = Store(tmp_path / "s")
    store.write("t", rows([1, 2, 3], seed=0), key="id")
    t = store.table("t")
    # bad input, typed; nothing changes
    with pytest.raises(ValidationError, match="delete_keys must be values of the key column"):
        store.write("t", rows([4], seed=1), key="id", mode="upsert", delete_keys=["1 OR 1=1"])
    for bad in ("prod\n", "_ea-cleanup-1"):
        with pytest.raises(ValidationError):
            t.tag(bad)
    with pytest.raises(ValidationError):
        validate_table_name("t\n")
    assert t.version == 1 and t.tags() == {} and sorted(_ids(store)) == [1, 2, 3]
    # a torn read (a data file gone under the reader) is the storage failing, not bad input
    data = tmp_path / "s" / "t.lance" / "data"
    for f in data.iterdir():
        f.unlink()
    with pytest.raises(StorageError):
        t.read()
    with pytest.raises(StorageError):
        t.read(where="id > 0")


# -- object storage: the paused writer, delayed and lost commit answers --------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the local S3 server")
    from .s3_server import moto_server

    with moto_server(str(tmp_path_factory.mktemp("moto"))) as server:
        yield server


_buckets = iter(range(10**6))


def _s3_table(s3) -> tuple[str, dict[str, str]]:
    bucket = s3.create_bucket(f"ea-conc-{next(_buckets)}")
    uri, opts = f"s3://{bucket}/s", s3.storage_options()
    Store(uri, storage_options=opts).write("t", rows([0, 1], seed=0), key="id")
    return uri, opts


def _one_writer_won(store: Store, keys: list[int]) -> set[str]:
    """0 duplicate keys, every key once, and all of them from one writer's rows."""
    ids = _assert_unique(store)
    assert sorted(ids) == [0, 1, *keys]
    src = set(store.table("t").read(columns=["src"], where=f"id >= {keys[0]}").column("src").to_pylist())
    assert len(src) == 1, src
    return src


@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_writer_paused_after_planning_on_s3(s3, mode: str) -> None:
    """Issue 21, defect 1 on object storage: the landed lease let the paused writer
    commit after its lease was taken over (200 duplicate keys); a fenced commit cannot."""
    uri, opts = _s3_table(s3)
    a, b = paused_writer_round(uri, mode, pause_s=35.0 if FULL else 2.0, options=opts)
    src = _one_writer_won(Store(uri, storage_options=opts), list(range(1000, 1200)))
    assert b["outcome"] == "committed"
    if mode == "append":
        assert a["outcome"] == "refused" and "already exist" in a["message"] and src == {"s2"}
    else:
        assert a["outcome"] == "committed" and a["updated"] == 200 and src == {"s1"}
    COUNTS["paused_writers_s3"] += 1


@pytest.mark.parametrize("fault", ["delay", "drop"])
@pytest.mark.parametrize("mode", ["append", "upsert"])
def test_a_commit_whose_answer_is_delayed_or_lost(s3, fault: str, mode: str) -> None:
    """A's manifest PUT reaches the server, its answer is held (25 s under stress) or
    the connection drops; B writes the same keys meanwhile. Whatever A is told, the
    table holds every key once, all from one writer."""
    from .s3_proxy import proxy

    uri, opts = _s3_table(s3)
    keys = list(range(1000, 1200))
    with proxy(s3.endpoint, delay_s=25.0 if FULL else 4.0, drop=fault == "drop") as px:
        a = _worker(uri, mode, keys, seed=1, options={**opts, "aws_endpoint": px.endpoint})
        assert px.seen.wait(180), "A never committed"
        b = _outcome(_worker(uri, mode, keys, seed=2, options=opts))
        got = _outcome(a)
    store = Store(uri, storage_options=opts)
    _one_writer_won(store, keys)
    assert {got["outcome"], b["outcome"]} <= {"committed", "refused"}
    if mode == "append":  # at most one append reports success, and one of them landed
        assert [got["outcome"], b["outcome"]].count("committed") <= 1
    versions = [v.version for v in store.table("t").versions()]
    assert versions == list(range(1, len(versions) + 1))
    for v in versions:  # no version references a file its writer deleted after a lost answer
        _content(store, v)
    COUNTS[f"s3_commit_{fault}/{mode}/A_{got['outcome']}/B_{b['outcome']}"] += 1


def test_migrate_declares_the_primary_key_of_an_older_table_once(tmp_path: Path) -> None:
    import lance

    from embed_assets.store._writes import has_primary_key

    store = Store(tmp_path / "s")
    # a table as embed_assets wrote it before: the key column nullable, no primary key
    store.write("t", rows([1, 2], seed=0), key="id")
    t = store.table("t")
    ds = t.dataset()
    old = ds.schema.set(0, ds.schema.field("id").with_nullable(True).with_metadata({}))
    lance.write_dataset(ds.to_table().cast(old), ds.uri, mode="overwrite")
    t = store.table("t")
    assert not has_primary_key(t.dataset().schema, "id")
    before = [v.version for v in t.versions()]
    assert t.migrate() is True
    assert has_primary_key(t.dataset().schema, "id")
    assert t.migrate() is False  # idempotent: no version the second time
    assert [v.version for v in t.versions()] == before  # a maintenance version, hidden
    assert t.properties(t.version)["mode"] == "migrate"
    store.write("t", rows([3], seed=1), key="id", mode="append")
    assert sorted(_ids(store)) == [1, 2, 3] and has_primary_key(t.dataset().schema, "id")


def test_a_commit_whose_answer_is_lost_is_found_and_not_redone(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit landed, the writer was told it failed (a dropped answer): the write
    finds its own transaction and reports it committed; its files stay."""
    import lance

    store = Store(tmp_path / "s")
    store.write("t", rows([0], seed=0), key="id")
    real = lance.LanceDataset.commit

    def lost_answer(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError("error sending request: connection reset by peer")

    monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(lost_answer))
    for mode, keys in (("append", [1, 2]), ("upsert", [2, 3])):
        res = store.write("t", rows(keys, seed=1), key="id", mode=mode)
        assert res.committed and res.retries == 0
    monkeypatch.undo()
    t = store.table("t")
    assert [v.version for v in t.versions()] == [1, 2, 3]
    for v in (1, 2, 3):
        _content(store, v)
    assert sorted(_ids(store)) == [0, 1, 2, 3]


def test_listing_tags_survives_a_tag_deleted_meanwhile(tmp_path: Path) -> None:
    """pylance 14 fails a whole tag listing when one tag file is deleted between its
    listing and its reading (a rollback's guard tag going away): seen in the 8-writer
    test. Provoked here: a thread creates and deletes tags while this one lists."""
    import threading

    from embed_assets.store._retention import list_tags

    store = Store(tmp_path / "s")
    store.write("t", rows([1], seed=0), key="id")
    ds = store.table("t").dataset()
    other = Store(tmp_path / "s").table("t").dataset()  # (a handle is not shared by threads)
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            other.tags.create(f"_ea-guard-{i}", 1)
            other.tags.delete(f"_ea-guard-{i}")
            i += 1

    th = threading.Thread(target=churn)
    th.start()
    try:
        for _ in range(100 if not FULL else 1000):
            assert set(list_tags(ds)) <= {f"_ea-guard-{i}" for i in range(100_000)}
    finally:
        stop.set()
        th.join()
