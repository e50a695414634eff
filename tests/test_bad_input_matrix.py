"""The bad-input matrix: every case is refused with an error that names the problem, and
the store is exactly as it was before (versions, tags, every table's rows)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import (
    EmbedAssetsError,
    HashEmbedder,
    QueryError,
    SchemaMismatchError,
    Store,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
    connect,
    embed_table,
)
from embed_assets.sql import run_sql

from .conftest import COUNTS, vectors_table


def _vec(rows: list) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


def _t(ids: list, vec: Any = None, **cols: Any) -> pa.Table:
    base = vectors_table(ids, sec=["a"] * len(ids)) if vec is None else \
        pa.table({"id": ids, "sec": ["a"] * len(ids), "vector": vec})
    for k, v in cols.items():
        base = base.append_column(k, pa.array(v))
    return base


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("matrix") / "store")
    s.write("t", vectors_table([1, 2, 3], sec=["a", "b", "c"]), key="id", model="m1")
    s.table("t").tag("prod")
    embed_table(s, "docs", {"id": [1, 2], "text": ["text editor", "web browser"]}, key="id",
                text="text", embedder=HashEmbedder(dimension=8))
    return s


def _state(store: Store) -> list[Any]:
    out = []
    for name in store.table_names():
        t = store.table(name)
        out.append((name, [(v.version, v.rows, v.tags) for v in t.versions(with_properties=False)],
                    t.read().sort_by(t.meta.key).to_pylist()))
    return out


W = "write"
T = "table"
Case = tuple[str, Callable[[Store], Any], type[Exception], str]
PY: list[Case] = [
    ("nan vector", lambda s: s.write("t", _t([9], _vec([[np.nan, 0, 0, 0]])), key="id"),
     ValidationError, "NaN or infinite"),
    ("inf vector", lambda s: s.write("t", _t([9], _vec([[np.inf, 0, 0, 0]])), key="id"),
     ValidationError, "NaN or infinite"),
    ("float64 overflow", lambda s: s.write("t", _t([9], pa.array([[1e300, 0.0, 0.0, 0.0]])), key="id"),
     ValidationError, "NaN or infinite"),
    ("wrong dimension", lambda s: s.write("t", vectors_table([9], dim=5, sec=["a"]), key="id"),
     SchemaMismatchError, "4-dimensional"),
    ("null vector", lambda s: s.write("t", _t([9], pa.array([None], pa.list_(pa.float32()))), key="id"),
     ValidationError, "null vector"),
    ("ragged vectors", lambda s: s.write("t", _t([8, 9], _vec([[1, 0, 0, 0], [1, 0]])), key="id"),
     ValidationError, "different lengths"),
    ("non-numeric vector", lambda s: s.write("t", _t([9], pa.array([["a", "b", "c", "d"]])), key="id"),
     ValidationError, "non-numeric"),
    ("null key", lambda s: s.write("t", vectors_table([None], sec=["a"]), key="id"),
     ValidationError, "null value"),
    ("duplicate keys", lambda s: s.write("t", vectors_table([7, 7], sec=["a", "a"]), key="id"),
     ValidationError, "duplicated key"),
    ("missing key column", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="nope"),
     ValidationError, "key column 'nope' not found"),
    ("missing vector column", lambda s: s.write("t", pa.table({"id": [9]}), key="id"),
     ValidationError, "no 'vector' column"),
    ("append a stored key", lambda s: s.write("t", vectors_table([1], sec=["a"]), key="id", mode="append"),
     ValidationError, "already exist"),
    ("another model", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id", model="m2"),
     SchemaMismatchError, "model 'm1'"),
    ("unknown mode", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id", mode="merge"),
     ValidationError, "unknown write mode"),
    ("unknown metric", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id", mode="overwrite",
                                          metric="hamming"), ValidationError, "unknown metric"),
    ("path traversal name", lambda s: s.write("..x", vectors_table([1]), key="id"),
     ValidationError, "'..'"),
    ("parent directory name", lambda s: s.write("../x", vectors_table([1]), key="id"),
     ValidationError, "path separator"),
    ("empty name", lambda s: s.write("", vectors_table([1]), key="id"), ValidationError, "empty"),
    ("slash in name", lambda s: s.write("a/b", vectors_table([1]), key="id"),
     ValidationError, "path separator"),
    ("name too long", lambda s: s.write("x" * 200, vectors_table([1]), key="id"),
     ValidationError, "the limit is 128"),
    ("control character name", lambda s: s.write("a\nb", vectors_table([1]), key="id"),
     ValidationError, "control characters"),
    ("name ending .lance", lambda s: s.write("x.lance", vectors_table([1]), key="id"),
     ValidationError, "'.lance'"),
    ("partition rows outside", lambda s: s.write("t", vectors_table([9], sec=["b"]), key="id",
                                                  mode="replace_partition", partition=("sec", "a")),
     ValidationError, "outside"),
    ("replace_partition without partition",
     lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id", mode="replace_partition"),
     ValidationError, "needs partition"),
    ("delete_keys with append", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id",
                                                   mode="append", delete_keys=[1]),
     ValidationError, "delete_keys is only valid"),
    ("keep_keys with upsert", lambda s: s.write("t", vectors_table([9], sec=["a"]), key="id",
                                                 keep_keys=[1]), ValidationError, "keep_keys is only valid"),
    ("backtick column", lambda s: s.write("u", vectors_table([1]).append_column("a`b", pa.array([1])),
                                          key="id"), ValidationError, "backtick"),
    ("unknown version", lambda s: s.table("t").read(99), VersionNotFoundError, "no version 99"),
    ("unknown tag", lambda s: s.table("t").read("nope"), VersionNotFoundError, "no tag 'nope'"),
    ("non-canonical version ref", lambda s: s.table("t").read("01"), VersionNotFoundError, "'01'"),
    ("tag already set", lambda s: s.table("t").tag("prod"), ValidationError, "already points"),
    ("numeric tag", lambda s: s.table("t").tag("123"), ValidationError, "must start with a letter"),
    ("untag unknown", lambda s: s.table("t").untag("nope"), VersionNotFoundError, "no tag 'nope'"),
    ("k = 0", lambda s: s.table("t").search([1, 0, 0, 0], k=0), ValidationError, "positive integer"),
    ("k = True", lambda s: s.table("t").search([1, 0, 0, 0], k=True), ValidationError, "positive integer"),
    ("query dimension", lambda s: s.table("t").search([1, 0], k=1), ValidationError, "dimension 2"),
    ("NaN query", lambda s: s.table("t").search([np.nan, 0, 0, 0], k=1), ValidationError, "NaN"),
    ("zero query", lambda s: s.table("t").search([0, 0, 0, 0], k=1), ValidationError, "all zeros"),
    ("empty query text", lambda s: s.table("docs").search("  ", k=1, embedder=HashEmbedder(dimension=8)),
     ValidationError, "empty"),
    ("two statements in where", lambda s: s.table("t").search([1, 0, 0, 0], k=1, where="id=1; id=2"),
     ValidationError, "';'"),
    ("query embedder of another model",
     lambda s: s.table("docs").search("editor", k=1, embedder=HashEmbedder(dimension=8, name="other")),
     SchemaMismatchError, "hash-bow:8"),
    ("cleanup without criteria", lambda s: s.table("t").cleanup(), ValidationError, "keep_last and/or"),
    ("cleanup keep_last=0", lambda s: s.table("t").cleanup(keep_last=0), ValidationError, ">= 1"),
    ("cleanup negative grace", lambda s: s.table("t").cleanup(keep_last=1, grace=dt.timedelta(-1)),
     ValidationError, "negative"),
    ("unknown table", lambda s: s.table("nope").get([1]), TableNotFoundError, "tables: docs, t"),
    ("null text", lambda s: embed_table(s, "docs", {"id": [5], "text": [None]}, key="id", text="text",
                                        embedder=HashEmbedder(dimension=8)), ValidationError, "keys 5"),
    ("blank text", lambda s: embed_table(s, "docs", {"id": [5], "text": ["  "]}, key="id", text="text",
                                         embedder=HashEmbedder(dimension=8)), ValidationError, "empty text"),
    ("missing text column", lambda s: embed_table(s, "docs", {"id": [5], "body": ["x"]}, key="id",
                                                  text="text", embedder=HashEmbedder(dimension=8)),
     ValidationError, "text column 'text' not found"),
    ("reserved column", lambda s: embed_table(s, "docs", {"id": [5], "text": ["x"], "_m": [1]}, key="id",
                                              text="text", columns=["_m"],
                                              embedder=HashEmbedder(dimension=8)),
     ValidationError, "reserved"),
    ("rollback to unknown version", lambda s: s.table("t").rollback(42), VersionNotFoundError,
     "no version 42"),
]


def _sql(store: Store, query: str, params: list | None = None) -> Any:
    con = connect(store, extensions=())
    try:
        return (con.execute(query, params) if params else con.sql(query)).fetchall()
    finally:
        con.close()


SQL: list[Case] = [
    ("knn dimension", lambda s: _sql(s, "SELECT * FROM knn('t', [1.0, 0.0], 1)"), Exception,
     "dimension mismatch (query 2 vs table 4)"),
    ("knn NaN", lambda s: _sql(s, "SELECT * FROM knn('t', ['nan'::FLOAT, 0, 0, 0], 1)"), Exception, "NaN"),
    ("knn zero vector", lambda s: _sql(s, "SELECT * FROM knn('t', ?, 1)", [[0.0, 0.0, 0.0, 0.0]]),
     Exception, "all zeros"),
    ("unknown version view", lambda s: _sql(s, 'SELECT * FROM "t@99"'), VersionNotFoundError,
     "no version 99"),
    ("empty version ref", lambda s: _sql(s, 'SELECT * FROM "t@"'), VersionNotFoundError, "after '@'"),
    ("join of two dimensions", lambda s: _sql(s, "SELECT * FROM similarity_join('t', 'docs', 1)"),
     Exception, "dimension mismatch"),
    ("vec_add dimensions", lambda s: _sql(s, "SELECT vec_add([1, 2, 3], [1, 2])"), Exception,
     "vec_add: dimension mismatch (3 vs 2)"),
    ("empty statement", lambda s: run_sql(s, "   ", extensions=()), ValidationError, "empty"),
    ("syntax error", lambda s: run_sql(s, "SELEC 1", extensions=()), QueryError, "syntax error"),
]


@pytest.mark.parametrize("case", PY + SQL, ids=[c[0] for c in PY + SQL])
def test_python_and_sql_bad_input(store: Store, case: Case) -> None:
    _name, call, exc, fragment = case
    before = _state(store)
    with pytest.raises(exc) as err:
        call(store)
    assert fragment in str(err.value), str(err.value)
    if exc is not Exception:
        assert isinstance(err.value, EmbedAssetsError)
    assert _state(store) == before
    COUNTS["bad_inputs"] += 1


CLI = [
    (("embed", "t2", "--from", "/nonexistent.parquet", "--key", "id", "--text", "x"), "does not exist"),
    (("search", "nope", "editor"), "not found"),
    (("rollback", "t", "--to", "42"), "no version 42"),
    (("tag", "t", "bad tag"), "tag 'bad tag'"),
    (("cleanup", "t", "--older-than", "soon"), "bad duration"),
    (("sql", "SELEC 1"), "syntax error"),
    (("search", "docs", "editor", "--version", "01"), "'01'"),
    (("search", "docs", "editor", "--where", "id = 1; id = 2"), "';'"),
]


@pytest.mark.parametrize("args,fragment", CLI,
                         ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in enumerate(CLI)])
def test_cli_bad_input(store: Store, args: tuple[str, ...], fragment: str) -> None:
    before = _state(store)
    proc = subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", store.uri, *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]
    assert _state(store) == before
    COUNTS["bad_inputs"] += 1


def test_the_matrix_is_large_enough() -> None:
    assert len(PY) + len(SQL) + len(CLI) >= 40
    assert Path(__file__).exists()
