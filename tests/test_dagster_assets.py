"""The Dagster integration with a real DagsterInstance (temporary DAGSTER_HOME), in process.

Covers the issue's "must show" items on the demo pipeline with the fast hash embedder:
a second run embeds 0 rows; a 1% source change embeds exactly those rows; a planted NaN
fails a blocking check with ERROR and downstream assets do not run; the rollback job makes
the latest version equal the chosen one. Plus metadata, run <-> version traceability and
partitioned (by section) materialisation.
"""

# No `from __future__ import annotations`: Dagster resolves the test assets' annotations.
import datetime as dt
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lance
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterInvalidConfigError,
    DailyPartitionsDefinition,
    Definitions,
    asset,
    materialize,
)
from dagster import Enum as DagsterEnum

from embed_assets import Store
from embed_assets._demo import demo_source
from embed_assets.dagster import (
    INTEGRITY_CHECKS,
    PREVIOUS,
    PROJECTION_KEY,
    RUN_TAG_PREFIX,
    VERSION_KEY,
    EmbedStoreResource,
    LanceDBIOManager,
    resolve_rollback_target,
    rollback_job_name,
    rollback_link,
    run_for_version,
    versions_for_run,
)

EMB = AssetKey(["debian", "embeddings"])
CENTROIDS = AssetKey(["debian", "section_centroids"])
SEARCH = AssetKey(["debian", "semantic_search"])
TABLE = "debian_embeddings"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A fresh DAGSTER_HOME, store and demo definitions using the hash embedder."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("EMBED_ASSETS_MODEL", "hash-bow")
    from dagster_project.demo import build_demo_definitions

    instance = DagsterInstance.get()
    try:
        yield {"defs": build_demo_definitions("debian"), "instance": instance,
               "store": Store(str(tmp_path / "store")), "tmp": tmp_path}
    finally:
        instance.dispose()


def _run(env: dict[str, Any], *, selection: Any = None, run_config: dict | None = None,
         raise_on_error: bool = True, defs: Definitions | None = None) -> Any:
    d = defs or env["defs"]
    return materialize([*d.assets, *d.asset_checks], resources=d.resources, instance=env["instance"],
                       selection=selection, run_config=run_config, raise_on_error=raise_on_error)


def _meta(result: Any, key: AssetKey) -> dict[str, Any]:
    mats = result.asset_materializations_for_node("__".join(key.path))
    assert mats, f"no materialisation of {key}"
    return {k: v.value for k, v in mats[-1].metadata.items()}


def _descriptions_config(path: Path) -> dict:
    return {"ops": {"debian__descriptions": {"config": {"path": str(path)}}}}


def test_demo_materialises_with_metadata_and_traceability(env: dict[str, Any]) -> None:
    res = _run(env)
    assert res.success
    md = _meta(res, EMB)
    table = env["store"].table(TABLE)
    assert md[VERSION_KEY] == table.version == 1
    assert md["dagster/row_count"] == 2040
    # the name SQL reads, and the URI lancedb/pylance open (issue 24)
    assert md["dagster/table_name"] == TABLE and md["dagster/uri"] == table.uri
    assert md["dimension"] == 64 and md["model"].startswith("hash-bow")
    assert md["rows_embedded"] == 2040 and md["rows_reused"] == 0
    assert {c.name for c in md["dagster/column_schema"].columns} >= {"package", "vector", "_content_hash"}
    assert md[PROJECTION_KEY].startswith("![") and "data:image/png;base64," in md[PROJECTION_KEY]
    # the preview leads with key, text and section, and leaves provenance out (issue 23.5)
    header = md["preview"].splitlines()[0]
    assert header.startswith("| package | description | section |") and "_content_hash" not in header
    # vector <- descriptions.description (column lineage), the Lance version as data version
    deps = md["dagster/column_lineage"].deps_by_column["vector"]
    assert [(d.asset_key.to_user_string(), d.column_name) for d in deps] == [
        ("debian/descriptions", "description")]
    # version -> run, run -> version (the store alone, and the run's tags)
    assert run_for_version(env["store"], TABLE, 1) == res.run_id
    assert versions_for_run(env["store"], res.run_id)[TABLE] == [1]
    run = env["instance"].get_run_by_id(res.run_id)
    assert run.tags[f"{RUN_TAG_PREFIX}{TABLE}"] == "1"
    # ... also for a table the IO manager wrote
    assert run.tags[f"{RUN_TAG_PREFIX}debian_section_centroids"] == "1"
    # downstream ran: centroids through the IO manager, search through the store
    cmd = _meta(res, CENTROIDS)
    assert cmd["dagster/row_count"] == 12 and cmd[VERSION_KEY] == 1
    assert len(_meta(res, SEARCH)["hits"]) == 4 * 5
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks == dict.fromkeys([*INTEGRITY_CHECKS, "index_freshness", "drift"], True)


