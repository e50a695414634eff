"""Every fenced ```python and ```sql block of README.md runs (issue 12, item 4).

- Python blocks run in README order in one namespace, in a temporary working directory
  (so ``Store("./.embed_store")`` is a fresh store there).
- Blocks that start with a ``needs: make demo`` comment (``#`` or ``--``) run against a
  store holding the demo location's tables, materialised here with the hash-bow embedder
  (``EMBED_ASSETS_MODEL=hash-bow``, the same pipeline ``make demo`` runs): Python blocks
  in their own namespace, SQL blocks statement by statement through
  ``embed_assets.connect()``. A SQL block that also names ``history`` gets the install log
  registered under that name, as its comment says.
- ``sh`` blocks (command lines) are not run. Nothing is skipped.

The fast test swaps ``SentenceTransformerEmbedder`` for ``HashEmbedder(64)`` (no model
load, same interface); the ``e2e`` test runs the first blocks with the real model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import embed_assets
from embed_assets import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
NEEDS_DEMO = re.compile(r"^\s*(#|--)\s*needs: make demo", re.M)


def readme_blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def _runnable(needs_demo: bool) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in readme_blocks()
            if lang in ("python", "sql") and bool(NEEDS_DEMO.search(code)) == needs_demo]


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    langs = [lang for lang, _ in readme_blocks()]
    assert langs.count("python") >= 2 and langs.count("sql") >= 1
    # every block is of a kind this test runs or one it deliberately leaves (command lines)
    assert set(langs) <= {"python", "sql", "sh", ""}, langs
    plain = _runnable(needs_demo=False)
    assert plain and all(lang == "python" for lang, _ in plain)
    # the names the later calls need are defined in the block itself
    first = plain[0][1]
    for name in ("df =", "vec =", "store =", "emb ="):
        assert name in first, name


def _run_python(code: str, ns: dict[str, Any]) -> None:
    exec(compile(code, "README.md", "exec"), ns)  # the README's own examples


def _run_sql(con: Any, code: str) -> int:
    body = "\n".join(line for line in code.splitlines() if not line.strip().startswith("--"))
    n = 0
    for stmt in (s.strip() for s in body.split(";")):
        if stmt:
            con.sql(stmt).fetchall()
            n += 1
    return n


def _run_plain_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMBED_ASSETS_STORE", raising=False)
    ns: dict[str, Any] = {"__name__": "readme"}
    for _lang, code in _runnable(needs_demo=False):
        _run_python(code, ns)
    return ns


def _check_first_block(ns: dict[str, Any]) -> None:
    t = ns["t"]
    assert ns["res"].version == 1 and ns["df"].height == 2040
    # after the rollback the latest equals the tagged version
    assert t.read().sort_by("package").equals(t.read("prod").sort_by("package"))
    assert [v.version for v in t.versions()] == [1, 2]


def test_python_blocks_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_assets, "SentenceTransformerEmbedder",
                        lambda *a, **k: HashEmbedder(64))
    _check_first_block(_run_plain_blocks(tmp_path, monkeypatch))


@pytest.mark.e2e
def test_python_blocks_run_with_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _check_first_block(_run_plain_blocks(tmp_path, monkeypatch))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory whose ./.embed_store holds the demo location's tables (hash-bow)."""
    from dagster import DagsterInstance, materialize

    root = tmp_path_factory.mktemp("readme_demo")
    home = root / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("EMBED_ASSETS_STORE", str(root / ".embed_store"))
        mp.setenv("EMBED_ASSETS_MODEL", "hash-bow")
        from dagster_project.demo import build_demo_definitions

        defs = build_demo_definitions("debian", tag_prod=True)  # what dagster_project loads
        instance = DagsterInstance.get()
        try:
            res = materialize([*defs.assets, *defs.asset_checks], resources=defs.resources,
                              instance=instance)
            assert res.success
        finally:
            instance.dispose()
    assert embed_assets.Store(str(root / ".embed_store")).table("debian_embeddings").tags() \
        .get("prod") is not None
    yield root


def test_blocks_that_need_the_demo_store(demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embed_assets._demo import demo_source
    from embed_assets.recipes import simulate_history

    monkeypatch.chdir(demo_dir)
    monkeypatch.delenv("EMBED_ASSETS_STORE", raising=False)
    blocks = _runnable(needs_demo=True)
    assert {lang for lang, _ in blocks} == {"python", "sql"}
    ran = 0
    for lang, code in blocks:
        if lang == "python":
            _run_python(code, {"__name__": "readme"})
            ran += 1
            continue
        con = embed_assets.connect(store="./.embed_store")
        if re.search(r"\bhistory\b", code):
            con.register("history", simulate_history(demo_source()).to_arrow())
        ran += _run_sql(con, code) > 0
    assert ran == len(blocks)
