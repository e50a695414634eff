"""The library's in-memory state is one bounded object, evicted per table, and importing
embed_assets registers nothing (issue 22, point 4). Real Lance tables throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Store, build_index, freshness, refresh_index
from embed_assets.store import STATE, Facts, StoreState, VersionKey
from embed_assets.store import Store as LayerStore

from .conftest import vectors_table

ROOT = Path(__file__).resolve().parents[1]


def _uris() -> set[str]:
    """The table URIs something is held for, in the matrices and in the facts."""
    return {k.uri for k, _ in STATE.matrices._items} | {k.uri for k, _ in STATE.facts._items}


def _held(uri: str) -> set[int]:
    """The versions of one table something is held for."""
    return ({k.version for k, _ in STATE.matrices._items if k.uri == uri}
            | {k.version for k, _ in STATE.facts._items if k.uri == uri})


def _warm(store: Store, name: str) -> None:
    t = store.table(name)
    t.search(np.ones(4, np.float32), k=2)
    t.partitions()  # partition epochs: a fact per (version, partition)
    assert _held(t.uri), "a search holds something for the table"


@pytest.fixture()
def two_tables(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s")
    for name in ("a", "b"):
        for sec in ("x", "y"):  # partition writes: the table records its partition column
            keys = list(range(0 if sec == "x" else 1, 40, 2))
            store.write(name, vectors_table(keys, seed=len(sec), sec=[sec] * len(keys)), key="id",
                        mode="replace_partition", partition=("sec", sec))
    STATE.clear()
    _warm(store, "a")
    _warm(store, "b")
    return store


def test_dropping_a_table_evicts_it_and_no_other(two_tables: Store) -> None:
    a, b = two_tables.table("a").uri, two_tables.table("b").uri
    epochs = [k for k, kind in STATE.facts._items if k.uri == a and kind.startswith("epoch")]
    assert epochs, "partition epochs are held (and were never evicted before issue 22)"
    two_tables.drop("a")
    assert a not in _uris() and b in _uris()


def test_an_overwrite_evicts_the_versions_it_replaced(two_tables: Store) -> None:
    a, b = two_tables.table("a").uri, two_tables.table("b").uri
    before_b = _held(b)
    r = two_tables.write("a", vectors_table([1, 2, 3], seed=4, sec=["x", "y", "x"]), key="id",
                         mode="overwrite")
    assert not {v for v in _held(a) if v < r.version}
    assert _held(b) == before_b  # the other table keeps everything
    _warm(two_tables, "a")
    assert _held(a) == {r.version}


def test_a_rollback_evicts_the_versions_before_it_and_the_index_keeper_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(600, 16)).astype(np.float32)
    data = pa.table({"id": np.arange(600),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 16)})
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    store.write("other", data.slice(0, 50), key="id")
    t = store.table("t")
    build_index(t, force_ann=True)
    t.search(mat[5], k=1)
    store.table("other").search(mat[5], k=1)
    other = store.table("other").uri
    before_other = _held(other)
    restored = t.rollback(1)
    # embed_assets.Store wires the index policy's rebuild: the index is back, re-tuned
    vec_idx = [i for i in t.dataset().describe_indices() if i.field_names == ["vector"]]
    assert vec_idx and freshness(t)["pending_rebuild"] is None
    assert not {v for v in _held(t.uri) if v < restored}
    assert _held(other) == before_other
    assert t.search(mat[5], k=1, use_index=True)["id"].to_pylist() == [5]


def test_a_store_without_an_index_keeper_records_the_pending_rebuild(tmp_path: Path) -> None:
    """The store layer alone calls nothing upward: its rollback records the rebuild, and
    the index policy finishes it when asked. A keeper given to the store is called."""
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(600, 16)).astype(np.float32)
    data = pa.table({"id": np.arange(600),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 16)})
    plain = LayerStore(tmp_path / "s")
    assert plain.index_keeper is None
    plain.write("t", data.slice(0, 300), key="id")
    plain.write("t", data.slice(300), key="id", mode="append")
    build_index(plain.table("t"), force_ann=True)
    plain.table("t").rollback(1)
    t = plain.table("t")
    assert freshness(t)["pending_rebuild"] is not None
    assert refresh_index(t)["action"] == "rebuilt"

    seen: list[tuple[str, str]] = []
    kept = LayerStore(tmp_path / "s", index_keeper=lambda tb, rep, typ: seen.append((tb.name, typ)))
    kept.table("t").rollback(2)
    assert seen and seen[0][0] == "t" and seen[0][1].startswith("IVF")


def test_clear_one_table_or_everything(two_tables: Store) -> None:
    a, b = two_tables.table("a"), two_tables.table("b")
    STATE.clear(a)
    assert a.uri not in _uris() and b.uri in _uris()
    STATE.clear()
    assert not _uris() and STATE.stats()["matrices"] == 0 and STATE.stats()["facts"] == 0


def test_the_bounds_hold(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    for i in range(6):
        store.write(f"t{i}", vectors_table(list(range(200)), dim=16, seed=i), key="id")
    one = 200 * 16 * 4
    state = StoreState(max_bytes=3 * one, max_facts=5)
    for i in range(6):
        t = store.table(f"t{i}")
        ds = t.dataset()
        assert state.matrices.matrix(t.cache_key(ds.version), ds, "cosine") is not None
        assert state.matrices.nbytes <= 3 * one
        state.facts.get(t.cache_key(ds.version), "rows", ds.count_rows)
        state.facts.get(t.cache_key(ds.version), "schema", lambda ds=ds: ds.schema)
    s = state.stats()
    assert s["matrices"] == 3 and s["matrix_bytes"] == 3 * one and s["facts"] == 5
    # least recently used out first: the last table's entries are all there
    last = store.table("t5").cache_key(1)
    assert state.facts.peek(last, "rows") == 200 and (last, "matrix/unit") in state.matrices._items
    # a matrix larger than the whole bound is not held at all
    small = StoreState(max_bytes=one // 2)
    t = store.table("t0")
    assert small.matrices.matrix(t.cache_key(1), t.dataset(), "cosine") is None
    assert small.stats()["matrix_bytes"] == 0


def test_facts_evict_least_recently_used() -> None:
    f = Facts(max_items=3)
    keys = [VersionKey("u", "id", v) for v in range(4)]
    for k in keys[:3]:
        f.put(k, "n", k.version)
    assert f.get(keys[0], "n", lambda: -1) == 0  # touched: now the most recent
    f.put(keys[3], "n", 3)
    assert f.peek(keys[1], "n") is None and f.peek(keys[0], "n") == 0 and len(f) == 3


def test_thread_locks_live_while_held() -> None:
    state = StoreState()
    lock = state.thread_lock("/x/t.lock")
    assert state.thread_lock("/x/t.lock") is lock  # held: every writer gets the same one
    del lock
    assert not list(state._locks.keys())  # released: nothing kept


_PROBE = r"""
import json, sys, tempfile
import embed_assets  # (importing any submodule runs this first)
import embed_assets.store as layer