def test_second_run_embeds_nothing_and_one_percent_change_embeds_exactly_those(
        env: dict[str, Any]) -> None:
    first = _run(env, selection=[EMB.to_user_string(), "debian/descriptions"])
    second = _run(env, selection=[EMB.to_user_string(), "debian/descriptions"])
    md = _meta(second, EMB)
    assert md["rows_embedded"] == 0
    assert "embedded 0 row(s)" in md["summary"] and "nothing changed" in md["summary"]
    assert md[VERSION_KEY] == 1 and md["lance/committed"] is False

    src = demo_source()
    n = src.height // 100  # 1%
    changed = src["package"].sample(n, seed=7).to_list()
    edited = src.with_columns(
        pl.when(pl.col("package").is_in(changed))
        .then(pl.col("description") + " (updated upstream)")
        .otherwise(pl.col("description")).alias("description"))
    path = env["tmp"] / "edited.parquet"
    edited.write_parquet(path)
    third = _run(env, selection=[EMB.to_user_string(), "debian/descriptions"],
                 run_config=_descriptions_config(path))
    md = _meta(third, EMB)
    assert md["rows_embedded"] == n == 20
    assert md[VERSION_KEY] == 2 and md["rows_updated"] == n
    # exactly those rows carry the new run id
    tbl = env["store"].table(TABLE).read(columns=["package", "_run_id"])
    by_run = pl.from_arrow(tbl).filter(pl.col("_run_id") == third.run_id)["package"].to_list()
    assert sorted(by_run) == sorted(changed)
    assert first.run_id != third.run_id


def _plant_nan(store: Store, package: str) -> None:
    """Corrupt one stored vector behind the store's back (the store itself refuses NaN)."""
    ds = lance.dataset(store.table_uri(TABLE))
    row = ds.to_table(filter=f"package = '{package}'")
    dim = row.schema.field("vector").type.list_size
    bad = pa.FixedSizeListArray.from_arrays(pa.array([math.nan] * dim, pa.float32()), dim)
    row = row.set_column(row.column_names.index("vector"), row.schema.field("vector"), bad)
    ds.merge_insert("package").when_matched_update_all().execute(row)


def test_planted_nan_fails_blocking_check_and_skips_downstream(env: dict[str, Any]) -> None:
    assert _run(env).success
    victim = demo_source()["package"][100]
    _plant_nan(env["store"], victim)
    res = _run(env, raise_on_error=False)
    assert not res.success
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    finite = evals["vectors_finite"]
    assert finite.passed is False and finite.severity == AssetCheckSeverity.ERROR
    assert finite.metadata["non_finite_rows"].value == 1
    assert victim in finite.metadata["examples"].value
    # downstream of the embeddings did not run in this run
    mats = {e.asset_key for e in res.get_asset_materialization_events()
            if hasattr(e, "asset_key")} if hasattr(res, "get_asset_materialization_events") else set()
    done = {ev.asset_key for ev in res.all_events
            if ev.event_type == DagsterEventType.ASSET_MATERIALIZATION}
    assert EMB in done | mats
    assert CENTROIDS not in done and SEARCH not in done


