"""Write docs/recipes.md: one analyst's SQL session on the demo store, with real output.

    .venv/bin/python scripts/recipes_doc.py [--store DIR] [--check]

Materialises the whole demo (real all-MiniLM-L6-v2 model, real Debian slices) into a
fresh store, retrains the recommender once (so there are two versions to compare), runs
every statement of the session through ``embed-assets sql`` semantics (``run_sql``) and
writes the statements with their output. ``--check`` runs them without writing (the test
suite does that, so the page cannot drift from what the code does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (title, prose, SQL). The prose says what an analyst is after; the SQL is what they type.
SESSION: list[tuple[str, str, str]] = [
    ("Semantic search, then inside one section",
     "The nearest packages to a query vector (the `editors` section centroid), and the same "
     "question asked of one other section by filtering knn's rows on the table's own columns "
     "(a post-filter over a generous k here).",
     "SELECT k.package, k.section, round(k.distance, 3) AS distance, k.rank\n"
     "FROM knn('debian_embeddings',\n"
     "         (SELECT vector FROM debian_section_centroids WHERE section = 'editors'), 5) k"),
    ("",
     "",
     "SELECT k.package, round(k.distance, 3) AS distance\n"
     "FROM knn('debian_embeddings',\n"
     "         (SELECT vector FROM debian_section_centroids WHERE section = 'editors'), 300) k\n"
     "WHERE k.section = 'utils' ORDER BY k.rank LIMIT 5"),
    ("Section centroids, compared",
     "Which sections sit closest to `games` in embedding space: the mean vector of each "
     "section (`vec_mean`, a C aggregate in a connect()ed session) against the games centroid.",
     "WITH c AS (SELECT section, vec_normalize(vec_mean(vector)) AS v\n"
     "           FROM debian_embeddings GROUP BY section)\n"
     "SELECT a.section, round(vec_cosine(a.v, b.v), 3) AS cosine_to_games\n"
     "FROM c a, c b WHERE b.section = 'games' AND a.section <> 'games'\n"
     "ORDER BY cosine_to_games DESC, a.section LIMIT 5"),
    ("A direction: from a library to its -dev package",
     "`debian_directions` holds named direction vectors (the mean difference over real "
     "library / `-dev` pairs). Adding `dev` to a library's vector lands next to its `-dev` "
     "package; knn asks for 6 and drops the starting row.",
     "SELECT k.package, round(k.distance, 3) AS distance\n"
     "FROM knn('debian_pair_embeddings',\n"
     "         (SELECT vec_add((SELECT vector FROM debian_pair_embeddings\n"
     "                          WHERE package = 'libyaml-cpp0.7'),\n"
     "                         (SELECT vector FROM debian_directions WHERE name = 'dev'))), 6) k\n"
     "WHERE k.package <> 'libyaml-cpp0.7' ORDER BY k.rank LIMIT 5"),
    ("A recommendation",
     "Dependency embeddings from a truncated SVD of the package x dependency matrix: the "
     "dependencies whose vectors have the largest dot product with `vim`'s, leaving out what "
     "vim already depends on (the latest version of both tables; for the dot metric knn's "
     "distance is `1 - dot`, so it can be negative).",
     "SELECT k.dependency, round(1 - k.distance, 3) AS score\n"
     "FROM knn('debian_dependency_factors',\n"
     "         (SELECT vector FROM debian_package_factors WHERE package = 'vim'), 20) k\n"
     "WHERE NOT list_contains((SELECT items FROM debian_package_factors WHERE package = 'vim'),\n"
     "                        k.dependency)\n"
     "ORDER BY k.rank LIMIT 5"),
    ("A user from their history",
     "Users as the mean of their last 5 installs, written by the `user_vectors` asset; the "
     "packages nearest to one user's vector.",
     "SELECT k.package, k.section, round(k.distance, 3) AS distance\n"
     "FROM knn('debian_embeddings', (SELECT vector FROM debian_user_vectors WHERE user = 'u0007'), 5) k"),
    ("Time travel: the same question to two versions",
     "The recommender was retrained (version 2, rank 4): the top dependencies for `vim` from "
     "version 1 and from version 2 of both tables, side by side.",
     "SELECT v1.rank, v1.dependency AS version_1, v2.dependency AS version_2\n"
     "FROM knn('debian_dependency_factors@1',\n"
     "         (SELECT vector FROM \"debian_package_factors@1\" WHERE package = 'vim'), 5) v1\n"
     "JOIN knn('debian_dependency_factors@2',\n"
     "         (SELECT vector FROM \"debian_package_factors@2\" WHERE package = 'vim'), 5) v2\n"
     "  USING (rank)\n"
     "ORDER BY rank"),
]


def materialise(store_dir: Path) -> None:
    """The whole demo into ``store_dir``, then one retrain of the recommender."""
    os.environ["EMBED_ASSETS_STORE"] = str(store_dir)
    os.environ.pop("EMBED_ASSETS_MODEL", None)  # the real model, whatever the caller set
    from dagster import DagsterInstance, materialize

    from dagster_project.demo import build_demo_definitions
    from embed_assets import Store
    from embed_assets._demo import demo_source, interactions_from_depends
    from embed_assets.recipes import fit_recommender

    defs = build_demo_definitions("debian")  # built now: the model is read at definition time
    assets = list(defs.assets or [])
    with DagsterInstance.ephemeral() as inst:
        res = materialize(assets, instance=inst, resources=defs.resources)
        assert res.success
    fit_recommender(Store(store_dir), interactions_from_depends(demo_source()), rank=4,
                    users_table="debian_package_factors", items_table="debian_dependency_factors")


def run(store_dir: Path) -> list[str]:
    from embed_assets.sql import format_result, run_sql

    outputs = []
    for _title, _prose, sql in SESSION:
        outputs.append(format_result(run_sql(str(store_dir), sql)))
    return outputs


def render(outputs: list[str]) -> str:
    parts = ["# Recipes: one analyst's session in SQL\n",
             "Every statement below ran against the demo store (`make demo`, real "
             "all-MiniLM-L6-v2 vectors of real Debian package descriptions), through "
             "`embed-assets sql \"...\"` or `embed_assets.connect()`; the output under each is "
             "what it printed. `scripts/recipes_doc.py` regenerates this page, and the test "
             "suite runs every statement again.\n"]
    for (title, prose, sql), out in zip(SESSION, outputs, strict=True):
        head = f"## {title}\n\n{prose}\n\n" if title else ""
        parts.append(f"{head}```sql\n{sql}\n```\n\n```text\n{out}\n```\n")
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    store_dir = Path(args.store or tempfile.mkdtemp(prefix="recipes_"))
    materialise(store_dir)
    outputs = run(store_dir)
    if not args.check:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "recipes.md").write_text(render(outputs))
    print(render(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
