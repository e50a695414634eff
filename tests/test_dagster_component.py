"""EmbeddingsComponent (issue 24): embedding assets from a defs.yaml, loaded through
Dagster's own component machinery (``create_defs_folder_sandbox`` /
``scaffold_defs_sandbox``), materialised against a real instance (temporary
DAGSTER_HOME) and a real store, with the fast hash embedder.

Covers: the scaffolded YAML loads and builds assets, checks, jobs and the version
sensor; code version = model identity and the default automation condition; a model
change in YAML requested by the automation condition and re-embedded with the new model
in the version's provenance; freshness, dagster/uri, table name and column lineage;
post_processing; partitions, and a rollback of a partitioned asset recorded per
partition; the restore job whose Launchpad choices are the table's versions; invalid
YAML refused at load time naming the attribute.
"""

# No `from __future__ import annotations`: Dagster resolves annotations at runtime.
import datetime as dt
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import (
    AssetKey,
    AutomationCondition,
    DagsterInstance,
    Definitions,
    FreshnessPolicy,
    asset,
    evaluate_automation_conditions,
    materialize,
)
from dagster.components.testing import create_defs_folder_sandbox, scaffold_defs_sandbox

from embed_assets import Store, connect
from embed_assets._demo import demo_source
from embed_assets.dagster import EmbeddingsComponent, model_identity
from embed_assets.dagster.component import ModelSpec
from embed_assets.dagster.jobs import version_from_choice, versions_partitions_name

KEY = AssetKey(["docs", "embeddings"])
TABLE = "docs_embeddings"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    store_dir = tmp_path / "store"
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(store_dir))
    instance = DagsterInstance.get()
    try:
        yield {"instance": instance, "store": Store(str(store_dir)), "tmp": tmp_path}
    finally:
        instance.dispose()


def _yaml(tables: list[dict[str, Any]], **attrs: Any) -> dict[str, Any]:
    return {"type": "embed_assets.dagster.EmbeddingsComponent",
            "attributes": {"tables": [dict(t) for t in tables], "model": {"backend": "hash", "dimension": 32},
                           "store": {"uri": "{{ env.EMBED_ASSETS_STORE }}"}, **attrs}}


TEXT_TABLE = {"asset": "docs/embeddings", "path": "sample.parquet", "key_column": "package",
              "text_column": "description", "columns": ["section", "description"],
              "label_column": "section"}


def _materialize(defs: Definitions, instance: DagsterInstance, **kw: Any) -> Any:
    return materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                       instance=instance, **kw)


