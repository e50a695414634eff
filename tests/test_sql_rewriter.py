"""The SQL rewriter on DuckDB's parse tree (issue 22), SQL failures as QueryErrors with k
and NULL inputs checked (issue 23), and bound parameters that stay data (issue 29).

Before: knn had a token-splice fast path, a LATERAL rewrite and the macro, each reading
SQL its own way; a negative k said "LIMIT/OFFSET cannot be negative", k=2.5 printed the
internal ``_ea_knn_hits`` signature, ``similarity_join(..., -1)`` numpy's "negative
dimensions", a string vector the internal column ``__qv``; k=0, a NULL k and a NULL
vector returned 0 rows; and ``similarity_join(?, 'w', 1)`` with a parameter starting with
``"`` pasted it into ``query()``, which read any file DuckDB can read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from embed_assets import QueryError, Store, ValidationError, connect
from embed_assets.sql import run_sql

from .conftest import plain_duckdb

N, DIM = 400, 8
SQL_DIR = Path(__file__).resolve().parents[1] / "embed_assets" / "sql"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(str(tmp_path_factory.mktemp("rewriter")))
    rng = np.random.default_rng(11)
    mat = rng.normal(size=(N, DIM)).astype(np.float32)
    s.write("w", pa.table({
        "id": np.arange(N), "section": np.array(["a", "b"])[np.arange(N) % 2],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)}), key="id")
    return s


@pytest.fixture
def con(store: Store):
    c = connect(store, extensions=())
    c.execute("CREATE TABLE plain AS SELECT id, section, vector::FLOAT[] AS vector FROM w")
    c.execute("CREATE TABLE queries AS SELECT section, vec_mean(vector) AS vector FROM w GROUP BY section")
    yield c
    c.close()


Q = [0.5, -0.25, 1.0, 0.0, 0.3, -0.7, 0.2, 0.9]


def oracle(store: Store, q: list[float], k: int, section: str | None = None) -> list[int]:
    t = store.table("w").read(columns=["id", "section", "vector"])
    mat = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    ids = t.column("id").to_numpy()
    if section is not None:
        keep = np.asarray(t.column("section").to_pylist()) == section
        mat, ids = mat[keep], ids[keep]
    qv = np.asarray(q, np.float64)
    d = 1 - mat @ qv / (np.linalg.norm(mat, axis=1) * np.linalg.norm(qv))
    return ids[np.argsort(d, kind="stable")[:k]].tolist()


def ids(con, sql: str, params=None) -> list[int]:
    return [r[0] for r in con.execute(sql, params).fetchall()]


# -- issue 22: one path for every form -------------------------------------------------------
def test_every_form_is_answered_through_the_parse_tree(store, con):
    want = oracle(store, Q, 5)
    lit = "[" + ", ".join(repr(x) for x in Q) + "]"
    forms = [
        (f"SELECT id FROM knn('w', {lit}, 5) ORDER BY rank", None),
        ("SELECT id FROM knn('w', ?, 5) ORDER BY rank", [Q]),
        ("SELECT id FROM knn('w', $q, 5) ORDER BY rank", {"q": Q}),
        ("SELECT id FROM knn($t, $q, $k) ORDER BY rank", {"t": "w", "q": Q, "k": 5}),
        ("SELECT id FROM knn(?, ?::FLOAT[8], ?, use_index := ?) ORDER BY rank", ["w", Q, 5, False]),
    ]
    for sql, params in forms:
        before = con._fast_n
        assert ids(con, sql, params) == want, sql
        assert con._fast_n == before + 1, f"the store should answer {sql}"
        con.fast_knn = False
        assert ids(con, sql, params) == want, f"macro: {sql}"
        con.fast_knn = True


def test_named_options_subqueries_lateral_and_parameters_around_the_calls(store, con):
    # named options, as literals and as parameters
    sql = "SELECT id FROM knn('w', ?, 4, filter := ?, metric := ?) ORDER BY rank"
    before = con._fast_n
    assert ids(con, sql, [Q, "section = 'b'", "cosine"]) == oracle(store, Q, 4, "b")
    assert con._fast_n == before + 1
    # parameters after an answered call are renumbered for DuckDB
    rows = con.execute("SELECT a.id, b.id FROM knn('w', ?, 2) a, knn('w', ?, 3) b "
                       "WHERE a.id < ? AND b.id >= ? ORDER BY ALL", [Q, Q, 10_000, 0]).fetchall()
    assert len(rows) == 6 and con._fast_n == before + 3
    # a scalar subquery and a LATERAL column
    q_b = con.execute("SELECT vector FROM queries WHERE section = 'b'").fetchone()[0]
    assert ids(con, "SELECT id FROM knn('w', (SELECT vector FROM queries WHERE section = 'b'), 3) "
                    "ORDER BY rank") == oracle(store, q_b, 3)
    lat = con.execute("SELECT q.section, k.id FROM queries q, LATERAL knn('w', q.vector, 3) k "
                      "ORDER BY q.section, k.rank").fetchall()
    assert [i for s, i in lat if s == "b"] == oracle(store, q_b, 3)
    # columns renamed by position keep every column (the vector too)
    renamed = con.execute("SELECT k.d FROM knn('w', ?, 2) AS k(a, s, v, d, r)", [Q]).fetchall()
    assert len(renamed) == 2 and renamed[0][0] < renamed[1][0]
    # no alias: the rows are still known by the function's name
    assert con.execute("SELECT knn.id FROM knn('w', ?, 1)", [Q]).fetchall() == [(oracle(store, Q, 1)[0],)]


def test_statements_duckdb_cannot_serialise_fall_back_to_the_macro(store, con):
    before = con._fast_n
    con.execute("CREATE TABLE got AS SELECT id, rank FROM knn('w', ?, 6, filter := 'section = ''a''')", [Q])
    con.execute("INSERT INTO got SELECT id, rank FROM knn('w', ?, 2)", [Q])
    assert con._fast_n == before, "an INSERT / CREATE ... AS runs the macro"
    rows = con.execute("SELECT id FROM got ORDER BY rowid").fetchall()
    assert [r[0] for r in rows] == oracle(store, Q, 6, "a") + oracle(store, Q, 2)
    # and the macro refuses what the rewriter refuses
    with pytest.raises(QueryError, match="k must be a positive integer, got -1"):
        con.execute("CREATE TABLE bad AS SELECT * FROM knn('w', ?, -1)", [Q])
    with pytest.raises(QueryError, match=r"k must be a positive integer, got 2\.5"):
        con.execute("CREATE TABLE bad AS SELECT * FROM knn('plain', ?, 2.5)", [Q])
    with pytest.raises(QueryError, match="similarity_join: k must be a positive integer, got 0"):
        con.execute("CREATE TABLE bad AS SELECT * FROM similarity_join('w', 'w', 0)")


def test_the_sql_layer_reads_no_sql_with_regular_expressions_and_keeps_functions_short():
    for path in sorted(SQL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "re" not in imported, f"{path.name} imports re"
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
                assert length <= 80, f"{path.name}:{fn.name} has {length} lines"


# -- issue 23: every failure a QueryError in the user's terms --------------------------------
BAD = [
    ("SELECT * FROM knn('w', ?, -1)", [Q], "knn: k must be a positive integer, got -1"),
    ("SELECT * FROM knn('w', ?, 2.5)", [Q], "knn: k must be a positive integer, got 2.5"),
    ("SELECT * FROM knn('w', ?, 0)", [Q], "knn: k must be a positive integer, got 0"),
    ("SELECT * FROM knn('w', ?, NULL)", [Q], "knn: k must be a positive integer, got NULL"),
    ("SELECT * FROM knn('w', ?, ?)", [Q, None], "knn: k must be a positive integer, got NULL"),
    ("SELECT * FROM knn('w', ?, 3)", [None], "knn: the query vector is NULL"),
    ("SELECT * FROM knn('w', NULL, 3)", None, "knn: the query vector is NULL"),
    ("SELECT * FROM knn('w', ?, 3)", ["[1, 2]"], "knn: the query vector must be a list of numbers"),
    ("SELECT * FROM knn('plain', ?, -2)", [Q], "knn: k must be a positive integer, got -2"),
    ("SELECT * FROM knn('plain', ?, 3)", [None], "knn: the query vector is NULL"),
    ("SELECT * FROM similarity_join('w', 'w', -1)", None,
     "similarity_join: k must be a positive integer, got -1"),
    ("SELECT * FROM similarity_join('plain', 'plain', 1.5)", None,
     "similarity_join: k must be a positive integer, got 1.5"),
    ("SELECT * FROM similarity_join('w', 'w', ?)", ["3"],
     "similarity_join: k must be a positive integer, got '3'"),
]
INTERNAL = ("_ea_", "__qv", "__q", "LIMIT", "negative dimensions", "Python exception", "At:", ".py(")


@pytest.mark.parametrize(("sql", "params", "message"), BAD)
def test_bad_k_and_null_or_string_vectors_are_query_errors(con, sql, params, message):
    for fast in (True, False):
        con.fast_knn = fast
        for run in (lambda: con.execute(sql, params).fetchall(),
                    lambda: con.sql(sql, params=params).fetchall()):
            with pytest.raises(QueryError) as ei:
                run()
            text = str(ei.value)
            assert message in text, text
            assert not any(word in text for word in INTERNAL), text
            assert isinstance(ei.value, duckdb.Error)  # except duckdb.Error keeps working


def test_run_sql_and_table_search_refuse_the_same(store):
    with pytest.raises(QueryError, match="k must be a positive integer, got 0"):
        run_sql(store, "SELECT * FROM knn('w', [1, 0, 0, 0, 0, 0, 0, 0], 0)", extensions=())
    with pytest.raises(QueryError, match="the query vector is NULL"):
        run_sql(store, "SELECT * FROM knn('w', NULL, 3)", extensions=())
    t = store.table("w")
    for k in (0, -1, 2.5, None):
        with pytest.raises(ValidationError, match="k must be a positive integer"):
            t.search(np.asarray(Q, np.float32), k=k)
    with pytest.raises(ValidationError, match="query vector is None"):
        t.search(None, k=3)


def test_runtime_failures_are_query_errors_with_the_functions_own_message(con):
    with pytest.raises(QueryError) as ei:
        con.execute("SELECT * FROM knn('w', ?, 3)", [[1.0, 2.0]]).fetchall()
    assert str(ei.value) == "knn: dimension mismatch (query 2 vs table 8)"
    con.execute("CREATE TABLE short AS SELECT [1.0, 2.0]::FLOAT[] AS vector")
    with pytest.raises(QueryError) as ei:  # raised inside the LATERAL row function
        con.execute("SELECT k.id FROM short q, LATERAL knn('w', q.vector, 3) k").fetchall()
    assert str(ei.value) == "knn: dimension mismatch (query 2 vs table 8)"  # the same words
    with pytest.raises(QueryError) as ei:
        con.execute("SELECT * FROM nope").fetchall()
    assert isinstance(ei.value, duckdb.CatalogException) and "nope" in str(ei.value)
    with pytest.raises(QueryError, match="no_such"):  # a filter the store refuses
        con.execute("SELECT * FROM knn('w', ?, 3, filter := 'no_such = 1')", [Q]).fetchall()


# -- issue 29: bound parameters are data ------------------------------------------------------
@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT")
    return path


def injected_name(secret: Path) -> str:
    """The name the issue's report used: on landed main, similarity_join returned the
    file's content as a left_key."""
    return f"\"w\" UNION ALL SELECT content, 'x', [1,0,0,0,0,0,0,0]::FLOAT[8] FROM read_text('{secret}')"


