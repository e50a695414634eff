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
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "embed_assets", "sql", "native")
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

    # ---- __ea_vec_pack ------------------------------------------------------------------------
    def unpack(blob: Any, dim: int) -> np.ndarray:
        """BLOB -> (count, dim) float32 matrix; checks the 8-byte header and the length."""
        assert blob is not None, "got NULL"
        blob = bytes(blob)
        hdim, reserved = struct.unpack_from("<II", blob, 0)
        assert (hdim, reserved) == (dim, 0), f"header {(hdim, reserved)} != {(dim, 0)}"
        assert (len(blob) - 8) % (4 * max(dim, 1)) == 0, f"length {len(blob)} not 8 + 4*dim*count"
        return np.frombuffer(blob, dtype="<f4", offset=8).reshape(-1, dim)

    def same_rows(M: np.ndarray, want: np.ndarray, what: str) -> None:
        assert M.shape == want.shape, f"{what}: shape {M.shape} != {want.shape}"
        bad = np.flatnonzero((want != M).any(axis=1)) if M.size else np.array([], dtype=np.int64)
        assert bad.size == 0, (
            f"{what}: {bad.size} packed rows differ from the rows of list(id), first at {bad[:5]}"
        )

    # shuffled ids, so that "row k of the blob is vector list(id)[k]" cannot hold by accident
    PN, PD = 30_000, 384
    PV = np.random.default_rng(1).standard_normal((PN, PD)).astype(np.float32)
    QN, QD = 400_000, 16
    QV = np.random.default_rng(2).standard_normal((QN, QD)).astype(np.float32)

    def id_table(M: np.ndarray, seed: int, g: np.ndarray | None = None) -> pa.Table:
        perm = np.random.default_rng(seed).permutation(len(M))
        cols: dict[str, Any] = {"id": pa.array(perm.astype(np.int64))}
        if g is not None:
            cols["g"] = pa.array(g[perm].astype(np.int64))
        cols["v"] = pa.FixedSizeListArray.from_arrays(pa.array(M[perm].reshape(-1)), M.shape[1])
        return pa.table(cols)

    con.register("p_arrow", id_table(PV, 11))
    con.execute("CREATE TABLE tp AS SELECT * FROM p_arrow")  # 30k x FLOAT[384]
    con.unregister("p_arrow")

    def pack_connect(threads: int) -> duckdb.DuckDBPyConnection:
        c2 = connect(path)
        c2.execute(f"SET threads={threads}")
        return c2

    def t_pack_alignment_384() -> None:
        assert con.execute("SELECT typeof(v) FROM tp LIMIT 1").fetchone()[0] == f"FLOAT[{PD}]"
        for threads in (1, 2, 8):
            c2 = pack_connect(threads)
            pt = id_table(PV, 11)
            c2.execute("CREATE TABLE tp AS SELECT * FROM pt")
            # 30k rows are one row group (one scanning thread); an Arrow table of 2048-row
            # batches is scanned by all threads, so their states meet in combine
            c2.register("p_arrow", pa.Table.from_batches(pt.to_batches(max_chunksize=2048)))
            ids, blob, ty = c2.execute(
                "SELECT list(id), __ea_vec_pack(v), typeof(__ea_vec_pack(v)) FROM tp"
            ).fetchone()
            assert ty == "BLOB", ty
            assert len(blob) == 8 + 4 * PD * PN, len(blob)
            ids = np.asarray(ids)
            assert np.array_equal(np.sort(ids), np.arange(PN)), f"threads={threads}: ids not a permutation"
            same_rows(unpack(blob, PD), PV[ids], f"threads={threads}")
            # also with the filter callers use, and straight off an Arrow scan
            ids, blob = c2.execute("SELECT list(id), __ea_vec_pack(v) FROM tp WHERE v IS NOT NULL").fetchone()
            same_rows(unpack(blob, PD), PV[np.asarray(ids)], f"threads={threads} WHERE v IS NOT NULL")
            ids, blob = c2.execute("SELECT list(id), __ea_vec_pack(v) FROM p_arrow").fetchone()
            same_rows(unpack(blob, PD), PV[np.asarray(ids)], f"threads={threads} arrow scan")
            assert len(ids) == PN
            c2.close()

    def t_pack_alignment_400k() -> None:
        # 400k rows = several row groups: parallel scans, one combine per thread
        for threads in (1, 2, 8):
            c2 = pack_connect(threads)
            c2.register("q_arrow", id_table(QV, 12))
            c2.execute("CREATE TABLE tq AS SELECT * FROM q_arrow")
            c2.unregister("q_arrow")
            ids, blob = c2.execute("SELECT list(id), __ea_vec_pack(v) FROM tq").fetchone()
            ids = np.asarray(ids)
            assert np.array_equal(np.sort(ids), np.arange(QN)), f"threads={threads}: ids not a permutation"
            same_rows(unpack(blob, QD), QV[ids], f"400k threads={threads}")
            # list(v) of the same SELECT as a second witness of the order
            lv, blob = c2.execute("SELECT list(v), __ea_vec_pack(v) FROM tq WHERE id % 7 = 0").fetchone()
            same_rows(
                unpack(blob, QD), np.asarray(lv, dtype=np.float32), f"400k threads={threads} vs list(v)"
            )
            c2.close()

    def t_pack_no_cast() -> None:
        plan = "\n".join(r[1] for r in con.execute("EXPLAIN SELECT __ea_vec_pack(v) FROM tp").fetchall())
        assert "CAST" not in plan.upper(), "FLOAT[N] input is cast before packing:\n" + plan

    def t_pack_types() -> None:
        m, dd = 5000, 24
        W64 = np.random.default_rng(3).standard_normal((m, dd)) * 1e3  # not float32-exact
        W32 = W64.astype(np.float32)
        c2 = pack_connect(2)
        c2.register(
            "w64",
            pa.table(
                {
                    "id": pa.array(np.arange(m, dtype=np.int64)),
                    "v": pa.FixedSizeListArray.from_arrays(pa.array(W64.reshape(-1)), dd),
                }
            ),
        )
        c2.register("w32", fixed_size_table(W32).rename_columns(["id", "v"]))
        for src, cast, want in [
            ("w32", "::FLOAT[]", W32),
            ("w64", "::DOUBLE[]", W32),
            ("w64", "", W32),  # DOUBLE[N]
            ("w64", f"::DOUBLE[{dd}]", W32),
            ("w32", f"::DOUBLE[{dd}]", W32),
            ("w32", "::DOUBLE[]", W32),
        ]:
            ids, blob = c2.execute(f"SELECT list(id), __ea_vec_pack(v{cast}) FROM {src}").fetchone()
            same_rows(unpack(blob, dd), want[np.asarray(ids)], f"{src}{cast}")
        assert c2.execute("SELECT typeof(v) FROM w64 LIMIT 1").fetchone()[0] == f"DOUBLE[{dd}]"
        # small literal cases, every overload
        for cast in ("::FLOAT[]", "::DOUBLE[]", "::FLOAT[2]", "::DOUBLE[2]"):
            blob = c2.execute(
                f"SELECT __ea_vec_pack(v{cast}) FROM (VALUES ([1.5, -2.0]), ([0.1, 3.0])) x(v)"
            ).fetchone()[0]
            assert bytes(blob) == struct.pack("<II4f", 2, 0, 1.5, -2.0, 0.1, 3.0), (cast, bytes(blob))
        # zero-length vectors: header only
        assert bytes(
            c2.execute("SELECT __ea_vec_pack(v) FROM (VALUES ([]::FLOAT[])) x(v)").fetchone()[0]
        ) == (struct.pack("<II", 0, 0))
        c2.close()

    def t_pack_nulls() -> None:
        m, dd = 9000, 12
        W = np.random.default_rng(4).standard_normal((m, dd)).astype(np.float32)
        null_rows = (np.arange(m) % 7 == 2) | (np.arange(m) < 3)  # includes the very first rows
        c2 = pack_connect(2)
        c2.register("wn", fixed_size_table(W, null_rows=null_rows).rename_columns(["id", "v"]))
        for cast in ("", "::FLOAT[]", "::DOUBLE[]", f"::DOUBLE[{dd}]"):
            ids, blob = c2.execute(f"SELECT list(id), __ea_vec_pack(v{cast}) FROM wn").fetchone()
            ids = np.asarray(ids)
            assert len(ids) == m  # list() keeps the NULL rows' ids ...
            kept = ids[~null_rows[ids]]  # ... pack skips their vectors
            same_rows(unpack(blob, dd), W[kept], f"NULL vectors skipped{cast}")
            ids, blob = c2.execute(
                f"SELECT list(id), __ea_vec_pack(v{cast}) FROM wn WHERE v IS NOT NULL"
            ).fetchone()
            same_rows(unpack(blob, dd), W[np.asarray(ids)], f"WHERE v IS NOT NULL{cast}")
        # all-NULL / empty -> NULL
        assert c2.execute("SELECT __ea_vec_pack(v) FROM wn WHERE false").fetchone() == (None,)
        assert c2.execute("SELECT __ea_vec_pack(v) FROM wn WHERE v IS NULL").fetchone() == (None,)
        assert c2.execute("SELECT __ea_vec_pack(NULL::FLOAT[])").fetchone() == (None,)
        assert c2.execute(
            "SELECT __ea_vec_pack(v) FROM (VALUES (NULL::DOUBLE[3]), (NULL)) x(v)"
        ).fetchone() == (None,)
        rows = c2.execute("""SELECT g, __ea_vec_pack(v) FROM (VALUES
                               (1, NULL::FLOAT[]), (1, NULL), (2, [1.0, 2.0]::FLOAT[]), (2, NULL)) x(g, v)
                             GROUP BY g ORDER BY g""").fetchall()
        assert rows[0] == (1, None), rows
        assert bytes(rows[1][1]) == struct.pack("<II2f", 2, 0, 1.0, 2.0), rows
        c2.close()

    def t_pack_errors() -> None:
        null_msg = re.escape("similarity_join: vectors contain NULL elements")
        for cast in ("::FLOAT[]", "::DOUBLE[]", "::FLOAT[3]", "::DOUBLE[3]"):
            expect_error(
                con,
                f"SELECT __ea_vec_pack(v{cast}) FROM (VALUES ([1.0, 2.0, 3.0]), ([1.0, NULL, 3.0])) x(v)",
                null_msg,
            )
        # a NULL element (the last one) in one row deep inside the big table, as FLOAT[N] and FLOAT[]
        con.execute(f"""CREATE OR REPLACE TABLE tpn AS SELECT id, (CASE WHEN id = {PN - 1}
                          THEN list_transform(v::FLOAT[], (x, j) -> CASE WHEN j = {PD} THEN NULL ELSE x END)
                          ELSE v::FLOAT[] END)::FLOAT[{PD}] AS v FROM tp""")
        assert con.execute(f"SELECT count(*) FROM tpn WHERE list_count(v::FLOAT[]) < {PD}").fetchone() == (1,)
        expect_error(con, "SELECT __ea_vec_pack(v) FROM tpn", null_msg)
        expect_error(con, "SELECT __ea_vec_pack(v::FLOAT[]) FROM tpn", null_msg)
        expect_error(con, "SELECT __ea_vec_pack(v::DOUBLE[]) FROM tpn WHERE v IS NOT NULL", null_msg)
        expect_error(
            con,
            "SELECT __ea_vec_pack(v) FROM (VALUES ([1.0, 2.0]::FLOAT[]), (NULL), ([1.0, 2.0, 3.0])) x(v)",
            re.escape("similarity_join: dimension mismatch (2 vs 3)"),
        )
        expect_error(
            con,
            "SELECT __ea_vec_pack(v) FROM (VALUES ([1.0, 2.0, 3.0]::DOUBLE[]), ([1.0, 2.0])) x(v)",
            re.escape("similarity_join: dimension mismatch (3 vs 2)"),
        )
        # mismatch met in combine (rows of two lengths spread over chunks and threads)
        con.execute(
            "CREATE OR REPLACE TABLE tpm AS SELECT id, v::FLOAT[] AS v FROM tp UNION ALL "
            "SELECT -1, [1.0, 2.0]::FLOAT[]"
        )
        expect_error(
            con,
            "SELECT __ea_vec_pack(v) FROM tpm",
            rf"similarity_join: dimension mismatch \(({PD} vs 2|2 vs {PD})\)",
        )
        # other groups are independent
        rows = con.execute(
            "SELECT g, __ea_vec_pack(v) FROM (VALUES (1, [1.0]::FLOAT[]), (2, [1.0, 2.0])) x(g, v) "
            "GROUP BY g ORDER BY g"
        ).fetchall()
        assert [bytes(b)[:4] for _, b in rows] == [struct.pack("<I", 1), struct.pack("<I", 2)], rows

    def t_pack_group_by() -> None:
        # the 30k x 384 table by n groups, then 400k x 16 with 50k groups under a small memory
        # limit (partitioned aggregation: states combined across threads and moved)
        for threads in (1, 2):
            c2 = pack_connect(threads)
            gp = np.random.default_rng(5).integers(0, G, PN)
            c2.register("p_arrow", id_table(PV, 13, gp))
            rows = c2.execute("SELECT g, list(id), __ea_vec_pack(v) FROM p_arrow GROUP BY g").fetchall()
            assert sorted(r[0] for r in rows) == sorted(set(gp.tolist())), "groups"
            for k, ids, blob in rows:
                ids = np.asarray(ids)
                assert np.array_equal(np.sort(ids), np.flatnonzero(gp == k)), f"group {k} ids"
                same_rows(unpack(blob, PD), PV[ids], f"threads={threads} group {k}")
            c2.close()
        groups = 50_000
        gq = np.random.default_rng(6).integers(0, groups, QN)
        c2 = pack_connect(8)
        c2.execute("SET memory_limit='300MB'")
        c2.register("q_arrow", id_table(QV, 14, gq))
        rows = c2.execute("SELECT g, list(id), __ea_vec_pack(v) FROM q_arrow GROUP BY g").fetchall()
        assert len(rows) == len(np.unique(gq)), (len(rows), len(np.unique(gq)))
        seen = 0
        for k, ids, blob in rows:
            ids = np.asarray(ids)
            assert (gq[ids] == k).all(), f"group {k} ids"
            same_rows(unpack(blob, QD), QV[ids], f"50k groups: group {k}")
            seen += len(ids)
        assert seen == QN, seen
        c2.close()

    def t_pack_other_shapes() -> None:
        # not needed by the callers; must not crash and, where DuckDB feeds rows in a defined
        # order, must follow it
        m, dd = 5000, 8
        W = np.random.default_rng(7).standard_normal((m, dd)).astype(np.float32)
        c2 = pack_connect(2)
        c2.register("w", fixed_size_table(W).rename_columns(["id", "v"]))
        same_rows(
            unpack(c2.execute("SELECT __ea_vec_pack(v ORDER BY id DESC) FROM w").fetchone()[0], dd),
            W[::-1],
            "ORDER BY id DESC",
        )
        same_rows(
            unpack(c2.execute("SELECT __ea_vec_pack(v ORDER BY id) FROM w").fetchone()[0], dd),
            W,
            "ORDER BY id",
        )
        ids, blob = c2.execute(
            "SELECT list(id) FILTER (WHERE id % 3 = 0), __ea_vec_pack(v) FILTER (WHERE id % 3 = 0) FROM w"
        ).fetchone()
        same_rows(unpack(blob, dd), W[np.asarray(ids)], "FILTER")
        r = c2.execute("SELECT id, __ea_vec_pack(v) OVER () FROM w ORDER BY id LIMIT 3").fetchall()
        for _, blob in r:
            assert sorted(map(tuple, unpack(blob, dd).tolist())) == sorted(map(tuple, W.tolist())), "OVER ()"
        r = c2.execute(
            "SELECT id, __ea_vec_pack(v) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
            "FROM w ORDER BY id"
        ).fetchall()
        for i, blob in r:
            M = unpack(blob, dd)
            assert sorted(map(tuple, M.tolist())) == sorted(map(tuple, W[max(0, i - 2) : i + 1].tolist())), i
        r = c2.execute(
            "SELECT list_aggregate([[1.0, 2.0], NULL, [3.0, 4.0]]::FLOAT[][], '__ea_vec_pack')"
        ).fetchone()
        assert bytes(r[0]) == struct.pack("<II4f", 2, 0, 1.0, 2.0, 3.0, 4.0), r
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
        ("pack: 30k x FLOAT[384], rows aligned with list(id), threads 1/2/8", t_pack_alignment_384),
        ("pack: 400k x FLOAT[16], rows aligned with list(id), threads 1/2/8", t_pack_alignment_400k),
        ("pack: FLOAT[N] binds without a cast", t_pack_no_cast),
        ("pack: FLOAT[] / DOUBLE[] / DOUBLE[N] -> float32", t_pack_types),
        ("pack: NULL vectors skipped, all-NULL -> NULL", t_pack_nulls),
        ("pack: NULL element / dimension mismatch errors", t_pack_errors),
        ("pack: GROUP BY (n groups; 50k groups, 8 threads, 300MB)", t_pack_group_by),
        ("pack: ORDER BY / FILTER / windows / list_aggregate", t_pack_other_shapes),
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

    # __ea_vec_pack vs list(vector), 30k x FLOAT[384], result fetched to Arrow
    rp = max(args.repeat, 5)
    q_pack, q_list = "SELECT __ea_vec_pack(v) FROM tp", "SELECT list(v) FROM tp"
    assert con.execute(q_pack).to_arrow_table().num_rows == 1
    t_pack = best_of(lambda: con.execute(q_pack).to_arrow_table(), rp)
    t_pack_in = best_of(lambda: con.execute("SELECT octet_length(__ea_vec_pack(v)) FROM tp").fetchall(), rp)
    t_list = best_of(lambda: con.execute(q_list).to_arrow_table(), rp)
    print(f"\ntiming, {PN:,} x FLOAT[{PD}] ({PN * PD * 4 / 1e6:.0f} MB), best of {rp}, threads={threads}:")
    print(f"  __ea_vec_pack(v) -> arrow           : {t_pack * 1e3:8.2f} ms")
    print(f"  octet_length(__ea_vec_pack(v))      : {t_pack_in * 1e3:8.2f} ms   (in DuckDB, no transfer)")
    print(f"  list(v) -> arrow                    : {t_list * 1e3:8.2f} ms")

    con.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print(f"\n{len(FAILS)} check(s) FAILED")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
