"""Training snapshots: exported once per (store, table identity, version), memory-mapped,
checksummed, written atomically, read as numpy batches or PyTorch datasets."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from embed_assets import (
    StorageError,
    Store,
    ValidationError,
    VersionNotFoundError,
    cleanup_snapshots,
    open_snapshot,
    snapshot,
)
from embed_assets.train import _snapshot, list_snapshots

from .conftest import vectors_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "snapshots")


@pytest.fixture
def table(store):
    store.write("t", vectors_table(list(range(100)), dim=8, sec=[f"s{i % 3}" for i in range(100)]),
                key="id")
    store.write("t", vectors_table([1000, 1001], dim=8, seed=5, sec=["x", "y"]), key="id", mode="append")
    t = store.table("t")
    t.tag("v1", 1)
    return t


def _by_key(tbl) -> dict:
    return dict(zip(tbl.column("id").to_pylist(), tbl.column("vector").to_pylist(), strict=True))


def test_snapshot_holds_exactly_the_version(table, cache):
    snap = snapshot(table, "v1", columns=["sec"], cache_dir=cache)
    assert not snap.reused and snap.version == 1 and snap.vectors.shape == (100, 8)
    assert isinstance(snap.vectors, np.memmap) and snap.vectors.dtype == np.float32
    stored = _by_key(table.read(1))
    keys = snap.keys().tolist()
    assert sorted(keys) == list(range(100))
    for k, row in zip(keys, snap.vectors, strict=True):
        assert np.array_equal(row, np.asarray(stored[k], np.float32))
    secs = dict(zip(table.read(1).column("id").to_pylist(), table.read(1).column("sec").to_pylist(),
                    strict=True))
    assert snap.table.column("sec").to_pylist() == [secs[k] for k in keys]
    with open(os.path.join(snap.path, "manifest.json")) as f:
        man = json.load(f)
    assert (man["version"], man["table_id"], man["store"]) == (1, table.identity, table.store.uri)


def test_reused_across_calls_and_processes(table, cache):
    first = snapshot(table, 2, cache_dir=cache)
    again = snapshot(table, 2, cache_dir=cache)
    assert again.reused and again.path == first.path
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from embed_assets import Store, snapshot; "
            f"s = snapshot(Store({table.store.uri!r}).table('t'), 2, cache_dir={cache!r}); "
            "print(s.reused, s.path, s.vectors.sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    reused, path, total = out.stdout.split()
    assert reused == "True" and path == first.path
    assert np.isclose(float(total), float(first.vectors.sum()), rtol=1e-5)
    assert len(list_snapshots(cache)) == 1


def test_keyed_by_store_identity_and_version(store, table, cache, tmp_path):
    a = snapshot(table, 1, cache_dir=cache)
    assert snapshot(table, "v1", cache_dir=cache).path == a.path  # a tag is its version
    assert snapshot(table, 2, cache_dir=cache).path != a.path
    assert snapshot(table, 1, columns=["sec"], cache_dir=cache).path != a.path
    other = Store(tmp_path / "other")  # same table name and version in another store
    other.write("t", vectors_table(list(range(100)), dim=8, sec=["a"] * 100), key="id")
    b = snapshot(other.table("t"), 1, cache_dir=cache)
    assert b.path != a.path and not b.reused
    store.drop("t")  # recreated under the same name: a new identity, a new snapshot
    store.write("t", vectors_table([7], dim=8), key="id")
    c = snapshot(store.table("t"), 1, cache_dir=cache)
    assert c.path not in (a.path, b.path) and c.rows == 1


def test_a_corrupt_snapshot_is_refused_and_rebuilt(table, cache):
    snap = snapshot(table, 1, cache_dir=cache)
    path = os.path.join(snap.path, "vectors.f32")
    good = np.array(snap.vectors)
    with open(path, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    _snapshot._verified.clear()  # as a fresh process would see it
    with pytest.raises(StorageError, match="does not match its checksum"):
        open_snapshot(snap.path)
    again = snapshot(table, 1, cache_dir=cache)
    assert not again.reused and np.array_equal(np.array(again.vectors), good)
    with open(path, "ab") as f:  # a truncated or grown file fails the cheap size check
        f.write(b"x")
    with pytest.raises(StorageError, match="bytes"):
        open_snapshot(snap.path, verify="size")


_KILLED = r"""
import os, signal, sys
sys.path.insert(0, {root!r})
from embed_assets import Store
from embed_assets.train import _snapshot
real = _snapshot._export
def dying(table, ds, key, cols, tmp, batch_rows):
    man = real(table, ds, key, cols, tmp, batch_rows)  # every file written, not yet renamed
    os.kill(os.getpid(), signal.SIGKILL)
