"""Direction vectors and PCA (embed_assets.recipes) on the shipped Debian pairs slice.

The e2e tests embed the slice's 1,200 package synopses with the real model once per module
(a few seconds) into a temporary store; the others use small synthetic tables.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import embed_assets
from embed_assets import Store, ValidationError, embed_table
from embed_assets._demo import debian_pairs
from embed_assets.recipes import (
    Direction,
    apply_direction,
    build_direction,
    evaluate_direction,
    fit_pca,
    load_pca,
    project,
    read_directions,
    write_directions,
)

from .conftest import vectors_table

TABLE = "pairs"


@pytest.fixture(scope="module")
def pairs_store(tmp_path_factory, minilm) -> tuple[Store, dict[str, list[tuple[str, str]]]]:
    packages, pairs = debian_pairs()
    store = Store(tmp_path_factory.mktemp("recipes") / "store")
    embed_table(store, TABLE, packages, key="package", text="description", embedder=minilm)
    return store, pairs


def _vectors(tbl: pa.Table) -> np.ndarray:
    col = tbl.column("vector").combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)


# -- the shipped slice -------------------------------------------------------------------
def test_pairs_slice_is_consistent():
    packages, pairs = debian_pairs()
    assert sorted(pairs) == ["dev", "doc"]
    assert len(pairs["dev"]) == len(pairs["doc"]) == 300
    names = set(packages["package"])
    source = dict(zip(packages["package"], packages["source"], strict=True))
    for a, b in pairs["dev"]:
        assert b.endswith("-dev") and a in names and b in names and source[a] == source[b]
    for a, b in pairs["doc"]:
        assert b == a + "-doc" and a in names and source[a] == source[b]
    # at most one pair of each kind per source
    for kind in pairs:
        sources = [source[a] for a, _ in pairs[kind]]
        assert len(sources) == len(set(sources))


# -- directions: synthetic ----------------------------------------------------------------
def test_build_direction_refuses_missing_keys(store):
    store.write("t", vectors_table(["a", "b", "c", "d"]), key="id")
    t = store.table("t")
    with pytest.raises(ValidationError, match=r"2 key\(s\) not in table 't' at version 1: "
                                              r"'nope', 'gone'"):
        build_direction(t, [("a", "b"), ("nope", "c"), ("d", "gone")], name="x")
    with pytest.raises(ValidationError, match="at least one"):
        build_direction(t, [], name="x")
    with pytest.raises(ValidationError, match="two keys"):
        build_direction(t, [("a", "b", "c")], name="x")
    with pytest.raises(ValidationError, match="not in table"):  # keys are never converted
        build_direction(store.table("t"), [(1, 2)], name="x")


def test_direction_is_the_mean_difference_and_evaluates(store):
    """A planted offset: b = a + offset + noise. The direction recovers the offset and finds
    every b at rank 1, where plain nearest neighbours mostly find other a's."""
    rng = np.random.default_rng(1)
    n, dim = 60, 16
    base = rng.normal(size=(n, dim)).astype(np.float32)
    offset = (3 * rng.normal(size=dim)).astype(np.float32)
    other = base + offset + 0.05 * rng.normal(size=(n, dim)).astype(np.float32)
    keys = list(range(2 * n))
    mat = np.vstack([base, other])
    store.write("syn", {"id": keys, "vector": mat.tolist()}, key="id")
    t = store.table("syn")
    pairs = [(i, n + i) for i in range(n)]
    d = build_direction(t, pairs, name="offset")
    assert d.n_pairs == n and d.source_table == "syn" and d.source_version == 1
    np.testing.assert_allclose(d.vector, (other - base).mean(axis=0), rtol=1e-5, atol=1e-5)
    hits = apply_direction(t, 0, d, k=3)
    assert hits.column("id").to_pylist()[0] == n and 0 not in hits.column("id").to_pylist()
    assert hits.column("rank").to_pylist() == [1, 2, 3]
    assert 0 in apply_direction(t, 0, np.zeros(dim), k=1, exclude_self=False)["id"].to_pylist()
    r = evaluate_direction(t, pairs, name="offset", holdout=0.25, seed=3, k=10)
    assert (r["n_train"], r["n_test"]) == (45, 15)
    assert r["hit@1"] == r["hit@10"] == 1.0
    assert r["baseline_hit@1"] < 1.0