def test_rollback_job_makes_latest_equal_chosen_version(env: dict[str, Any]) -> None:
    _run(env)
    src = demo_source()
    path = env["tmp"] / "fewer.parquet"
    src.head(1500).write_parquet(path)  # 540 packages gone upstream: a new version
    _run(env, run_config=_descriptions_config(path))
    table = env["store"].table(TABLE)
    assert table.version == 2 and table.count_rows() == 1500

    job = env["defs"].get_job_def("rollback_table")
    res = job.execute_in_process(
        instance=env["instance"],
        run_config={"ops": {"rollback_table_op": {"config": {"table": TABLE, "to": "1"}}}})
    assert res.success
    latest = table.version
    assert latest == 3
    a = table.read(latest).sort_by("package")
    b = table.read(1).sort_by("package")
    assert a.equals(b)
    assert run_for_version(env["store"], TABLE, latest) == res.run_id
    # the asset page shows the rolled-back version
    ev = env["instance"].get_latest_materialization_event(EMB)
    assert ev.asset_materialization.metadata[VERSION_KEY].value == latest
    logs = " ".join(e.message for e in env["instance"].all_logs(res.run_id) if e.message)
    assert "before (latest v2)" in logs and "new latest v3" in logs

    tag = env["defs"].get_job_def("tag_table_version")
    res = tag.execute_in_process(instance=env["instance"], run_config={
        "ops": {"tag_table_version_op": {"config": {"table": TABLE, "tag": "good", "version": "1"}}}})
    assert res.success and table.tags() == {"good": 1}
    bad = tag.execute_in_process(instance=env["instance"], raise_on_error=False, run_config={
        "ops": {"tag_table_version_op": {"config": {"table": TABLE, "tag": "x", "version": "99"}}}})
    assert not bad.success


def _two_versions(env: dict[str, Any]) -> Any:
    """v1: the demo slice; v2: 540 packages gone upstream. Returns the table."""
    _run(env, selection=[EMB.to_user_string(), "debian/descriptions"])
    path = env["tmp"] / "fewer.parquet"
    demo_source().head(1500).write_parquet(path)
    _run(env, selection=[EMB.to_user_string(), "debian/descriptions"],
         run_config=_descriptions_config(path))
    table = env["store"].table(TABLE)
    assert [v.version for v in table.versions()] == [1, 2] and table.count_rows() == 1500
    return table


def _rollback_to(to: str) -> dict[str, Any]:
    """Run config of rollback_debian_embeddings with ``to`` set."""
    return {"ops": {f"{rollback_job_name(TABLE)}_op": {"config": {"to": to}}}}


def test_rollback_jobs_offer_the_owned_tables_as_an_enum(env: dict[str, Any]) -> None:
    table = _two_versions(env)
    for job_name, op_name in (("rollback_table", "rollback_table_op"),
                              ("tag_table_version", "tag_table_version_op")):
        job = env["defs"].get_job_def(job_name)
        field = (job.run_config_schema.config_type.fields["ops"].config_type.fields[op_name]
                 .config_type.fields["config"].config_type.fields["table"])
        assert isinstance(field.config_type, DagsterEnum)
        assert sorted(v.config_value for v in field.config_type.enum_values) == [
            "debian_embeddings", "debian_section_centroids"]
    # a table that is not offered is refused before the run starts, naming the value
    job = env["defs"].get_job_def("rollback_table")
    with pytest.raises(DagsterInvalidConfigError, match="debian_embedings"):
        job.execute_in_process(instance=env["instance"], run_config={
            "ops": {"rollback_table_op": {"config": {"table": "debian_embedings", "to": "1"}}}})
    assert table.version == 2  # nothing stored changed
    # one job per owned table, its config all defaults: the Launchpad opens ready to launch
    names = {j.name for j in env["defs"].jobs}
    assert {rollback_job_name(TABLE), rollback_job_name("debian_section_centroids")} <= names
    emb_asset = env["defs"].resolve_assets_def(EMB)
    assert rollback_link(TABLE) in (emb_asset.descriptions_by_key[EMB] or "")


def test_rollback_defaults_to_the_previous_version(env: dict[str, Any]) -> None:
    table = _two_versions(env)
    res = env["defs"].get_job_def(rollback_job_name(TABLE)).execute_in_process(
        instance=env["instance"])  # no run config at all
    assert res.success
    assert table.version == 3 and table.read(3).sort_by("package").equals(table.read(1).sort_by("package"))
    md = env["instance"].get_latest_materialization_event(EMB).asset_materialization.metadata
    assert md[VERSION_KEY].value == 3 and md["rollback_to"].value == 1 and md["rollback_from"].value == 2
    assert run_for_version(env["store"], TABLE, 3) == res.run_id
    # "previous" counts user versions: the one before v3 is v2, so a second undo redoes
    res = env["defs"].get_job_def("rollback_table").execute_in_process(
        instance=env["instance"], run_config={"ops": {"rollback_table_op": {"config": {"table": TABLE}}}})
    assert res.success and table.version == 4 and table.count_rows() == 1500
    assert resolve_rollback_target(table, PREVIOUS) == 3