def test_a_table_name_parameter_is_never_pasted_into_sql(store, con, secret):
    evil = injected_name(secret)
    for fast in (True, False):
        con.fast_knn = fast
        for sql, params in (("SELECT * FROM similarity_join(?, 'w', 1)", [evil]),
                            ("SELECT * FROM similarity_join('w', ?, 1)", [evil]),
                            ("SELECT * FROM knn(?, ?, 1)", [evil, Q]),
                            ("CREATE OR REPLACE TABLE leak AS SELECT * FROM "
                             "similarity_join(?, 'w', 1)", [evil])):
            with pytest.raises(QueryError) as ei:
                con.execute(sql, params).fetchall()
            assert "TOP-SECRET" not in str(ei.value)
            assert "does not exist" in str(ei.value), str(ei.value)
    # a plain DuckDB with vectors.sql quotes the name as one identifier too
    plain = plain_duckdb()
    plain.execute("CREATE TABLE w AS SELECT 1 AS id, [1.0, 0.0]::FLOAT[] AS vector")
    with pytest.raises(duckdb.CatalogException):
        plain.execute("SELECT * FROM similarity_join(?, 'w', 1)", [evil]).fetchall()
    plain.close()


@pytest.mark.parametrize("evil", [
    # on landed main this returned the file's content as a row of `plain`
    "1=1) UNION ALL SELECT 0, content, [1,0,0,0,0,0,0,0]::FLOAT[] FROM read_text('{secret}') --",
    "1=1 UNION ALL SELECT 0, content, [1,0,0,0,0,0,0,0]::FLOAT[] FROM read_text('{secret}')",
    "true; SELECT * FROM read_text('{secret}')",
    "1=1) OR (1=1",
    # a predicate, but one that reads a file a row-or-no-row answer at a time
    "(SELECT content FROM read_text('{secret}')) LIKE 'TOP%'",
])
def test_a_filter_is_one_parsed_predicate(store, con, secret, evil):
    evil = evil.format(secret=secret)
    statements = [("SELECT * FROM knn('w', ?, 3, filter := ?)", [Q, evil]),
                  ("SELECT * FROM knn('plain', ?, 3, filter := ?)", [Q, evil]),
                  ("SELECT * FROM similarity_join('plain', 'plain', 1, key := 'section', "
                   "left_filter := ?)", [evil]),
                  ("CREATE OR REPLACE TABLE leak AS SELECT * FROM knn('plain', ?, 3, "
                   "filter := ?)", [Q, evil]),
                  ("CREATE OR REPLACE TABLE leak AS SELECT * FROM similarity_join('plain', 'w', 1, "
                   "right_filter := ?)", [evil])]
    for fast in (True, False):
        con.fast_knn = fast
        for sql, params in statements:
            with pytest.raises(QueryError, match="is not a predicate") as ei:
                con.execute(sql, params).fetchall()
            assert "TOP-SECRET" not in str(ei.value)


def test_hybrid_search_refuses_a_bad_k_too(con):
    for k in ("0", "-3", "2.5", "NULL"):
        with pytest.raises(QueryError, match=f"hybrid_search: k must be a positive integer, got {k}"):
            con.execute(f"SELECT * FROM hybrid_search('w', 'editor', {k}, mode := 'text')").fetchall()