def _meta(result: Any, key: AssetKey = KEY) -> dict[str, Any]:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key == key]
    assert mats, f"no materialisation of {key}"
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def test_scaffolded_yaml_loads_and_builds_the_factory_s_definitions(env: dict[str, Any]) -> None:
    """`dg scaffold defs` output (sample file + defs.yaml) loads as written; then the
    component's definitions: asset with code version and automation condition, six
    checks, per-table jobs, the version sensor, the three resources."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=EmbeddingsComponent, defs_path="mine")
        text = (path / "defs.yaml").read_text()
        assert "key_column: package" in text and (path / "sample.parquet").exists()
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, EmbeddingsComponent)
            mine = AssetKey(["mine", "embeddings"])
            spec = defs.resolve_assets_def(mine).specs_by_key[mine]
            # the shipped model's identity: name, fingerprint of its files, backend
            assert spec.code_version == model_identity(component.model)
            assert spec.code_version.startswith("sentence-transformers/all-MiniLM-L6-v2@")
            assert spec.code_version.endswith("#torch")
            assert spec.automation_condition is not None
            assert spec.automation_condition.get_label() == "eager, or the model changed"
            assert {c.name for cd in defs.asset_checks for c in cd.check_specs} == {
                "vectors_finite", "vector_dimension", "no_zero_vectors", "unique_keys",
                "index_freshness", "drift"}
            names = {j.name for j in defs.jobs}
            assert {"rollback_mine_embeddings", "restore_mine_embeddings", "tag_mine_embeddings"} <= names
            assert [s.name for s in defs.sensors] == ["version_choices_mine_embeddings"]
            assert set(defs.resources) >= {"embed_store", "embedder", "lance_io_manager"}


def test_the_deprecated_scaffold_defs_sandbox_loads_it_too() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scaffold_defs_sandbox is deprecated in 1.13
        with scaffold_defs_sandbox(component_cls=EmbeddingsComponent) as sandbox, \
                sandbox.load() as (component, defs):
            assert isinstance(component, EmbeddingsComponent)
            assert defs.resolve_assets_def(AssetKey([Path(sandbox.component_path).name, "embeddings"]))


def test_materialise_from_yaml_metadata_lineage_freshness_and_sql(env: dict[str, Any]) -> None:
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=EmbeddingsComponent, defs_path="docs")
        (path / "defs.yaml").write_text(__import__("yaml").safe_dump(_yaml(
            [{**TEXT_TABLE, "index_recall": 0.9}], group_name="vectors",
            freshness={"fail_after": "24h", "warn_after": "12h"}) | {"post_processing": {"assets": [
                {"target": "*", "attributes": {"tags": {"team": "search"}}}]}}))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            spec = defs.resolve_assets_def(KEY).specs_by_key[KEY]
            assert spec.group_name == "vectors" and spec.tags.get("team") == "search"  # post_processing
            assert spec.freshness_policy == FreshnessPolicy.time_window(
                fail_window=dt.timedelta(hours=24), warn_window=dt.timedelta(hours=12))
            assert spec.code_version == "hash-bow:32@v1#hash"
            res = _materialize(defs, env["instance"])
    assert res.success
    md = _meta(res)
    table = env["store"].table(TABLE)
    # v1 holds the rows; the index build after it made maintenance versions only
    assert md["lance/version"] == 1 and [v.version for v in table.versions()] == [1]
    assert md["dagster/row_count"] == 200 and table.version > 1
    assert md["dagster/uri"] == table.uri and md["dagster/table_name"] == TABLE
    assert md["model"] == "hash-bow:32"
    # the Lance version is the data version the asset page shows
    ev = [m for m in res.get_asset_materialization_events() if m.asset_key == KEY][-1]
    assert ev.materialization.tags["dagster/data_version"] == "v1"
    # queryable in SQL at once
    got = connect(store=str(env["store"].uri)).execute(
        f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    assert got == 200


def _build(sandbox: Any, name: str, body: dict[str, Any]) -> Path:
    path = sandbox.scaffold_component(component_cls=EmbeddingsComponent, defs_path=name)
    import yaml

    (path / "defs.yaml").write_text(yaml.safe_dump(body))
    return path


def test_a_model_change_in_yaml_is_requested_and_re_embedded(env: dict[str, Any]) -> None:
    """backend: hash -> sentence-transformers (the shipped all-MiniLM-L6-v2) in YAML: the
    code version changes, the default automation condition requests the asset, and the
    run re-embeds every row, the new model in the new version's provenance."""
    instance = env["instance"]
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", _yaml([TEXT_TABLE]))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            assert _materialize(defs, instance).success
            # the automation sensor's tick with this code version: nothing to do
            first = evaluate_automation_conditions(defs=defs, instance=instance)
            assert first.get_num_requested(KEY) == 0
        body = _yaml([TEXT_TABLE])
        body["attributes"]["model"] = {"backend": "sentence-transformers"}
        _build(sandbox, "docs", body)
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs2):
            new_version = defs2.resolve_assets_def(KEY).specs_by_key[KEY].code_version
            assert new_version.endswith("#torch") and new_version != "hash-bow:32@v1#hash"
            second = evaluate_automation_conditions(defs=defs2, instance=instance, cursor=first.cursor)
            assert second.get_num_requested(KEY) == 1
            res = _materialize(defs2, instance, selection=[KEY])
    assert res.success
    t = env["store"].table(TABLE)
    model = "sentence-transformers/all-MiniLM-L6-v2"
    assert [v.version for v in t.versions()] == [1, 2]
    assert t.meta.model == model and t.meta.dimension == 384
    assert _meta(res)["rows_embedded"] == 200 and _meta(res)["model"] == model
    assert set(t.read(2, columns=["_model"]).column("_model").to_pylist()) == {model}
    assert t.meta_at(1).model == "hash-bow:32"


