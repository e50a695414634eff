"""The component from the outside, with Dagster's own CLI (issue 24's floor):

- a user's own dg project, made the documented way (``create-dagster project``, offline),
  gets embedding assets from ``dg scaffold defs embed_assets.dagster.EmbeddingsComponent``
  plus at most 5 edited lines of YAML, materialised by ``dg launch`` and queried in SQL,
  with no Python written;
- ``dg list components`` lists the component (the registry entry point);
- ``dg check defs`` loads the demo, a dg project of components, and refuses a YAML
  error naming the attribute.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from embed_assets import Store, connect
from embed_assets._demo import demo_source

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DG = BIN / "dg"
CREATE = BIN / "create-dagster"


def _env(tmp_path: Path, *extra_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBED_ASSETS_STORE": str(tmp_path / "store"),
           # this interpreter's venv is the project's environment (dg warns otherwise)
           "VIRTUAL_ENV": sys.prefix, "HF_HUB_OFFLINE": "1", "LANCE_LOG": "error",
           # nothing to ask PyPI about: create-dagster's version check stays quiet
           "DAGSTER_DISABLE_TELEMETRY": "1",
           # the checkout under test first (and its entry points), then what the project adds
           "PYTHONPATH": os.pathsep.join([*map(str, extra_path), str(ROOT)])}
    env.pop("EMBED_ASSETS_MODEL", None)
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.skipif(not CREATE.exists(), reason="create-dagster is not installed (the dev extra)")
def test_own_dg_project_scaffold_edit_five_lines_launch_and_query(tmp_path: Path) -> None:
    # the user's data: 300 PyPI-like rows of their own (here: Debian packages renamed)
    data = tmp_path / "data"
    data.mkdir()
    (demo_source().head(300).select(
        pl.col("package").alias("doc_id"), pl.col("description").alias("body"), "section")
     .write_parquet(data / "docs.parquet"))
    # 1. a new dg project, the documented way (create-dagster), offline (no uv sync)
    _run([str(CREATE), "project", "--no-uv-sync", "acme"], tmp_path, _env(tmp_path))
    project = tmp_path / "acme"
    # the project's package importable, as `uv sync` (an editable install) would make it
    env = _env(tmp_path, project / "src")
    listed = _run([str(DG), "list", "components"], project, env).stdout
    assert "embed_assets.dagster.EmbeddingsComponent" in listed
    # 2. scaffold the component
    _run([str(DG), "scaffold", "defs", "embed_assets.dagster.EmbeddingsComponent", "my_embeddings"],
         project, env)
    yaml_path = project / "src" / "acme" / "defs" / "my_embeddings" / "defs.yaml"
    before = yaml_path.read_text().splitlines()
    # 3. edit at most 5 lines: the file, the key and text columns, the backend
    after = []
    for line in before:
        if "path: sample.parquet" in line:
            line = line.replace("sample.parquet", str(data / "docs.parquet"))
        elif "key_column:" in line:
            line = line.split("key_column:")[0] + "key_column: doc_id"
        elif "text_column:" in line:
            line = line.split("text_column:")[0] + "text_column: body"
        elif "backend:" in line:  # the weightless embedder keeps this test fast
            line = line.split("backend:")[0] + "backend: hash"
        after.append(line)
    yaml_path.write_text("\n".join(after) + "\n")
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert len(before) == len(after) and changed <= 5, changed
    # 4. load, materialise, query in SQL: no Python written
    _run([str(DG), "check", "defs"], project, env)
    _run([str(DG), "launch", "--assets", "*"], project, env)
    store = Store(str(tmp_path / "store"))
    table = store.table("my_embeddings_embeddings")
    assert table.count_rows() == 300 and table.meta.key == "doc_id"
    con = connect(store=str(tmp_path / "store"))
    first = con.execute("SELECT doc_id FROM my_embeddings_embeddings ORDER BY doc_id LIMIT 1").fetchone()[0]
    hits = con.execute(
        "SELECT doc_id, rank FROM knn('my_embeddings_embeddings', "
        f"(SELECT vector FROM my_embeddings_embeddings WHERE doc_id = '{first}'), 3)").fetchall()
    assert hits[0] == (first, 1) and len(hits) == 3


def test_dg_check_defs_loads_the_demo_and_names_a_bad_attribute(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["EMBED_ASSETS_MODEL"] = "hash-bow"
    p = _run([str(DG), "check", "defs"], ROOT, env)
    assert "All definitions loaded successfully" in p.stdout + p.stderr
    # the same project with a bad recall target: refused at load time, naming it
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "dagster_project", copy / "dagster_project",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dg.toml", copy / "dg.toml")
    defs_yaml = copy / "dagster_project" / "defs" / "debian_embeddings" / "defs.yaml"
    defs_yaml.write_text(defs_yaml.read_text().replace(
        "      label_column: section\n", "      label_column: section\n      index_recall: 1.5\n"))
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(ROOT)])
    bad = subprocess.run([str(DG), "check", "defs"], cwd=copy, env=env, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode != 0
    assert "tables[0].index_recall" in bad.stdout + bad.stderr


def test_the_demo_yaml_partitions_are_the_shipped_sections() -> None:
    import yaml

    from dagster_project.demo import EMBEDDINGS_YAML, sections

    body = yaml.safe_load(EMBEDDINGS_YAML["debian_by_section"].read_text())
    assert body["attributes"]["tables"][0]["partitions"]["partition_keys"] == sections()
