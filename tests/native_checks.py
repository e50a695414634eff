#!/usr/bin/env python3
"""Build the ea_vec extension into a temp dir, LOAD it and check it against numpy (plain script).

    .venv/bin/python tests/native_checks.py [--n 30000] [--groups 55] [--repeat 5]

tests/test_native_ext.py runs it (small n) as part of the suite.

Exits 0 when every check passes; prints a timing line for
``SELECT g, __ea_vec_mean(v) FROM t GROUP BY g`` next to the numpy mask-per-group mean.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "embed_assets", "native")
sys.path.insert(0, HERE)
import build as ea_build  # noqa: E402

RTOL = 1e-6
ATOL = 1e-9
FAILS: list[str] = []


def check(name: str, fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:
        FAILS.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
    else:
        print(f"ok   {name}")


def close(got: Any, want: np.ndarray, what: str = "") -> None:
    assert got is not None, f"{what}: got NULL"
    g = np.asarray(got, dtype=np.float64)
    assert g.shape == want.shape, f"{what}: shape {g.shape} != {want.shape}"
    np.testing.assert_allclose(g, want, rtol=RTOL, atol=ATOL, err_msg=what)


def fixed_size_table(
    V: np.ndarray, g: np.ndarray | None = None, null_rows: np.ndarray | None = None
) -> pa.Table:
    """Arrow table (i, [g,] v FLOAT[d]) -- ``null_rows``: boolean mask of rows whose vector is NULL."""
    n, d = V.shape
    mask = None if null_rows is None else pa.array(null_rows)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(V.reshape(-1)), d, mask=mask)
    cols: dict[str, Any] = {"i": pa.array(np.arange(n, dtype=np.int64))}
    if g is not None:
        cols["g"] = pa.array(g.astype(np.int64))
    cols["v"] = arr
    return pa.table(cols)


def connect(path: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{path}'")
    return con


def expect_error(con: duckdb.DuckDBPyConnection, sql: str, pattern: str) -> None:
    try:
        con.execute(sql).fetchall()
    except duckdb.Error as exc:
        assert re.search(pattern, str(exc)), f"error {str(exc)!r} does not match {pattern!r}"
        return
    raise AssertionError(f"no error raised for: {sql}")


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--groups", type=int, default=55)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, d, G = args.n, args.dim, args.groups

    tmp = tempfile.mkdtemp(prefix="ea_vec_test_")
    t0 = time.perf_counter()
    path = ea_build.build(tmp)
    print(
        f"built {path} in {time.perf_counter() - t0:.2f}s (duckdb {duckdb.__version__}, "
        f"platform {ea_build.detect_platform()})"
    )
    con = connect(path)

    rng = np.random.default_rng(0)
    V = rng.standard_normal((n, d)).astype(np.float32)
    gi = rng.integers(0, G, n)
    V64 = V.astype(np.float64)
    want_sum = np.stack([V64[gi == k].sum(axis=0) for k in range(G)])
    want_mean = np.stack([V64[gi == k].mean(axis=0) for k in range(G)])
    t = fixed_size_table(V, gi)
    con.register("t_arrow", t)
    con.execute("CREATE TABLE t AS SELECT * FROM t_arrow")
    con.unregister("t_arrow")

    # ---- types / shapes --------------------------------------------------------------------
    def t_array_groupby() -> None:
        assert con.execute("SELECT typeof(v) FROM t LIMIT 1").fetchone()[0] == f"FLOAT[{d}]"
        rows = con.execute(
            "SELECT g, __ea_vec_sum(v), __ea_vec_mean(v), typeof(__ea_vec_mean(v)) "
            "FROM t GROUP BY g ORDER BY g"
        ).fetchall()
        assert len(rows) == G
        for k, s, m, ty in rows:
            assert ty == "DOUBLE[]", ty
            close(s, want_sum[k], f"sum g={k}")
            close(m, want_mean[k], f"mean g={k}")

    def t_array_no_cast() -> None:
        plan = "\n".join(
            r[1] for r in con.execute("EXPLAIN SELECT g, __ea_vec_mean(v) FROM t GROUP BY g").fetchall()
        )
        assert "CAST" not in plan.upper(), "FLOAT[N] input is cast before aggregation:\n" + plan

    def t_list_float() -> None:
        rows = con.execute(
            "SELECT g, __ea_vec_sum(v::FLOAT[]), __ea_vec_mean(v::FLOAT[]) FROM t GROUP BY g"
        ).fetchall()
        for k, s, m in rows:
            close(s, want_sum[k], f"list sum g={k}")
            close(m, want_mean[k], f"list mean g={k}")

    def t_list_double() -> None:
        rows = con.execute(
            "SELECT g, __ea_vec_sum(v::DOUBLE[]), __ea_vec_mean(v::DOUBLE[]) FROM t GROUP BY g"
        ).fetchall()
        for k, s, m in rows:
            close(s, want_sum[k], f"double[] sum g={k}")
            close(m, want_mean[k], f"double[] mean g={k}")

    def t_array_double() -> None:
        rows = con.execute(
            f"SELECT g, __ea_vec_sum(v::DOUBLE[{d}]), __ea_vec_mean(v::DOUBLE[{d}]) FROM t GROUP BY g"
        ).fetchall()
        for k, s, m in rows:
            close(s, want_sum[k], f"double[N] sum g={k}")
            close(m, want_mean[k], f"double[N] mean g={k}")

    def t_ungrouped() -> None:
        s, m = con.execute("SELECT __ea_vec_sum(v), __ea_vec_mean(v) FROM t").fetchone()
        close(s, V64.sum(axis=0), "ungrouped sum")
        close(m, V64.mean(axis=0), "ungrouped mean")

    def t_sum_exact() -> None:  # 1e-9 relative vs numpy float64 (accumulation is in double)
        rows = con.execute("SELECT g, __ea_vec_sum(v) FROM t GROUP BY g").fetchall()
        for k, s in rows:
            np.testing.assert_allclose(np.asarray(s), want_sum[k], rtol=1e-9, atol=1e-9)

    def t_single_thread_and_many_threads() -> None:
        for threads in (1, 8):
            c2 = connect(path)
            c2.execute(f"SET threads={threads}")
            c2.register("t_arrow", t)
            rows = c2.execute("SELECT g, __ea_vec_mean(v) FROM t_arrow GROUP BY g").fetchall()
            for k, m in rows:
                close(m, want_mean[k], f"threads={threads} mean g={k}")
            c2.close()

    def t_high_cardinality() -> None:
        # many groups, several threads, a small memory limit: exercises partitioned/external
        # aggregation (combine across threads, states moved between partitions)
        m_rows, dd, groups = 400_000, 8, 150_000
        W = rng.standard_normal((m_rows, dd)).astype(np.float32)
        gg = rng.integers(0, groups, m_rows)
        order = np.argsort(gg, kind="stable")
        Ws, gs = W[order].astype(np.float64), gg[order]
        starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        sums = np.add.reduceat(Ws, starts, axis=0)
        cnts = np.diff(np.r_[starts, len(gs)])
        keys = gs[starts]
        c2 = connect(path)
        c2.execute("SET threads=8")
        c2.execute("SET memory_limit='300MB'")
        c2.register("h", fixed_size_table(W, gg))
        got = c2.execute(
            "SELECT g, __ea_vec_sum(v), __ea_vec_mean(v), count(*) FROM h GROUP BY g ORDER BY g"
        ).fetchall()
        assert len(got) == len(keys), (len(got), len(keys))
        gs_ = np.array([r[0] for r in got])
        assert (gs_ == keys).all()
        S = np.array([r[1] for r in got])
        M = np.array([r[2] for r in got])
        np.testing.assert_allclose(S, sums, rtol=RTOL, atol=1e-6)
        np.testing.assert_allclose(M, sums / cnts[:, None], rtol=RTOL, atol=1e-6)
        c2.close()

    # ---- NULL semantics -----------------------------------------------------------------------
    def t_null_vectors() -> None:
        keep = (np.arange(n) % 10) != 3
        con.register("tn_arrow", fixed_size_table(V, gi, null_rows=~keep))
        con.execute("CREATE OR REPLACE TABLE tn AS SELECT * FROM tn_arrow")
        con.unregister("tn_arrow")
        assert con.execute("SELECT count(*) FROM tn WHERE v IS NULL").fetchone()[0] == int((~keep).sum())
        rows = con.execute(
            "SELECT g, __ea_vec_sum(v), __ea_vec_mean(v), __ea_vec_mean(v::FLOAT[]) FROM tn GROUP BY g"
        ).fetchall()
        for k, s, m, ml in rows:
            sel = keep & (gi == k)
            close(s, V64[sel].sum(axis=0), f"null-vec sum g={k}")
            close(m, V64[sel].mean(axis=0), f"null-vec mean g={k}")
            close(ml, V64[sel].mean(axis=0), f"null-vec list mean g={k}")

    def t_null_elements() -> None:
        values = """(1, [1.0, NULL, 3.0]), (1, [3.0, 4.0, NULL]), (1, NULL),
                    (2, [1.0, 2.0, 3.0]), (2, [5.0, 6.0, 7.0])"""
        for cast in ("::FLOAT[]", "::DOUBLE[]", "::FLOAT[3]", "::DOUBLE[3]"):
            rows = con.execute(
                f"SELECT g, __ea_vec_sum(v), __ea_vec_mean(v) FROM (SELECT g, v0{cast} AS v "
                f"FROM (VALUES {values}) x(g, v0)) GROUP BY g ORDER BY g"
            ).fetchall()
            assert rows[0] == (1, [4.0, None, None], [2.0, None, None]), (cast, rows[0])
            assert rows[1] == (2, [6.0, 8.0, 10.0], [3.0, 4.0, 5.0]), (cast, rows[1])

    def t_null_elements_big() -> None:
        # NULL element at position 7 in one row of group 0 only, across many rows/threads
        con.execute("""CREATE OR REPLACE TABLE te AS SELECT i, g,
                        CASE WHEN i = (SELECT min(i) FROM t WHERE g = 0)
                             THEN list_transform(v::FLOAT[], (x, j) -> CASE WHEN j = 8 THEN NULL ELSE x END)
                             ELSE v::FLOAT[] END AS v FROM t""")
        rows = dict(con.execute("SELECT g, __ea_vec_mean(v) FROM te GROUP BY g").fetchall())
        m0 = rows[0]
        assert m0[7] is None and all(x is not None for j, x in enumerate(m0) if j != 7), "NULL position"
        want = want_mean[0].copy()
        got = np.array([np.nan if x is None else x for x in m0])
        close(np.delete(got, 7), np.delete(want, 7), "null-elem mean g=0 other positions")
        close(rows[1], want_mean[1], "null-elem mean g=1")
        # also as FLOAT[N] (ARRAY child validity)
        rows = dict(con.execute(f"SELECT g, __ea_vec_sum(v::FLOAT[{d}]) FROM te GROUP BY g").fetchall())
        assert rows[0][7] is None and rows[0][6] is not None

    def t_empty_and_all_null() -> None:
        assert con.execute("SELECT __ea_vec_mean(v), __ea_vec_sum(v) FROM t WHERE false").fetchone() == (
            None,
            None,
        )
        assert con.execute("SELECT __ea_vec_mean(NULL::FLOAT[])").fetchone() == (None,)
        rows = con.execute("""SELECT g, __ea_vec_mean(v), __ea_vec_sum(v) FROM (VALUES
                                (1, NULL::FLOAT[]), (1, NULL), (2, [1.0, 2.0]::FLOAT[])) x(g, v)
                              GROUP BY g ORDER BY g""").fetchall()
        assert rows == [(1, None, None), (2, [1.0, 2.0], [1.0, 2.0])], rows
        con.register("ta_arrow", fixed_size_table(V, gi, null_rows=(gi == 3)))
        rows = con.execute("SELECT g, __ea_vec_mean(v) FROM ta_arrow GROUP BY g ORDER BY g").fetchall()
        con.unregister("ta_arrow")
        assert rows[3][1] is None and rows[2][1] is not None and rows[4][1] is not None
        # zero-length vectors are vectors: mean of [] is []
        assert con.execute(
            "SELECT __ea_vec_mean(v) FROM (VALUES ([]::FLOAT[]), ([]::FLOAT[])) x(v)"
        ).fetchone() == ([],)

    # ---- errors ----------------------------------------------------------------------------
    def t_dimension_mismatch() -> None:
        expect_error(
            con,
            "SELECT __ea_vec_mean(v) FROM (VALUES ([1.0, 2.0]::FLOAT[]), ([1.0, 2.0, 3.0])) x(v)",
            re.escape("vec_mean: dimension mismatch (2 vs 3)"),
        )
        expect_error(
            con,
            "SELECT __ea_vec_sum(v) FROM (VALUES ([1.0, 2.0, 3.0]::DOUBLE[]), ([1.0, 2.0])) x(v)",
            re.escape("vec_sum: dimension mismatch (3 vs 2)"),
        )
        # NULL vectors do not take part in the check; other groups are independent
        assert con.execute(
            "SELECT __ea_vec_mean(v) FROM (VALUES (NULL::FLOAT[]), ([1.0, 2.0])) x(v)"
        ).fetchone() == ([1.0, 2.0],)
        rows = con.execute(
            "SELECT g, __ea_vec_mean(v) FROM (VALUES (1, [1.0]::FLOAT[]), (2, [1.0, 2.0])) x(g, v) "
            "GROUP BY g ORDER BY g"
        ).fetchall()
        assert rows == [(1, [1.0]), (2, [1.0, 2.0])], rows
        # a mismatch far away from the first row (other chunk / other thread -> combine)
        con.execute(
            "CREATE OR REPLACE TABLE tm AS SELECT g, v::FLOAT[] AS v FROM t UNION ALL "
            "SELECT 5, [1.0, 2.0]::FLOAT[]"
        )
        expect_error(
            con,
            "SELECT g, __ea_vec_mean(v) FROM tm GROUP BY g",
            rf"vec_mean: dimension mismatch \(({d} vs 2|2 vs {d})\)",
        )
        expect_error(
            con, "SELECT __ea_vec_sum(v) FROM tm", rf"vec_sum: dimension mismatch \(({d} vs 2|2 vs {d})\)"
        )

    # ---- other query shapes ------------------------------------------------------------------
    def t_windows() -> None:
        nw, dw = min(5000, n), 16  # > one 2048-row chunk
        w = V64[:nw, :dw]
        wg = gi[:nw] % 4
        c2 = connect(path)
        c2.register("w", fixed_size_table(V[:nw, :dw], wg))
        # OVER () and OVER (PARTITION BY g): DuckDB's constant aggregator (bug #21537 path)
        r = c2.execute("SELECT i, __ea_vec_mean(v) OVER () FROM w ORDER BY i").fetchall()
        for i, m in r[:5] + r[-5:]:
            close(m, w.mean(axis=0), f"OVER () row {i}")
        r = c2.execute("SELECT i, g, __ea_vec_sum(v) OVER (PARTITION BY g) FROM w ORDER BY i").fetchall()
        for i, k, s in r:
            close(s, w[wg == k].sum(axis=0), f"PARTITION BY row {i}")
        # sliding / cumulative frames (segment tree)
        r = c2.execute(
            "SELECT i, __ea_vec_mean(v) OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
            "FROM w ORDER BY i"
        ).fetchall()
        for i, m in r:
            close(m, w[max(0, i - 2) : i + 1].mean(axis=0), f"sliding row {i}")
        r = c2.execute(
            "SELECT i, __ea_vec_sum(v) OVER (PARTITION BY g ORDER BY i) FROM w ORDER BY i"
        ).fetchall()
        cum: dict[int, np.ndarray] = {}
        for i, k in zip(range(nw), wg, strict=True):
            cum[k] = cum.get(k, 0) + w[i]
            close(r[i][1], cum[k], f"cumulative row {i}")
        c2.close()

    def t_order_by_filter_distinct() -> None:
        w = V64[:5000, :8]
        c2 = connect(path)
        c2.register("w", fixed_size_table(V[:5000, :8], gi[:5000] % 3))
        close(
            c2.execute("SELECT __ea_vec_sum(v ORDER BY i DESC) FROM w").fetchone()[0],
            w.sum(axis=0),
            "ORDER BY",
        )
        rows = dict(c2.execute("SELECT g, __ea_vec_mean(v ORDER BY i) FROM w GROUP BY g").fetchall())
        for k in range(3):
            close(rows[k], w[gi[:5000] % 3 == k].mean(axis=0), f"ORDER BY group {k}")
        close(
            c2.execute("SELECT __ea_vec_mean(v) FILTER (WHERE i % 2 = 0) FROM w").fetchone()[0],
            w[::2].mean(axis=0),
            "FILTER",
        )
        close(
            c2.execute(
                "SELECT __ea_vec_sum(DISTINCT v) FROM (SELECT v FROM w UNION ALL SELECT v FROM w)"
            ).fetchone()[0],
            w.sum(axis=0),
            "DISTINCT",
        )
        c2.close()

    def t_list_aggregate() -> None:
        r = con.execute(
            "SELECT list_aggregate([[1.0, 2.0], NULL, [3.0, 4.0]]::FLOAT[][], '__ea_vec_mean')"
        ).fetchone()
        assert r == ([2.0, 3.0],), r

    def t_reload() -> None:
        c2 = connect(path)
        c2.execute(f"LOAD '{path}'")  # loading twice is a no-op
        assert c2.execute("SELECT __ea_vec_sum(v) FROM (VALUES ([1.0, 2.0])) x(v)").fetchone() == (
            [1.0, 2.0],
        )
        c2.close()

    for name, fn in [
        ("FLOAT[N] GROUP BY sum/mean", t_array_groupby),
        ("FLOAT[N] binds without a cast", t_array_no_cast),
        ("FLOAT[] list", t_list_float),
        ("DOUBLE[] list", t_list_double),
        ("DOUBLE[N] array", t_array_double),
        ("no GROUP BY", t_ungrouped),
        ("sums within 1e-9 of numpy float64", t_sum_exact),
        ("threads=1 / threads=8", t_single_thread_and_many_threads),
        ("150k groups, 8 threads, 300MB memory limit", t_high_cardinality),
        ("NULL vectors skipped", t_null_vectors),
        ("NULL elements -> NULL positions", t_null_elements),
        ("NULL element in a 384-d group", t_null_elements_big),
        ("empty / all-NULL groups -> NULL", t_empty_and_all_null),
        ("dimension mismatch error", t_dimension_mismatch),
        ("window frames", t_windows),
        ("ORDER BY / FILTER / DISTINCT", t_order_by_filter_distinct),
        ("list_aggregate(..., '__ea_vec_mean')", t_list_aggregate),
        ("LOAD twice / second connection", t_reload),
    ]:
        check(name, fn)

    # ---- timing ---------------------------------------------------------------------------------
    q = "SELECT g, __ea_vec_mean(v) FROM t GROUP BY g"
    res = con.execute(q).fetchall()
    assert len(res) == G
    t_sql = best_of(lambda: con.execute(q).fetchall(), args.repeat)
    t_sql_arrow = best_of(lambda: con.execute(q).to_arrow_table(), args.repeat)
    t_np = best_of(lambda: np.stack([V[gi == k].mean(axis=0) for k in range(G)]), args.repeat)
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(
        f"\ntiming, {n:,} x FLOAT[{d}], {G} groups, best of {args.repeat} "
        f"({os.cpu_count()} CPUs, duckdb threads={threads}):"
    )
    print(f"  ea_vec_mean GROUP BY (fetchall)    : {t_sql * 1e3:8.2f} ms")
    print(f"  ea_vec_mean GROUP BY (arrow)       : {t_sql_arrow * 1e3:8.2f} ms")
    print(f"  numpy mask-per-group mean          : {t_np * 1e3:8.2f} ms")

    con.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print(f"\n{len(FAILS)} check(s) FAILED")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