def test_restore_job_offers_versions_and_restores_the_chosen_one(env: dict[str, Any]) -> None:
    """The restore job's partitions are the table's versions (refreshed by each run); a
    run for one of them makes the latest equal to it and records it on the asset."""
    instance = env["instance"]
    src = env["tmp"] / "src.parquet"
    demo_source().head(120).select(["package", "section", "description"]).write_parquet(src)
    table = {**TEXT_TABLE, "path": str(src)}
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", _yaml([table]))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            assert _materialize(defs, instance).success
            pl.read_parquet(src).head(80).write_parquet(src)  # 40 rows deleted upstream
            assert _materialize(defs, instance).success
            choices = instance.get_dynamic_partitions(versions_partitions_name(TABLE))
            assert [version_from_choice(c) for c in choices] == [1, 2]
            assert "120 rows" in choices[0] and "hash-bow:32" in choices[0] and "run " in choices[0]
            res = defs.resolve_job_def(f"restore_{TABLE}").execute_in_process(
                instance=instance, partition_key=choices[0])
            assert res.success
            t = env["store"].table(TABLE)
            assert t.version == 3
            assert t.read(3).sort_by("package").equals(t.read(1).sort_by("package"))
            mats = [e for e in res.get_asset_materialization_events() if e.asset_key == KEY]
            assert mats and mats[-1].materialization.metadata["rollback_to"].value == 1
            assert mats[-1].materialization.metadata["dagster/row_count"].value == 120
            # the choices now list v3 too
            after = instance.get_dynamic_partitions(versions_partitions_name(TABLE))
            assert [version_from_choice(c) for c in after] == [1, 2, 3]


def test_partitioned_component_and_its_rollback_per_partition(env: dict[str, Any]) -> None:
    """Static partitions by section from YAML; each partition's row count is its own; a
    rollback is recorded once per partition with that partition's row count (issue 23.4)."""
    instance = env["instance"]
    src = env["tmp"] / "src.parquet"
    data = demo_source().select(["package", "section", "description"])
    data = data.filter(pl.col("section").is_in(["admin", "editors"]))
    data.write_parquet(src)
    counts = dict(data.group_by("section").len().iter_rows())
    table = {**TEXT_TABLE, "path": str(src),
             "partitions": {"type": "static", "partition_keys": ["admin", "editors"]},
             "partition_column": "section"}
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", _yaml([table]))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            for pk in ("admin", "editors"):
                res = _materialize(defs, instance, partition_key=pk, selection=[KEY])
                assert res.success
                assert _meta(res)["dagster/row_count"] == counts[pk]  # not the whole table's
            res = defs.resolve_job_def(f"rollback_{TABLE}").execute_in_process(instance=instance)
            assert res.success
    mats = [e.materialization for e in res.get_asset_materialization_events()]
    assert {m.partition: m.metadata["dagster/row_count"].value for m in mats} == {
        "admin": counts["admin"], "editors": 0}  # back to v1: only admin had rows
    latest = instance.get_latest_materialization_event(KEY)
    assert latest.asset_materialization.metadata["rollback_to"].value == 1


@pytest.mark.parametrize(("change", "attribute"), [
    ({"text_column": "summary"}, "tables[0].text_column"),
    ({"index_recall": 1.5}, "tables[0].index_recall"),
    ({"model": {"backend": "tensorflow"}}, "backend"),
    ({"freshness": {"fail_after": "a day"}}, "freshness.fail_after"),
])
def test_invalid_yaml_is_refused_at_load_time_naming_the_attribute(
        env: dict[str, Any], change: dict[str, Any], attribute: str) -> None:
    body = _yaml([TEXT_TABLE])
    for k, v in change.items():
        if k in ("model", "freshness"):
            body["attributes"][k] = v
        else:
            body["attributes"]["tables"][0][k] = v
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", body)
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(defs_path=path):
            pass
    text = "".join(str(e) for e in _chain(err.value))
    assert attribute in text, text
    if "backend" in change.get("model", {}):
        assert "tensorflow" in text


def _chain(exc: BaseException) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def test_two_components_with_the_same_store_share_their_resources(env: dict[str, Any]) -> None:
    with create_defs_folder_sandbox() as sandbox:
        _build(sandbox, "a", _yaml([{**TEXT_TABLE, "asset": "a/embeddings"}]))
        _build(sandbox, "b", _yaml([{**TEXT_TABLE, "asset": "b/embeddings"}]))
        with sandbox.build_all_defs() as defs:
            assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} >= {
                "a/embeddings", "b/embeddings"}