def test_write_directions_versions(store):
    store.write("t", vectors_table(["a", "b", "c", "d"], dim=8), key="id")
    t = store.table("t")
    up = build_direction(t, [("a", "b")], name="up")
    down = build_direction(t, [("b", "a"), ("d", "c")], name="down")
    r1 = write_directions(store, [up, down])
    assert (r1.version, r1.rows_inserted) == (1, 2)
    up2 = build_direction(t, [("a", "b"), ("c", "d")], name="up")
    r2 = write_directions(store, up2, run_id="run-2")
    assert (r2.version, r2.previous_version, r2.rows_updated) == (2, 1, 1)
    first, latest = read_directions(store, version=1), read_directions(store)
    assert sorted(first) == sorted(latest) == ["down", "up"]
    np.testing.assert_array_equal(first["up"].vector, up.vector)
    np.testing.assert_array_equal(latest["up"].vector, up2.vector)
    assert latest["up"].pairs == [("a", "b"), ("c", "d")] and latest["up"].n_pairs == 2
    assert store.table("directions").properties(2)["run_id"] == "run-2"
    con = embed_assets.connect(store=store.uri)
    got = con.sql('SELECT name, n_pairs FROM "directions@1" ORDER BY name').fetchall()
    assert got == [("down", 2), ("up", 1)]
    with pytest.raises(ValidationError, match="more than once"):
        write_directions(store, [up, up2])
    store.write("wide", vectors_table(["a", "b"], dim=4), key="id")
    wide = build_direction(store.table("wide"), [("a", "b")], name="wide")
    with pytest.raises(ValidationError, match="dimension"):  # nothing written
        write_directions(store, wide)
    assert store.table("directions").version == 2


# -- directions: the real model on Debian pairs --------------------------------------------
@pytest.mark.e2e
def test_directions_beat_plain_nearest_neighbours(pairs_store):
    """On held-out pairs, vector(a) + direction finds b more often than vector(a) alone.

    Measured (seed 0, 30% held out: 90 pairs of each kind, 210 to build on; 1,200 rows):

    ====  ==================  ===================
    kind  hit@1 (baseline)    hit@10 (baseline)
    ====  ==================  ===================
    dev   0.889 (0.867)       0.933 (0.911)
    doc   0.733 (0.667)       0.856 (0.789)
    ====  ==================  ===================

    Plain nearest neighbours are a strong baseline for "-dev": a library's synopsis and its
    -dev package's differ by a suffix ("... - runtime" / "... - development files"), so the
    margin there is 2 pairs of 90. Over seeds 0-9 the direction wins at hit@10 every time
    for both kinds and at hit@1 every time for "doc"; for "dev" at hit@1 it wins 8 times
    and ties twice, so that one is asserted as ``>=``.
    """
    store, pairs = pairs_store
    t = store.table(TABLE)
    for kind in ("dev", "doc"):
        r = evaluate_direction(t, pairs[kind], name=kind, holdout=0.3, seed=0, k=10)
        print(f"{kind}: hit@1 {r['hit@1']:.3f} vs {r['baseline_hit@1']:.3f}, "
              f"hit@10 {r['hit@10']:.3f} vs {r['baseline_hit@10']:.3f} "
              f"(n_test {r['n_test']}, median rank {r['median_rank']} vs "
              f"{r['baseline_median_rank']})")
        assert r["n_test"] == 90 and r["n_train"] == 210
        assert r["hit@10"] > r["baseline_hit@10"], r
        if kind == "doc":
            assert r["hit@1"] > r["baseline_hit@1"], r
        else:
            assert r["hit@1"] >= r["baseline_hit@1"], r


@pytest.mark.e2e
def test_sql_recipe_matches_apply_direction(pairs_store):
    store, pairs = pairs_store
    t = store.table(TABLE)
    dirs = [build_direction(t, pairs[kind], name=kind) for kind in ("dev", "doc")]
    assert write_directions(store, dirs).committed
    con = embed_assets.connect(store=store.uri)
    # the recipe as a user writes it (package names hold no quotes)
    sql = """
        SELECT k.package, k.distance
        FROM knn('pairs',
                 (SELECT vec_add((SELECT vector FROM pairs WHERE package = '{a}'),
                                 (SELECT vector FROM directions WHERE name = '{name}'))),
                 11) k
        WHERE k.package <> '{a}'
        ORDER BY k.rank
        LIMIT 10"""
    for d, (a, _b) in [(dirs[0], pairs["dev"][0]), (dirs[0], pairs["dev"][7]),
                       (dirs[1], pairs["doc"][0]), (dirs[1], pairs["doc"][7])]:
        rows = con.sql(sql.format(a=a, name=d.name)).fetchall()
        hits = apply_direction(t, a, d, k=10)
        assert rows[0][0] == hits["package"][0].as_py()
        assert [r[0] for r in rows] == hits["package"].to_pylist()
        np.testing.assert_allclose([r[1] for r in rows], hits["distance"].to_numpy(), atol=1e-5)


