"""Incremental embedding: only new or changed texts reach the model."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from embed_assets import HashEmbedder, SchemaMismatchError, embed_table
from embed_assets.embed import content_hash


class CountingEmbedder(HashEmbedder):
    """A real (hashing) embedder that records which texts it was asked to embed."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[str] = []

    def embed(self, texts):
        self.seen.extend(texts)
        return super().embed(texts)


@pytest.fixture
def src(debian) -> pl.DataFrame:
    return debian.head(300).select("package", "section", "version", "description")


def test_second_run_embeds_nothing_and_writes_no_version(store, src):
    emb = CountingEmbedder(dimension=32)
    r1 = embed_table(store, "d", src, key="package", text="description", embedder=emb)
    assert r1.rows_embedded == 300 and r1.version == 1
    emb.seen.clear()
    r2 = embed_table(store, "d", src, key="package", text="description", embedder=emb)
    assert emb.seen == [] and r2.rows_embedded == 0 and not r2.write.committed
    assert "nothing changed" in r2.summary()


def test_changed_texts_are_the_only_ones_embedded(store, src):
    emb = CountingEmbedder(dimension=32)
    embed_table(store, "d", src, key="package", text="description", embedder=emb)
    before = store.table("d").read().sort_by("package")
    changed = src.with_columns(
        pl.when(pl.int_range(pl.len()) % 15 == 0)
        .then(pl.col("description") + " (revised)")
        .otherwise(pl.col("description")).alias("description"))
    emb.seen.clear()
    r = embed_table(store, "d", changed, key="package", text="description", embedder=emb)
    expected = [t for t in changed["description"].to_list() if t.endswith("(revised)")]
    assert sorted(emb.seen) == sorted(expected) and r.rows_embedded == 20
    assert r.write.rows_updated == 20 and r.write.rows_inserted == 0
    after = store.table("d").read().sort_by("package")
    keep = [not t.endswith("(revised)") for t in after.column("description").to_pylist()]
    vb = np.stack(before.column("vector").to_pylist())
    va = np.stack(after.column("vector").to_pylist())
    assert np.array_equal(vb[keep], va[keep])  # unchanged rows keep their exact vectors
    assert not np.allclose(vb[~np.array(keep)], va[~np.array(keep)])
    hashes = after.column("_content_hash").to_pylist()
    assert hashes == [content_hash(t) for t in after.column("description").to_pylist()]


def test_metadata_only_change_rewrites_row_without_embedding(store, src):
    emb = CountingEmbedder(dimension=32)
    embed_table(store, "d", src, key="package", text="description", embedder=emb)
    emb.seen.clear()
    bumped = src.with_columns(pl.when(pl.col("package") == src["package"][0])
                              .then(pl.lit("99.0")).otherwise(pl.col("version")).alias("version"))
    r = embed_table(store, "d", bumped, key="package", text="description", embedder=emb)
    assert emb.seen == [] and r.rows_reused == 1 and r.write.rows_updated == 1
    row = store.table("d").get([src["package"][0]]).to_pylist()[0]
    assert row["version"] == "99.0"


def test_sync_deletes_rows_gone_upstream(store, src):
    emb = HashEmbedder(dimension=32)
    embed_table(store, "d", src, key="package", text="description", embedder=emb)
    r = embed_table(store, "d", src.head(250), key="package", text="description",
                    embedder=emb, mode="sync")
    assert r.write.rows_deleted == 50 and r.rows_embedded == 0
    assert store.table("d").count_rows() == 250


def test_replace_partition_touches_only_that_partition(store, src):
    emb = CountingEmbedder(dimension=32)
    sections = src["section"].unique().to_list()
    for s in sections:
        part = src.filter(pl.col("section") == s)
        embed_table(store, "d", part, key="package", text="description", embedder=emb,
                    mode="replace_partition", partition=("section", s))
    assert store.table("d").count_rows() == 300
    s0 = sections[0]
    part = src.filter(pl.col("section") == s0)
    smaller = part.head(part.height - 2)
    emb.seen.clear()
    r = embed_table(store, "d", smaller, key="package", text="description", embedder=emb,
                    mode="replace_partition", partition=("section", s0))
    assert emb.seen == [] and r.write.rows_deleted == 2
    assert store.table("d").count_rows() == 298
    v = store.table("d").versions()[-1]
    assert v.properties["embed_mode"] == "replace_partition"


def test_skip_empty_policy_reports_skipped_rows(store):
    src = {"id": [1, 2, 3], "text": ["a text editor", None, "  "]}
    r = embed_table(store, "e", src, key="id", text="text", embedder=HashEmbedder(),
                    on_empty="skip")
    assert r.rows_skipped_empty == 2 and store.table("e").count_rows() == 1


def test_model_change_is_refused_without_overwrite(store, src):
    embed_table(store, "d", src, key="package", text="description",
                embedder=HashEmbedder(dimension=32))
    other = HashEmbedder(dimension=32, name="hash-bow-other")
    with pytest.raises(SchemaMismatchError, match="re-embed everything"):
        embed_table(store, "d", src, key="package", text="description", embedder=other)
    r = embed_table(store, "d", src, key="package", text="description", embedder=other,
                    mode="overwrite")
    assert r.rows_embedded == 300 and store.table("d").meta.model == "hash-bow-other"


def test_dimension_change_is_refused_without_overwrite(store, src):
    embed_table(store, "d", src, key="package", text="description",
                embedder=HashEmbedder(dimension=32))
    before = store.table("d").version
    with pytest.raises(SchemaMismatchError):
        embed_table(store, "d", src.with_columns(pl.col("description") + "!"), key="package",
                    text="description", embedder=HashEmbedder(dimension=16))
    assert store.table("d").version == before


@pytest.mark.e2e
def test_real_model_embeds_and_finds_neighbours(store, debian, minilm):
    src = debian.head(200).select("package", "section", "description")
    r = embed_table(store, "d", src, key="package", text="description", embedder=minilm)
    t = store.table("d")
    assert r.rows_embedded == 200 and t.meta.dimension == 384
    assert t.meta.model == "sentence-transformers/all-MiniLM-L6-v2"
    vecs = np.stack(t.read().column("vector").to_pylist())
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    # Each description is its own nearest neighbour when searched by its text.
    row = src.row(17, named=True)
    hits = t.search(row["description"], k=1, embedder=minilm)
    assert hits.column("package").to_pylist() == [row["package"]]
    assert hits.column("distance").to_pylist()[0] < 1e-4
