"""Filters DuckDB pushes into store-view scans are answered from memory, with exactly the
rows Lance's own filtered scan gives (real Lance table, real DuckDB)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from embed_assets import Store
from embed_assets.sql import connect
from embed_assets.sql._pushdown import ScanDataset, key_offsets

from .conftest import vectors_table

KEYS = np.array([-2, 1, 2, 3, 4, 7, 10])
OFFSETS = np.arange(len(KEYS))[::-1].copy()


def offsets_of(expr: pc.Expression) -> list[int] | None:
    got = key_offsets(expr, "id", KEYS, OFFSETS, pa.int64())
    return None if got is None else sorted(got.tolist())


def test_reads_duckdb_join_filters_and_ranges() -> None:
    """The expression objects DuckDB pushes down (a join filter, a lookup, a range) are
    evaluated over the key index; their text is never read (issue 22)."""
    f = pc.field("id")
    join = f.isin(pa.array([7, 3, -2], pa.int64())) & (f >= -2) & (f <= 7)
    assert offsets_of(join) == sorted(OFFSETS[[0, 3, 5]].tolist())
    assert offsets_of(f == 5) == []
    assert offsets_of(f == 4) == [OFFSETS[4]]
    assert offsets_of((f > 1) & (f < 4)) == sorted(OFFSETS[[2, 3]].tolist())
    assert offsets_of((f == 1) | (f == 10)) == sorted(OFFSETS[[1, 6]].tolist())


@pytest.mark.parametrize("expr", [
    pc.field("other") == 5,  # another column
    (pc.field("id") == 5) & (pc.field("section") == "a"),
    pc.field("vector").is_null(),
])
def test_anything_else_is_left_to_the_general_path(expr: pc.Expression) -> None:
    assert key_offsets(expr, "id", KEYS, OFFSETS, pa.int64()) is None


@pytest.fixture()
def lookups(tmp_path) -> Store:
    s = Store(tmp_path / "s")
    keys = list(range(0, 3000, 3))
    s.write("t", vectors_table(keys, dim=8, section=[f"s{k % 7}" for k in keys]), key="id")
    # an upsert with deletions: offsets no longer equal positions of the first write
    s.write("t", vectors_table([0, 3, 2999], dim=8, seed=5, section=["x", "x", "x"]), key="id",
            mode="upsert", delete_keys=[6, 9])
    return s


QUERIES = [
    "SELECT id, section, vector FROM t WHERE id = 3",
    "SELECT id, section FROM t WHERE id IN (0, 12, 2999, 4, 1000000)",
    "SELECT id, vector FROM t WHERE id BETWEEN 10 AND 40",
    "SELECT id FROM t WHERE id > 2990",
    "SELECT id, section FROM t WHERE section = 's3' AND id < 100",
    "SELECT t.id, t.section FROM t JOIN (SELECT unnest([3, 6, 9, 12, 2999]) AS k) ON t.id = k",
    'SELECT id, section FROM "t@1" WHERE id IN (6, 9, 2999)',
    "SELECT count(*) FROM t WHERE id = 12",
]


@pytest.mark.parametrize("sql", QUERIES)
def test_filtered_scans_match_lance(lookups: Store, sql: str, monkeypatch) -> None:
    con = connect(lookups, extensions=())
    fast = sorted(map(repr, con.execute(sql).fetchall()))
    con.close()
    # The same query with the in-memory path switched off: Lance plans every scan.
    monkeypatch.setattr(ScanDataset, "_selective", lambda self, columns, filt: None)
    con = connect(lookups, extensions=())
    slow = sorted(map(repr, con.execute(sql).fetchall()))
    con.close()
    assert fast == slow and fast


def test_key_lookups_do_not_go_to_lance(lookups: Store, monkeypatch) -> None:
    calls: list[object] = []
    orig = ScanDataset._key_lookup

    def spy(self, filt):
        got = orig(self, filt)
        calls.append(got)
        return got

    monkeypatch.setattr(ScanDataset, "_key_lookup", spy)
    con = connect(lookups, extensions=())
    assert con.execute("SELECT section FROM t WHERE id = 12").fetchall() == [("s5",)]
    assert calls and calls[-1] is not None and len(calls[-1]) == 1


# -- the Substrait reader (issue 22: the no-knn key lookup regressed 1.18 -> 1.39 ms when
# every pushed filter was evaluated by Arrow over all the version's keys) ------------------
def test_duckdb_key_filters_are_read_from_substrait_not_evaluated(lookups: Store,
                                                                   monkeypatch) -> None:
    """The filters DuckDB really pushes for a lookup, an IN list, a range and a key join are
    read from their Substrait form and answered by binary search; none is evaluated by
    Arrow over every key."""
    from embed_assets.sql import _pushdown
    from embed_assets.sql._substrait import key_filter

    pushed: list[pc.Expression] = []
    orig = ScanDataset._key_lookup

    def spy(self, filt):
        pushed.append(filt)
        return orig(self, filt)

    monkeypatch.setattr(ScanDataset, "_key_lookup", spy)
    con = connect(lookups, extensions=())
    for sql in ("SELECT section FROM t WHERE id = 12",
                "SELECT section FROM t WHERE id IN (0, 12, 2999)",
                "SELECT section FROM t WHERE id BETWEEN 10 AND 40",
                "SELECT t.section FROM t JOIN (SELECT unnest([3, 12, 2999]) AS k) ON t.id = k"):
        pushed.clear()
        con.execute(sql).fetchall()
        assert pushed, sql
        assert all(key_filter(f, "id", pa.int64()) is not None for f in pushed), (sql, pushed)
    con.close()

    def no_evaluation(*_a, **_k):
        raise AssertionError("a key lookup evaluated its filter over every key")

    monkeypatch.setattr(_pushdown.pa, "table", no_evaluation)
    assert offsets_of(pc.field("id") == 4) == [OFFSETS[4]]


@pytest.mark.parametrize("typ", [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.uint64()])
def test_substrait_reading_agrees_with_arrow_on_random_filters(typ: pa.DataType) -> None:
    """Whatever the reader answers equals Arrow's own evaluation of the expression; what it
    does not understand (OR, NOT, floats, NULLs) falls back to that evaluation."""
    from embed_assets.sql._substrait import key_filter

    rng = np.random.default_rng(7)
    lo_v = 0 if pa.types.is_unsigned_integer(typ) else -60
    keys = np.unique(rng.integers(lo_v, 60, 40)).astype(typ.to_pandas_dtype())
    offsets = rng.permutation(len(keys)).astype(np.int64)
    f = pc.field("id")

    def lit() -> int:
        return int(rng.integers(lo_v - 5, 65))

    def term() -> pc.Expression:
        kind = rng.integers(0, 9)
        if kind == 0:
            return f.isin(pa.array([lit() for _ in range(rng.integers(0, 5))], pa.int64()))
        if kind == 6:
            return f == 2.5
        if kind == 7:
            return ~(f == lit())
        if kind == 8:
            return pc.scalar(lit()) <= f
        return {1: f == lit(), 2: f < lit(), 3: f <= lit(), 4: f > lit(), 5: f >= lit()}[int(kind)]

    read = 0
    for _ in range(300):
        expr = term()
        for _ in range(rng.integers(0, 3)):
            expr = (expr & term()) if rng.random() < 0.8 else (expr | term())
        want = pa.table({"id": pa.array(keys, typ), "o": offsets}).filter(expr)
        got = key_offsets(expr, "id", keys, offsets, typ)
        assert got is not None and sorted(got.tolist()) == sorted(want["o"].to_pylist()), expr
        read += key_filter(expr, "id", typ) is not None
    # most took the binary search (unsigned keys have no Substrait type: Arrow evaluates)
    assert read > 100 or pa.types.is_unsigned_integer(typ)