# -- PCA ------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_pca_2_and_32_components(pairs_store):
    store, _ = pairs_store
    t = store.table(TABLE)
    for k in (2, 32):
        r = fit_pca(t, k, store=store, projected=f"pairs_xy{k}")
        ratio = r.explained_variance_ratio
        print(f"PCA {k}: explained {r.explained:.3f} (first: {ratio[:3].round(4).tolist()})")
        assert r.name == f"pairs_pca{k}" and r.components.shape == (k, 384)
        assert ratio.sum() <= 1 + 1e-9 and np.all(np.diff(ratio) <= 0) and np.all(ratio > 0)
        stored = store.table(f"pairs_xy{k}").read()
        assert store.table(f"pairs_xy{k}").meta.dimension == k
        src = t.get(stored.column("package").to_pylist(), columns=["package", "vector"])
        got = project(store, _vectors(src), f"pairs_pca{k}")
        assert got.shape == (stored.num_rows, k)
        assert np.allclose(got, _vectors(stored), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(project(store, _vectors(src)[0], f"pairs_pca{k}"), got[0])
        loaded = load_pca(store, f"pairs_pca{k}")
        np.testing.assert_allclose(loaded.explained_variance_ratio, ratio)
    assert fit_pca(t, 32).explained > fit_pca(t, 2).explained
    with pytest.raises(ValidationError, match="dimension 384"):
        project(store, np.zeros((3, 10)), "pairs_pca2")
    with pytest.raises(ValidationError, match="k must be"):
        fit_pca(t, 0)


@pytest.mark.e2e
def test_pca_sql_recipe(pairs_store):
    """Coordinate i of v is vec_dot(vec_sub(v, mean), component i), straight from the model table."""
    store, _ = pairs_store
    t = store.table(TABLE)
    fit_pca(t, 2, store=store, name="pairs_pca2_sql")
    con = embed_assets.connect(store=store.uri)
    rows = con.sql("""
        SELECT e.package,
               list(vec_dot(vec_sub(e.vector, c.mean), c.vector) ORDER BY c.component) AS xy
        FROM pairs e, "pairs_pca2_sql@1" c
        GROUP BY e.package ORDER BY e.package""").fetchall()
    keys = [r[0] for r in rows]
    assert len(keys) == t.count_rows()
    want = project(store, _vectors(t.get(keys, columns=["package", "vector"])), "pairs_pca2_sql")
    np.testing.assert_allclose(np.array([r[1] for r in rows]), want, atol=1e-4)


@pytest.mark.e2e
def test_stored_pca_version_outlives_source_changes(pairs_store):
    store, _ = pairs_store
    src = store.table(TABLE).read()
    meta = store.table(TABLE).meta
    store.write("pairs_copy", src, key="package", mode="overwrite", model=meta.model)
    t = store.table("pairs_copy")
    r1 = fit_pca(t, 8, store=store, name="copy_pca", projected="copy_xy")
    before = _vectors(store.table("copy_xy").read().sort_by("package"))
    # the source gets a new version (vectors changed, rows gone), and the model is refitted
    changed = src.slice(0, 100)
    shifted = _vectors(changed)[:, ::-1].copy()
    changed = changed.set_column(changed.column_names.index("vector"), "vector",
                                 pa.FixedSizeListArray.from_arrays(pa.array(shifted.ravel()), 384))
    store.write("pairs_copy", changed, key="package", mode="upsert",
                delete_keys=src.column("package").to_pylist()[-50:])
    r2 = fit_pca(store.table("pairs_copy"), 8, store=store, name="copy_pca")
    assert (r1.model_version, r2.model_version) == (1, 2)
    assert r1.source_version == 1 and r2.source_version == 2
    old = t.read(version=1).sort_by("package")
    again = project(store, _vectors(old), "copy_pca", version=1)
    np.testing.assert_array_equal(again, before)
    assert load_pca(store, "copy_pca", version=1).source_version == 1
    assert not np.allclose(project(store, _vectors(old), "copy_pca"), before, atol=1e-3)


def test_pca_on_synthetic_vectors(store):
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(200, 3)) @ np.diag([5.0, 1.0, 0.1])
    store.write("s", {"id": list(range(200)), "vector": mat.tolist()}, key="id")
    r = fit_pca(store.table("s"), 2)
    assert r.name is None and r.model_version is None
    assert r.explained_variance_ratio[0] > 0.9 and r.explained < 1
    assert abs(abs(r.components[0][0]) - 1) < 1e-2
    np.testing.assert_allclose(r.transform(mat[:5]), (mat[:5] - r.mean) @ r.components.T,
                               rtol=1e-4, atol=1e-4)
    assert isinstance(build_direction(store.table("s"), [(0, 1)], name="d"), Direction)