_snapshot._export = dying
_snapshot.snapshot(Store({uri!r}).table("t"), 1, cache_dir={cache!r})
"""


def test_a_killed_export_leaves_nothing_that_is_reused(table, cache):
    code = _KILLED.format(root=ROOT, uri=table.store.uri, cache=cache)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = os.listdir(cache)
    assert len(left) == 1 and left[0].startswith(".tmp-")  # only the unrenamed work folder
    assert list_snapshots(cache) == []
    snap = snapshot(table, 1, cache_dir=cache)
    assert not snap.reused and snap.rows == 100
    assert cleanup_snapshots(cache, older_than=dt.timedelta(days=1), tmp_grace=dt.timedelta(0)) == [
        os.path.join(cache, left[0])]
    assert os.listdir(cache) == [os.path.basename(snap.path)]


def test_numpy_batches_cover_each_row_once(table, cache):
    snap = snapshot(table, 2, columns=["sec"], cache_dir=cache)
    plain = list(snap.batches(25))
    assert [len(b["id"]) for b in plain] == [25, 25, 25, 25, 2]
    assert np.concatenate([b["id"] for b in plain]).tolist() == snap.keys().tolist()
    shuffled = list(snap.batches(25, shuffle=True, seed=3))
    ids = np.concatenate([b["id"] for b in shuffled])
    assert sorted(ids.tolist()) == sorted(snap.keys().tolist()) and ids.tolist() != snap.keys().tolist()
    assert [b["id"].tolist() for b in snap.batches(25, shuffle=True, seed=3)] == [
        b["id"].tolist() for b in shuffled]  # the same seed, the same epoch
    first = shuffled[0]
    stored = _by_key(table.read(2))
    for k, v, sec in zip(first["id"], first["vector"], first["sec"], strict=True):
        assert np.array_equal(v, np.asarray(stored[k], np.float32)) and isinstance(sec, str)
    assert [len(b["id"]) for b in snap.batches(25, drop_last=True)] == [25] * 4
    shards = [np.concatenate([b["id"] for b in snap.batches(10, shard=(i, 3))]) for i in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == sorted(snap.keys().tolist())
    assert set(plain[0]) == {"vector", "id", "sec"}
    assert set(next(snap.batches(5, columns=[]))) == {"vector", "id"}
    with pytest.raises(ValidationError, match="batch_size"):
        next(snap.batches(0))


# The workers fork from a process that has used Lance; they only read the memmap.
@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
def test_torch_datasets(table, cache):
    import torch
    from torch.utils.data import DataLoader

    snap = snapshot(table, 2, cache_dir=cache)
    ds = snap.torch_dataset()
    assert len(ds) == 102
    item = ds[5]
    assert isinstance(item["vector"], torch.Tensor) and item["vector"].shape == (8,)
    assert torch.equal(item["vector"], torch.from_numpy(np.array(snap.vectors[5])))
    loader = DataLoader(ds, batch_size=16)
    assert sum(len(b["vector"]) for b in loader) == 102
    it = snap.torch_iterable(batch_size=10, shuffle=True, seed=1)
    seen = [k for b in DataLoader(it, batch_size=None, num_workers=2) for k in b["id"].tolist()]
    assert sorted(seen) == sorted(snap.keys().tolist())  # two workers, each row once
    it.set_epoch(1)
    again = [k for b in DataLoader(it, batch_size=None, num_workers=2) for k in b["id"].tolist()]
    assert sorted(again) == sorted(seen) and again != seen
    it.set_epoch(0)
    import pickle

    clone = pickle.loads(pickle.dumps(it))  # what spawn sends a worker: a path, not the data
    assert len(pickle.dumps(it)) < 10_000 and sum(len(b["id"]) for b in clone) == 102
    e1 = [b["id"].tolist() for b in it]
    e2 = [b["id"].tolist() for b in it]
    assert e1 != e2  # a new permutation per epoch


def test_cleanup_by_use_and_count(table, cache):
    s1 = snapshot(table, 1, cache_dir=cache)
    s2 = snapshot(table, 2, cache_dir=cache)
    old = (dt.datetime.now() - dt.timedelta(days=3)).timestamp()
    for name in ("manifest.json", ".last_used"):
        p = os.path.join(s1.path, name)
        if os.path.exists(p):
            os.utime(p, (old, old))
    assert cleanup_snapshots(cache, older_than=dt.timedelta(days=1)) == [s1.path]
    assert [s.path for s in list_snapshots(cache)] == [s2.path]
    snapshot(table, 1, cache_dir=cache)
    assert cleanup_snapshots(cache, keep_last=1, table="other") == []
    assert len(cleanup_snapshots(cache, keep_last=1, table="t")) == 1
    with pytest.raises(ValidationError, match="keep_last and/or older_than"):
        cleanup_snapshots(cache)


def test_bad_input_changes_nothing(table, cache):
    with pytest.raises(VersionNotFoundError, match="no version 9"):
        snapshot(table, 9, cache_dir=cache)
    with pytest.raises(VersionNotFoundError, match="no tag 'nope'"):
        snapshot(table, "nope", cache_dir=cache)
    with pytest.raises(ValidationError, match="unknown column"):
        snapshot(table, 1, columns=["missing"], cache_dir=cache)
    assert not os.path.exists(cache) or os.listdir(cache) == []


def test_import_does_not_load_torch():
    code = ("import sys, embed_assets, embed_assets.train; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_cli_snapshot(table, cache):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "embed_assets.cli", "--store", table.store.uri, "snapshot", "t"]
    out = subprocess.run([*cmd, "--version", "v1", "--columns", "sec", "--dir", cache, "--json"],
                         capture_output=True, text=True, env=env, check=True)
    got = json.loads(out.stdout)
    assert (got["version"], got["rows"], got["columns"], got["reused"]) == (1, 100, ["sec"], False)
    again = subprocess.run([*cmd, "--version", "1", "--columns", "sec", "--dir", cache],
                           capture_output=True, text=True, env=env, check=True)
    assert again.stdout.startswith("reused t version 1: 100 x 8 float32")
    bad = subprocess.run([*cmd, "--version", "nope", "--dir", cache], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "no tag 'nope'" in bad.stderr
