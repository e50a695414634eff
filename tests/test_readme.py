"""Every fenced block of README.md runs as written (issues 12, 23 and 28), the way
tests/docs_blocks.py runs the docs' blocks: Python in one namespace, SQL through
``connect()``, shell commands with bash in a folder that looks like a fresh clone.

The README's Dagster block copies ``examples/my_project`` out of the checkout and
materialises it with the documented ``dg launch -f definitions.py`` and the real model:
the "your own project" path of issue 23.

The README stays short (issue 28): at most ~150 lines, no private import.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from embed_assets import Store
from tests.docs_blocks import ROOT, blocks, run_page

README = ROOT / "README.md"


def test_the_readme_is_short_and_public() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert not re.search(r"(from|import) embed_assets\.?\w*\._", text)  # no private module
    # the two commands first
    first = blocks(README)[0]
    assert first.lang == "sh"
    assert [ln.split("#")[0].strip() for ln in first.code.splitlines()] == ["make demo", "make test"]
    langs = [b.lang for b in blocks(README)]
    assert langs.count("python") >= 2 and "sh" in langs


def _check(run: dict, tmp_path: Path) -> None:
    ns = run["ns"]
    t = ns["t"]
    # the tour: write (v1), tag, upsert (v2), rollback to the tag (v3 = v1's rows)
    assert [v.version for v in t.versions()] == [1, 2, 3]
    assert t.read().sort_by("id").equals(t.read("prod").sort_by("id"))
    assert ns["hits"].num_rows == 3 and set(ns["hits"]["section"].to_pylist()) == {"games"}
    assert ns["res"].version == 1
    # the own-project block: the example materialised outside the checkout
    project = run["home"] / "my_project"
    vectors = Store(str(project / ".embed_store")).table("doc_vectors")
    assert vectors.count_rows() == 4 and vectors.version == 1
    assert "a text editor for programmers" in run["shell"][-1]  # the search it printed


def test_readme_blocks_run(tmp_path: Path, demo_store_dir) -> None:
    run = run_page(README, tmp_path, demo_store_dir)
    _check(run, tmp_path)


@pytest.mark.e2e
def test_readme_blocks_run_with_the_real_model(tmp_path: Path, demo_store_dir) -> None:
    run = run_page(README, tmp_path, demo_store_dir, real_model=True,
                   only=lambda b: b.lang == "python")
    assert run["ns"]["res"].version == 1
    assert run["ns"]["emb"].dimension == 384
