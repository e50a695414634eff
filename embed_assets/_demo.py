"""The demo's data and generators (private): the shipped Debian slice, the seeded install
log and dependency interactions the recipe demos use, the labelled Debian pairs, the
scikit-learn digits and the small CNN trained on them, and ``embed-assets demo``.

They make the demo code location (``dagster_project``), the tests and the benchmarks
run on real data; they are not library API (issue 22): a user brings their own data.
"""

from __future__ import annotations

from importlib import resources

import polars as pl

from .embed import SentenceTransformerEmbedder, embed_table
from .index import rebuild_after_rollback
from .recipes._directions import debian_pairs
from .recipes._history import simulate_history
from .recipes._recommend import interactions_from_depends
from .store import Store
from .train._digits_cnn import digits_dataset, train_digits_cnn

__all__ = ["debian_pairs", "demo_source", "digits_dataset", "interactions_from_depends", "run_demo",
           "simulate_history", "train_digits_cnn"]

DEMO_TABLE = "debian_packages"


def demo_source() -> pl.DataFrame:
    """The shipped slice of Debian bookworm packages (2,040 rows, 12 sections)."""
    path = resources.files("embed_assets") / "data" / "debian_slice.parquet"
    with resources.as_file(path) as p:
        return pl.read_parquet(p)


def run_demo(store_uri: str | None = None) -> int:
    store = Store(store_uri, index_keeper=rebuild_after_rollback)
    src = demo_source().select("package", "section", "priority", "installed_size_kb",
                               "version", "description")
    print(f"store: {store.uri}")
    embedder = SentenceTransformerEmbedder()
    res = embed_table(store, DEMO_TABLE, src, key="package", text="description",
                      embedder=embedder, mode="sync")
    print(res.summary())
    table = store.table(DEMO_TABLE)
    table.retag("demo", res.version)
    print(f"tagged version {res.version} as 'demo'")
    query = "edit source code with syntax highlighting"
    hits = table.search(query, k=5, columns=["package", "section", "description"],
                        embedder=embedder)
    print(f"\nnearest packages to {query!r}:")
    for r in hits.to_pylist():
        print(f"  {r['rank']}. {r['package']:<28} {r['distance']:.3f}  {r['description']}")
    return 0
