"""The vector macros: SQL fixture files, a numpy oracle, and hypothesis properties.

Every check runs twice: in a plain DuckDB with only sql/vectors.sql (what `.read` gives an
analyst) and in an ``embed_assets.connect()`` session, where sql/store.sql swaps in the
Python-backed versions. Both must agree with numpy to 1e-5.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from embed_assets.sql import connect, load_macros, macro_file

from .conftest import plain_duckdb

FIXTURES = Path(__file__).parent / "sql_fixtures"
TOL = 1e-5




# -- fixture files -----------------------------------------------------------------------
def parse_fixtures(path: Path) -> tuple[str, list[tuple[str, str, str, Any]]]:
    """(setup SQL, [(case name, sql, 'expect'|'error', expected)]) of one fixture file."""
    setup = ""
    cases = []
    chunks = re.split(r"\n\s*\n", path.read_text())
    for chunk in chunks:
        lines = [ln for ln in chunk.strip().splitlines() if ln.strip()]
        if not lines:
            continue
        if lines[0].startswith("-- setup") or (len(lines) > 1 and lines[1].startswith("-- setup")):
            setup = "\n".join(ln for ln in lines if not ln.startswith("--"))
            continue
        name = next((ln[len("-- case:"):].strip() for ln in lines if ln.startswith("-- case:")), path.stem)
        sql = "\n".join(ln for ln in lines if not ln.lstrip().startswith("--"))
        marker = next(ln for ln in lines if ln.startswith(("-- expect:", "-- error:")))
        kind, _, value = marker[3:].partition(":")
        expected = json.loads(value) if kind == "expect" else value.strip()
        cases.append((name, sql, kind, expected))
    return setup, cases


def close(a: Any, b: Any, tol: float = TOL) -> bool:
    if isinstance(a, tuple):
        a = list(a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return a == b


ALL_CASES = [(f.name, *case) for f in sorted(FIXTURES.glob("*.sql")) for case in parse_fixtures(f)[1]]


def test_fixture_files_are_found() -> None:
    names = {c[0] for c in ALL_CASES}
    assert {"scalar.sql", "aggregate.sql", "table_macros.sql"} <= names
    assert len(ALL_CASES) >= 30


@pytest.mark.parametrize(("file", "name", "sql", "kind", "expected"), ALL_CASES,
                         ids=[f"{c[0]}:{c[1]}" for c in ALL_CASES])
def test_fixture(con: Any, file: str, name: str, sql: str, kind: str, expected: Any) -> None:
    setup, _ = parse_fixtures(FIXTURES / file)
    if setup:
        con.execute(setup)
    stmts = duckdb.extract_statements(sql)
    for s in stmts[:-1]:
        con.execute(s.query)
    if kind == "error":
        with pytest.raises(duckdb.Error, match=re.escape(expected)):
            con.execute(stmts[-1].query).fetchall()
        return
    got = [list(r) for r in con.execute(stmts[-1].query).fetchall()]
    assert close(got, expected), f"{name}: got {got}, expected {expected}"


def test_vectors_sql_loads_into_plain_duckdb_via_read(tmp_path: Path) -> None:
    # What an analyst types in the DuckDB CLI: .read sql/vectors.sql. The Python client
    # has no dot-commands, so run the file the way .read does: statement by statement.
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    for st_ in duckdb.extract_statements(macro_file().read_text()):
        con.execute(st_.query)
    assert con.execute("SELECT vec_dot([1, 2], [3, 4])").fetchone()[0] == 11
    names = {r[0] for r in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_type IN ('macro', 'table_macro')"
    ).fetchall()}
    assert {"vec_add", "vec_sub", "vec_scale", "vec_dot", "vec_norm", "vec_normalize", "vec_cosine",
            "vec_l2", "vec_mean", "vec_sum", "list_vec_mean", "knn", "similarity_join",
            "vec_covariance", "list_vec_covariance", "mat_inverse"} <= names


# -- numpy oracle -----------------------------------------------------------------------------
def as_arr(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def test_every_scalar_macro_matches_numpy(con: Any) -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(40, 24)).astype(np.float32)
    b = rng.normal(size=(40, 24)).astype(np.float32)
    s = rng.normal(size=40)
    con.execute("CREATE TABLE pairs (i INTEGER, a FLOAT[24], b FLOAT[24], s DOUBLE)")
    con.executemany("INSERT INTO pairs VALUES (?, ?, ?, ?)",
                    [(i, a[i].tolist(), b[i].tolist(), float(s[i])) for i in range(40)])
    rows = con.execute("""
        SELECT vec_add(a, b), vec_sub(a, b), vec_scale(a, s), vec_dot(a, b), vec_norm(a),
               vec_normalize(a), vec_cosine(a, b), vec_l2(a, b),
               vec_distance(a, b), vec_distance(a, b, metric := 'dot'),
               vec_distance(a, b, metric := 'l2')
        FROM pairs ORDER BY i""").fetchall()
    A, B = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(A, axis=1), np.linalg.norm(B, axis=1)
    cos = np.einsum("ij,ij->i", A, B) / (na * nb)
    oracle = [A + B, A - B, A * s[:, None], np.einsum("ij,ij->i", A, B), na, A / na[:, None], cos,
              np.linalg.norm(A - B, axis=1), 1 - cos, 1 - np.einsum("ij,ij->i", A, B),
              np.linalg.norm(A - B, axis=1)]
    for col, want in enumerate(oracle):
        got = as_arr([r[col] for r in rows])
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL, err_msg=f"column {col}")


def test_mahalanobis_with_covariance_estimated_in_sql() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    con = connect(extensions=())
    con.execute("CREATE TABLE pts (i INTEGER, v DOUBLE[5])")
    con.executemany("INSERT INTO pts VALUES (?, ?)", [(i, x[i].tolist()) for i in range(500)])
    cov = np.array(con.execute("SELECT vec_covariance(v) FROM pts").fetchone()[0])
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-9)
    got = con.execute("""
        WITH ic AS (SELECT mat_inverse(vec_covariance(v)) AS m FROM pts)
        SELECT vec_mahalanobis(p.v, [0, 0, 0, 0, 0], (SELECT m FROM ic)) FROM pts p ORDER BY i
    """).fetchall()
    inv = np.linalg.inv(np.cov(x, rowvar=False))
    want = np.sqrt(np.einsum("ij,jk,ik->i", x, inv, x))
    np.testing.assert_allclose(as_arr([r[0] for r in got]), want, rtol=TOL)
    # knn under the Mahalanobis metric agrees with the same oracle.
    hits = con.execute("""
        SELECT i, distance FROM knn('pts', [0, 0, 0, 0, 0], 5, vector := 'v', metric := 'mahalanobis',
                                    inv_cov := (SELECT mat_inverse(vec_covariance(v)) FROM pts))
    """).fetchall()
    order = np.argsort(want)[:5]
    assert [h[0] for h in hits] == order.tolist()
    np.testing.assert_allclose([h[1] for h in hits], want[order], rtol=TOL)


def test_vec_mean_by_group_matches_numpy(con: Any) -> None:
    rng = np.random.default_rng(11)
    v = rng.normal(size=(600, 16)).astype(np.float32)
    g = rng.integers(0, 7, size=600)
    con.execute("CREATE TABLE t (g INTEGER, v FLOAT[16])")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(int(g[i]), v[i].tolist()) for i in range(600)])
    rows = con.execute("SELECT g, vec_mean(v), vec_sum(v) FROM t GROUP BY g ORDER BY g").fetchall()
    for gid, mean, total in rows:
        np.testing.assert_allclose(mean, v[g == gid].astype(np.float64).mean(0), rtol=TOL, atol=TOL)
        np.testing.assert_allclose(total, v[g == gid].astype(np.float64).sum(0), rtol=TOL, atol=TOL)


def test_mean_of_last_n_items_with_a_window(con: Any) -> None:
    rng = np.random.default_rng(5)
    v = rng.normal(size=(30, 6))
    user = np.repeat([1, 2, 3], 10)
    con.execute("CREATE TABLE ev (u INTEGER, ts INTEGER, v DOUBLE[])")
    con.executemany("INSERT INTO ev VALUES (?, ?, ?)",
                    [(int(user[i]), i, v[i].tolist()) for i in range(30)])
    rows = con.execute("""
        SELECT u, ts, list_vec_mean(list(v) OVER (PARTITION BY u ORDER BY ts
                                                  ROWS BETWEEN 4 PRECEDING AND CURRENT ROW))
        FROM ev ORDER BY ts""").fetchall()
    for u, ts, mean in rows:
        start = max(ts - 4, int(np.flatnonzero(user == u)[0]))
        np.testing.assert_allclose(mean, v[start:ts + 1].mean(0), rtol=TOL, atol=TOL)


def test_similarity_join_and_knn_match_numpy(con: Any) -> None:
    rng = np.random.default_rng(2)
    L = rng.normal(size=(25, 12)).astype(np.float32)
    R = rng.normal(size=(80, 12)).astype(np.float32)
    con.execute("CREATE TABLE l (id INTEGER, vector FLOAT[12])")
    con.execute("CREATE TABLE r (id INTEGER, vector FLOAT[12])")
    con.executemany("INSERT INTO l VALUES (?, ?)", [(i, L[i].tolist()) for i in range(25)])
    con.executemany("INSERT INTO r VALUES (?, ?)", [(100 + i, R[i].tolist()) for i in range(80)])
    Ln = L / np.linalg.norm(L, axis=1, keepdims=True)
    Rn = R / np.linalg.norm(R, axis=1, keepdims=True)
    D = 1 - Ln.astype(np.float64) @ Rn.T.astype(np.float64)
    rows = con.execute("SELECT * FROM similarity_join('l', 'r', 3) ORDER BY left_key, rank").fetchall()
    assert len(rows) == 25 * 3
    for lk, rk, dist, rank in rows:
        want = np.argsort(D[lk])[rank - 1]
        assert rk == 100 + want
        assert abs(dist - D[lk, want]) < TOL
    hits = con.execute("SELECT id, distance, rank FROM knn('r', ?::FLOAT[], 4)", [L[0].tolist()]).fetchall()
    assert [h[0] for h in hits] == (100 + np.argsort(D[0])[:4]).tolist()
    assert [h[2] for h in hits] == [1, 2, 3, 4]
    np.testing.assert_allclose([h[1] for h in hits], np.sort(D[0])[:4], atol=TOL)


# -- hypothesis --------------------------------------------------------------------------------
@st.composite
def vector_pairs(draw: Any) -> tuple[np.ndarray, np.ndarray, float]:
    d = draw(st.integers(1, 48))
    elems = st.floats(-100, 100, allow_nan=False, width=32)
    a = draw(hnp.arrays(np.float32, d, elements=elems))
    b = draw(hnp.arrays(np.float32, d, elements=elems))
    s = draw(st.floats(-10, 10, allow_nan=False))
    return a, b, s


_PLAIN = plain_duckdb()
_CONNECTED = connect(extensions=())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vector_pairs(), st.sampled_from(["plain", "connect"]))
def test_property_scalar_macros(pair: tuple[np.ndarray, np.ndarray, float], which: str) -> None:
    a, b, s = pair
    con = _PLAIN if which == "plain" else _CONNECTED
    la, lb = a.tolist(), b.tolist()
    d = len(la)
    row = con.execute(
        f"SELECT vec_add(?::FLOAT[{d}], ?::FLOAT[{d}]), vec_sub(?, ?), vec_scale(?, ?), vec_dot(?, ?), "
        "vec_l2(?, ?), vec_norm(?)",
        [la, lb, la, lb, la, s, la, lb, la, lb, la]).fetchone()
    A, B = a.astype(np.float64), b.astype(np.float64)
    scale = max(1.0, float(np.abs(A).max(initial=0)), float(np.abs(B).max(initial=0)))
    np.testing.assert_allclose(row[0], A + B, atol=TOL * scale)
    np.testing.assert_allclose(row[1], A - B, atol=TOL * scale)
    np.testing.assert_allclose(row[2], A * s, atol=TOL * scale * max(1, abs(s)))
    # float32 inner products: error grows with d * |a| * |b|
    np.testing.assert_allclose(row[3], A @ B, rtol=1e-4, atol=TOL * d * scale * scale)
    np.testing.assert_allclose(row[4], np.linalg.norm(A - B), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(row[5], np.linalg.norm(A), rtol=1e-4, atol=1e-4 * scale)
    # Properties that hold whatever the values: l2 symmetric, add/sub inverse.
    back = con.execute("SELECT vec_sub(vec_add(?, ?), ?)", [la, lb, lb]).fetchone()[0]
    np.testing.assert_allclose(back, A, atol=TOL * scale * 4)
    if np.linalg.norm(A) > 1e-3 and np.linalg.norm(B) > 1e-3:
        cos = con.execute("SELECT vec_cosine(?, ?)", [la, lb]).fetchone()[0]
        assert -1 - 1e-5 <= cos <= 1 + 1e-5
        np.testing.assert_allclose(cos, A @ B / np.linalg.norm(A) / np.linalg.norm(B), atol=1e-4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 32), st.integers(1, 40), st.integers(0, 2**31 - 1),
       st.sampled_from(["plain", "connect"]))
def test_property_mean_and_sum(d: int, n: int, seed: int, which: str) -> None:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, d)).astype(np.float32)
    con = _PLAIN if which == "plain" else _CONNECTED
    mean, total = con.execute("SELECT list_vec_mean(?::FLOAT[][]), list_vec_sum(?::FLOAT[][])",
                              [v.tolist(), v.tolist()]).fetchone()
    np.testing.assert_allclose(mean, v.astype(np.float64).mean(0), atol=TOL)
    np.testing.assert_allclose(total, v.astype(np.float64).sum(0), atol=TOL * n)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20).filter(lambda x: x > 0),
       st.sampled_from(["vec_add", "vec_sub", "vec_dot", "vec_cosine", "vec_l2"]),
       st.sampled_from(["plain", "connect"]))
def test_property_dimension_mismatch_always_raises(d1: int, extra: int, fn: str, which: str) -> None:
    con = _PLAIN if which == "plain" else _CONNECTED
    a, b = [1.0] * d1, [1.0] * (d1 + extra)
    with pytest.raises(duckdb.Error, match=re.escape(f"{fn}: dimension mismatch ({d1} vs {d1 + extra})")):
        con.execute(f"SELECT {fn}(?::FLOAT[], ?::FLOAT[])", [a, b]).fetchall()


def test_load_macros_helper_is_idempotent() -> None:
    con = duckdb.connect()
    load_macros(con)
    load_macros(con)  # CREATE OR REPLACE: loading twice is harmless
    assert con.execute("SELECT vec_norm([3, 4])").fetchone()[0] == 5
