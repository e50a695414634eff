"""SQL knn: every form of the query vector, and filter := (issue 11).

Before: only ``knn('t', ?, k)`` with a bound parameter was answered by the store's search
before DuckDB ran; the scalar-subquery form the demo prints went through the macro
(17-21 ms against ~5 ms), and a filter could only be applied after the top k.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from embed_assets import QueryError, Store, build_index, connect
from embed_assets.sql._rewrite import find_knn_calls

from .conftest import plain_duckdb
from .test_index import clustered

N = 3000
SECTIONS = np.array(["a", "b", "c"])[np.arange(N) % 3]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(str(tmp_path_factory.mktemp("knnforms")))
    mat = clustered(N, dim=24)
    s.write("t", pa.table({
        "id": np.arange(N), "section": SECTIONS,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 24)}), key="id")
    return s


@pytest.fixture
def con(store: Store):
    c = connect(store)
    c.execute("CREATE TABLE queries AS SELECT section, vec_mean(vector) AS vector "
              "FROM t GROUP BY section")
    yield c
    c.close()


def oracle(store: Store, q: np.ndarray, k: int, section: str | None = None) -> list[int]:
    t = store.table("t").read(columns=["id", "section", "vector"])
    mat = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    ids = t.column("id").to_numpy()
    keep = np.ones(len(ids), bool) if section is None else \
        np.asarray(t.column("section").to_pylist()) == section
    mat, ids = mat[keep], ids[keep]
    d = 1 - (mat @ q) / (np.linalg.norm(mat, axis=1) * np.linalg.norm(q))
    return ids[np.argsort(d, kind="stable")[:k]].tolist()


def run(con, sql: str, params: list | None = None, fast: bool = True) -> tuple[list[int], int]:
    """The ids a statement returns, and how many knn calls the store answered first."""
    con.fast_knn = fast
    before = con._fast_n
    ids = [r[0] for r in con.execute(sql, params or []).fetchall()]
    return ids, con._fast_n - before


def test_every_form_of_the_query_vector_is_answered_by_the_store(store, con):
    q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = 'b'").fetchone()[0])
    want = oracle(store, q, 7)
    lit = "[" + ", ".join(repr(float(x)) for x in q) + "]::FLOAT[]"
    forms = {
        "param": ("SELECT id FROM knn('t', ?::FLOAT[], 7) ORDER BY rank", [q.tolist()]),
        "subquery": ("SELECT id FROM knn('t', (SELECT vector FROM queries WHERE section = 'b'), 7) "
                     "ORDER BY rank", None),
        "literal": (f"SELECT id FROM knn('t', {lit}, 7) ORDER BY rank", None),
        "cast subquery": ("SELECT id FROM knn('t', CAST((SELECT vector FROM queries "
                          "WHERE section = 'b') AS FLOAT[24]), 7) ORDER BY rank", None),
    }
    for name, (sql, params) in forms.items():
        fast, answered = run(con, sql, params)
        assert answered == 1, f"{name}: the store should answer it before DuckDB runs"
        slow, none = run(con, sql, params, fast=False)
        assert none == 0
        assert fast == slow == want, name


def test_filter_ranks_only_the_selected_rows(store, con):
    q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = 'a'").fetchone()[0])
    want = oracle(store, q, 5, section="c")
    sql = "SELECT id FROM knn('t', ?::FLOAT[], 5, filter := 'section = ''c''') ORDER BY rank"
    fast, answered = run(con, sql, [q.tolist()])
    slow, _ = run(con, sql, [q.tolist()], fast=False)
    assert answered == 1 and fast == slow == want
    # the same through a subquery for the vector, and beside metric := / use_index :=
    sub = ("SELECT id FROM knn('t', (SELECT vector FROM queries WHERE section = 'a'), 5, "
           "filter := 'section = ''c''', use_index := false, metric := 'cosine') ORDER BY rank")
    assert run(con, sub) == (want, 1)
    assert run(con, sub, fast=False)[0] == want
    # not a post-filter: k rows come back although the nearest rows overall are elsewhere
    assert len(fast) == 5
    none = "SELECT id FROM knn('t', ?::FLOAT[], 5, filter := 'section = ''zzz''')"
    assert run(con, none, [q.tolist()])[0] == [] and run(con, none, [q.tolist()], fast=False)[0] == []


def test_lateral_knn_per_row_equals_one_query_per_row(store, con):
    rows = con.execute(
        "SELECT q.section, k.id FROM queries q, LATERAL knn('t', q.vector, 4) k "
        "ORDER BY q.section, k.rank").fetchall()
    for section in ("a", "b", "c"):
        q = np.asarray(con.execute(
            "SELECT vector FROM queries WHERE section = ?", [section]).fetchone()[0])
        assert [i for s, i in rows if s == section] == oracle(store, q, 4)


def test_filter_in_a_plain_duckdb_and_on_duckdb_tables(store):
    """vectors.sql's knn takes filter := too (a DuckDB predicate), and so does the
    connect()ed macro on a table that is not a store view."""
    mat = clustered(200, dim=8)
    for c in (plain_duckdb(), connect(extensions=())):
        c.execute("CREATE TABLE items (id INTEGER, grp VARCHAR, vector FLOAT[8])")
        c.executemany("INSERT INTO items VALUES (?, ?, ?)",
                      [(i, "x" if i % 2 else "y", mat[i].tolist()) for i in range(200)])
        got = [r[0] for r in c.execute(
            "SELECT id FROM knn('items', ?::FLOAT[8], 6, filter := 'grp = ''x''') ORDER BY rank",
            [mat[0].tolist()]).fetchall()]
        odd = np.arange(1, 200, 2)
        d = 1 - mat[odd] @ mat[0] / np.linalg.norm(mat[odd], axis=1) / np.linalg.norm(mat[0])
        assert got == odd[np.argsort(d, kind="stable")[:6]].tolist()
        with pytest.raises(Exception, match="nope"):
            c.execute("SELECT * FROM knn('items', ?::FLOAT[8], 3, filter := 'nope = 1')",
                      [mat[0].tolist()]).fetchall()
        c.close()


def test_bad_filters_name_the_problem_and_change_nothing(store, con):
    before = store.table("t").version
    q = [0.1] * 24
    with pytest.raises(Exception, match="no_such"):
        con.execute("SELECT * FROM knn('t', ?::FLOAT[], 3, filter := 'no_such = 1')", [q]).fetchall()
    with pytest.raises(Exception, match="mahalanobis"):
        con.execute("SELECT * FROM knn('t', ?::FLOAT[], 3, metric := 'mahalanobis', "
                    "inv_cov := (SELECT mat_inverse(vec_covariance(vector)) FROM t), "
                    "filter := 'section = ''a''')", [q]).fetchall()
    assert store.table("t").version == before


def test_the_call_parser_knows_the_forms_and_leaves_the_rest_to_the_macro():
    calls = find_knn_calls("SELECT * FROM knn('t', (SELECT v FROM q WHERE s = '('), 5, "
                           "filter := 'a = ''x''', metric := 'l2') k JOIN knn('u', ?, 2) j ON true")
    assert [(c.view, c.param, c.k) for c in calls] == [("t", None, 5), ("u", 0, 2)]
    assert calls[0].expr == "(SELECT v FROM q WHERE s = '(')"
    assert calls[0].options == {"filter": "a = 'x'", "metric": "l2"}
    for sql in ("SELECT * FROM knn('t', ?, 5, vector := 'v2')",  # an option it does not know
                "SELECT * FROM knn('t', ? + 1, 5)",  # a parameter inside an expression
                "SELECT * FROM knn('t', ?, k_col)"):
        assert find_knn_calls(sql) == []
    # $n / $name parameters are read from the parse tree like ? (issue 22)
    assert [(c.view, c.param, c.k) for c in find_knn_calls("SELECT * FROM knn('t', $1, 5)")] == [("t", 0, 5)]


def test_indexed_table_answers_filtered_knn_exactly(tmp_path):
    s = Store(str(tmp_path))
    mat = clustered(6000, dim=32)
    sec = np.array(["p", "q", "r", "s"])[np.random.default_rng(3).integers(0, 4, 6000)]
    sec[:40] = "rare"
    s.write("big", pa.table({"id": np.arange(6000), "sec": sec,
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 32)}),
            key="id")
    build_index(s.table("big"), recall=0.9, force_ann=True)
    c = connect(s)
    for q in mat[100:110]:
        got = [r[0] for r in c.execute(
            "SELECT id FROM knn('big', ?::FLOAT[], 10, filter := 'sec = ''rare''') ORDER BY rank",
            [q.tolist()]).fetchall()]
        rare = np.flatnonzero(sec == "rare")
        want = rare[np.argsort(-(mat[rare] @ q), kind="stable")[:10]].tolist()
        assert got == want
    c.close()


def test_similarity_join_filters_each_side(store, con):
    """left_filter := and right_filter := choose each side's rows before the top k, on a
    store view (connect) and on DuckDB tables (plain DuckDB and connect)."""
    t = store.table("t").read(columns=["id", "section", "vector"])
    mat = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    ids = t.column("id").to_numpy()
    sec = np.asarray(t.column("section").to_pylist())

    def oracle_join(lmask: np.ndarray, rmask: np.ndarray, k: int) -> list[tuple[int, int]]:
        lm, rm = mat[lmask], mat[rmask]
        sims = (lm / np.linalg.norm(lm, axis=1, keepdims=True)) @ \
            (rm / np.linalg.norm(rm, axis=1, keepdims=True)).T
        out = []
        for i, row in enumerate(sims):
            for j in np.argsort(-row, kind="stable")[:k]:
                out.append((int(ids[lmask][i]), int(ids[rmask][j])))
        return sorted(out)

    lmask = (sec == "a") & (ids < 60)
    want = oracle_join(lmask, sec == "b", 2)
    sql = ("SELECT left_key, right_key FROM similarity_join('t', 't', 2, "
           "left_filter := 'section = ''a'' AND id < 60', right_filter := 'section = ''b''')")
    got = sorted(con.execute(sql).fetchall())
    assert got == want
    plain = plain_duckdb()
    plain.execute("CREATE TABLE t AS SELECT * FROM (VALUES (0, 'a', [1.0, 0.0]::FLOAT[2]), "
                  "(1, 'b', [0.9, 0.1]::FLOAT[2]), (2, 'b', [0.0, 1.0]::FLOAT[2]), "
                  "(3, 'a', [0.1, 0.9]::FLOAT[2])) v(id, section, vector)")
    rows = plain.execute("SELECT left_key, right_key FROM similarity_join('t', 't', 1, "
                         "left_filter := 'section = ''a''', right_filter := 'section = ''b''') "
                         "ORDER BY 1").fetchall()
    assert rows == [(0, 1), (3, 2)]
    plain.close()


def test_a_subquery_vector_is_read_by_its_own_select_and_no_vectors_are_fetched(store, con):
    """The query vector's subquery names `vector`; the statement around the call does not,
    so the k result rows are fetched without their vectors (a Lance take)."""
    sql = ("SELECT id, distance FROM knn('t', (SELECT vector FROM queries WHERE section = 'a'), 4) "
           "ORDER BY rank")
    ids, answered = run(con, sql)
    assert answered == 1
    name = f"__ea_knn_{con._fast_n}"
    cols = [r[0] for r in con.con.execute(f"DESCRIBE {name}").fetchall()]
    assert "vector" not in cols and "id" in cols
    assert ids == run(con, sql, fast=False)[0]
    # a subquery of several rows is DuckDB's to judge, through the macro
    many = "SELECT id FROM knn('t', (SELECT vector FROM queries), 4)"
    try:
        want = sorted(r[0] for r in con.execute(many).fetchall())
    except Exception as exc:
        with pytest.raises(type(exc)):
            con.fast_knn = False
            con.execute(many).fetchall()
    else:
        con.fast_knn = False
        assert want == sorted(r[0] for r in con.execute(many).fetchall())


# -- LATERAL: a query vector from the statement around the call ----------------------------
LATERAL = ("SELECT q.section, k.id, k.distance, k.rank FROM queries q, "
           "LATERAL knn('t', q.vector, 4{opts}) k ORDER BY q.section, k.rank")


def lateral_searches(con) -> int:
    return 0 if con._row_functions is None else con._row_functions.searches


def test_lateral_knn_is_answered_per_outer_row_by_the_store_not_a_view_scan(store, con):
    """Before: the macro decorrelated into a hash join built on the whole view (~75 ms per
    outer row at 120k rows). Now one vectorised call searches each outer vector."""
    before = lateral_searches(con)
    fast = con.execute(LATERAL.format(opts="")).fetchall()
    assert lateral_searches(con) - before == 3  # one search per outer row
    con.fast_knn = False
    macro = con.execute(LATERAL.format(opts="")).fetchall()
    con.fast_knn = True
    assert [(s, i, r) for s, i, _, r in fast] == [(s, i, r) for s, i, _, r in macro]
    assert np.allclose([d for *_, d, _ in fast], [d for *_, d, _ in macro], atol=1e-6)
    plan = con.execute("EXPLAIN " + LATERAL.format(opts="")).fetchall()[0][1]
    assert "ARROW_SCAN" not in plan, plan


def test_lateral_knn_takes_filter_metric_and_every_column(store, con):
    opts = ", filter := 'section = ''b''', metric := 'l2'"
    rows = con.execute(LATERAL.format(opts=opts)).fetchall()
    for section in ("a", "b", "c"):
        q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = ?",
                                   [section]).fetchone()[0], np.float64)
        t = store.table("t").read(columns=["id", "section", "vector"])
        mat = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
        keep = np.asarray(t.column("section").to_pylist()) == "b"
        d = np.linalg.norm(mat[keep] - q, axis=1)
        want = t.column("id").to_numpy()[keep][np.argsort(d, kind="stable")[:4]].tolist()
        assert [i for s, i, _, _ in rows if s == section] == want
    star = con.execute("SELECT k.* FROM queries q, LATERAL knn('t', q.vector, 2) k "
                       "ORDER BY q.section, k.rank").fetchall()
    cols = [c[0] for c in con.description]
    assert cols == ["id", "section", "vector", "distance", "rank"]
    assert len(star) == 6 and len(star[0][2]) == 24
    # the vectors are the rows' own, also when two outer rows share their neighbours
    twice = con.execute("SELECT k.id, k.vector FROM (SELECT * FROM queries UNION ALL "
                        "SELECT * FROM queries) q, LATERAL knn('t', q.vector, 3) k").fetchall()
    assert len(twice) == 18
    stored = store.table("t").get([i for i, _ in twice], columns=["vector"]).column("vector")
    assert [list(v) for _, v in twice] == [list(map(float, v)) for v in stored.to_pylist()]


def test_lateral_knn_null_vectors_wrong_dimensions_and_versions(store, con):
    con.execute("INSERT INTO queries VALUES ('none', NULL)")
    # a NULL vector is refused, as knn('t', NULL, 3) and Table.search(None) are (issue 23:
    # it gave no rows for it, silently); a filter on the outer rows leaves it out first
    with pytest.raises(QueryError, match="knn: the query vector is NULL"):
        con.execute(LATERAL.format(opts="")).fetchall()
    rows = con.execute(LATERAL.format(opts="").replace("ORDER BY", "WHERE q.vector IS NOT NULL ORDER BY")
                       ).fetchall()
    assert {s for s, *_ in rows} == {"a", "b", "c"}
    con.execute("DELETE FROM queries WHERE section = 'none'")
    con.execute("CREATE TABLE short AS SELECT 'x' AS section, [1.0, 2.0]::FLOAT[] AS vector")
    with pytest.raises(duckdb.Error, match=r"knn: dimension mismatch \(query 2 vs table 24\)"):
        con.execute("SELECT k.id FROM short q, LATERAL knn('t', q.vector, 3) k").fetchall()
    # an earlier version by name, beside the latest one
    v = store.table("t").version
    got = con.execute(f"SELECT k.id FROM queries q, LATERAL knn('t@{v}', q.vector, 3) k "
                      "WHERE q.section = 'a' ORDER BY k.rank").fetchall()
    q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = 'a'").fetchone()[0])
    assert [r[0] for r in got] == oracle(store, q, 3)


def test_a_subquery_vector_without_parameters_is_answered_first(store, con):
    """execute(sql) with no parameter list used to skip the fast path entirely, so the
    demo's own subquery form ran the macro."""
    before = con._fast_n
    sql = ("SELECT id FROM knn('t', (SELECT vector FROM queries WHERE section = 'a'), 5) "
           "ORDER BY rank")
    fast = [r[0] for r in con.execute(sql).fetchall()]
    assert con._fast_n - before == 1
    q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = 'a'").fetchone()[0])
    assert fast == oracle(store, q, 5)


