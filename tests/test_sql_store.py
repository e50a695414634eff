"""embed_assets.connect(): store views, versions and tags, knn and similarity_join on real
Lance tables (tmp_path), checked against numpy on the rows the store itself returns."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from embed_assets import HashEmbedder, QueryError, Store, VersionNotFoundError, embed_table
from embed_assets.sql import SQLConnection, connect, format_result, run_sql

WORDS = [
    "text", "editor", "web", "browser", "image", "viewer", "audio", "player", "mail", "client",
    "compiler", "debugger", "database", "server", "shell", "terminal", "font", "library", "python",
    "perl", "ruby", "game", "chess", "puzzle", "network", "tool", "backup", "archive", "kernel",
    "driver", "printer", "scanner",
]


def corpus(n: int, seed: int = 0, start: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=4)) for _ in range(n)]
    return {"id": list(range(start, start + n)), "text": texts,
            "section": [f"s{i % 5}" for i in range(start, start + n)]}


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    embed_table(s, "docs", corpus(60), key="id", text="text", embedder=HashEmbedder(dimension=32))
    return s


def matrix(tbl: pa.Table) -> np.ndarray:
    return np.asarray(tbl.column("vector").to_pylist(), dtype=np.float64)


def cos_dist(q: np.ndarray, m: np.ndarray) -> np.ndarray:
    return 1 - (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))


# -- views, versions, tags ---------------------------------------------------------------
def test_latest_version_and_tag_views(store: Store) -> None:
    t = store.table("docs")
    v1 = t.version
    t.tag("first")
    embed_table(store, "docs", corpus(10, seed=1, start=60), key="id", text="text",
                embedder=HashEmbedder(dimension=32))
    v2 = t.version
    assert v2 > v1
    con = connect(store, extensions=())
    assert con.sql("SELECT count(*) FROM docs").fetchone()[0] == 70
    assert con.sql(f'SELECT count(*) FROM "docs@{v1}"').fetchone()[0] == 60
    assert con.sql('SELECT count(*) FROM "docs@first"').fetchone()[0] == 60
    # The contents of an old version are exactly what the store reads for that version.
    got = con.sql(f'SELECT id, vector FROM "docs@{v1}" ORDER BY id').to_arrow_table()
    want = t.read(v1).sort_by("id").select(["id", "vector"])
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    np.testing.assert_array_equal(matrix(got), matrix(want))
    con.close()


def test_versions_written_after_connect_are_visible_to_the_next_statement(store: Store) -> None:
    con = connect(store, extensions=())
    assert con.sql("SELECT count(*) FROM docs").fetchone()[0] == 60
    res = embed_table(store, "docs", corpus(5, seed=2, start=100), key="id", text="text",
                      embedder=HashEmbedder(dimension=32))
    assert con.sql("SELECT count(*) FROM docs").fetchone()[0] == 65
    assert con.sql(f'SELECT count(*) FROM "docs@{res.version}"').fetchone()[0] == 65
    # A new table needs refresh(): unknown names are not looked up on every statement.
    embed_table(store, "extra", corpus(3), key="id", text="text", embedder=HashEmbedder(dimension=32))
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT count(*) FROM extra").fetchone()
    con.refresh()
    assert con.sql("SELECT count(*) FROM extra").fetchone()[0] == 3
    con.close()


def test_upserts_rollback_and_moved_tags(store: Store) -> None:
    t = store.table("docs")
    v1 = t.version
    changed = corpus(60)
    changed["text"] = [s + " kernel" if i < 10 else s for i, s in enumerate(changed["text"])]
    embed_table(store, "docs", changed, key="id", text="text", embedder=HashEmbedder(dimension=32))
    v2 = t.version
    t.tag("prod", v2)
    con = connect(store, extensions=())
    diff = con.sql(f"""
        SELECT count(*) FROM "docs@{v1}" a JOIN "docs@{v2}" b USING (id)
        WHERE vec_l2(a.vector, b.vector) > 1e-6""").fetchone()[0]
    assert diff == 10
    new = t.rollback(v1)
    # latest now equals v1 again; "docs@prod" still reads v2
    same = con.sql(f"""
        SELECT count(*) FROM docs a JOIN "docs@{v1}" b USING (id)
        WHERE a.vector = b.vector""").fetchone()[0]
    assert same == 60
    assert con.sql(f'SELECT count(*) FROM "docs@{new}"').fetchone()[0] == 60
    prod_kernel = con.sql("SELECT count(*) FROM \"docs@prod\" WHERE text LIKE '%kernel'").fetchone()[0]
    assert prod_kernel >= 10
    t.retag("prod", v1)  # a moved tag is followed by the next statement
    assert con.sql("SELECT count(*) FROM \"docs@prod\" WHERE text LIKE '% kernel' AND id < 10"
                   ).fetchone()[0] == con.sql(
        f"SELECT count(*) FROM \"docs@{v1}\" WHERE text LIKE '% kernel' AND id < 10").fetchone()[0]
    con.close()


def test_unknown_version_or_tag_is_a_clear_error(store: Store) -> None:
    con = connect(store, extensions=())
    with pytest.raises(VersionNotFoundError, match="has no version 99; versions: 1"):
        con.sql('SELECT * FROM "docs@99"')
    with pytest.raises(VersionNotFoundError, match="has no tag 'nope'"):
        con.sql("SELECT * FROM knn('docs@nope', [1.0], 1)")
    con.close()


def test_connect_stays_cheap_with_many_versions(tmp_path: Path) -> None:
    s = Store(tmp_path / "many")
    rng = np.random.default_rng(0)
    for i in range(120):
        s.write("t", {"id": [i % 7], "vector": [rng.normal(size=4).tolist()]}, key="id")
    con = connect(s, extensions=())  # its cost is a benchmark figure (bench_sql.py --only connect)
    assert con.views() == ["t"]  # nothing registered per version up front
    assert con.sql('SELECT count(*) FROM "t@3"').fetchone()[0] == 3
    assert con.sql('SELECT count(*) FROM "t@120"').fetchone()[0] == 7
    assert con.views() == ["t", "t@120", "t@3"]
    con.close()


def test_wrapper_forwards_duckdb_methods(store: Store) -> None:
    con = connect(store, extensions=())
    assert isinstance(con, SQLConnection)
    con.execute("CREATE TABLE x AS SELECT 1 AS a")
    assert con.execute("SELECT a FROM x").fetchall() == [(1,)]
    assert con.fetchone() is None or True  # forwarded attribute exists
    assert con.table("docs").count("*").fetchone()[0] == 60
    assert con.query("SELECT 2").fetchone()[0] == 2
    con.close()


def test_extensions_load_from_wheels(store: Store) -> None:
    # lance by default where its wheel is installed; vss (the benchmark's baseline) only
    # when named: it no longer loads on every connect() (issue 28)
    con = connect(store, extensions=("lance", "vss"))
    loaded = {r[0] for r in con.sql(
        "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"lance", "vss"} <= loaded
    # vss_join exists (the benchmark baseline) and agrees with similarity_join on top-1
    con.execute("CREATE TABLE a AS SELECT id, vector FROM docs WHERE id < 5")
    vss = dict(con.sql("""SELECT left_tbl.id, right_tbl.id FROM vss_join('a', 'docs', left_tbl.vector,
                          vector, 1, metric := 'cosine')""").fetchall())
    ours = dict(con.sql("SELECT left_key, right_key FROM similarity_join('a', 'docs', 1)").fetchall())
    assert vss == ours
    con.close()


def test_writable_lance_catalog_when_asked(store: Store) -> None:
    con = connect(store, read_only_views=False)
    assert con.sql("SELECT count(*) FROM lance_store.main.docs").fetchone()[0] == 60
    con.close()


# -- knn ----------------------------------------------------------------------------------------
def test_knn_on_store_views_matches_numpy(store: Store) -> None:
    t = store.table("docs")
    data = t.read().sort_by("id")
    m = matrix(data)
    q = m[7] + 0.1
    con = connect(store, extensions=())
    hits = con.sql("SELECT * FROM knn('docs', ?::FLOAT[], 5)", params=[q.tolist()]).to_arrow_table()
    assert hits.column_names == [*data.column_names, "distance", "rank"]
    d = cos_dist(q, m)
    order = np.argsort(d, kind="stable")[:5]
    assert hits.column("id").to_pylist() == data.column("id").take(pa.array(order)).to_pylist()
    np.testing.assert_allclose(hits.column("distance").to_numpy(), d[order], atol=1e-5)
    assert hits.column("rank").to_pylist() == [1, 2, 3, 4, 5]
    con.close()


def test_knn_on_an_old_version_and_with_a_subquery_vector(store: Store) -> None:
    t = store.table("docs")
    v1 = t.version
    embed_table(store, "docs", corpus(20, seed=5, start=500), key="id", text="text",
                embedder=HashEmbedder(dimension=32))
    con = connect(store, extensions=())
    ids = [r[0] for r in con.sql(f"""
        SELECT id FROM knn('docs@{v1}', (SELECT vector FROM docs WHERE id = 510), 10)""").fetchall()]
    assert all(i < 60 for i in ids) and len(ids) == 10
    latest = [r[0] for r in con.sql(
        "SELECT id FROM knn('docs', (SELECT vector FROM docs WHERE id = 510), 1)").fetchall()]
    assert latest == [510]
    con.close()


FAST_PATH_STATEMENTS = [
    "SELECT * FROM knn('docs', ?, 5)",
    "SELECT id, distance, rank FROM knn('docs', ?::FLOAT[32], 7) ORDER BY rank DESC",
    "SELECT k.id, d.section FROM knn('docs', ?::FLOAT[], 3) k JOIN docs d USING (id) WHERE d.id > ? "
    "ORDER BY ALL",
    "SELECT count(*), max(rank) FROM knn('docs@1', ?, 4)",
    "SELECT a.id, b.id FROM knn('docs', ?, 2) a, knn('docs', ?, 2) b ORDER BY ALL",
    "SELECT list_sum(vector::FLOAT[]) > -1e9 AS ok, typeof(vector), typeof(distance), typeof(rank) "
    "FROM knn('docs', ?, 2)",
]


@pytest.mark.parametrize("sql", FAST_PATH_STATEMENTS)
def test_knn_with_a_bound_vector_gives_what_the_macro_gives(store: Store, sql: str) -> None:
    """The wrapper answers ``knn('view', ?, k)`` before DuckDB runs (_knnfast); the same
    statement through the macro must return the same rows, columns and types."""
    data = store.table("docs").read().sort_by("id")
    q = matrix(data)[11] + 0.05
    params = [q.tolist() if i % 2 == 0 else q.astype(np.float32) for i in range(sql.count("?"))]
    if "d.id > ?" in sql:
        params[-1] = 3
    got = {}
    for fast in (True, False):
        con = connect(store, extensions=())
        con.fast_knn = fast
        rel = con.execute(sql, params)
        got[fast] = (rel.description, rel.fetchall())
        con.close()
    (desc_f, rows_f), (desc_m, rows_m) = got[True], got[False]
    assert [d[:2] for d in desc_f] == [d[:2] for d in desc_m]
    assert len(rows_f) == len(rows_m) and rows_f
    for rf, rm in zip(rows_f, rows_m, strict=True):
        for a, b in zip(rf, rm, strict=True):
            if isinstance(a, float):
                assert abs(a - b) < 1e-6
            elif isinstance(a, list):
                np.testing.assert_allclose(a, b, atol=1e-6)
            else:
                assert a == b


def test_knn_fast_path_leaves_what_it_cannot_answer_to_the_macro(store: Store) -> None:
    con = connect(store, extensions=())
    with pytest.raises(duckdb.Error, match="dimension mismatch"):
        con.execute("SELECT * FROM knn('docs', ?, 3)", [[1.0, 2.0]]).fetchall()
    # a NULL query vector is refused, as Table.search refuses None (issue 23; it returned 0 rows)
    with pytest.raises(QueryError, match="the query vector is NULL"):
        con.execute("SELECT count(*) FROM knn('docs', ?, 3)", [None])
    con.execute("CREATE TABLE plain AS SELECT id, vector FROM docs")
    assert len(con.execute("SELECT * FROM knn('plain', ?, 3)",
                           [np.ones(32).tolist()]).fetchall()) == 3
    con.close()


def test_knn_follows_the_table_metric_and_string_keys(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    rng = np.random.default_rng(1)
    m = rng.normal(size=(50, 8)).astype(np.float32)
    s.write("pts", {"name": [f"p{i}" for i in range(50)], "vector": m.tolist()}, key="name", metric="l2")
    con = connect(s, extensions=())
    q = rng.normal(size=8)
    rows = con.sql("SELECT name, distance FROM knn('pts', ?::FLOAT[], 3)", params=[q.tolist()]).fetchall()
    d = np.linalg.norm(m.astype(np.float64) - q, axis=1)
    order = np.argsort(d)[:3]
    assert [r[0] for r in rows] == [f"p{i}" for i in order]
    np.testing.assert_allclose([r[1] for r in rows], d[order], rtol=1e-5)
    # An explicit metric overrides the table's.
    cos = con.sql("SELECT name FROM knn('pts', ?::FLOAT[], 1, metric := 'cosine')",
                  params=[q.tolist()]).fetchone()[0]
    assert cos == f"p{int(np.argmin(cos_dist(q, m.astype(np.float64))))}"
    con.close()


def test_knn_uses_the_ann_index_when_there_is_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "s")
    rng = np.random.default_rng(4)
    centers = rng.normal(size=(20, 16))
    m = (centers[rng.integers(0, 20, 2000)] + 0.05 * rng.normal(size=(2000, 16))).astype(np.float32)
    s.write("big", {"id": np.arange(2000), "vector": m.tolist()}, key="id")
    s.table("big").dataset().create_index("vector", "IVF_PQ", metric="cosine", num_partitions=8,
                                          num_sub_vectors=4)
    con = connect(s, extensions=())

    def no_exact_scan(*a: object, **k: object) -> None:
        raise AssertionError("knn read the full matrix although the table has an index")

    monkeypatch.setattr(SQLConnection, "_matrix", no_exact_scan)
    q = m[123]
    rows = con.sql("SELECT id, distance, rank FROM knn('big', ?::FLOAT[], 10)",
                   params=[q.tolist()]).fetchall()
    assert rows[0][0] == 123 and abs(rows[0][1]) < 1e-5
    d = cos_dist(q.astype(np.float64), m.astype(np.float64))
    exact = set(np.argsort(d)[:10].tolist())
    assert len(exact & {r[0] for r in rows}) >= 8  # recall@10 of the index path
    # distances reported are exact, whatever the index's approximation
    np.testing.assert_allclose([r[1] for r in rows], d[[r[0] for r in rows]], atol=1e-5)
    con.close()


# -- similarity_join ------------------------------------------------------------------------------
def test_similarity_join_store_views_matches_numpy(store: Store) -> None:
    embed_table(store, "queries", corpus(12, seed=9, start=1000), key="id", text="text",
                embedder=HashEmbedder(dimension=32))
    con = connect(store, extensions=())
    rows = con.sql("SELECT * FROM similarity_join('queries', 'docs', 3)").fetchall()
    docs = store.table("docs").read().sort_by("id")
    qs = store.table("queries").read().sort_by("id")
    dm, qm = matrix(docs), matrix(qs)
    dids = docs.column("id").to_pylist()
    assert len(rows) == 12 * 3
    by_left: dict[int, list[tuple[int, float, int]]] = {}
    for lk, rk, dist, rank in rows:
        by_left.setdefault(lk, []).append((rk, dist, rank))
    for i, qid in enumerate(qs.column("id").to_pylist()):
        d = cos_dist(qm[i], dm)
        got = sorted(by_left[qid], key=lambda x: x[2])
        assert [g[2] for g in got] == [1, 2, 3]
        np.testing.assert_allclose([g[1] for g in got], np.sort(d)[:3], atol=1e-5)
        for rk, dist, _ in got:
            assert abs(d[dids.index(rk)] - dist) < 1e-5
    con.close()


def test_similarity_join_on_versions_and_plain_tables_agree(store: Store) -> None:
    v1 = store.table("docs").version
    embed_table(store, "docs", corpus(30, seed=3, start=200), key="id", text="text",
                embedder=HashEmbedder(dimension=32))
    con = connect(store, extensions=())
    con.execute(f'CREATE TABLE d1 AS SELECT * FROM "docs@{v1}"')
    a = con.sql(f"SELECT * FROM similarity_join('docs', 'docs@{v1}', 2) ORDER BY 1, 4").fetchall()
    b = con.sql("SELECT * FROM similarity_join('docs', 'd1', 2) ORDER BY 1, 4").fetchall()
    assert [r[:2] for r in a] == [r[:2] for r in b] or all(
        abs(x[2] - y[2]) < 1e-6 for x, y in zip(a, b, strict=True))  # ties may swap keys
    assert {r[1] for r in a} <= set(range(60))
    con.close()


def test_similarity_join_approximate_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "s")
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(30, 16))
    m = (centers[rng.integers(0, 30, 3000)] + 0.05 * rng.normal(size=(3000, 16))).astype(np.float32)
    s.write("right", {"id": np.arange(3000), "vector": m.tolist()}, key="id")
    s.write("left", {"id": np.arange(50), "vector": m[:50].tolist()}, key="id")
    s.table("right").dataset().create_index("vector", "IVF_PQ", metric="cosine", num_partitions=16,
                                            num_sub_vectors=4)
    con = connect(s, extensions=())
    exact = con.sql("SELECT left_key, right_key FROM similarity_join('left', 'right', 5)").fetchall()

    def no_full_read(*a: object, **k: object) -> None:
        raise AssertionError("approximate mode read the whole right table")

    monkeypatch.setattr(SQLConnection, "_matrix", no_full_read)
    approx = con.sql("SELECT left_key, right_key, distance, rank FROM similarity_join('left', 'right', 5, "
                     "approximate := true)").fetchall()
    recall = len({r[:2] for r in approx} & set(exact)) / len(exact)
    assert recall >= 0.8
    assert all(r[3] >= 1 for r in approx) and {r[0] for r in approx} == set(range(50))
    con.close()


def test_similarity_join_dimension_mismatch(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    s.write("a", {"id": [1], "vector": [[1.0, 0.0]]}, key="id")
    s.write("b", {"id": [1], "vector": [[1.0, 0.0, 0.0]]}, key="id")
    con = connect(s, extensions=())
    with pytest.raises(duckdb.Error, match="dimension mismatch"):
        con.sql("SELECT * FROM similarity_join('a', 'b', 1)").fetchall()
    con.close()


# -- CLI helpers -----------------------------------------------------------------------------------
def test_run_sql_and_format(store: Store) -> None:
    tbl = run_sql(store.uri, "SELECT section, count(*) AS n, vec_mean(vector) AS m FROM docs "
                             "GROUP BY section ORDER BY section", extensions=())
    assert tbl.column("section").to_pylist() == ["s0", "s1", "s2", "s3", "s4"]
    assert sum(tbl.column("n").to_pylist()) == 60
    text = format_result(tbl)
    assert text.splitlines()[0].split() == ["section", "n", "m"] and "(5 rows)" in text
    rows = json.loads(format_result(tbl, as_json=True))
    assert rows[0]["section"] == "s0" and len(rows[0]["m"]) == 32
    from embed_assets import QueryError, ValidationError

    with pytest.raises(QueryError, match="does not exist"):
        run_sql(store.uri, "SELECT * FROM nope", extensions=())
    with pytest.raises(ValidationError, match="empty"):
        run_sql(store.uri, "  ", extensions=())


def test_polars_large_strings_are_filterable_from_sql(tmp_path):
    """Polars writes large_string; Lance's pushdown from DuckDB cannot filter on those, so
    the store stores plain strings (a WHERE on a text column used to fail)."""
    import polars as pl

    from embed_assets import HashEmbedder, Store, embed_table
    from embed_assets.sql import run_sql

    store = Store(tmp_path / "s")
    df = pl.DataFrame({"id": ["a", "b", "c"], "sec": ["x", "y", "x"],
                       "text": ["text editor", "web browser", "vim editor"]})
    embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder())
    assert str(store.table("t").dataset().schema.field("sec").type) == "string"
    got = run_sql(str(store.uri), "SELECT id FROM t WHERE sec = 'x' ORDER BY id")
    assert got.column("id").to_pylist() == ["a", "c"]
    got = run_sql(str(store.uri),
                  "SELECT id, rank FROM knn('t', (SELECT vector FROM t WHERE id = 'a'), 2)")
    assert got.column("id").to_pylist() == ["a", "c"] and got.column("rank").to_pylist() == [1, 2]


@pytest.mark.parametrize("indexed", [True, False])
def test_approximate_similarity_join_is_one_batched_store_search(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indexed: bool) -> None:
    """Issue 29 (deliverable 7): the approximate join probed LanceDB's IVF-PQ per block of
    256 left rows (46 QPS against the exact join's 515 at 1,000 x 63k). Now it is one
    search_batch of the store for every left row: the tuned HNSW graph where the index
    policy built one, else an exact scan, so it is never slower than the exact join and
    its distances are the exact ones of the rows it returns."""
    from embed_assets import build_index
    from embed_assets.store import EmbeddingTable

    from .test_index import clustered

    s = Store(tmp_path / "s")
    m = clustered(2500, dim=16, clusters=30)
    s.write("right", {"id": np.arange(2500), "vector": m.tolist()}, key="id")
    s.write("left", {"id": np.arange(60), "vector": m[:60].tolist()}, key="id")
    if indexed:
        build_index(s.table("right"), recall=0.95, force_ann=True, graph=True)
    con = connect(s, extensions=())
    exact = con.sql("SELECT left_key, right_key, distance FROM similarity_join('left', 'right', 5)"
                    ).fetchall()
    calls = {"search": 0, "search_batch": 0}
    for name in calls:
        real = getattr(EmbeddingTable, name)

        def spy(self, *a, _real=real, _name=name, **k):  # type: ignore[no-untyped-def]
            calls[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(EmbeddingTable, name, spy)
    approx = con.sql("SELECT left_key, right_key, distance, rank FROM similarity_join('left', "
                     "'right', 5, approximate := true) ORDER BY 1, 4").fetchall()
    assert calls == {"search": 0, "search_batch": 1}, calls
    pairs = {(a, b) for a, b, _ in exact}
    recall = len({r[:2] for r in approx} & pairs) / len(pairs)
    assert recall >= (0.9 if indexed else 1.0)
    for lk in range(60):
        mine = [r for r in approx if r[0] == lk]
        assert [r[3] for r in mine] == [1, 2, 3, 4, 5]
        for _, rk, d, _ in mine:  # every distance is the pair's exact one
            want = 1 - float(np.dot(m[lk].astype(np.float64), m[rk]) /
                             (np.linalg.norm(m[lk].astype(np.float64)) * np.linalg.norm(m[rk])))
            assert abs(d - want) < 1e-5
    con.close()


def test_the_lance_extension_loads_with_the_first_statement_that_names_it(store: Store) -> None:
    """Issue 29 (cold start): connect() loaded DuckDB's lance extension (a 254 MB binary,
    1-2 s, most of connect()'s time) though the store's views never need it. It now
    loads before the first statement that mentions lance, and reads a .lance path then."""
    from embed_assets.sql._files import default_extensions

    if "lance" not in default_extensions():
        pytest.skip("the duckdb-lance extra is not installed")
    con = connect(store)

    def loaded() -> set[str]:
        return {r[0] for r in con.con.execute(
            "SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}

    assert "lance" not in loaded()
    assert con.sql("SELECT count(*) FROM docs").fetchone()[0] > 0
    assert con.execute("SELECT id FROM knn('docs', (SELECT vector FROM docs LIMIT 1), 2)").fetchall()
    assert "lance" not in loaded()
    path = f"{store.uri}/docs.lance".removeprefix("file://")
    n = con.sql(f"SELECT count(*) FROM '{path}'").fetchone()[0]
    assert n == con.sql("SELECT count(*) FROM docs").fetchone()[0]
    assert "lance" in loaded()
    con.close()
