"""Versions that record nothing (issue 12, item 3): an unchanged overwrite through the IO
manager writes no version, an index build that leaves the table exact commits nothing new,
index bookkeeping is hidden from the user's version list (and does not count in
``cleanup(keep_last=...)``), and a rollback reports the version the user asked for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from embed_assets import Store, build_index
from embed_assets.store._retention import choose

from .conftest import vectors_table


def _data(n: int, *, seed: int = 0, dim: int = 16) -> pa.Table:
    mat = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return pa.table({"id": np.arange(n),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim)})


def _all(t: Any) -> list[tuple[int, bool]]:
    return [(v.version, v.maintenance) for v in t.versions(include_maintenance=True)]


# -- index bookkeeping -------------------------------------------------------------------
def test_exact_index_build_commits_nothing_the_second_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", _data(300), key="id")
    t = store.table("t")
    first = build_index(t)
    assert first.kind == "exact"
    after_first = t.version
    assert after_first > 1  # the key's BTREE and the recorded verdict
    again = build_index(t)
    assert again.kind == "exact" and again.version == after_first
    assert t.version == after_first  # no version that records nothing
    # the user sees one version, and that it was indexed
    (v,) = t.versions()
    assert v.version == 1 and v.indexed_by == list(range(2, after_first + 1))
    assert all(m for _, m in _all(t)[1:]) and not _all(t)[0][1]


def test_maintenance_follows_its_data_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    store.write("t", _data(300), key="id")
    build_index(store.table("t"))
    store.write("t", _data(300, seed=1).slice(0, 10), key="id", mode="upsert")
    t = store.table("t")
    listed = t.versions()
    assert [v.version for v in listed] == [1, t.version]
    assert listed[0].indexed_by and listed[1].indexed_by == []
    every = t.versions(include_maintenance=True)
    assert len(every) == t.version
    assert {v.version for v in every if v.maintenance} == set(listed[0].indexed_by)
    assert all(v.properties for v in every)  # provenance of hidden versions still readable


def test_rollback_returns_the_restore_version_not_the_index_rebuild(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    data = _data(600)
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    t = store.table("t")
    build_index(t, force_ann=True)
    before = t.version
    new = t.rollback(1)
    assert new == before + 1  # the Restore
    assert t.properties(new)["mode"] == "rollback" and t.properties(new)["rollback_to"] == "1"
    assert t.version > new  # the index rebuild followed it
    assert t.read(new).sort_by("id").equals(t.read(1).sort_by("id"))
    user = t.versions()
    assert [v.version for v in user] == [1, 2, new]
    assert user[-1].indexed_by == list(range(new + 1, t.version + 1))


def test_cleanup_keep_last_counts_user_versions(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    data = _data(600)
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    t = store.table("t")
    build_index(t, force_ann=True)
    new = t.rollback(1)
    latest = t.version
    rep = t.cleanup(keep_last=2, grace=dt.timedelta(0))
    # kept: the append (2), its index versions, the rollback's own record and its rebuild
    assert new in rep.kept_versions and 2 in rep.kept_versions
    assert rep.removed_versions == [1]
    assert [v.version for v in t.versions()] == [2, new]
    assert t.version == latest
    rep = t.cleanup(keep_last=1, grace=dt.timedelta(0))
    assert [v.version for v in t.versions()] == [new]
    assert set(rep.kept_versions) == set(range(new, latest + 1))


def test_choose_keeps_maintenance_after_kept_user_versions() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    vs = [(i, t0 + dt.timedelta(minutes=i)) for i in range(1, 8)]
    now = t0 + dt.timedelta(days=1)
    # user versions 1, 2, 5; 3-4 index 2, 6-7 index 5
    got = choose(vs, 7, set(), keep_last=2, older_than=None, grace=dt.timedelta(0), now=now,
                 maintenance={3, 4, 6, 7})
    assert got == [1]
    got = choose(vs, 7, set(), keep_last=1, older_than=None, grace=dt.timedelta(0), now=now,
                 maintenance={3, 4, 6, 7})
    assert got == [1, 2, 3, 4]
    # without maintenance information: counted as before
    assert choose(vs, 7, set(), keep_last=2, older_than=None, grace=dt.timedelta(0),
                  now=now) == [1, 2, 3, 4, 5]


# -- the IO manager's unchanged overwrite -------------------------------------------------
@pytest.fixture
def dagster_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    from dagster import DagsterInstance

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    try:
        yield {"instance": instance, "store_uri": str(tmp_path / "store")}
    finally:
        instance.dispose()


def test_unchanged_overwrite_writes_no_version(dagster_env: dict[str, Any]) -> None:
    from dagster import asset, materialize

    from embed_assets.dagster import EmbedStoreResource, LanceDBIOManager
    from embed_assets.dagster.metadata import COMMITTED_KEY, VERSION_KEY

    state = {"scale": 1.0}  # what the asset's input would be

    @asset(metadata={"key": "section", "write_mode": "overwrite"})
    def centroids() -> pl.DataFrame:
        return pl.DataFrame({"section": ["b", "a", "c"], "packages": [2, 1, 3],
                             "vector": [[state["scale"], 0.0], [0.0, 1.0], [0.6, 0.8]]})

    store_res = EmbedStoreResource(uri=dagster_env["store_uri"])
    res = {"io_manager": LanceDBIOManager(store=store_res)}

    def run(scale: float = 1.0) -> dict[str, Any]:
        state["scale"] = scale
        r = materialize([centroids], resources=res, instance=dagster_env["instance"])
        assert r.success
        mats = r.asset_materializations_for_node("centroids")
        logs = " ".join(e.message or "" for e in dagster_env["instance"].all_logs(r.run_id))
        return {"md": {k: v.value for k, v in mats[-1].metadata.items()}, "logs": logs}

    first = run()
    store = Store(dagster_env["store_uri"])
    t = store.table("centroids")
    assert first["md"][VERSION_KEY] == t.version == 1
    second = run()
    assert t.version == 1  # same rows, same schema: no new version
    assert second["md"][VERSION_KEY] == 1
    assert second["md"][COMMITTED_KEY] is False  # what a no-op upsert reports
    assert "unchanged: stays at version 1" in second["logs"]
    third = run(scale=0.5)  # a changed row: a real overwrite
    assert t.version == 2 and third["md"][VERSION_KEY] == 2
    assert sorted(t.read(2)["section"].to_pylist()) == ["a", "b", "c"]


def test_same_content_compares_schema_and_rows(tmp_path: Path) -> None:
    from embed_assets.dagster.io_manager import _same_content

    store = Store(tmp_path / "s")
    base = vectors_table([1, 2, 3])
    store.write("t", base, key="id")
    t = store.table("t")
    assert _same_content(t, base, "id", None)
    assert _same_content(t, base.take([2, 0, 1]), "id", None)  # row order does not matter
    assert not _same_content(t, base.slice(0, 2), "id", None)
    assert not _same_content(t, vectors_table([1, 2, 3], seed=5), "id", None)
    assert not _same_content(t, base, "other", None)
    assert not _same_content(t, base.append_column("x", pa.array([1, 2, 3])), "id", None)
    widened = base.set_column(0, "id", base.column("id").cast(pa.int32()))
    assert not _same_content(t, widened, "id", None)  # another type is another schema


# -- the CLI: the user's versions, and the rollback's own version ------------------------
def _cli(store: Path, *args: str) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", str(store), *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_lists_user_versions_and_names_the_rollback_version(tmp_path: Path) -> None:
    import json

    store = Store(tmp_path / "s")
    data = _data(600)
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    build_index(store.table("t"), force_ann=True)
    out = _cli(tmp_path / "s", "rollback", "t", "--to", "1")
    assert out.returncode == 0, out.stderr
    t = store.table("t")
    restore = next(v.version for v in t.versions() if v.properties.get("mode") == "rollback")
    assert t.version > restore  # the index rebuild came after the Restore
    assert f"rolled back t to version 1: new version {restore} " in out.stdout
    out = _cli(tmp_path / "s", "versions", "t", "--json")
    assert out.returncode == 0, out.stderr
    assert [v["version"] for v in json.loads(out.stdout)] == [1, 2, restore]
    out = _cli(tmp_path / "s", "versions", "t", "--all", "--json")
    assert out.returncode == 0, out.stderr
    assert [v["version"] for v in json.loads(out.stdout)] == list(range(1, t.version + 1))


def test_demo_section_centroids_stay_at_their_version_when_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dagster_env: dict[str, Any]) -> None:
    """The issue's case: the demo rerun on unchanged input writes no centroids version."""
    from dagster import materialize

    monkeypatch.setenv("EMBED_ASSETS_STORE", dagster_env["store_uri"])
    monkeypatch.setenv("EMBED_ASSETS_MODEL", "hash-bow")
    from dagster_project.demo import build_demo_definitions

    defs = build_demo_definitions("debian", tag_prod=True)
    core = [a for a in defs.assets if a.key.path[-1] in
            ("descriptions", "embeddings", "section_centroids", "prod_tag")]
    for _ in range(2):
        res = materialize(core, resources=defs.resources, instance=dagster_env["instance"])
        assert res.success
    store = Store(dagster_env["store_uri"])
    assert store.table("debian_section_centroids").version == 1
    assert store.table("debian_embeddings").version == 1
    assert store.table("debian_embeddings").tags() == {"prod": 1}