@pytest.mark.parametrize("method", ["sql", "query", "from_query"])
def test_sql_relations_take_the_fast_paths_too(store, con, method):
    before, rows_before = con._fast_n, lateral_searches(con)
    run_sql = getattr(con, method)
    sub = run_sql("SELECT id FROM knn('t', (SELECT vector FROM queries WHERE section = 'a'), 5) "
                  "ORDER BY rank").fetchall()
    lat = run_sql(LATERAL.format(opts="")).fetchall()
    assert con._fast_n - before == 1 and lateral_searches(con) - rows_before == 3
    q = np.asarray(con.execute("SELECT vector FROM queries WHERE section = 'a'").fetchone()[0])
    assert [r[0] for r in sub] == oracle(store, q, 5)
    assert [i for s, i, _, _ in lat if s == "a"] == oracle(store, q, 4)


def _count_searches(monkeypatch) -> dict[str, int]:
    from embed_assets.store import EmbeddingTable

    calls = {"search": 0, "search_batch": 0}
    for name in calls:
        real = getattr(EmbeddingTable, name)

        def spy(self, *a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(EmbeddingTable, name, spy)
    return calls


@pytest.mark.parametrize("fast", [True, False])
def test_lateral_knn_is_one_batched_search_not_one_per_outer_row(store, con, monkeypatch, fast):
    """Issue 29 (deliverable 7): LATERAL knn, through the store's row function and through
    the macro, searched once per outer row; now the outer rows of a chunk are one
    search_batch call (one plan, one graph call, one gather), with the same answers."""
    con.execute("CREATE TABLE q40 AS SELECT id AS qid, vector::FLOAT[] AS vector FROM t "
                "WHERE id < 40")
    calls = _count_searches(monkeypatch)
    con.fast_knn = fast
    sql = ("SELECT q.qid, k.id, k.rank FROM q40 q, LATERAL knn('t', q.vector, 5) k "
           "ORDER BY q.qid, k.rank")
    got = con.execute(sql).fetchall()
    con.fast_knn = True
    assert calls["search"] == 0 and 1 <= calls["search_batch"] <= 2, calls
    vecs = store.table("t").get(list(range(40)), columns=["vector"]).column("vector").to_pylist()
    for qid in range(40):
        assert [i for q, i, _ in got if q == qid] == oracle(store, np.asarray(vecs[qid]), 5)


def test_lateral_mahalanobis_on_a_duckdb_table_ranks_each_outer_row(tmp_path):
    """Every outer row's own query vector (issue 23's sweep: the first row's neighbours
    were returned for every row of a chunk)."""
    rng = np.random.default_rng(3)
    mat = rng.normal(size=(40, 6)).astype(np.float32)
    s = Store(tmp_path / "s")
    s.write("m", {"id": list(range(40)), "vector": mat}, key="id")
    c = connect(s, extensions=())
    c.execute("CREATE TABLE plain AS SELECT * FROM m")
    c.execute("CREATE TABLE qs AS SELECT id AS qid, vector FROM m WHERE id < 8")
    eye = "[" + ", ".join("[" + ", ".join("1.0" if i == j else "0.0" for j in range(6)) + "]"
                          for i in range(6)) + "]"
    for table in ("plain", "m"):
        got = c.execute(f"SELECT q.qid, k.id FROM qs q, LATERAL knn('{table}', q.vector, 1, "
                        f"metric := 'mahalanobis', inv_cov := {eye}) k ORDER BY q.qid").fetchall()
        assert got == [(i, i) for i in range(8)], table  # identity inv_cov: each row is its own nearest
