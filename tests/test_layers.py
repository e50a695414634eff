"""The package's layering (see embed_assets/__init__.py) is enforced by import-linter's
contracts in .importlinter: they hold on the code, and they catch a planted reverse import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(LINT), "--config", str(cwd / ".importlinter"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold() -> None:
    p = _lint(ROOT, ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "broken" in p.stdout and "0 broken" in p.stdout


def test_a_reverse_import_breaks_the_layers(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "embed_assets", tmp_path / "embed_assets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.duckdb_extension"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    meta = tmp_path / "embed_assets" / "store" / "_meta.py"
    meta.write_text(meta.read_text() + "\nfrom ..sql import connect  # planted: store -> sql\n")
    p = _lint(tmp_path, tmp_path)
    assert p.returncode != 0, p.stdout[-3000:]
    assert "embed_assets.store._meta -> embed_assets.sql" in p.stdout, p.stdout[-3000:]


def test_an_import_circle_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    # Issue 22: the embedding pipeline's modules imported each other inside functions
    # (three hidden circles in embed/); the acyclic contract finds such an import.
    shutil.copytree(ROOT / "embed_assets", tmp_path / "embed_assets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.duckdb_extension"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    emb = tmp_path / "embed_assets" / "embed" / "_embedders.py"
    planted = "\n\ndef _planted() -> None:\n    from ._plan import EmbedPlan  # noqa\n"
    emb.write_text(emb.read_text() + planted)
    p = _lint(tmp_path, tmp_path)
    assert p.returncode != 0, p.stdout[-3000:]
    assert "No import circles" in p.stdout and "BROKEN" in p.stdout, p.stdout[-3000:]