# What the store layer and those below it hold that comes from a layer above them: a
# callable or object installed there by an import (the rollback hook was, before issue 22).
ABOVE = tuple(f"embed_assets.{p}" for p in ("index", "embed", "train", "sql", "recipes",
                                              "_demo", "serve", "cli", "dagster"))
BELOW = ("embed_assets.store", "embed_assets.kernels", "embed_assets.errors", "embed_assets._config")
from_above = sorted(
    f"{n}.{k}" for n, m in list(sys.modules.items()) if n.startswith(BELOW)
    for k, v in vars(m).items()
    if str(getattr(v, "__module__", "") or "").startswith(ABOVE)
    or str(getattr(type(v), "__module__", "") or "").startswith(ABOVE))
print(json.dumps({"from_above": from_above, "stats": layer.STATE.stats(),
                  "keeper": repr(layer.Store(tempfile.mkdtemp()).index_keeper),
                  "root_keeper": embed_assets.Store(tempfile.mkdtemp()).index_keeper.__name__}))
"""


def test_importing_embed_assets_registers_nothing() -> None:
    """A fresh process that imports the package: no module of the store layer (or below)
    holds anything from a layer above it (before issue 22 the import installed the index
    policy's rebuild in ``store._rollback``), and the state object holds nothing."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["from_above"] == [], got["from_above"]
    assert got["stats"]["matrices"] == got["stats"]["facts"] == got["stats"]["clients"] == 0
    assert got["keeper"] == "None"  # the store layer's own Store: no hook unless given one
    assert got["root_keeper"] == "_rebuild_after_rollback"  # embed_assets.Store wires it (lazily: issue 29)


def test_threads_of_one_process_take_turns_through_the_weakly_held_lock(tmp_path: Path) -> None:
    """Writers on threads of one process share one lock per table while any holds it (the
    registry holds locks weakly): eight concurrent upserts all land, none had to re-plan."""
    import threading

    store = Store(tmp_path / "s")
    store.write("t", vectors_table([0]), key="id")
    results: list[object] = []

    def write(i: int) -> None:
        results.append(store.write("t", vectors_table([i * 10 + j for j in range(1, 4)], seed=i),
                                   key="id"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8 and all(r.retries == 0 for r in results)  # type: ignore[attr-defined]
    assert store.table("t").read(columns=["id"]).num_rows == 1 + 8 * 3
    assert store.table("t").version == 9


def test_the_default_cache_holds_the_graph_of_a_3m_row_table(monkeypatch):
    """A fixed 4 GiB dropped the graph of a 2.5M-row table (issue 29: searches fell to
    Lance's IVF-PQ, 10-13x slower, on a 24 GB machine). The default is now half the
    machine's memory, which holds a 3M x 384 graph where the machine has 16 GB or more."""
    import os

    from embed_assets._config import settings
    from embed_assets.store import StoreState

    monkeypatch.delenv("EMBED_ASSETS_CACHE_BYTES", raising=False)
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert settings().cache_bytes == phys // 2
    assert StoreState().matrices.max_bytes == phys // 2
    graph_3m = 3_000_000 * (384 * 4 + 2 * 16 * 4 + 8)  # hnswlib level 0: vector, links, label
    if phys >= 16 << 30:
        assert StoreState().matrices.max_bytes > graph_3m
    monkeypatch.setenv("EMBED_ASSETS_CACHE_BYTES", "1000")
    assert StoreState().matrices.max_bytes == 1000