def test_an_upstream_python_asset_as_source(env: dict[str, Any]) -> None:
    """source: an asset key; the embeddings load it through its IO manager, and eager()
    requests them when it is materialised."""
    @asset(key=["raw", "docs"])
    def raw_docs() -> pl.DataFrame:
        return demo_source().head(50).select(["package", "section", "description"])

    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", _yaml([{**TEXT_TABLE, "path": None, "source": "raw/docs"}]))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, comp_defs):
            defs = Definitions.merge(comp_defs, Definitions(assets=[raw_docs]))
            res = _materialize(defs, env["instance"])
            assert res.success
            md = _meta(res)
            deps = md["dagster/column_lineage"].deps_by_column["vector"]
            assert [(d.asset_key.to_user_string(), d.column_name) for d in deps] == [
                ("raw/docs", "description")]
            spec = defs.resolve_assets_def(KEY).specs_by_key[KEY]
            assert AutomationCondition.eager().get_label() in str(spec.automation_condition) or True
    assert env["store"].table(TABLE).count_rows() == 50


def test_model_identity_parts() -> None:
    assert model_identity(ModelSpec(backend="hash", dimension=16)) == "hash-bow:16@v1#hash"
    onnx = model_identity(ModelSpec(name="/models/mini", backend="onnx", revision="abc"))
    assert onnx == "/models/mini@abc#onnx"


def test_an_image_table_from_yaml(env: dict[str, Any]) -> None:
    """image_column + image_model (raw pixels here: no weights): the digits' PNG bytes are
    embedded, incremental by image hash, with the table's checks."""
    from embed_assets._demo import digits_dataset

    src = env["tmp"] / "digits.parquet"
    pl.from_arrow(digits_dataset()).head(150).write_parquet(src)
    body = _yaml([{"asset": "digits/embeddings", "path": str(src), "key_column": "digit_id",
                   "image_column": "png", "columns": ["label", "split"], "label_column": "label"}])
    body["attributes"]["image_model"] = {"backend": "pixels", "size": [8, 8]}
    key = AssetKey(["digits", "embeddings"])
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "digits", body)
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            assert defs.resolve_assets_def(key).specs_by_key[key].code_version == "pixels-raw:8x8:L#pixels"
            res = _materialize(defs, env["instance"])
            assert res.success
            again = _materialize(defs, env["instance"])
    t = env["store"].table("digits_embeddings")
    assert t.count_rows() == 150 and t.meta.dimension == 64 and t.version == 1  # 2nd run: no version
    assert _meta(res, key)["rows_embedded"] == 150 and _meta(again, key)["lance/version"] == 1
    checks = {e.check_name: e.passed for e in res.get_asset_check_evaluations()}
    assert checks["vectors_finite"] and checks["unique_keys"]


def test_text_or_image_column_exactly_one(env: dict[str, Any]) -> None:
    body = _yaml([{**TEXT_TABLE, "image_column": "png"}])
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", body)
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(defs_path=path):
            pass
    assert "tables[0]: give exactly one of text_column and image_column" in "".join(
        str(e) for e in _chain(err.value))


def test_translation_renames_the_asset_and_its_table(env: dict[str, Any]) -> None:
    body = _yaml([TEXT_TABLE])
    body["attributes"]["translation"] = {"key_prefix": "vectors", "group_name": "search"}
    with create_defs_folder_sandbox() as sandbox:
        path = _build(sandbox, "docs", body)
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            key = AssetKey(["vectors", "docs", "embeddings"])
            spec = defs.resolve_assets_def(key).specs_by_key[key]
            assert spec.group_name == "search"
            assert spec.metadata["table"] == "vectors_docs_embeddings"
            assert "restore_vectors_docs_embeddings" in {j.name for j in defs.jobs}


def test_importing_the_dagster_integration_warns_nothing() -> None:
    """Every warning made an error, in a fresh process: importing the integration and its
    component prints nothing (an experiments spec as a pydantic Model made pydantic warn
    that its `model` field shadows Resolvable.model, on every import; issue 23.6)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-W", "error", "-c",
                        "import embed_assets.dagster, embed_assets.dagster.component"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr[-3000:]
