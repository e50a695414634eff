"""Experiments in Dagster (issue 25): an ``experiments:`` section of EmbeddingsComponent
makes an experiment asset (the comparison as metadata) and a ``promote_<table>`` job;
a real Dagster instance, a real store, the hashing embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from dagster.components.testing import create_defs_folder_sandbox

from embed_assets import Store
from embed_assets.dagster import EmbeddingsComponent, promote_job_name

KEY = AssetKey(["docs", "embeddings"])
EXP = AssetKey(["docs", "embeddings", "experiments", "small"])
TABLE = "docs_embeddings"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(tmp_path / "store"))
    instance = DagsterInstance.get()
    try:
        yield {"instance": instance, "store": Store(str(tmp_path / "store"))}
    finally:
        instance.dispose()


def _body() -> dict[str, Any]:
    table = {"asset": "docs/embeddings", "path": "sample.parquet", "key_column": "package",
             "text_column": "description", "columns": ["section", "description"],
             "label_column": "section",
             "experiments": [{"name": "small", "model": "hash-bow:16", "sample": 50}]}
    return {"type": "embed_assets.dagster.EmbeddingsComponent",
            "attributes": {"tables": [table], "model": {"backend": "hash", "dimension": 32},
                           "store": {"uri": "{{ env.EMBED_ASSETS_STORE }}"}}}


def test_experiment_asset_and_promotion_job(env: dict[str, Any]) -> None:
    inst = env["instance"]
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(component_cls=EmbeddingsComponent, defs_path="docs")
        (path / "defs.yaml").write_text(yaml.safe_dump(_body()))
        with sandbox.load_component_and_build_defs(defs_path=path) as (_, defs):
            spec = defs.resolve_assets_def(EXP).specs_by_key[EXP]
            assert KEY in {d.asset_key for d in spec.deps}  # downstream of production
            res = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                              instance=inst)
            assert res.success
            t = env["store"].table(TABLE)
            assert t.meta.dimension == 32 and [v.version for v in t.versions()] == [1]
            mat = [m for m in res.get_asset_materialization_events() if m.asset_key == EXP][-1]
            md = {k: v.value for k, v in mat.materialization.metadata.items()}
            assert 0 <= md["overlap_at_k"] <= 1 and md["queries"] == 50
            assert md["base_version"] == 1 and md["model"] == "hash-bow:16"
            assert {r.data["metric"] for r in md["comparison"].records} >= {"overlap_at_k", "same_label_at_k"}
            assert "Top-10 overlap per query" in md["comparison_report"]
            assert promote_job_name(TABLE) in md["comparison_report"]
            # the plot is a picture (a PNG in the markdown, as the projection), not text only
            import base64
            import re

            png = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", md["overlap_plot"])
            assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG")
            job = defs.get_job_def(promote_job_name(TABLE))
            run = job.execute_in_process(instance=inst, resources=defs.resources)  # default: small
            assert run.success
            t = env["store"].table(TABLE)
            assert t.meta.dimension == 16 and t.properties()["experiment"] == "small"
            ev = inst.get_latest_materialization_event(KEY)
            assert ev.asset_materialization.metadata["promoted_experiment"].value == "small"
            # back to the base's rows: promoting again is allowed (production holds the base's
            # rows); after a real change it is refused, and nothing is written
            t.rollback(1)
            row = t.read().slice(0, 1)
            row = row.set_column(row.column_names.index("section"), "section",
                                 pa.array(["moved"], row.schema.field("section").type))
            env["store"].write(TABLE, row, key="package")
            before = t.version
            bad = job.execute_in_process(instance=inst, resources=defs.resources, raise_on_error=False)
            assert not bad.success and t.meta.dimension == 32 and t.version == before
            err = bad.get_step_failure_events()[0].step_failure_data.error
            assert err is not None and "changed since experiment 'small'" in err.message
