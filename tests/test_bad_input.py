"""Every refused write names the problem and leaves the stored table exactly as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import SchemaMismatchError, Store, ValidationError, embed_table

from .conftest import snapshot, vectors_table


@pytest.fixture
def filled(store: Store) -> Store:
    store.write("t", vectors_table([1, 2, 3], sec=["a", "b", "c"]), key="id", model="m1")
    store.table("t").tag("prod")
    return store


def _vec(rows: list) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


BAD_WRITES = {
    "nan vector": (lambda: pa.table({"id": [9], "sec": ["a"], "vector": _vec([[np.nan, 0, 0, 0]])}),
                   {}, ValidationError, "NaN or infinite"),
    "inf vector": (lambda: pa.table({"id": [9], "sec": ["a"], "vector": _vec([[np.inf, 0, 0, 0]])}),
                   {}, ValidationError, "NaN or infinite"),
    "float64 overflow": (lambda: pa.table({"id": [9], "sec": ["a"],
                                           "vector": pa.array([[1e300, 0.0, 0.0, 0.0]])}),
                         {}, ValidationError, "NaN or infinite"),
    "wrong dimension": (lambda: vectors_table([9], dim=5, sec=["a"]), {}, SchemaMismatchError,
                        "4-dimensional"),
    "ragged vectors": (lambda: pa.table({"id": [8, 9], "sec": ["a", "a"],
                                         "vector": _vec([[1, 2, 3, 4], [1, 2, 3]])}),
                       {}, ValidationError, "different lengths"),
    "null vector": (lambda: pa.table({"id": [9], "sec": ["a"], "vector": _vec([None])}),
                    {}, ValidationError, "null vector"),
    "non-numeric vector": (lambda: pa.table({"id": [9], "sec": ["a"],
                                             "vector": pa.array([["a", "b", "c", "d"]])}),
                           {}, ValidationError, "non-numeric"),
    "duplicate keys": (lambda: vectors_table([5, 5], sec=["a", "a"]), {}, ValidationError,
                       "duplicated key"),
    "null key": (lambda: vectors_table([None, 5], sec=["a", "a"]), {}, ValidationError,
                 "null value"),
    "missing key column": (lambda: vectors_table([5], sec=["a"]).rename_columns(
        ["pk", "sec", "vector"]), {}, ValidationError, "key column 'id' not found"),
    "no vector column": (lambda: pa.table({"id": [5], "sec": ["a"]}), {}, ValidationError,
                         "no 'vector' column"),
    "other model": (lambda: vectors_table([5], sec=["a"]), {"model": "m2"}, SchemaMismatchError,
                    "model 'm1'"),
    "extra column": (lambda: vectors_table([5], sec=["a"], extra=[1]), {}, SchemaMismatchError,
                     "unexpected extra"),
    "missing column": (lambda: vectors_table([5]), {}, SchemaMismatchError, "missing sec"),
    "uncastable column": (lambda: vectors_table([5], sec=[[1, 2]]), {}, SchemaMismatchError,
                          "column 'sec'"),
    "append existing key": (lambda: vectors_table([1], sec=["a"]), {"mode": "append"},
                            ValidationError, "already exist"),
    "bad mode": (lambda: vectors_table([5], sec=["a"]), {"mode": "merge"}, ValidationError,
                 "unknown write mode"),
    "other key column": (lambda: vectors_table([5], sec=["a"]).rename_columns(
        ["sec2", "id", "vector"]).select(["id", "sec2", "vector"]).rename_columns(
        ["idx", "sec", "vector"]), {"key": "idx"}, SchemaMismatchError, "keyed on 'id'"),
}


@pytest.mark.parametrize("case", sorted(BAD_WRITES))
def test_bad_write_is_refused_and_table_unchanged(filled, case):
    make, kwargs, exc, pattern = BAD_WRITES[case]
    before = snapshot(filled, "t")
    kw = {"key": "id", "mode": "upsert", **kwargs}
    with pytest.raises(exc, match=pattern):
        filled.write("t", make(), **kw)
    assert snapshot(filled, "t") == before


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "a\\b", "x\x00y", "tab\there", "a..b",
                                  ".hidden", "-dash", "x" * 129, "t.lance", "sp ace", "é/x"])
def test_odd_table_names_are_refused(store, name):
    with pytest.raises(ValidationError, match="table name"):
        store.write(name, vectors_table([1]), key="id")
    assert store.table_names() == []


def test_bad_embed_input_leaves_table_unchanged(filled, store, hash_embedder):
    src = {"id": [1, 2], "text": ["a web browser", "an editor"]}
    embed_table(store, "e", src, key="id", text="text", embedder=hash_embedder)
    before = snapshot(store, "e")
    cases = [
        ({"id": [1, 3], "text": ["ok", None]}, "null or empty text"),
        ({"id": [1, 3], "text": ["ok", "   "]}, "null or empty text"),
        ({"id": [3, 3], "text": ["x", "y"]}, "duplicated key"),
        ({"id": [3], "body": ["x"]}, "text column 'text' not found"),
    ]
    for src2, pattern in cases:
        with pytest.raises(ValidationError, match=pattern):
            embed_table(store, "e", src2, key="id", text="text", embedder=hash_embedder)
        assert snapshot(store, "e") == before


def test_killed_writer_leaves_table_readable(tmp_path):
    """SIGKILL in the middle of a large write: the table is still at a complete version."""
    store = Store(tmp_path / "s")
    store.write("big", vectors_table([0, 1], dim=64), key="id")
    before = snapshot(store, "big")
    code = f"""
import numpy as np, pyarrow as pa, sys
from embed_assets import Store
s = Store({str(store.uri)!r})
n = 400_000
mat = np.random.default_rng(0).normal(size=(n, 64)).astype("float32")
t = pa.table({{"id": np.arange(10, n + 10), "vector": pa.FixedSizeListArray.from_arrays(
    pa.array(mat.reshape(-1)), 64)}})
print("writing", flush=True)
s.write("big", t, key="id", mode="append")
print("done", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LANCE_LOG": "error"})
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    t = store.table("big")
    versions = [v.version for v in t.versions()]
    assert versions in ([1], [1, 2])  # never a half-written version
    if versions == [1]:
        assert snapshot(store, "big") == before
    else:
        assert t.count_rows() == 400_002
    assert t.read(1).num_rows == 2
