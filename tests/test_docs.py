"""The docs site (issue 28): it builds with ``mkdocs build --strict`` (warnings, broken
links and references fail), and every Python, SQL and shell block of docs/*.md runs (see
tests/docs_blocks.py for how, and for the cheaper forms of the few long commands)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_blocks import NOT_RUN, OUTPUT_LANGS, ROOT, RUN_LANGS, blocks, pages, run_page

DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


def test_every_block_is_of_a_kind_the_suite_runs() -> None:
    seen = set()
    for page in pages():
        for b in blocks(page):
            if b.key() in NOT_RUN:
                continue
            assert b.lang in RUN_LANGS + OUTPUT_LANGS, f"{b.where()}: ```{b.lang}"
            seen.add(b.lang)
    assert {"python", "sql", "sh"} <= seen


def test_the_blocks_not_run_yet_still_exist() -> None:
    # the list of blocks not run only shrinks: an entry whose block is gone is removed
    keys = {b.key() for page in pages() for b in blocks(page)}
    assert not [k for k in NOT_RUN if k not in keys]
    assert len(NOT_RUN) <= 10


def test_the_nav_names_every_page() -> None:
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def files(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [f for n in node for f in files(n)]
        if isinstance(node, dict):
            return [f for v in node.values() for f in files(v)]
        return []

    assert sorted(files(nav)) == sorted(p.name for p in DOC_PAGES)
    # the pages other branches write slot in under these names
    assert {"store.md", "search.md", "sql.md", "serving.md", "scale.md", "recipes.md"} <= set(files(nav))


def test_the_site_builds_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-5000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    # the CLI reference is generated from the parser: every verb's usage line is there
    from embed_assets.cli import build_parser

    verbs = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for verb in verbs:
        assert f"usage: embed-assets {verb}" in cli, verb
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "embed_assets.Store" in api or "Store" in api
    assert "Parameters" in api  # numpydoc sections rendered


@pytest.mark.parametrize("page", [p.name for p in DOC_PAGES if any(
    b.lang in RUN_LANGS for b in blocks(p))])
def test_page_blocks_run(page: str, tmp_path: Path, demo_store_dir) -> None:
    path = ROOT / "docs" / page
    if page == "recipes.md":
        # the analyst's session runs on the demo store: here with hash-bow vectors (so the
        # rows differ from the page's); tests/test_recipes_doc.py (e2e) reruns it with the
        # real model and compares the printed rows
        import embed_assets
        from tests.docs_blocks import run_sql

        store = embed_assets.Store(str(demo_store_dir() / ".embed_store"))
        if store.table("debian_dependency_factors").version == 1:
            # the page's time-travel block reads the retrained recommender, version 2:
            # the retrain scripts/recipes_doc.py makes
            from embed_assets._demo import demo_source, interactions_from_depends
            from embed_assets.recipes import fit_recommender

            fit_recommender(store, interactions_from_depends(demo_source()), rank=4,
                            users_table="debian_package_factors", items_table="debian_dependency_factors")
        con = embed_assets.connect(store=store)
        ran = [run_sql(con, b.code) for b in blocks(path) if b.lang == "sql"]
        assert ran and all(ran)
        return
    run_page(path, tmp_path, demo_store_dir)