def test_rollback_refuses_an_unknown_version_or_no_previous_one(env: dict[str, Any]) -> None:
    _run(env, selection=[EMB.to_user_string(), "debian/descriptions"])
    table = env["store"].table(TABLE)
    job = env["defs"].get_job_def(rollback_job_name(TABLE))
    res = job.execute_in_process(instance=env["instance"], raise_on_error=False)
    assert not res.success
    failure = res.failure_data_for_node(f"{rollback_job_name(TABLE)}_op").error.message
    assert "one version (v1): there is no previous version" in failure
    res = job.execute_in_process(instance=env["instance"], raise_on_error=False,
                                 run_config=_rollback_to("99"))
    assert not res.success
    assert "no version 99" in res.failure_data_for_node(f"{rollback_job_name(TABLE)}_op").error.message
    # the latest version itself: nothing to undo, and no copy of it is written
    res = job.execute_in_process(instance=env["instance"], run_config=_rollback_to("1"))
    assert res.success and not res.get_asset_materialization_events()
    logs = " ".join(e.message for e in env["instance"].all_logs(res.run_id) if e.message)
    assert "v1 is already the latest version; nothing rolled back" in logs
    assert [v.version for v in table.versions()] == [1]  # nothing stored changed


def test_rollback_runs_the_asset_checks_on_the_new_version(env: dict[str, Any]) -> None:
    _run(env, selection=[EMB.to_user_string(), "debian/descriptions"])
    _plant_nan(env["store"], demo_source()["package"][100])  # v2: one NaN vector
    table = env["store"].table(TABLE)
    job = env["defs"].get_job_def(rollback_job_name(TABLE))
    res = job.execute_in_process(instance=env["instance"])  # back to v1: the checks pass
    assert res.success and table.version == 3
    evals = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert set(evals) == set(INTEGRITY_CHECKS) | {"index_freshness", "drift"}
    assert all(evals[c].passed for c in INTEGRITY_CHECKS)
    assert {e.metadata[VERSION_KEY].value for e in evals.values()} == {3}
    # what the UI shows: each check's latest execution is in the run of the asset's latest
    # materialisation, so it counts as evaluated on that version (not "Not Evaluated")
    latest_mat = env["instance"].get_latest_materialization_event(EMB)
    assert latest_mat.run_id == res.run_id
    for name in evals:
        rec = env["instance"].event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(EMB, name), limit=1)[0]
        assert rec.run_id == res.run_id
    # back to the corrupt v2: the rollback happens, the blocking check fails the run
    bad = job.execute_in_process(instance=env["instance"], raise_on_error=False,
                                 run_config=_rollback_to("2"))
    assert not bad.success and table.version == 4
    finite = {e.check_name: e for e in bad.get_asset_check_evaluations()}["vectors_finite"]
    assert finite.passed is False and finite.severity == AssetCheckSeverity.ERROR
    msg = bad.failure_data_for_node(f"{rollback_job_name(TABLE)}_op").error.message
    assert "fails blocking checks: vectors_finite" in msg


def test_drift_check_warns_when_the_space_changes(env: dict[str, Any]) -> None:
    _run(env)
    src = demo_source()
    # Replace every description: a different embedding space for the same keys.
    path = env["tmp"] / "shuffled.parquet"
    src.with_columns(pl.col("description").shuffle(seed=1)).write_parquet(path)
    res = _run(env, run_config=_descriptions_config(path), raise_on_error=False)
    drift = {e.check_name: e for e in res.get_asset_check_evaluations()}["drift"]
    assert drift.passed is False and drift.severity == AssetCheckSeverity.WARN
    assert drift.metadata["neighbour_overlap_at_10"].value < 0.8
    assert res.success  # a WARN never stops the run
    assert _meta(res, SEARCH)


