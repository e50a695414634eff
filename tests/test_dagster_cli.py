"""`dg launch --assets '*'` (Dagster 1.13's CLI; dg.toml makes the repository root the
demo's dg project) in a subprocess, with a real instance in a temporary DAGSTER_HOME, as a
user would run it from a fresh install; and `make demo`, which runs it."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embed_assets import Store

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).with_name("dg")


def _env(tmp_path: Path, model: str | None) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # VIRTUAL_ENV: this interpreter's venv is the project's, as `make` says (dg warns otherwise)
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(tmp_path / "store"),
           "VIRTUAL_ENV": sys.prefix}
    env.pop("EMBED_ASSETS_MODEL", None)
    if model:
        env["EMBED_ASSETS_MODEL"] = model
    return env


def _no_warnings(out: str) -> None:
    """No Python warning reaches the user (issue 23.6): Dagster's own BetaWarnings about the
    beta parameters it passes itself were printed by every launch."""
    assert not re.findall(r"^.*\b\w*Warning\b: .*$", out, re.M), out[-3000:]


def _launch(tmp_path: Path, *args: str, model: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([str(DG), "launch", *args], cwd=ROOT, env=_env(tmp_path, model),
                          capture_output=True, text=True, timeout=600)


def test_cli_materialises_whole_demo_fast(tmp_path: Path) -> None:
    p = _launch(tmp_path, "--assets", "*", model="hash-bow")
    assert p.returncode == 0, p.stderr[-3000:]
    store = Store(str(tmp_path / "store"))
    assert store.table_names() == [
        "debian_dependency_factors", "debian_directions", "debian_embeddings", "debian_embeddings_pca32",
        "debian_package_factors", "debian_pair_embeddings", "debian_section_centroids",
        "debian_user_vectors", "digits_embeddings", "digits_pca"]  # + the image group
    t = store.table("debian_embeddings")
    assert t.count_rows() == 2040 and t.version == 1
    assert "embedded 2040 row(s)" in p.stderr + p.stdout
    _no_warnings(p.stderr + p.stdout)


def test_make_demo_launches_with_dg_and_no_supersession_warning(tmp_path: Path) -> None:
    """The one command that materialises the whole demo, then queries it."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -o: take the venv's install stamp as it is (this interpreter is the installed one)
    p = subprocess.run(["make", "-o", ".venv/.installed-stamp", "demo"], cwd=ROOT,
                       env=_env(tmp_path, "hash-bow"), capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "dg launch --assets '*'" in out
    assert "dagster asset materialize" not in out
    _no_warnings(out)
    assert "project_and_activated_venv_mismatch" not in out
    store = Store(str(tmp_path / "store"))
    t = store.table("debian_embeddings")
    assert t.count_rows() == 2040 and t.tags() == {"prod": 1}
    # the demo's closing queries ran on what it wrote
    assert "(5 rows)" in out and "(4 rows)" in out


def test_cli_partition_range_runs_all_sections_in_one_run(tmp_path: Path) -> None:
    # The by-section location is not the dg project: named by module, as dg launch takes it.
    p = _launch(tmp_path, "-m", "dagster_project.by_section", "--assets", "*",
                "--partition-range", "admin...web", model="hash-bow")
    assert p.returncode == 0, p.stderr[-3000:]
    t = Store(str(tmp_path / "store")).table("debian_by_section_embeddings")
    # twelve partitions, one commit
    assert t.count_rows() == 2040 and t.version == 1
    # Dagster's Beta warning about backfill_policy (three times per launch before) does not
    # reach the user (issue 23, point 6)
    assert "backfill_policy" not in p.stderr + p.stdout
    _no_warnings(p.stderr + p.stdout)


@pytest.mark.e2e
def test_cli_with_the_real_model_end_to_end(tmp_path: Path) -> None:
    """The demo's command verbatim, with the shipped all-MiniLM-L6-v2."""
    p = _launch(tmp_path, "--assets", "*", model=None)
    assert p.returncode == 0, p.stderr[-3000:]
    _no_warnings(p.stderr + p.stdout)
    store = Store(str(tmp_path / "store"))
    t = store.table("debian_embeddings")
    assert t.meta.dimension == 384 and t.meta.model.endswith("all-MiniLM-L6-v2")
    from embed_assets import SentenceTransformerEmbedder

    hits = t.search("text editor for programmers", k=10, embedder=SentenceTransformerEmbedder())
    assert "editors" in hits.column("section").to_pylist()
    # a second run re-embeds nothing
    p2 = _launch(tmp_path, "--assets", "*", model=None)
    assert p2.returncode == 0
    assert "embedded 0 row(s)" in p2.stderr + p2.stdout and t.version == 1
