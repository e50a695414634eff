"""The ea_vec C extension behind vec_mean/vec_sum: it builds here, passes its numpy checks,
and a connect()ed session gives the same answers with and without it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embed_assets.sql import _native
from embed_assets.sql._connection import connect

needs_cc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler: the "
                              "extension cannot be built and connect() uses the Python macros")


@needs_cc
def test_extension_builds_and_passes_its_numpy_checks() -> None:
    script = Path(__file__).parent / "native_checks.py"
    proc = subprocess.run([sys.executable, str(script), "--n", "3000", "--groups", "7",
                           "--repeat", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout


@needs_cc
def test_connect_loads_it() -> None:
    assert _native.extension_file() is not None, _native.status()
    con = connect(extensions=())
    fns = {r[0] for r in con.execute(
        "SELECT function_name FROM duckdb_functions() WHERE function_type = 'aggregate' "
        "AND starts_with(function_name, '__ea_vec_')"
    ).fetchall()}
    assert fns == {"__ea_vec_mean", "__ea_vec_sum", "__ea_vec_pack"}


QUERIES = [
    "SELECT g, vec_mean(v) AS m, vec_sum(v) AS s FROM t GROUP BY g ORDER BY g",
    "SELECT vec_mean(v) FROM t WHERE g = 99",  # no rows: NULL
    "SELECT g, list_vec_mean(list(v) OVER (PARTITION BY g ORDER BY i ROWS BETWEEN 4 PRECEDING "
    "AND CURRENT ROW)) FROM t QUALIFY i % 97 = 0 ORDER BY i",
    "SELECT list_vec_sum([[1, 2], NULL, [3, NULL]]), list_vec_mean([]::FLOAT[][])",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_same_results_with_and_without_it(sql: str) -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2000, 16)).astype(np.float32)
    rows = [(i, int(i % 9), None if i % 113 == 0 else v[i].tolist()) for i in range(2000)]
    got = []
    for native in (True, False):
        con = connect(extensions=(), native=native)
        con.execute("CREATE TABLE t (i INTEGER, g INTEGER, v FLOAT[16])")
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        got.append(con.execute(sql).fetchall())
        con.close()
    a, b = got
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, list):
                np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float),
                                           rtol=1e-9, atol=1e-12)
            else:
                assert x == y


def test_disabled_build_falls_back(monkeypatch) -> None:
    monkeypatch.setenv("EMBED_ASSETS_NATIVE", "0")
    _native.extension_file.cache_clear()
    try:
        assert _native.extension_file() is None and "disabled" in _native.status()
        con = connect(extensions=())
        assert con.execute("SELECT vec_mean(v) FROM (VALUES ([1.0, 3.0])) t(v)").fetchall() == \
            [([1.0, 3.0],)]
    finally:
        _native.extension_file.cache_clear()
