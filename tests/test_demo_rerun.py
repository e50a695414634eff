"""A rerun of the whole demo with nothing changed writes no version anywhere (issue 23,
point 3): the embeddings, the recipe tables (centroids, directions, user vectors,
recommender, PCA) and the image tables. Before, four recipe tables got a new version
with bit-identical vectors on every `make demo`."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from embed_assets import Store


def _versions(store: Store) -> dict[str, list[int]]:
    return {name: [v.version for v in store.table(name).versions(with_properties=False,
                                                                    include_maintenance=True)]
            for name in store.table_names()}


def test_rerunning_the_demo_unchanged_writes_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("EMBED_ASSETS_MODEL", "hash-bow")
    from dagster_project.demo import build_demo_definitions

    defs = build_demo_definitions("debian")
    instance = DagsterInstance.get()
    try:
        def run() -> None:
            res = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                              instance=instance)
            assert res.success

        run()
        store = Store(str(tmp_path / "store"))
        first = _versions(store)
        assert len(first) >= 4, first
        run()
        assert _versions(store) == first
    finally:
        instance.dispose()
