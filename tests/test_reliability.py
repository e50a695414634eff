"""Reliability defects found by killing, racing and misleading the store (issue 10), one
test or more each. The long randomized loops live in tests/fault/ (``make stress``)."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from embed_assets import (
    HashEmbedder,
    Store,
    ValidationError,
    VersionNotFoundError,
    build_index,
    connect,
    embed_table,
    freshness,
    refresh_index,
)

from .conftest import vectors_table


def _rows(keys: list[int], dim: int = 4, seed: int = 0, section: str | None = None) -> pa.Table:
    t = vectors_table(keys, dim=dim, seed=seed)
    return t if section is None else t.append_column("section", pa.array([section] * len(keys)))


# -- 1. concurrent writers never duplicate keys ------------------------------------------
def _append_worker(path: str, keys: list[int], barrier, out) -> None:
    store = Store(path)
    barrier.wait()
    try:
        store.write("t", _rows(keys, seed=os.getpid()), key="id", mode="append")
        out.put("ok")
    except ValidationError as exc:
        out.put(f"refused: {exc}")


def _upsert_worker(path: str, keys: list[int], barrier, out) -> None:
    store = Store(path)
    barrier.wait()
    res = store.write("t", _rows(keys, seed=os.getpid()), key="id", mode="upsert")
    out.put(getattr(res, "retries", 0))


def _race(target, path: str, key_sets: list[list[int]]) -> list:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(key_sets)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(path, keys, barrier, out)) for keys in key_sets]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    return [out.get(timeout=5) for _ in procs]


def _assert_unique(store: Store, name: str = "t") -> list:
    ids = store.table(name).read(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate keys"
    return ids


def test_two_appenders_of_the_same_new_keys_leave_no_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", _rows([0]), key="id")
    got = _race(_append_worker, str(tmp_path / "s"), [list(range(1, 301))] * 2)
    assert sorted(g[:7] for g in got) == ["ok", "refused"]
    assert "already exist" in next(g for g in got if g != "ok")
    assert len(_assert_unique(store)) == 301


def test_two_upserts_of_the_same_new_keys_leave_no_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", _rows([0]), key="id")
    _race(_upsert_worker, str(tmp_path / "s"), [list(range(1, 301))] * 2)
    assert len(_assert_unique(store)) == 301


# -- 2. commit conflicts are retried -------------------------------------------------------
def test_four_upserters_of_disjoint_keys_all_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", _rows([0]), key="id")
    sets = [list(range(1 + 100 * i, 101 + 100 * i)) for i in range(4)]
    retries = _race(_upsert_worker, str(tmp_path / "s"), sets)
    assert len(_assert_unique(store)) == 401
    assert all(isinstance(r, int) for r in retries)


def test_a_foreign_conflicting_commit_is_retried_and_reported(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lance.commit import CommitConflictError

    store = Store(tmp_path / "s")
    store.write("t", _rows([1, 2]), key="id")
    real = lance.LanceDataset.commit
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:  # another writer got there first: Lance says "retry"
            raise CommitConflictError("Retryable commit conflict for version 3", retryable=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "commit", staticmethod(flaky))
    res = store.write("t", _rows([3]), key="id", mode="upsert")
    assert res.committed and res.retries == 1
    assert sorted(_assert_unique(store)) == [1, 2, 3]


# -- 3. an interrupted cleanup never leaves unreadable versions listed -----------------------
def _many_versions(store: Store, n: int = 6) -> None:
    """n versions, each in files of its own (an overwrite with keys 0..i)."""
    for i in range(n):
        store.write("t", _rows(list(range(i + 1)), seed=i), key="id", mode="overwrite")


def test_versions_left_unreadable_by_a_foreign_cleanup_are_not_listed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    _many_versions(store)
    t = store.table("t")
    # What a killed Lance cleanup leaves: a manifest whose data file is gone.
    ds2 = t.dataset(2)
    gone = [f.path for fr in ds2.get_fragments() for f in fr.metadata.files]
    assert gone
    os.remove(tmp_path / "s" / "t.lance" / "data" / gone[0])
    t = store.table("t")
    listed = [v.version for v in t.versions()]
    assert 2 not in listed and t.version in listed
    with pytest.raises(VersionNotFoundError, match="partly removed"):
        t.rollback(2)
    with pytest.raises(VersionNotFoundError, match="partly removed"):
        t.read(2)
    rep = t.cleanup(keep_last=1, grace=dt.timedelta(0))  # rerunning cleanup clears it
    assert 2 in rep.removed_versions
    assert [v.version for v in t.versions()] == [t.version]


# -- 4. an interrupted rollback's index rebuild is visible and repairable --------------------
def test_an_interrupted_rollback_reports_and_repairs_its_index(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "s")
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(600, 16)).astype(np.float32)
    data = pa.table({"id": np.arange(600),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 16)})
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    t = store.table("t")
    build_index(t, force_ann=True)

    def crash(*_a, **_k):
        raise KeyboardInterrupt  # the process dies between the Restore and the rebuild

    monkeypatch.setattr(store, "index_keeper", crash)
    with pytest.raises(KeyboardInterrupt):
        t.rollback(1)
    monkeypatch.undo()
    fresh = freshness(t)
    assert not fresh["indexed"] and fresh["pending_rebuild"] is not None
    assert fresh["unindexed_rows"] == 300
    out = refresh_index(t)
    assert out["action"] == "rebuilt"
    assert freshness(t)["indexed"] and freshness(t)["pending_rebuild"] is None
    assert t.search(mat[5], k=1, use_index=True)["id"].to_pylist() == [5]


def test_an_index_build_stopped_before_its_tuning_is_reported_and_repaired(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    rng = np.random.default_rng(1)
    mat = rng.normal(size=(600, 16)).astype(np.float32)
    store.write("t", {"id": list(range(600)), "vector": list(mat)}, key="id")
    t = store.table("t")
    # What a build_index killed after Lance trained the index (and before the tuning was
    # recorded) leaves: an index and no report; searches are exact meanwhile.
    t.dataset().create_index("vector", "IVF_PQ", name="vector_idx", num_partitions=8,
                             num_sub_vectors=4)
    fresh = freshness(store.table("t"))
    assert fresh["indexed"] and fresh["pending_rebuild"] is not None
    assert refresh_index(store.table("t"))["action"] == "rebuilt"
    assert freshness(store.table("t"))["pending_rebuild"] is None


# -- 5. cleanup keeps a grace period; and/or as documented -------------------------------------
def test_cleanup_never_removes_versions_younger_than_the_grace_period(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    _many_versions(store, 4)
    t = store.table("t")
    pinned = t.dataset(2)  # a reader holding a version it just resolved
    rep = t.cleanup(keep_last=1)  # default grace: one hour
    assert rep.removed_versions == [] and rep.grace_seconds == 3600
    assert pinned.to_table().num_rows == 2
    assert t.read(2).num_rows == 2


def test_keep_last_or_older_than_each_select_versions(tmp_path: Path) -> None:
    from embed_assets.store._retention import choose

    now = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    vs = [(i, now - dt.timedelta(days=10 - i)) for i in range(1, 10)]  # v9 is 1 day old
    zero = dt.timedelta(0)
    assert choose(vs, 9, set(), keep_last=3, older_than=None, grace=zero, now=now) == [1, 2, 3, 4, 5, 6]
    assert choose(vs, 9, set(), keep_last=None, older_than=dt.timedelta(days=8), grace=zero,
                  now=now) == [1, 2]
    # both: a version goes if either says so (the docstring's "and/or")
    assert choose(vs, 9, {2}, keep_last=8, older_than=dt.timedelta(days=7), grace=zero,
                  now=now) == [1, 3]
    # the grace period protects recent versions whatever the criteria say
    # v7 stopped being the latest when v8 came, 2 days ago: inside a 2.5-day grace period
    assert choose(vs, 9, set(), keep_last=1, older_than=None, grace=dt.timedelta(days=2, hours=12),
                  now=now) == [1, 2, 3, 4, 5, 6]


def test_keep_last_and_older_than_are_and_or_on_a_real_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    _many_versions(store, 4)
    t = store.table("t")
    # Nothing is a day old, but keep_last=1 alone selects versions 1-3: either criterion
    # removes a version (it was "both must hold", so this removed nothing).
    rep = t.cleanup(keep_last=1, older_than=dt.timedelta(days=1), grace=dt.timedelta(0))
    assert rep.removed_versions == [1, 2, 3]


def test_a_version_removed_under_a_reader_is_version_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    _many_versions(store, 3)
    t = store.table("t")
    assert t.read(1).num_rows == 1  # the handle on version 1 is open
    other = store.table("t")
    other.cleanup(keep_last=1, grace=dt.timedelta(0))
    with pytest.raises(VersionNotFoundError):
        t.read(1)
    with pytest.raises(VersionNotFoundError):
        t.search([1, 0, 0, 0], k=1, version=1)


# -- 6. orphans of killed writes are reclaimed ---------------------------------------------------
def test_cleanup_reclaims_old_orphan_files_and_spares_young_ones(tmp_path: Path) -> None:
    """Lance's rule: a file no version references may be a write in flight until it is
    7 days old (then it is an orphan of a killed write)."""
    store = Store(tmp_path / "s")
    _many_versions(store, 2)
    data = tmp_path / "s" / "t.lance" / "data"
    old, young = data / "orphan-old.lance", data / "orphan-young.lance"
    old.write_bytes(b"x" * 5000)
    young.write_bytes(b"y" * 5000)
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    rep = store.table("t").cleanup(keep_last=2)
    assert not old.exists() and young.exists()
    assert rep.orphan_files == 1 and rep.bytes_freed >= 5000
    assert sorted(store.table("t").read()["id"].to_pylist()) == [0, 1]
    assert store.table("t").read(1).num_rows == 1


# -- 7. SQL names and literals; names, columns, filters and version refs --------------------------
def test_sql_accepts_every_valid_table_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    for name in ("a.b", "a-b"):
        store.write(name, {"id": [1, 2], "vector": [[1.0, 0.0], [0.0, 1.0]]}, key="id")
    con = connect(store, extensions=())
    assert con.sql("SELECT id FROM knn('a.b', [1.0, 0.1], 1)").fetchall() == [(1,)]
    assert con.sql("SELECT left_key, right_key FROM similarity_join('a-b', 'a.b', 1)").fetchall() \
        == [(1, 1), (2, 2)]
    assert con.sql("SELECT id FROM knn('a.b@1', [1.0, 0.1], 1)").fetchall() == [(1,)]
    con.close()


def test_a_literal_shaped_like_a_version_reference_is_a_value(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("k", pa.table({"id": ["k@example.com", "x"], "vector": vectors_table([1, 2], dim=2)
                               .column("vector")}), key="id")
    con = connect(store, extensions=())
    assert con.sql("SELECT count(*) FROM k WHERE id = 'k@example.com'").fetchone()[0] == 1
    with pytest.raises(VersionNotFoundError):  # an identifier still means a version view
        con.sql('SELECT count(*) FROM "k@example.com"')
    con.close()


def test_a_foreign_folder_with_an_invalid_name_is_skipped(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("good", _rows([1]), key="id")
    lance.write_dataset(pa.table({"x": [1]}), str(tmp_path / "s" / "bad name!.lance"))
    with pytest.warns(UserWarning, match="bad name"):
        assert store.table_names() == ["good"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        con = connect(store, extensions=())
        assert con.sql("SELECT count(*) FROM good").fetchone()[0] == 1
        con.close()


def test_bad_column_names_filters_and_version_refs_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    t = vectors_table([1, 2])
    with pytest.raises(ValidationError, match="backtick"):
        store.write("t", t.append_column("we`ird", pa.array([1, 2])), key="id")
    assert not store.exists("t")
    store.write("t", t, key="id")
    tt = store.table("t")
    with pytest.raises(ValidationError, match="';'"):
        tt.search([1, 0, 0, 0], k=1, where="id = 1; DROP TABLE t")
    with pytest.raises(ValidationError, match="';'"):
        tt.read(where="id = 1; id = 2")
    assert tt.read(where="id = 1")["id"].to_pylist() == [1]
    for ref in ("01", "\u0661", "1 "):  # not version 1
        with pytest.raises(VersionNotFoundError):
            tt.read(ref)


# -- 8. the CLI's replace_partition does what the Python API does ---------------------------------
def _cli(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_replace_partition_refuses_rows_outside_and_reruns_embed_nothing(tmp_path: Path) -> None:
    import polars as pl

    mixed = tmp_path / "mixed.parquet"
    pl.DataFrame({"id": [1, 2, 3, 4], "text": ["a b", "c d", "e f", "g h"],
                  "section": ["x", "x", "y", "y"]}).write_parquet(mixed)
    only_y = tmp_path / "y.parquet"
    pl.read_parquet(mixed).filter(pl.col("section") == "y").write_parquet(only_y)
    store = tmp_path / "s"
    common = ["--key", "id", "--text", "text", "--model", "hash-bow:16", "--json"]
    p = _cli(store, "embed", "h", "--from", str(mixed), *common)
    assert p.returncode == 0, p.stderr
    p = _cli(store, "embed", "h", "--from", str(mixed), *common, "--mode", "replace_partition",
             "--partition", "section=y")
    assert p.returncode != 0 and "outside" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert Store(store).table("h").version == 1
    for expected_embedded in (0, 0):  # the partition's rows are already stored as they are
        p = _cli(store, "embed", "h", "--from", str(only_y), *common, "--mode", "replace_partition",
                 "--partition", "section=y")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["rows_embedded"] == expected_embedded
    assert sorted(Store(store).table("h").read()["id"].to_pylist()) == [1, 2, 3, 4]


# -- 9. a zero query vector has no cosine distance -------------------------------------------------
def test_a_zero_query_vector_is_refused_under_cosine(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    embed_table(store, "docs", {"id": [1, 2], "text": ["a b", "c d"]}, key="id", text="text",
                embedder=HashEmbedder(dimension=8))
    t = store.table("docs")
    with pytest.raises(ValidationError, match="all zeros"):
        t.search([0.0] * 8, k=1)
    with pytest.raises(ValidationError, match="all zeros"):
        t.search([0.0] * 8, k=1, where="1=1")
    assert t.search([0.0] * 8, k=1, metric="l2").num_rows == 1  # l2 has a distance to zero
    con = connect(store, extensions=())
    with pytest.raises(Exception, match="all zeros"):
        con.sql("SELECT * FROM knn('docs', [0,0,0,0,0,0,0,0]::FLOAT[], 1)").fetchall()
    con.close()
