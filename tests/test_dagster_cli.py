"""`dagster asset materialize -m dagster_project --select '*'` in a subprocess, with a real
instance in a temporary DAGSTER_HOME, as a user would run it from a fresh install."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from embed_assets import Store

ROOT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")


def _materialize(tmp_path: Path, *args: str, model: str | None) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(tmp_path / "store")}
    env.pop("EMBED_ASSETS_MODEL", None)
    if model:
        env["EMBED_ASSETS_MODEL"] = model
    return subprocess.run([str(DAGSTER), "asset", "materialize", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_materialises_whole_demo_fast(tmp_path: Path) -> None:
    p = _materialize(tmp_path, "-m", "dagster_project", "--select", "*", model="hash-bow")
    assert p.returncode == 0, p.stderr[-3000:]
    store = Store(str(tmp_path / "store"))
    assert store.table_names() == [
        "debian_dependency_factors", "debian_directions", "debian_embeddings", "debian_embeddings_pca32",
        "debian_package_factors", "debian_pair_embeddings", "debian_section_centroids",
        "debian_user_vectors", "digits_embeddings", "digits_pca"]  # + the image group
    t = store.table("debian_embeddings")
    assert t.count_rows() == 2040 and t.version == 1
    assert "embedded 2040 row(s)" in p.stderr + p.stdout


def test_cli_partition_range_runs_all_sections_in_one_run(tmp_path: Path) -> None:
    p = _materialize(tmp_path, "-m", "dagster_project.by_section", "--select", "*",
                     "--partition-range", "admin...web", model="hash-bow")
    assert p.returncode == 0, p.stderr[-3000:]
    t = Store(str(tmp_path / "store")).table("debian_by_section_embeddings")
    # twelve partitions, one commit
    assert t.count_rows() == 2040 and t.version == 1


@pytest.mark.e2e
def test_cli_with_the_real_model_end_to_end(tmp_path: Path) -> None:
    """The issue's command verbatim, with the shipped all-MiniLM-L6-v2."""
    p = _materialize(tmp_path, "-m", "dagster_project", "--select", "*", model=None)
    assert p.returncode == 0, p.stderr[-3000:]
    store = Store(str(tmp_path / "store"))
    t = store.table("debian_embeddings")
    assert t.meta.dimension == 384 and t.meta.model.endswith("all-MiniLM-L6-v2")
    from embed_assets import SentenceTransformerEmbedder

    hits = t.search("text editor for programmers", k=10, embedder=SentenceTransformerEmbedder())
    assert "editors" in hits.column("section").to_pylist()
    # a second run re-embeds nothing
    p2 = _materialize(tmp_path, "-m", "dagster_project", "--select", "*", model=None)
    assert p2.returncode == 0
    assert "embedded 0 row(s)" in p2.stderr + p2.stdout and t.version == 1