def test_partitioned_by_section_replaces_one_partition_per_commit(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_project.demo import build_demo_definitions, sections

    defs = build_demo_definitions("debian_by_section", partitioned=True)
    emb = AssetKey(["debian_by_section", "embeddings"])
    sel = [emb.to_user_string(), "debian_by_section/descriptions"]
    table_name = "debian_by_section_embeddings"
    r1 = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                     instance=env["instance"], selection=sel, partition_key="games")
    assert r1.success
    t = env["store"].table(table_name)
    assert set(t.read(columns=["section"]).column("section").to_pylist()) == {"games"}
    md = _meta(r1, emb)
    assert md["dagster/partition_row_count"] == 170 and md["rows_embedded"] == 170
    materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                instance=env["instance"], selection=sel, partition_key="editors")
    assert t.count_rows() == 340 and t.version == 2
    # a source change in one section touches only that section, in one commit
    src = demo_source()
    gone = src.filter(pl.col("section") == "games")["package"].head(10).to_list()
    path = env["tmp"] / "games_less.parquet"
    src.filter(~pl.col("package").is_in(gone)).write_parquet(path)
    r3 = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                     instance=env["instance"], selection=sel, partition_key="games",
                     run_config={"ops": {"debian_by_section__descriptions": {"config": {"path": str(path)}}}})
    md = _meta(r3, emb)
    assert md["rows_embedded"] == 0 and md["rows_deleted"] == 10 and t.version == 3
    assert t.count_rows() == 330
    assert set(t.read(columns=["section"]).column("section").to_pylist()) == {"games", "editors"}
    # one sub-index per partition, reported per partition (issue 11): the version that
    # last wrote each, and the plan a search of it takes
    t = env["store"].table(table_name)
    parts = {p["value"]: p for p in t.partitions()}
    assert {v: (p["rows"], p["last_written"]) for v, p in parts.items()} == \
        {"editors": (170, 2), "games": (160, 3)}
    fresh = [e for e in r3.get_asset_check_evaluations() if e.check_name == "index_freshness"]
    assert fresh and fresh[0].passed
    table_md = fresh[0].metadata["partitions"].value
    assert "| editors | 170 | 2 | filtered-exact |" in table_md and "| games | 160 | 3 |" in table_md
    q = t.read(columns=["vector"]).column("vector")[0].as_py()
    got, plan = t.search(q, k=5, partition="editors", explain=True)
    assert plan.path == "filtered-exact" and "gathered at version 2" in plan.reason
    exact = t.search(q, k=5, where="section = 'editors'", use_index=False, nprobes=1)
    assert got.column("package").to_pylist() == exact.column("package").to_pylist()
    # a partition's dagster/row_count is its own, not the table's (issue 23, point 4)
    assert md["dagster/row_count"] == 160 and md["table_rows"] == 330
    # a rollback (to v2: games back to 170 rows) is recorded per partition, each with its
    # own row count, so each partition's page shows the restored version
    job = rollback_job_name(table_name)
    rb = defs.resolve_job_def(job).execute_in_process(
        instance=env["instance"], run_config={"ops": {f"{job}_op": {"config": {"to": "2"}}}})
    assert rb.success
    mats = {e.materialization.partition: e.materialization.metadata
            for e in rb.get_asset_materialization_events() if e.asset_key == emb}
    assert {k: v["dagster/row_count"].value for k, v in mats.items() if v["dagster/row_count"].value} == {
        "editors": 170, "games": 170}
    assert None not in mats and set(mats) == set(sections())
    latest = env["instance"].get_latest_materialization_event(emb).asset_materialization
    assert latest.metadata["rollback_to"].value == 2


