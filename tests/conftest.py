"""Shared fixtures: real Lance stores in temporary folders, the shipped Debian slice."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
# training snapshots made by tests (and README examples) go to a temporary cache, not ~/.cache
import atexit
import shutil
import tempfile

if "EMBED_ASSETS_SNAPSHOT_DIR" not in os.environ:
    _SNAPSHOTS = tempfile.mkdtemp(prefix="ea-snapshots-")
    os.environ["EMBED_ASSETS_SNAPSHOT_DIR"] = _SNAPSHOTS
    # the run's snapshot cache goes when the run does (they piled up in the temp dir)
    atexit.register(shutil.rmtree, _SNAPSHOTS, ignore_errors=True)

from collections import defaultdict
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from embed_assets import HashEmbedder, SentenceTransformerEmbedder, Store
from embed_assets._demo import demo_source


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def debian() -> pl.DataFrame:
    """The shipped Debian slice, as users would load it."""
    return demo_source()


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder(dimension=32)


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real default model, loaded once per session."""
    return SentenceTransformerEmbedder(show_progress=False)


def vectors_table(keys: list[Any], dim: int = 4, seed: int = 0, **cols: list[Any]) -> pa.Table:
    rng = np.random.default_rng(seed)
    mat = rng.normal(size=(len(keys), dim)).astype(np.float32)
    return pa.table({"id": keys, **cols,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim)})


def snapshot(store: Store, name: str) -> tuple[list[tuple[int, int, list[str]]], list[dict]]:
    """Everything observable about a table: its versions, tags and latest content."""
    t = store.table(name)
    versions = [(v.version, v.rows, v.tags) for v in t.versions()]
    rows = t.read().sort_by(t.meta.key).to_pylist()
    return versions, rows


# Counts the fault-injection suite reports (kills, writers, reads, bad inputs...).
COUNTS: defaultdict[str, Any] = defaultdict(int)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if COUNTS:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items()))
        terminalreporter.write_line(f"fault-injection counts: {shown}")


def plain_duckdb() -> Any:
    """A plain DuckDB with sql/vectors.sql loaded, as an analyst's `.read` gives it."""
    import duckdb

    from embed_assets.sql import macro_file

    con = duckdb.connect()
    con.execute(macro_file("vectors.sql").read_text())
    return con


@pytest.fixture(params=["plain", "connect"])
def con(request: pytest.FixtureRequest) -> Any:
    """Every macro test runs twice: in a plain DuckDB and in a connect()ed session."""
    from embed_assets.sql import connect

    c = plain_duckdb() if request.param == "plain" else connect(extensions=())
    yield c
    c.close()


@pytest.fixture(scope="session")
def demo_store_dir(tmp_path_factory):
    """A folder whose ./.embed_store holds the demo location's tables (hash-bow), made on
    first use: what the README's and the docs' ``needs: make demo`` blocks read."""
    from tests.docs_blocks import materialise_demo

    made: list[Any] = []

    def get():
        if not made:
            made.append(materialise_demo(tmp_path_factory.mktemp("docs_demo")))
        return made[0]

    return get
