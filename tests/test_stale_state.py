"""State the library keeps in memory must follow the store: recreated tables, the version
being read, a connection's view metadata, results the caller still holds, exact key
lookups, and errors that say what failed (issue 9's defects, one test or more each)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import (
    EmbedAssetsError,
    HashEmbedder,
    QueryError,
    SchemaMismatchError,
    StorageError,
    Store,
    TableNotFoundError,
    ValidationError,
    connect,
    embed_table,
)
from embed_assets.sql import run_sql


def table(keys: list, vectors: list[list[float]]) -> pa.Table:
    dim = len(vectors[0])
    flat = pa.array(np.asarray(vectors, np.float32).reshape(-1))
    return pa.table({"id": keys, "vector": pa.FixedSizeListArray.from_arrays(flat, dim)})


# -- 1. a table dropped and recreated behind the store's back -----------------------------
def test_search_after_the_table_was_recreated_from_outside(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", table([1, 2, 3], [[1, 0], [0, 1], [1, 1]]), key="id")
    assert store.table("t").search([1, 0], k=1)["id"].to_pylist() == [1]  # fills the caches
    shutil.rmtree(tmp_path / "s" / "t.lance")  # another process's drop
    store.write("t", table([10, 20, 30], [[1, 0], [0, 1], [1, 1]]), key="id")
    t = store.table("t")
    assert t.version == 1  # the same (uri, version) as the dropped table
    assert t.search([1, 0], k=1)["id"].to_pylist() == [10]
    assert t.get([10, 1])["id"].to_pylist() == [10]
    assert sorted(t.read()["id"].to_pylist()) == [10, 20, 30]


def test_a_relative_store_path_is_pinned_where_it_was_opened(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    sa = Store("store")
    sa.write("t", table([1, 2], [[1, 0], [0, 1]]), key="id")
    assert sa.table("t").search([1, 0], k=1)["id"].to_pylist() == [1]
    monkeypatch.chdir(tmp_path / "b")
    sb = Store("store")
    sb.write("t", table([7, 8], [[1, 0], [0, 1]]), key="id")
    assert sb.table("t").search([1, 0], k=1)["id"].to_pylist() == [7]
    # The first store still means the folder it was opened in.
    assert sa.table("t").search([1, 0], k=1)["id"].to_pylist() == [1]
    assert Path(sa.uri) == tmp_path / "a" / "store"


def test_table_identity_changes_when_a_table_is_recreated(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", table([1], [[1, 0]]), key="id")
    first = store.table("t").identity
    store.drop("t")
    store.write("t", table([1], [[1, 0]]), key="id")
    assert store.table("t").identity != first
    # An overwrite is a new version of the same table, not a new table.
    again = store.table("t").identity
    store.write("t", table([2], [[0, 1]]), key="id", mode="overwrite")
    assert store.table("t").identity == again


# -- 2. time travel checks the model of the version being read ---------------------------
def test_search_an_old_version_with_its_own_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    a, b = HashEmbedder(dimension=16, name="model-a"), HashEmbedder(dimension=16, seed=1, name="model-b")
    src = {"id": [1, 2, 3], "text": ["text editor", "web browser", "image viewer"]}
    embed_table(store, "docs", src, key="id", text="text", embedder=a)
    embed_table(store, "docs", src, key="id", text="text", embedder=b, mode="overwrite")
    t = store.table("docs")
    assert t.search("text editor", k=1, version=1, embedder=a)["id"].to_pylist() == [1]
    with pytest.raises(SchemaMismatchError, match="model-a"):
        t.search("text editor", k=1, version=1, embedder=b)
    assert t.search("text editor", k=1, embedder=b)["id"].to_pylist() == [1]
    with pytest.raises(SchemaMismatchError, match="model-b"):
        t.search("text editor", k=1, embedder=a)
    assert t.meta_at(1).model == "model-a" and t.meta.model == "model-b"


def test_cli_search_version_uses_that_versions_model(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    src = {"id": [1, 2, 3], "text": ["text editor", "web browser", "image viewer"]}
    embed_table(store, "docs", src, key="id", text="text", embedder=HashEmbedder(dimension=16))
    rng = np.random.default_rng(0)
    store.write("docs", table([1, 2, 3], rng.normal(size=(3, 16)).tolist()), key="id",
                mode="overwrite", model="some-other-model")
    proc = subprocess.run(
        [sys.executable, "-m", "embed_assets.cli", "--store", str(tmp_path / "s"), "search", "docs",
         "text editor", "-k", "1", "--version", "1", "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '"id": 1' in proc.stdout


# -- 3. a connection follows a table whose schema changed -------------------------------
def test_connection_follows_a_dimension_change(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", table([1, 2], [[1, 0], [0, 1]]), key="id")
    con = connect(store, extensions=())
    assert con.sql("SELECT id FROM knn('t', [1.0, 0.0], 1)").fetchall() == [(1,)]
    store.write("t", table([5, 6], [[0, 0, 1], [1, 0, 0]]), key="id", mode="overwrite")
    assert con.sql("SELECT count(*) FROM t").fetchone()[0] == 2
    assert con.sql("SELECT id FROM knn('t', [1.0, 0.0, 0.0], 1)").fetchall() == [(6,)]
    assert con.execute("SELECT id FROM knn('t', ?, 1)", [[0.0, 0.0, 1.0]]).fetchall() == [(5,)]
    # ... and a key column renamed by an overwrite.
    store.write("t", pa.table({"name": ["x", "y"], "vector": table([0, 1], [[1, 0, 0], [0, 1, 0]])
                               .column("vector")}), key="name", mode="overwrite")
    assert con.sql("SELECT name FROM knn('t', [0.0, 1.0, 0.0], 1)").fetchall() == [("y",)]
    con.close()


# -- 4. lazy results keep what they read ---------------------------------------------------
def test_lazy_knn_relations_stay_valid_while_held(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(50, 4))
    store.write("t", table(list(range(50)), mat.tolist()), key="id")
    con = connect(store, extensions=())
    rels = [con.sql("SELECT id FROM knn('t', ?, 1)", params=[mat[i].tolist()]) for i in range(20)]
    assert [r.fetchall() for r in rels] == [[(i,)] for i in range(20)]
    assert rels[0].fetchall() == [(0,)]  # fetched again
    del rels
    con.close()


# -- 5. key lookups never cast the requested keys ----------------------------------------
def test_get_does_not_cast_keys(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("ints", table([1, 2, 3], [[1, 0], [0, 1], [1, 1]]), key="id")
    ints = store.table("ints")
    assert ints.get([1.5]).num_rows == 0
    assert ints.get(["1"]).num_rows == 0
    assert ints.get([True]).num_rows == 0
    assert ints.get([2, 1.5, 3])["id"].to_pylist() == [2, 3]
    assert ints.get([np.int64(1)])["id"].to_pylist() == [1]
    assert ints.get([2**70]).num_rows == 0  # beyond int64: not stored, not an overflow
    strs = store.write("strs", pa.table({"id": ["1", "a"], "vector": table([0, 1], [[1, 0], [0, 1]])
                                         .column("vector")}), key="id")
    assert strs.committed
    s = store.table("strs")
    assert s.get([1]).num_rows == 0
    assert s.get(["1", "a"])["id"].to_pylist() == ["1", "a"]


# -- 6. errors say what failed -------------------------------------------------------------
def test_a_broken_table_is_not_reported_as_missing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", table([1], [[1, 0]]), key="id")
    for f in (tmp_path / "s" / "t.lance" / "_versions").iterdir():
        f.write_bytes(b"not a manifest")
    with pytest.raises(StorageError) as err:
        store.table("t")
    assert not isinstance(err.value, TableNotFoundError)
    assert "t" in str(err.value)
    with pytest.raises(TableNotFoundError, match="tables: t"):
        store.table("u")


def test_sql_errors_are_query_errors_not_validation_errors(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", table([1], [[1, 0]]), key="id")
    with pytest.raises(QueryError, match="no_such_column") as err:
        run_sql(store, "SELECT no_such_column FROM t", extensions=())
    assert not isinstance(err.value, ValidationError)
    assert isinstance(err.value, EmbedAssetsError)
    with pytest.raises(ValidationError, match="empty"):
        run_sql(store, "  ", extensions=())


# -- the one cache: counted once under threads, bounded, shared ---------------------------
def test_cache_counts_bytes_once_when_threads_race() -> None:
    import threading
    import time

    from embed_assets.store import MatrixCache, VersionKey

    cache = MatrixCache(max_bytes=10_000)
    builds = []
    barrier = threading.Barrier(8)

    def build() -> np.ndarray:
        builds.append(1)
        time.sleep(0.02)  # every thread misses before any inserts
        return np.zeros(100, np.float32)  # 400 bytes

    got: list[np.ndarray] = []

    def worker(i: int) -> None:
        barrier.wait()
        got.append(cache.get_or_build(VersionKey("/s/t.lance", "id", 1), "m", lambda: 400, build))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(builds) > 1  # the race happened
    assert len(cache) == 1 and cache.nbytes == 400
    assert all(g is got[0] for g in got)  # everyone got the entry that was kept
    for v in range(2, 40):  # the budget holds: 25 entries of 400 bytes fit in 10,000
        cache.get_or_build(VersionKey("/s/t.lance", "id", v), "m", lambda: 400,
                           lambda: np.zeros(100, np.float32))
    assert cache.nbytes <= 10_000 and len(cache) == 25


def test_search_sql_and_lookups_share_one_cache(tmp_path: Path) -> None:
    from embed_assets.store import CACHE

    store = Store(tmp_path / "s")
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(40, 4))
    store.write("t", table(list(range(40)), mat.tolist()), key="id")
    t = store.table("t")
    CACHE.clear()
    t.search(mat[3], k=1)  # the exact path: the version's matrix
    t.get([5])  # the key index and scalar columns
    kinds = {k[1] for k in CACHE._items}
    assert {"matrix/unit", "key:id", "scalars"} <= kinds
    keys = {k[0] for k in CACHE._items}
    assert keys == {t.cache_key(t.version)}
    con = connect(store, extensions=())
    assert con.sql("SELECT id FROM knn('t', ?::FLOAT[], 1)", params=[mat[7].tolist()]).fetchall() == [(7,)]
    con.sql("SELECT count(*) FROM similarity_join('t', 't', 2)").fetchall()
    assert {k[0] for k in CACHE._items} == keys  # SQL keyed the same version the same way
    assert any(k[1].startswith("join/") for k in CACHE._items)
    con.close()