def test_io_manager_types_modes_partitions_and_version_pins(env: dict[str, Any]) -> None:
    store_uri = str(env["store"].uri)
    vec = np.eye(3, 4, dtype=np.float32)

    @asset(io_manager_key="lance", metadata={"key": "id", "write_mode": "upsert"})
    def arrow_vecs() -> pa.Table:
        return pa.table({"id": [1, 2, 3], "vector": vec.tolist()})

    @asset(io_manager_key="lance", metadata={"key": "id"})
    def pandas_vecs() -> pd.DataFrame:
        return pd.DataFrame({"id": ["a", "b"], "vector": [[1.0, 0.0], [0.0, 1.0]]})

    daily = DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-05")

    @asset(io_manager_key="lance", partitions_def=daily,
           metadata={"key": "id", "partition_expr": "day"})
    def daily_vecs(context: AssetExecutionContext) -> pl.DataFrame:
        day = dt.datetime.fromisoformat(context.partition_key)
        n = 2 if context.partition_key == "2026-01-02" else 3
        return pl.DataFrame({"id": [f"{context.partition_key}-{i}" for i in range(n)],
                             "day": [day] * n, "vector": [[float(i), 1.0] for i in range(n)]})

    @asset(io_manager_key="lance", ins={"arrow_vecs": AssetIn(metadata={"version": 1})})
    def pinned(arrow_vecs: pl.DataFrame) -> pl.DataFrame:
        return arrow_vecs.select("id", "vector").with_columns(pl.col("id") + 100)

    res = {"lance": LanceDBIOManager(store=EmbedStoreResource(uri=store_uri))}
    inst = env["instance"]
    r = materialize([arrow_vecs, pandas_vecs], resources=res, instance=inst)
    assert r.success
    md = _meta(r, AssetKey("arrow_vecs"))
    assert md[VERSION_KEY] == 1 and md["dagster/row_count"] == 3
    assert md["Query"] == 'SELECT * FROM "arrow_vecs"'
    assert env["store"].table("pandas_vecs").count_rows() == 2
    # an upsert with identical rows is still one version; a pin reads the old one
    materialize([arrow_vecs], resources=res, instance=inst)
    assert env["store"].table("arrow_vecs").version == 2
    r = materialize([arrow_vecs, pinned], resources=res, instance=inst, selection=["pinned"])
    assert sorted(env["store"].table("pinned").read().column("id").to_pylist()) == [101, 102, 103]
    # time-window partitions: each run replaces exactly its day
    for day in ("2026-01-01", "2026-01-02"):
        materialize([daily_vecs], resources=res, instance=inst, partition_key=day)
    t = env["store"].table("daily_vecs")
    assert t.count_rows() == 5 and t.version == 2
    materialize([daily_vecs], resources=res, instance=inst, partition_key="2026-01-01")
    assert t.count_rows() == 5


def test_one_store_configuration_reaches_assets_and_io_manager(env: dict[str, Any]) -> None:
    # The demo binds the IO manager to the "embed_store" resource: configuring that one
    # resource at launch moves every table, the IO manager's included.
    resources = env["defs"].resources
    assert resources["lance_io_manager"].store is resources["embed_store"]
    other = env["tmp"] / "other_store"
    res = _run(env, run_config={"resources": {"embed_store": {"config": {"uri": str(other)}}}})
    assert res.success
    moved = Store(str(other)).table_names()
    assert {TABLE, "debian_section_centroids", "debian_directions", "debian_user_vectors"} <= set(moved)
    assert not env["store"].table_names()


def test_io_manager_defaults_to_the_default_store(env: dict[str, Any]) -> None:
    # LanceDBIOManager() is LanceDBIOManager(store=EmbedStoreResource()): $EMBED_ASSETS_STORE.
    @asset(io_manager_key="lance", metadata={"key": "id"})
    def plain() -> pa.Table:
        return pa.table({"id": [1, 2], "vector": [[1.0, 0.0], [0.0, 1.0]]})

    io = LanceDBIOManager()
    assert isinstance(io.store, EmbedStoreResource) and io.store.uri is None
    assert materialize([plain], resources={"lance": io}, instance=env["instance"]).success
    assert env["store"].table("plain").count_rows() == 2


def test_projection_png_leaves_the_matplotlib_backend_alone() -> None:
    import subprocess
    import sys

    code = (
        "import sys, matplotlib; matplotlib.use('svg'); "
        "import numpy as np; from embed_assets.dagster.metadata import projection_png; "
        "png = projection_png(np.random.default_rng(0).normal(size=(50, 8)), ['a', 'b'] * 25, title='t'); "
        "print(png[:8] == b'\\x89PNG\\r\\n\\x1a\\n', matplotlib.rcParams['backend'], "
        "'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"})
    assert out.stdout.split() == ["True", "svg", "False"], out.stderr
