"""The serving tag moves from Dagster only after the embedding asset's blocking checks
pass (real DagsterInstance in a temporary DAGSTER_HOME, in process)."""

# No `from __future__ import annotations`: Dagster resolves the test assets' annotations.
import math
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetExecutionContext, DagsterEventType, DagsterInstance, asset, materialize

from embed_assets import Store
from embed_assets.dagster import EmbedStoreResource, build_embedding_checks, build_serving_promotion

DIM = 8


def _rows(seed: int) -> pa.Table:
    mat = np.random.default_rng(seed).normal(size=(50, DIM)).astype(np.float32)
    return pa.table({"id": list(range(50)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)})


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    store = Store(tmp_path / "store")
    state = {"seed": 0, "nan": False}

    @asset(name="vecs", required_resource_keys={"embed_store"})
    def vecs(context: AssetExecutionContext) -> None:
        s = context.resources.embed_store.get_store()
        s.write("vecs", _rows(state["seed"]), key="id", mode="upsert")
        if state["nan"]:  # a defect the store's own validation would refuse, planted under it
            _plant_nan(s, 7)

    checks = build_embedding_checks("vecs", max_centroid_shift=10.0, min_neighbour_overlap=0.0)
    promote = build_serving_promotion(checks, tag="prod")
    try:
        yield {"instance": instance, "store": store, "state": state, "defs": [vecs, checks, promote],
               "resources": {"embed_store": EmbedStoreResource(uri=store.uri)}, "promote": promote}
    finally:
        instance.dispose()


def _plant_nan(store: Store, key: int) -> None:
    ds = lance.dataset(store.table_uri("vecs"))
    row = ds.to_table(filter=f"id = {key}")
    bad = pa.FixedSizeListArray.from_arrays(pa.array([math.nan] * DIM, pa.float32()), DIM)
    row = row.set_column(row.column_names.index("vector"), row.schema.field("vector"), bad)
    ds.merge_insert("id").when_matched_update_all().execute(row)


def _run(env, **kw):
    return materialize(env["defs"], resources=env["resources"], instance=env["instance"],
                       raise_on_error=False, **kw)


def test_the_tag_follows_checked_versions_and_never_a_failed_one(env):
    t = env["store"].table
    res = _run(env)
    assert res.success
    v1 = t("vecs").version
    assert t("vecs").tags() == {"prod": v1}
    mats = [e for e in res.all_events if e.event_type == DagsterEventType.ASSET_MATERIALIZATION
            and e.asset_key.path == ["vecs_prod_tag"]]
    assert mats and mats[-1].event_specific_data.materialization.metadata["tag"].value == "prod"

    env["state"].update(seed=1)
    assert _run(env).success
    v2 = t("vecs").version
    assert v2 > v1 and t("vecs").tags() == {"prod": v2}

    # a version with a NaN: the blocking check fails, the promotion does not run
    env["state"].update(seed=2, nan=True)
    res = _run(env)
    assert not res.success
    assert {e.check_name: e.passed for e in res.get_asset_check_evaluations()}["vectors_finite"] is False
    ran = {e.asset_key.path[-1] for e in res.all_events
           if e.event_type == DagsterEventType.ASSET_MATERIALIZATION}
    assert "vecs_prod_tag" not in ran
    assert t("vecs").tags() == {"prod": v2} and t("vecs").version > v2

    # the promotion materialised alone (another run, the UI) checks the version itself
    res = materialize([env["promote"]], resources=env["resources"], instance=env["instance"],
                      raise_on_error=False)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type == DagsterEventType.STEP_FAILURE)
    assert "fails blocking checks: vectors_finite" in str(failure.event_specific_data.error.message)
    assert t("vecs").tags() == {"prod": v2}
