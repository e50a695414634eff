"""Plain DuckDB parity (issue 12, item 7) and Mahalanobis knn at a usable speed (item 8).

What README's "SQL (DuckDB)" section says of ``sql/vectors.sql`` in a plain DuckDB is
done here exactly as it says: windows through the list forms, ``vec_covariance`` and
``mat_inverse`` in plain SQL, the lance extension loaded from its wheel, and
``connect(read_only_views=False)``. Mahalanobis ``knn`` is checked against a numpy oracle
on store views and DuckDB tables, and on the demo's 2,040 x 384 shape (its speed is a benchmark figure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from embed_assets import Store
from embed_assets.sql import connect, extension_path, macro_file

from .conftest import plain_duckdb

TOL = 1e-5




def _points(con: Any, x: np.ndarray, name: str = "pts") -> None:
    con.execute(f"CREATE TABLE {name} (i INTEGER, g INTEGER, v DOUBLE[{x.shape[1]}])")
    con.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)",
                    [(i, i % 3, x[i].tolist()) for i in range(len(x))])


def _oracle(x: np.ndarray, q: np.ndarray, inv: np.ndarray) -> np.ndarray:
    diff = x.astype(np.float64) - q.astype(np.float64)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", diff, inv, diff), 0))


# -- windows ------------------------------------------------------------------------------
def test_window_mean_is_the_list_form_in_a_plain_duckdb() -> None:
    x = np.random.default_rng(0).normal(size=(40, 6))
    c = plain_duckdb()
    _points(c, x)
    rows = c.execute("""
        SELECT i, list_vec_mean(list(v) OVER (PARTITION BY g ORDER BY i
                                              ROWS BETWEEN 4 PRECEDING AND CURRENT ROW)),
                  list_vec_sum(list(v) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW))
        FROM pts ORDER BY i""").fetchall()
    for i, mean, total in rows:
        same = [j for j in range(i + 1) if j % 3 == i % 3][-5:]
        np.testing.assert_allclose(mean, x[same].mean(axis=0), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(total, x[max(0, i - 2):i + 1].sum(axis=0), rtol=TOL, atol=TOL)
    # what README says of vec_mean(v) OVER in a plain DuckDB: DuckDB refuses a macro there
    with pytest.raises(duckdb.BinderException, match="Window function macros must be functions"):
        c.execute("SELECT vec_mean(v) OVER (ORDER BY i) FROM pts").fetchall()


# -- covariance and inverse in plain SQL ---------------------------------------------------
def test_covariance_matches_numpy(con: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    _points(con, x)
    cov = np.array(con.execute("SELECT vec_covariance(v) FROM pts").fetchone()[0])
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    by_g = dict(con.execute("SELECT g, vec_covariance(v) FROM pts GROUP BY g").fetchall())
    for g in range(3):
        np.testing.assert_allclose(np.array(by_g[g]), np.cov(x[g::3], rowvar=False), rtol=1e-9)
    got = con.execute("SELECT list_vec_covariance([[1.0, 2.0], NULL, [3.0, 5.0]]), "
                      "list_vec_covariance([[1.0, 2.0]]), list_vec_covariance(NULL)").fetchone()
    assert got == ([[2.0, 3.0], [3.0, 4.5]], None, None)
    with pytest.raises(duckdb.Error, match="dimension mismatch"):
        con.execute("SELECT list_vec_covariance([[1.0, 2.0], [1.0], [2.0, 2.0]])").fetchall()


@pytest.mark.parametrize("d", [1, 2, 3, 8, 16])
def test_mat_inverse_matches_numpy(con: Any, d: int) -> None:
    m = np.random.default_rng(d).normal(size=(d, d)) + 0.5 * np.eye(d)
    got = np.array(con.execute("SELECT mat_inverse(?::DOUBLE[][])", [m.tolist()]).fetchone()[0])
    np.testing.assert_allclose(got, np.linalg.inv(m), rtol=1e-8, atol=1e-9)


def test_mat_inverse_pivots_refuses_non_square_and_takes_a_subquery(con: Any) -> None:
    assert con.execute("SELECT mat_inverse([[0.0, 1.0], [1.0, 0.0]])").fetchone()[0] == \
        [[0.0, 1.0], [1.0, 0.0]]   # a zero on the diagonal: needs the row swap
    assert con.execute("SELECT mat_inverse(NULL::DOUBLE[][])").fetchone()[0] is None
    with pytest.raises(duckdb.Error, match="square"):
        con.execute("SELECT mat_inverse([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])").fetchall()
    con.execute("CREATE TABLE ic AS SELECT [[2.0, 0.0], [0.0, 4.0]] AS m")
    assert con.execute("SELECT mat_inverse((SELECT m FROM ic))").fetchone()[0] == [[0.5, 0.0], [0.0, 0.25]]


def test_singular_inverse_raises_in_plain_sql_and_is_the_pseudo_inverse_in_connect() -> None:
    s = [[1.0, 2.0], [2.0, 4.0]]
    with pytest.raises(duckdb.Error, match="mat_inverse: the matrix is singular"):
        plain_duckdb().execute("SELECT mat_inverse(?::DOUBLE[][])", [s]).fetchall()
    got = connect(extensions=()).execute("SELECT mat_inverse(?::DOUBLE[][])", [s]).fetchone()[0]
    np.testing.assert_allclose(np.array(got), np.linalg.pinv(np.array(s)), atol=1e-12)


def test_mahalanobis_from_sql_estimates_in_a_plain_duckdb() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    c = plain_duckdb()
    _points(c, x)
    inv = np.linalg.inv(np.cov(x, rowvar=False))
    want = _oracle(x, np.zeros(6), inv)
    got = c.execute("""
        WITH ic AS (SELECT mat_inverse(vec_covariance(v)) AS m FROM pts)
        SELECT vec_mahalanobis(v, [0, 0, 0, 0, 0, 0], (SELECT m FROM ic)) FROM pts ORDER BY i
    """).fetchall()
    np.testing.assert_allclose([r[0] for r in got], want, rtol=TOL)
    hits = c.execute("""
        SELECT i, distance, rank FROM knn('pts', [0, 0, 0, 0, 0, 0], 7, vector := 'v',
            metric := 'mahalanobis', inv_cov := (SELECT mat_inverse(vec_covariance(v)) FROM pts))
    """).fetchall()
    order = np.argsort(want, kind="stable")[:7]
    assert [h[0] for h in hits] == order.tolist() and [h[2] for h in hits] == list(range(1, 8))
    np.testing.assert_allclose([h[1] for h in hits], want[order], rtol=TOL)


# -- the lance extension in a plain DuckDB, and read_only_views=False ------------------------
def test_lance_extension_reads_store_tables_as_the_readme_says(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    m = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    store.write("docs", {"id": np.arange(5), "vector": m}, key="id")
    store.write("docs", {"id": [5], "vector": np.ones((1, 4), np.float32)}, key="id", mode="append")
    c = duckdb.connect()
    c.execute(f"LOAD '{extension_path('lance')}'")
    c.execute(macro_file("vectors.sql").read_text())
    rows = c.execute(f"SELECT id, vec_norm(vector) FROM '{store.uri}/docs.lance' ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(6))   # the latest version
    np.testing.assert_allclose([r[1] for r in rows[:5]], np.linalg.norm(m, axis=1), rtol=1e-6)


def test_read_only_views_false_attaches_a_writable_lance_catalog(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.write("docs", {"id": [1, 2], "vector": np.eye(2, dtype=np.float32)}, key="id")
    c = connect(store, read_only_views=False)
    try:
        assert ("lance_store",) in c.execute("SHOW DATABASES").fetchall()
        c.execute("CREATE TABLE lance_store.main.notes AS "
                  "SELECT 7 AS id, [1.0, 2.0]::FLOAT[2] AS vector")
    finally:
        c.close()
    assert store.table_names() == ["docs", "notes"]
    assert store.table("notes").read().column("id").to_pylist() == [7]
    with pytest.raises(Exception, match="read_only_views=False needs the lance extension"):
        connect(store, read_only_views=False, extensions=())


# -- Mahalanobis knn: oracle and speed ---------------------------------------------------
def _store_and_session(tmp_path: Path, x: np.ndarray, str_keys: bool = False) -> tuple[Store, Any]:
    store = Store(tmp_path / "store")
    keys = [f"k{i}" for i in range(len(x))] if str_keys else np.arange(len(x))
    store.write("t", {"id": keys, "vector": x.astype(np.float32)}, key="id")
    c = connect(store, extensions=())
    c.execute("CREATE TABLE mem AS SELECT * FROM t")
    return store, c


@pytest.mark.parametrize("str_keys", [False, True])
def test_mahalanobis_knn_equals_numpy_on_store_views_and_tables(tmp_path: Path, str_keys: bool) -> None:
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(600, 24)) @ rng.normal(size=(24, 24))).astype(np.float32)
    _, c = _store_and_session(tmp_path, x, str_keys)
    inv = np.linalg.inv(np.cov(x.astype(np.float64), rowvar=False))
    c.execute("CREATE TABLE ic AS SELECT ?::DOUBLE[][] AS m", [inv.tolist()])
    for qi in (0, 17, 599):
        q = x[qi]
        want = _oracle(x, q, inv)
        order = np.argsort(want, kind="stable")[:10]
        for src in ("t", "mem", "t@1"):
            hits = c.execute(f"""SELECT id, distance, rank FROM knn('{src}', ?::FLOAT[], 10,
                                 metric := 'mahalanobis', inv_cov := (SELECT m FROM ic))""",
                             [q.tolist()]).fetchall()
            ids = [int(h[0][1:]) if str_keys else h[0] for h in hits]
            assert ids == order.tolist(), src
            assert [h[2] for h in hits] == list(range(1, 11))
            np.testing.assert_allclose([h[1] for h in hits], want[order], rtol=1e-9, atol=1e-9)
    # the session's own estimates give the same ranking
    est = c.execute("""SELECT id FROM knn('t', (SELECT vector FROM t LIMIT 1 OFFSET 17), 5,
                           metric := 'mahalanobis',
                           inv_cov := (SELECT mat_inverse(vec_covariance(vector)) FROM t))""").fetchall()
    want = _oracle(x, x[17], inv)
    assert [int(e[0][1:]) if str_keys else e[0] for e in est] == np.argsort(want)[:5].tolist()
    c.close()


def test_mahalanobis_knn_with_another_matrix_is_not_served_from_the_cache(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    _, c = _store_and_session(tmp_path, x)
    q = x[3]
    for inv in (np.eye(8), np.diag(np.arange(1.0, 9.0)), np.eye(8) * 4):
        hits = c.execute("SELECT id, distance FROM knn('t', ?::FLOAT[], 4, metric := 'mahalanobis', "
                         "inv_cov := ?::DOUBLE[][])", [q.tolist(), inv.tolist()]).fetchall()
        want = _oracle(x, q, inv)
        order = np.argsort(want, kind="stable")[:4]
        assert [h[0] for h in hits] == order.tolist()
        np.testing.assert_allclose([h[1] for h in hits], want[order], rtol=1e-9, atol=1e-9)
    # k beyond the table, and the errors
    assert len(c.execute("SELECT * FROM knn('t', ?::FLOAT[], 500, metric := 'mahalanobis', "
                         "inv_cov := ?::DOUBLE[][])", [q.tolist(), np.eye(8).tolist()]).fetchall()) == 200
    for src in ("t", "mem"):
        with pytest.raises(duckdb.Error, match="needs inv_cov"):
            c.execute(f"SELECT * FROM knn('{src}', ?::FLOAT[], 3, metric := 'mahalanobis')",
                      [q.tolist()]).fetchall()
        with pytest.raises(duckdb.Error, match="inv_cov has shape"):
            c.execute(f"SELECT * FROM knn('{src}', ?::FLOAT[], 3, metric := 'mahalanobis', "
                      "inv_cov := ?::DOUBLE[][])", [q.tolist(), np.eye(3).tolist()]).fetchall()
    c.close()


def test_mahalanobis_knn_on_2040_x_384_equals_numpy(tmp_path: Path) -> None:
    """The demo table's shape, on store views and a DuckDB table. Speed is measured in
    benchmarks/bench_sql.py (``--only mahalanobis``, beside cosine knn), not asserted here."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(2040, 384)) @ rng.normal(size=(384, 384)) * 0.05).astype(np.float32)
    _, c = _store_and_session(tmp_path, x)
    inv = np.linalg.inv(np.cov(x.astype(np.float64), rowvar=False))
    c.execute("CREATE TABLE ic AS SELECT ?::DOUBLE[][] AS m", [inv.tolist()])
    q = [x[11].tolist()]
    sql = ("SELECT id, distance FROM knn('{}', ?::FLOAT[], 10, metric := 'mahalanobis', "
           "inv_cov := (SELECT m FROM ic))")
    want = np.argsort(_oracle(x, x[11], inv))[:10].tolist()
    for src in ("t", "mem"):
        assert [r[0] for r in c.execute(sql.format(src), q).fetchall()] == want, src
    c.close()


def test_mahalanobis_similarity_join_equals_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(150, 12)) @ rng.normal(size=(12, 12))).astype(np.float32)
    store, c = _store_and_session(tmp_path, x)
    store.write("l", {"id": np.arange(5), "vector": x[:5] + 0.1}, key="id")
    c.refresh()
    c.execute("CREATE TABLE lmem AS SELECT * FROM l")
    inv = np.linalg.inv(np.cov(x.astype(np.float64), rowvar=False))
    for left, right in (("l", "t"), ("lmem", "mem")):
        rows = c.execute(f"SELECT left_key, right_key, distance FROM similarity_join('{left}', '{right}', 3, "
                         "metric := 'mahalanobis', inv_cov := ?::DOUBLE[][])", [inv.tolist()]).fetchall()
        for i in range(5):
            want = _oracle(x, x[i] + 0.1, inv)
            order = np.argsort(want, kind="stable")[:3]
            got = [r for r in rows if r[0] == i]
            assert [r[1] for r in got] == order.tolist(), (left, i)
            np.testing.assert_allclose([r[2] for r in got], want[order], rtol=1e-5)
    c.close()
