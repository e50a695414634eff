"""Full-text and hybrid search (issue 11, item 4): BM25 over Lance's inverted index, fused
with the vector ranking by reciprocal rank, from Python, the CLI and SQL."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Fusion, HashEmbedder, Store, ValidationError, build_text_index, connect
from embed_assets.embed import embed_table
from embed_assets.store._hybrid import fuse

# A package whose name is its only mention: no description says "zqxtool".
LITERAL = "zqxtool"


@pytest.fixture
def pkgs(store: Store, debian, hash_embedder: HashEmbedder):
    rows = debian.select(["package", "section", "description"]).head(600).to_dicts()
    rows.append({"package": LITERAL, "section": "utils",
                 "description": "command line helper that renames photographs by date"})
    embed_table(store, "pkgs", pa.Table.from_pylist(rows), key="package", text="description",
                embedder=hash_embedder)
    return store, hash_embedder


def test_fusion_order_follows_reciprocal_ranks():
    f = Fusion()
    got = fuse(["a", "b", "c"], ["c", "d", "a"], 4, f)
    # a: 1/61 + 1/63, c: 1/63 + 1/61 (tie: vector order first), b: 1/62, d: 1/62
    assert [g[0] for g in got] == ["a", "c", "b", "d"]
    assert got[0][1] == pytest.approx(1 / 61 + 1 / 63)
    assert got[0][2:] == (1, 3) and got[3][2:] == (None, 2)
    text_only = fuse(["a", "b"], ["b", "x"], 3, Fusion(vector_weight=0.0))
    assert [g[0] for g in text_only][:2] == ["b", "x"]
    vec_only = fuse(["a", "b"], ["b", "x"], 3, Fusion(text_weight=0.0))
    assert [g[0] for g in vec_only][:2] == ["a", "b"]
    damped = fuse(["a", "b"], ["b"], 2, Fusion(rrf_k=1))
    assert damped[0][0] == "b" and damped[0][1] == pytest.approx(1 / 3 + 1 / 2)


def test_a_literal_only_term_is_found_by_text_and_hybrid_not_by_vector(pkgs):
    store, emb = pkgs
    t = store.table("pkgs")
    with pytest.raises(ValidationError, match=r"no full-text index.*build_text_index"):
        t.search(LITERAL, k=5, mode="text")
    made = build_text_index(t)
    assert made["columns"] == ["description", "package"]
    t = store.table("pkgs")
    assert not any(v.maintenance for v in t.versions()), "the index build is bookkeeping"
    vec = t.search(LITERAL, k=10, embedder=emb).column("package").to_pylist()
    assert LITERAL not in vec
    text, plan = t.search(LITERAL, k=3, mode="text", explain=True)
    assert text.column("package").to_pylist()[0] == LITERAL and plan.path == "text"
    assert text.column("text_score").to_pylist()[0] > 0
    hybrid, plan = t.search(LITERAL, k=10, mode="hybrid", embedder=emb, explain=True)
    assert LITERAL in hybrid.column("package").to_pylist()
    assert plan.path == "hybrid" and "reciprocal rank fusion" in plan.reason
    # every fused row comes from one of the two candidate lists, and a row both rank
    # well comes first
    q = "partition editor for Acorn"
    vec50 = t.search(q, k=50, embedder=emb).column("package").to_pylist()
    text50 = t.search(q, k=50, mode="text").column("package").to_pylist()
    fused = t.search(q, k=10, mode="hybrid", embedder=emb).column("package").to_pylist()
    assert set(fused) <= set(vec50) | set(text50)
    assert fused[0] == "acorn-fdisk" and "acorn-fdisk" in vec50 and text50[0] == "acorn-fdisk"


def test_hybrid_rows_carry_exact_distances_and_fused_scores(pkgs):
    store, emb = pkgs
    build_text_index(store.table("pkgs"))
    t = store.table("pkgs")
    res = t.search("editor for text files", k=8, mode="hybrid", embedder=emb,
                   columns=["package", "vector"])
    scores = res.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True) and res.column("rank").to_pylist() == list(range(1, 9))
    q = emb.embed(["editor for text files"])[0]
    for row in res.to_pylist():
        v = np.asarray(row["vector"], np.float32)
        want = 1 - float(v @ q) / (np.linalg.norm(v) * np.linalg.norm(q))
        assert row["distance"] == pytest.approx(want, abs=1e-5)
    weighted = t.search("editor for text files", k=8, mode="hybrid", embedder=emb,
                        fusion=Fusion(vector_weight=0.0))
    text = t.search("editor for text files", k=8, mode="text")
    assert weighted.column("package").to_pylist() == text.column("package").to_pylist()


def test_text_search_with_a_filter_and_new_rows(pkgs):
    store, emb = pkgs
    build_text_index(store.table("pkgs"))
    embed_table(store, "pkgs", pa.Table.from_pylist([{"package": "newpkg", "section": "games",
                                                      "description": "a zqxtool companion game"}]),
                key="package", text="description", embedder=emb)
    t = store.table("pkgs")
    got = t.search(LITERAL, k=5, mode="text").column("package").to_pylist()
    assert got[:2] == [LITERAL, "newpkg"] or set(got[:2]) == {LITERAL, "newpkg"}
    only_games = t.search(LITERAL, k=5, mode="text", where="section = 'games'")
    assert only_games.column("package").to_pylist() == ["newpkg"]


def test_bad_text_and_hybrid_requests(pkgs):
    store, emb = pkgs
    build_text_index(store.table("pkgs"))
    t = store.table("pkgs")
    before = t.version
    with pytest.raises(ValidationError, match="mode must be one of"):
        t.search("x", mode="fuzzy")
    with pytest.raises(ValidationError, match="non-empty query text"):
        t.search("  ", mode="text")
    with pytest.raises(ValidationError, match="needs an embedder"):
        t.search("editor", mode="hybrid")
    with pytest.raises(ValidationError, match="weights"):
        t.search("editor", mode="hybrid", embedder=emb, fusion=Fusion(text_weight=-1))
    with pytest.raises(ValidationError, match="not text"):
        build_text_index(t, columns=["vector"])
    with pytest.raises(ValidationError, match="'nope' is not a column"):
        build_text_index(t, columns=["nope"])
    assert store.table("pkgs").version == before


def test_hybrid_from_sql_and_the_cli(pkgs, tmp_path):
    store, _ = pkgs
    build_text_index(store.table("pkgs"))
    con = connect(store)
    rows = con.execute(f"SELECT package, text_score, rank FROM hybrid_search('pkgs', '{LITERAL}', 3, "
                       "mode := 'text')").fetchall()
    assert rows[0][0] == LITERAL and rows[0][2] == 1
    hy = con.execute(f"SELECT package, distance, score FROM hybrid_search('pkgs', '{LITERAL}', 10)"
                     ).fetchall()
    assert LITERAL in [r[0] for r in hy] and all(r[1] is not None for r in hy)
    flt = con.execute(f"SELECT DISTINCT section FROM hybrid_search('pkgs', '{LITERAL}', 10, "
                      "filter := 'section = ''utils''')").fetchall()
    assert flt == [("utils",)]
    con.close()
    out = subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", store.uri, "search",
                          "pkgs", LITERAL, "--mode", "hybrid", "--explain", "--json", "-k", "5"],
                         capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["plan"]["path"] == "hybrid" and LITERAL in [r["package"] for r in got["rows"]]
