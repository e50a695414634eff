"""docs/recipes.md is what the code prints: every SQL statement on the page runs again on a
freshly materialised demo store (real model, real data), and each result's rows name the
same packages as the page shows."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _doc_module():
    spec = importlib.util.spec_from_file_location("recipes_doc", ROOT / "scripts" / "recipes_doc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _first_column(block: str) -> list[str]:
    lines = [ln for ln in block.strip().splitlines()[1:] if not ln.startswith("(")]
    return [ln.split()[0] for ln in lines if ln.strip()]


@pytest.mark.e2e
def test_every_recipe_on_the_page_runs_and_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (ROOT / "docs" / "recipes.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)\n```\n\n```text\n(.*?)\n```", doc, flags=re.S)
    mod = _doc_module()
    assert [sql for sql, _ in blocks] == [sql for _, _, sql in mod.SESSION]  # the page is current
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(tmp_path / "store"))
    monkeypatch.delenv("EMBED_ASSETS_MODEL", raising=False)
    mod.materialise(tmp_path / "store")
    outputs = mod.run(tmp_path / "store")
    for (sql, shown), got in zip(blocks, outputs, strict=True):
        assert _first_column(got), sql
        assert _first_column(got) == _first_column(shown), sql
