"""The bad-input sweep, rerun from outside (issue 23's floor: no raw DuckDB or Python
exception among the bad inputs a new user tries).

Every case goes through a public interface -- the Python API, SQL through ``connect()``
and the ``embed-assets`` command line (a real subprocess per case) -- and must be refused:

* with an error of the embed_assets.errors tree (a QueryError for any SQL statement),
  whose message names the problem in the user's terms (the fragment given) and no
  internal name (``__qv``, ``_ea_...``, DuckDB's "Python exception occurred" wrapper,
  a frame ``file(line)``, a traceback);
* by the CLI with exit code 2 and one line on stderr (every command line runs through the
  CLI's ``main()`` in another process, tests/cli_sweep_runner.py; a sample also as a
  process of its own);
* with the store exactly as it was: every table's versions, tags and rows.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embed_assets import (
    EmbedAssetsError,
    HashEmbedder,
    KeyNotFoundError,
    QueryError,
    SchemaMismatchError,
    SQLConnection,
    StorageError,
    Store,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
    build_index,
    build_text_index,
    cleanup_snapshots,
    connect,
    embed_table,
    open_snapshot,
    snapshot,
)
from embed_assets.sql import run_sql

from .conftest import COUNTS, plain_duckdb, vectors_table

# What a message for people never shows: our internal names and DuckDB's UDF wrapping.
INTERNAL = re.compile(r"__qv|\b_?_ea_|Python exception occurred|\bAt:\s|\.py\(\d+\)|Traceback"
                      r"|File \"|\.rs:\d+")
H8 = HashEmbedder(dimension=8)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("sweep") / "store")
    s.write("t", vectors_table([1, 2, 3], sec=["a", "b", "c"]), key="id", model="m1")
    s.write("t", vectors_table([4], seed=1, sec=["a"]), key="id", model="m1")
    s.table("t").tag("prod", 1)
    s.write("s", pa.table({"name": ["x", "y"], "vector": pa.array(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], pa.list_(pa.float32()))}), key="name")
    embed_table(s, "docs", {"id": [1, 2], "text": ["text editor", "web browser"]}, key="id",
                text="text", embedder=H8)
    embed_table(s, "notes", {"id": [1, 2], "text": ["text editor", "web browser"]}, key="id",
                text="text", embedder=H8)
    build_text_index(s.table("notes"))  # for hybrid_search; docs has no full-text index
    return s


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("sweep-files")
    good = d / "src.parquet"
    pq.write_table(pa.table({"id": [7, 8], "text": ["an editor", "a browser"], "sec": ["a", "b"]}), good)
    dup = d / "dup.parquet"
    pq.write_table(pa.table({"id": [7, 7], "text": ["an editor", "a browser"]}), dup)
    nulls = d / "nulls.parquet"
    pq.write_table(pa.table({"id": [7, 8], "text": ["an editor", None]}), nulls)
    garbage = d / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    csv = d / "src.csv"
    csv.write_text("id,text\n7,an editor\n8,a browser\n")
    bad_csv = d / "bad.csv"
    bad_csv.write_bytes(b"\xff\xfe\x00garbage\n\"unclosed")
    txt = d / "src.txt"
    txt.write_text("hello")
    a_file = d / "a_file"
    a_file.write_text("not a folder")
    empty = d / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), empty)
    return {"good": str(good), "dup": str(dup), "nulls": str(nulls), "garbage": str(garbage),
            "csv": str(csv), "bad_csv": str(bad_csv), "txt": str(txt), "file": str(a_file),
            "dir": str(d), "empty": str(empty)}


def _state(store: Store) -> list[Any]:
    out = []
    for name in store.table_names():
        t = store.table(name)
        out.append((name, [(v.version, v.rows, v.tags) for v in t.versions(with_properties=False)],
                    t.read().sort_by(t.meta.key).to_pylist()))
    return out


@pytest.fixture
def unchanged(store: Store) -> Iterator[None]:
    before = _state(store)
    yield
    assert _state(store) == before, "a refused input changed the store"


def _check_message(exc: BaseException, fragment: str) -> None:
    text = str(exc)
    assert fragment.lower() in text.lower(), f"{type(exc).__name__}: {text}"
    assert not INTERNAL.search(text), f"internal name in: {text}"


# -- Python ------------------------------------------------------------------------------------
def _vec(rows: list) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


def _t(ids: list, vec: Any = None) -> pa.Table:
    if vec is None:
        return vectors_table(ids, sec=["a"] * len(ids))
    return pa.table({"id": ids, "sec": ["a"] * len(ids), "vector": vec})


def _w(**kw: Any) -> Callable[[Store], Any]:
    data = kw.pop("data", None)
    name = kw.pop("name", "t")
    kw.setdefault("key", "id")

    def call(s: Store) -> Any:
        return s.write(name, _t([9]) if data is None else data() if callable(data) else data, **kw)
    return call


def _tb(method: str, *args: Any, table: str = "t", **kw: Any) -> Callable[[Store], Any]:
    return lambda s: getattr(s.table(table), method)(*args, **kw)


def _embed(src: Any, name: str = "docs", **kw: Any) -> Callable[[Store], Any]:
    kw.setdefault("key", "id")
    kw.setdefault("text", "text")
    kw.setdefault("embedder", H8)
    return lambda s: embed_table(s, name, src, **kw)


Case = tuple[str, Callable[[Store], Any], type[BaseException], str]
V = ValidationError
SM = SchemaMismatchError
VN = VersionNotFoundError
TN = TableNotFoundError
Q4 = [1.0, 0.0, 0.0, 0.0]

PY: list[Case] = [
    # Store.write
    ("write nan", _w(data=_t([9], _vec([[np.nan, 0, 0, 0]]))), V, "NaN or infinite"),
    ("write inf", _w(data=_t([9], _vec([[np.inf, 0, 0, 0]]))), V, "NaN or infinite"),
    ("write wrong dim", _w(data=vectors_table([9], dim=5, sec=["a"])), SM, "4-dimensional"),
    ("write null vector", _w(data=_t([9], _vec([None]))), V, "null vector"),
    ("write empty vector", _w(data=_t([9], _vec([[]]))), V, "non-empty vectors"),
    ("write ragged", _w(data=_t([8, 9], _vec([[1, 0, 0, 0], [1, 0]]))), V, "different lengths"),
    ("write string vector", _w(data=_t([9], pa.array([["a", "b", "c", "d"]]))), V, "non-numeric"),
    ("write scalar vector", _w(data=pa.table({"id": [9], "sec": ["a"], "vector": [1.0]})), V, "vector"),
    ("write null key", _w(data=vectors_table([None], sec=["a"])), V, "null value"),
    ("write duplicate keys", _w(data=vectors_table([7, 7], sec=["a", "a"])), V, "duplicated key"),
    ("write missing key column", _w(key="nope"), V, "key column 'nope' not found"),
    ("write key None", _w(key=None), V, "key"),
    ("write key int", _w(key=5), V, "key"),
    ("write no vector column", _w(data=pa.table({"id": [9], "sec": ["a"]})), V, "no 'vector' column"),
    ("write data None", lambda s: s.write("t", None, key="id"), V, "data"),
    ("write data int", lambda s: s.write("t", 5, key="id"), V, "data"),
    ("write data str", lambda s: s.write("t", "rows", key="id"), V, "data"),
    ("write data list", lambda s: s.write("t", [1, 2], key="id"), V, "data"),
    ("write data dict of scalars", lambda s: s.write("t", {"id": 9, "vector": 1}, key="id"), V,
     "cannot convert"),
    ("write append stored key", _w(data=vectors_table([1], sec=["a"]), mode="append"), V, "already exist"),
    ("write other model", _w(model="m2"), SM, "model 'm1'"),
    ("write other key column", _w(data=pa.table({"k": [9], "sec": ["a"], "vector": _vec([Q4])}), key="k"),
     SM, "keyed on 'id'"),
    ("write extra column", _w(data=vectors_table([9], sec=["a"], extra=[1])), SM, "extra"),
    ("write missing column", _w(data=vectors_table([9])), SM, "missing sec"),
    ("write uncastable column", _w(data=vectors_table([9], sec=[[1, 2]])), SM, "column 'sec'"),
    ("write unknown mode", _w(mode="merge"), V, "unknown write mode"),
    ("write mode None", _w(mode=None), V, "write mode"),
    ("write unknown metric", _w(mode="overwrite", metric="hamming"), V, "unknown metric"),
    ("write other metric", _w(metric="l2"), SM, "metric"),
    ("write name ..", _w(name="..x"), V, "'..'"),
    ("write name ../x", _w(name="../x"), V, "path separator"),
    ("write name empty", _w(name=""), V, "empty"),
    ("write name None", _w(name=None), V, "table name"),
    ("write name int", _w(name=5), V, "table name"),
    ("write name slash", _w(name="a/b"), V, "path separator"),
    ("write name long", _w(name="x" * 200), V, "the limit is 128"),
    ("write name newline", _w(name="a\nb"), V, "control characters"),
    ("write name .lance", _w(name="x.lance"), V, "'.lance'"),
    ("write name with @", _w(name="a@1"), V, "table name"),
    ("write partition outside", _w(data=vectors_table([9], sec=["b"]), mode="replace_partition",
                                   partition=("sec", "a")), V, "outside"),
    ("write replace_partition alone", _w(mode="replace_partition"), V, "needs partition"),
    ("write partition unknown column", _w(mode="replace_partition", partition=("nope", "a")), V, "nope"),
    ("write partition not a pair", _w(mode="replace_partition", partition="a"), V, "partition"),
    ("write delete_keys with append", _w(mode="append", delete_keys=[1]), V, "delete_keys is only valid"),
    ("write keep_keys with upsert", _w(keep_keys=[1]), V, "keep_keys is only valid"),
    ("write backtick column", _w(name="u", data=vectors_table([1]).append_column("a`b", pa.array([1]))),
     V, "backtick"),
    ("write reserved column", _w(data=vectors_table([9], sec=["a"]).append_column("_model", pa.array(["x"]))),
     SM, "unexpected _model"),
    ("write properties not a mapping", _w(properties=["a"]), V, "properties"),
    # EmbeddingTable reads
    ("read unknown version", _tb("read", 99), VN, "no version 99"),
    ("read unknown tag", _tb("read", "nope"), VN, "no tag 'nope'"),
    ("read version 01", _tb("read", "01"), VN, "'01'"),
    ("read version -1", _tb("read", -1), VN, "-1"),
    ("read version 0", _tb("read", 0), VN, "version 0"),
    ("read version float", _tb("read", 1.5), V, "1.5"),
    ("read version bool", _tb("read", True), V, "True"),
    ("read version list", _tb("read", [1]), V, "version"),
    ("read unknown column", _tb("read", columns=["nope"]), V, "nope"),
    ("read columns str", _tb("read", columns="id"), V, "columns"),
    ("read where unknown column", _tb("read", where="nope = 1"), V, "nope"),
    ("read where syntax", _tb("read", where="id = "), V, "parsing"),
    ("read where two statements", _tb("read", where="id = 1; id = 2"), V, "';'"),
    ("count_rows unknown version", _tb("count_rows", 99), VN, "no version 99"),
    ("meta_at unknown tag", _tb("meta_at", "nope"), VN, "no tag 'nope'"),
    ("properties unknown version", _tb("properties", 99), VN, "no version 99"),
    ("partitions unknown version", _tb("partitions", 99), VN, "no version 99"),
    ("resolve unknown tag", _tb("resolve", "nope"), VN, "no tag 'nope'"),
    ("resolve empty", _tb("resolve", ""), VN, "version"),
    ("to_pandas unknown version", _tb("to_pandas", 99), VN, "no version 99"),
    ("dataset unknown version", _tb("dataset", 99), VN, "no version 99"),
    # get
    ("get missing key error", _tb("get", [999, 1], missing="error"), KeyNotFoundError, "999"),
    ("get missing policy", _tb("get", [1], missing="nope"), V, "missing"),
    ("get keys None", _tb("get", None), V, "keys"),
    ("get keys int", _tb("get", 5), V, "keys"),
    ("get keys str", _tb("get", "abc"), V, "keys"),
    ("get key of another type", _tb("get", ["x"], missing="error"), KeyNotFoundError, "'x'"),
    ("get unknown version", _tb("get", [1], 99), VN, "no version 99"),
    ("get unknown column", _tb("get", [1], columns=["nope"]), V, "nope"),
    # search
    ("search k 0", _tb("search", Q4, k=0), V, "positive integer"),
    ("search k -1", _tb("search", Q4, k=-1), V, "positive integer"),
    ("search k 2.5", _tb("search", Q4, k=2.5), V, "positive integer"),
    ("search k str", _tb("search", Q4, k="3"), V, "positive integer"),
    ("search k None", _tb("search", Q4, k=None), V, "positive integer"),
    ("search k True", _tb("search", Q4, k=True), V, "positive integer"),
    ("search query None", _tb("search", None, k=1), V, "query"),
    ("search query empty list", _tb("search", [], k=1), V, "dimension 0"),
    ("search query dimension", _tb("search", [1, 0], k=1), V, "dimension 2"),
    ("search query NaN", _tb("search", [np.nan, 0, 0, 0], k=1), V, "NaN"),
    ("search query inf", _tb("search", [np.inf, 0, 0, 0], k=1), V, "NaN"),
    ("search query zeros", _tb("search", [0, 0, 0, 0], k=1), V, "all zeros"),
    ("search query dict", _tb("search", {"a": 1}, k=1), V, "query"),
    ("search query strings", _tb("search", ["a", "b", "c", "d"], k=1), V, "query"),
    ("search query matrix", _tb("search", [[1, 0, 0, 0], [0, 1, 0, 0]], k=1), V, "query"),
    ("search text on a vector table", _tb("search", "editor", k=1), V, "embedder"),
    ("search blank text", _tb("search", "  ", k=1, table="docs", embedder=H8), V, "empty"),
    ("search other model", _tb("search", "editor", k=1, table="docs",
                               embedder=HashEmbedder(dimension=8, name="other")), SM, "hash-bow:8"),
    ("search embedder int", _tb("search", "editor", k=1, table="docs", embedder=5), V, "embedder"),
    ("search where two statements", _tb("search", Q4, k=1, where="id=1; id=2"), V, "';'"),
    ("search where unknown column", _tb("search", Q4, k=1, where="nope = 1"), V, "nope"),
    ("search where syntax", _tb("search", Q4, k=1, where="id = = 1"), V, "filter"),
    ("search unknown version", _tb("search", Q4, k=1, version=99), VN, "no version 99"),
    ("search unknown tag", _tb("search", Q4, k=1, version="nope"), VN, "no tag 'nope'"),
    ("search unknown column", _tb("search", Q4, k=1, columns=["nope"]), V, "nope"),
    ("search unknown metric", _tb("search", Q4, k=1, metric="hamming"), V, "metric"),
    ("search unknown mode", _tb("search", Q4, k=1, mode="nope"), V, "mode"),
    ("search text mode without index", _tb("search", "editor", k=1, table="docs", mode="text"), V,
     "index"),
    ("search unknown output", _tb("search", Q4, k=1, output="xml"), V, "output"),
    ("search partition unknown", _tb("search", Q4, k=1, partition=("nope", "a")), V, "nope"),
    ("search_batch k 0", _tb("search_batch", [Q4], k=0), V, "positive integer"),
    ("search_batch None", _tb("search_batch", None, k=1), V, "quer"),
    ("search_batch ragged", _tb("search_batch", [Q4, [1.0, 0.0]], k=1), V, "dimension"),
    ("search_batch dimension", _tb("search_batch", [[1.0, 0.0]], k=1), V, "dimension"),
    ("search_batch NaN", _tb("search_batch", [[np.nan, 0, 0, 0]], k=1), V, "NaN"),
    ("search_batch threads 0", _tb("search_batch", [Q4], k=1, threads=0), V, "threads"),
    # tags
    ("tag exists", _tb("tag", "prod"), V, "already points"),
    ("tag numeric", _tb("tag", "123"), V, "must start with a letter"),
    ("tag empty", _tb("tag", ""), V, "tag"),
    ("tag None", _tb("tag", None), V, "tag"),
    ("tag int", _tb("tag", 5), V, "tag"),
    ("tag with space", _tb("tag", "bad tag"), V, "bad tag"),
    ("tag with slash", _tb("tag", "a/b"), V, "a/b"),
    ("tag unknown version", _tb("tag", "newtag", 99), VN, "no version 99"),
    ("tag unknown tag version", _tb("tag", "newtag", "nope"), VN, "no tag 'nope'"),
    ("retag unknown version", _tb("retag", "prod", 99), VN, "no version 99"),
    ("retag bad name", _tb("retag", "bad tag"), V, "bad tag"),
    ("untag unknown", _tb("untag", "nope"), VN, "no tag 'nope'"),
    ("untag empty", _tb("untag", ""), VN, "no tag ''"),
    ("untag None", _tb("untag", None), VN, "no tag None"),
    # rollback
    ("rollback unknown version", _tb("rollback", 42), VN, "no version 42"),
    ("rollback unknown tag", _tb("rollback", "nope"), VN, "no tag 'nope'"),
    ("rollback -1", _tb("rollback", -1), VN, "-1"),
    ("rollback 0", _tb("rollback", 0), VN, "version 0"),
    ("rollback None", _tb("rollback", None), V, "rollback"),
    ("rollback float", _tb("rollback", 1.5), V, "1.5"),
    ("rollback name@N", _tb("rollback", "t@1"), VN, "t@1"),
    # cleanup
    ("cleanup nothing", _tb("cleanup"), V, "keep_last and/or"),
    ("cleanup keep_last 0", _tb("cleanup", keep_last=0), V, ">= 1"),
    ("cleanup keep_last -1", _tb("cleanup", keep_last=-1), V, ">= 1"),
    ("cleanup keep_last str", _tb("cleanup", keep_last="3"), V, "keep_last"),
    ("cleanup keep_last float", _tb("cleanup", keep_last=1.5), V, "keep_last"),
    ("cleanup older_than bad", _tb("cleanup", older_than="soon"), V, "soon"),
    ("cleanup older_than unit", _tb("cleanup", older_than="7x"), V, "7x"),
    ("cleanup older_than negative", _tb("cleanup", older_than=dt.timedelta(-1)), V, "negative"),
    ("cleanup older_than object", _tb("cleanup", older_than=object()), V, "older_than"),
    ("cleanup grace negative", _tb("cleanup", keep_last=1, grace=dt.timedelta(-1)), V, "negative"),
    ("cleanup grace bad", _tb("cleanup", keep_last=1, grace="abc"), V, "abc"),
    # store-level
    ("table unknown", lambda s: s.table("nope"), TN, "docs, notes, s, t"),
    ("table empty name", lambda s: s.table(""), V, "empty"),
    ("table None", lambda s: s.table(None), V, "table name"),
    ("table path", lambda s: s.table("../t"), V, "path separator"),
    ("table name@N", lambda s: s.table("t@1"), V, "table name"),
    ("drop unknown", lambda s: s.drop("nope"), TN, "nope"),
    ("Store int uri", lambda s: Store(5), V, "store"),
    ("Store empty uri", lambda s: Store(""), V, "empty"),
    ("Store unknown scheme", lambda s: Store("ftp://host/x").table_names(), StorageError, "'ftp'"),
    ("Store a file", lambda s: Store(__file__).table_names(), V, "not a directory"),
    # embed_table
    ("embed null text", _embed({"id": [5], "text": [None]}), V, "keys 5"),
    ("embed blank text", _embed({"id": [5], "text": ["  "]}), V, "empty text"),
    ("embed duplicate keys", _embed({"id": [5, 5], "text": ["a", "b"]}), V, "duplicated key"),
    ("embed missing text column", _embed({"id": [5], "body": ["x"]}), V, "text column 'text' not found"),
    ("embed missing key column", _embed({"pk": [5], "text": ["x"]}), V, "key column 'id' not found"),
    ("embed reserved column", _embed({"id": [5], "text": ["x"], "_m": [1]}, columns=["_m"]), V, "reserved"),
    ("embed unknown kept column", _embed({"id": [5], "text": ["x"]}, columns=["nope"]), V, "nope"),
    ("embed data None", _embed(None), V, "data"),
    ("embed data int", _embed(5), V, "data"),
    ("embed ragged dict", _embed({"id": [5, 6], "text": ["x"]}), V, "length"),
    ("embed unknown mode", _embed({"id": [5], "text": ["x"]}, mode="nope"), V, "mode"),
    ("embed on_empty unknown", _embed({"id": [5], "text": ["x"]}, on_empty="nope"), V,
     "empty-text policy"),
    ("embed embedder int", _embed({"id": [5], "text": ["x"]}, embedder=5), V, "embedder"),
    ("embed embedder unknown model", _embed({"id": [5], "text": ["x"]}, name="newt",
                                            embedder="/nonexistent/model"), V, "model"),
    ("embed other model", _embed({"id": [5], "text": ["x"]}, embedder=HashEmbedder(dimension=8, name="o")),
     SM, "hash-bow:8"),
    ("embed other dimension", _embed({"id": [5], "text": ["x"]}, embedder=HashEmbedder(dimension=16)),
     SM, "hash-bow"),
    ("embed no text nor image", _embed({"id": [5], "text": ["x"]}, text=None), V, "text"),
    ("embed commit_every 0", _embed({"id": [5], "text": ["x"]}, commit_every=0), V, "commit_every"),
    ("embed partition unknown", _embed({"id": [5], "text": ["x"]}, mode="replace_partition",
                                       partition=("nope", "a")), V, "nope"),
    ("embed bad table name", _embed({"id": [5], "text": ["x"]}, name="a/b"), V, "path separator"),
    ("embed text column numeric", _embed({"id": [5], "text": [1]}), V, "text"),
    # experiments (Lance branches)
    ("experiment_info unknown", _tb("experiment_info", "nope", table="docs"), VN, "no experiment 'nope'"),
    ("promote unknown", _tb("promote", "nope", table="docs"), VN, "no experiment 'nope'"),
    ("discard unknown", _tb("discard", "nope", table="docs"), VN, "no experiment 'nope'"),
    ("compare unknown", _tb("compare", "nope", table="docs"), VN, "no experiment 'nope'"),
    ("experiment bad name", _tb("experiment", "bad name", table="docs", embedder=H8), V, "'bad name'"),
    ("experiment empty name", _tb("experiment", "", table="docs", embedder=H8), V, "non-empty"),
    ("experiment name with colon", _tb("experiment", "a:1", table="docs", embedder=H8), V, "'a:1'"),
    ("experiment embedder int", _tb("experiment", "x", table="docs", embedder=5), V, "embedder"),
    ("experiment unknown metric", _tb("experiment", "x", table="docs", embedder=H8, metric="hamming"), V,
     "unknown metric"),
    ("experiment without source text", _tb("experiment", "x", embedder=H8), V, "no source text"),
    # snapshots and indexes
    ("snapshot unknown version", lambda s: snapshot(s.table("t"), 99), VN, "no version 99"),
    ("snapshot unknown tag", lambda s: snapshot(s.table("t"), "nope"), VN, "no tag 'nope'"),
    ("snapshot unknown column", lambda s: snapshot(s.table("t"), columns=["nope"]), V, "nope"),
    ("snapshot dir is a file", lambda s: snapshot(s.table("t"), cache_dir=__file__), V, "not a directory"),
    ("snapshot verify unknown", lambda s: snapshot(s.table("t"), verify="nope"), V, "verify"),
    ("snapshot batch_rows 0", lambda s: snapshot(s.table("t"), batch_rows=0), V, "batch_rows"),
    ("open_snapshot missing", lambda s: open_snapshot("/nonexistent/snap"), StorageError,
     "/nonexistent/snap has no readable manifest"),
    ("open_snapshot not one", lambda s: open_snapshot(os.path.dirname(__file__)), StorageError,
     "no readable manifest"),
    ("cleanup_snapshots dir is a file", lambda s: cleanup_snapshots(__file__, keep_last=1), V,
     "not a directory"),
    ("build_index recall 0", lambda s: build_index(s.table("t"), recall=0), V, "recall"),
    ("build_index recall 1.5", lambda s: build_index(s.table("t"), recall=1.5), V, "recall"),
    ("build_index recall str", lambda s: build_index(s.table("t"), recall="x"), V, "recall"),
    ("build_index unknown type", lambda s: build_index(s.table("t"), index_type="nope"), V, "nope"),
    ("build_index k 0", lambda s: build_index(s.table("t"), k=0), V, "k"),
    # connect()
    ("connect unknown extension", lambda s: connect(s, extensions=("nope",)), V, "nope"),
    ("connect int store", lambda s: connect(5), V, "store"),
]


@pytest.mark.parametrize("case", PY, ids=[c[0] for c in PY])
def test_python_refuses(store: Store, unchanged: None, case: Case) -> None:
    _name, call, exc, fragment = case
    with pytest.raises(EmbedAssetsError) as err:
        call(store)
    assert isinstance(err.value, exc), f"{type(err.value).__mro__}: {err.value}"
    _check_message(err.value, fragment)
    COUNTS["sweep_python"] += 1


# -- SQL ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def con(store: Store) -> Iterator[SQLConnection]:
    c = connect(store, extensions=())
    c.execute("CREATE TABLE plain AS SELECT id, sec, vector FROM t")
    c.execute("CREATE TABLE queries AS SELECT 1 AS qid, NULL::FLOAT[4] AS vector "
              "UNION ALL SELECT 2, [1.0, 0, 0, 0]::FLOAT[4]")
    c.execute("CREATE TABLE dst (id BIGINT, distance DOUBLE)")
    yield c
    c.close()


SqlCase = tuple[str, str, Any, str]  # id, statement, parameters, fragment
KNN = "SELECT * FROM knn('t', [1.0, 0, 0, 0], {})"
SJ = "SELECT * FROM similarity_join('t', 't', {})"
LAT = "SELECT q.qid, k.id FROM queries q, LATERAL knn('{}', q.vector, 1{}) k"
SQL: list[SqlCase] = [
    *[(f"knn k={k}", KNN.format(k), None, f"k must be a positive integer, got {shown}")
      for k, shown in [("0", "0"), ("-1", "-1"), ("2.5", "2.5"), ("NULL", "NULL"), ("'x'", "'x'"),
                       ("'2'", "'2'"), ("true", "true"), ("[1]", "[1]")]],
    *[(f"similarity_join k={k}", SJ.format(k), None, f"k must be a positive integer, got {shown}")
      for k, shown in [("0", "0"), ("-1", "-1"), ("2.5", "2.5"), ("NULL", "NULL"), ("'x'", "'x'")]],
    ("knn k param 0", "SELECT * FROM knn('t', [1.0, 0, 0, 0], ?)", [0], "got 0"),
    ("knn k param str", "SELECT * FROM knn('t', [1.0, 0, 0, 0], ?)", ["x"], "got 'x'"),
    ("knn k param None", "SELECT * FROM knn('t', [1.0, 0, 0, 0], ?)", [None], "got NULL"),
    ("knn k named param", "SELECT * FROM knn('t', [1.0, 0, 0, 0], $k)", {"k": -3}, "got -3"),
    ("similarity_join k param", "SELECT * FROM similarity_join('t', 't', ?)", [0], "got 0"),
    ("knn k from a column", "SELECT q.qid, k.id FROM queries q, LATERAL knn('t', q.vector, q.qid) k",
     None, "k"),
    ("knn k from a column plain",
     "SELECT q.qid, k.id FROM queries q, LATERAL knn('plain', q.vector, q.qid) k",
     None, "k"),
    ("knn k expression 1-1", KNN.format("1 - 1"), None, "positive integer"),
    ("knn k subquery 0", KNN.format("(SELECT 0)"), None, "positive integer"),
    ("knn NULL vector", "SELECT * FROM knn('t', NULL, 2)", None, "the query vector is NULL"),
    ("knn NULL typed vector", "SELECT * FROM knn('t', NULL::FLOAT[], 2)", None, "the query vector is NULL"),
    ("knn NULL param vector", "SELECT * FROM knn('t', ?, 2)", [None], "the query vector is NULL"),
    ("knn NULL named vector", "SELECT * FROM knn('t', $q, 2)", {"q": None}, "the query vector is NULL"),
    ("knn NULL vector plain", "SELECT * FROM knn('plain', NULL, 2)", None, "the query vector is NULL"),
    ("knn NULL vector string key", "SELECT * FROM knn('s', NULL, 1)", None, "the query vector is NULL"),
    ("knn NULL subquery", "SELECT * FROM knn('t', (SELECT vector FROM queries WHERE qid = 1), 1)", None,
     "the query vector is NULL"),
    ("knn empty subquery", "SELECT * FROM knn('t', (SELECT vector FROM queries WHERE qid = 9), 1)", None,
     "the query vector is NULL"),
    ("knn NULL subquery plain", "SELECT * FROM knn('plain', (SELECT vector FROM queries WHERE qid = 1), 1)",
     None, "the query vector is NULL"),
    ("knn NULL vector l2", "SELECT * FROM knn('t', NULL, 2, metric := 'l2')", None, "query vector is NULL"),
    ("knn NULL vector mahalanobis plain", "SELECT * FROM knn('plain', (SELECT vector FROM queries "
     "WHERE qid = 1), 1, metric := 'mahalanobis', inv_cov := [[1.0,0,0,0],[0,1.0,0,0],[0,0,1.0,0],"
     "[0,0,0,1.0]])", None, "query vector is NULL"),
    ("LATERAL NULL outer vector", LAT.format("t", ""), None, "the query vector is NULL"),
    ("LATERAL NULL outer vector plain", LAT.format("plain", ""), None, "the query vector is NULL"),
    ("LATERAL NULL outer vector l2", LAT.format("t", ", metric := 'l2'"), None, "the query vector is NULL"),
    ("LATERAL NULL outer vector filter", LAT.format("t", ", filter := 'id > 1'"), None,
     "the query vector is NULL"),
    ("LEFT JOIN LATERAL NULL outer vector",
     "SELECT q.qid, k.id FROM queries q LEFT JOIN LATERAL knn('t', q.vector, 1) k ON true", None,
     "the query vector is NULL"),
    ("LATERAL NULL outer vector mahalanobis", LAT.format("t", ", metric := 'mahalanobis', inv_cov := "
     "[[1.0,0,0,0],[0,1.0,0,0],[0,0,1.0,0],[0,0,0,1.0]]"), None, "the query vector is NULL"),
    ("INSERT SELECT NULL vector", "INSERT INTO dst SELECT id, distance FROM knn('t', NULL, 1)", None,
     "the query vector is NULL"),
    ("INSERT SELECT NULL typed vector", "INSERT INTO dst SELECT id, distance FROM knn('t', NULL::FLOAT[], 1)",
     None, "the query vector is NULL"),
    ("INSERT SELECT NULL vector plain", "INSERT INTO dst SELECT id, distance FROM knn('plain', NULL, 1)",
     None, "the query vector is NULL"),
    ("INSERT SELECT LATERAL NULL", "INSERT INTO dst SELECT k.id, k.distance FROM queries q, "
     "LATERAL knn('t', q.vector, 1) k", None, "the query vector is NULL"),
    ("INSERT SELECT k 0", "INSERT INTO dst SELECT id, distance FROM knn('t', [1.0, 0, 0, 0], 0)", None,
     "got 0"),
    ("hybrid_search NULL text", "SELECT * FROM hybrid_search('notes', NULL, 1, mode := 'text')", None,
     "the query text is NULL"),
    ("hybrid_search NULL text param", "SELECT * FROM hybrid_search('notes', ?, 1, mode := 'text')", [None],
     "the query text is NULL"),
    ("hybrid_search k 0", "SELECT * FROM hybrid_search('notes', 'editor', 0, mode := 'text')", None,
     "k must be a positive integer, got 0"),
    ("CREATE TABLE AS NULL vector", "CREATE TABLE dst2 AS SELECT id FROM knn('t', NULL, 1)", None,
     "the query vector is NULL"),
    ("knn string vector", "SELECT * FROM knn('t', 'abc', 2)", None, "must be a list of numbers"),
    ("knn number vector", "SELECT * FROM knn('t', 5, 2)", None, "must be a list of numbers"),
    ("knn string param vector", "SELECT * FROM knn('t', ?, 2)", ["abc"], "must be a list of numbers"),
    ("knn dict param vector", "SELECT * FROM knn('t', ?, 2)", [{"a": 1}], "query vector"),
    ("knn wrong dimension", "SELECT * FROM knn('t', [1.0, 0], 2)", None,
     "dimension mismatch (query 2 vs table 4)"),
    ("knn wrong dimension param", "SELECT * FROM knn('t', ?, 2)", [[1.0, 0.0]], "dimension mismatch"),
    ("knn wrong dimension plain", "SELECT * FROM knn('plain', [1.0, 0], 2)", None, "dimension mismatch"),
    ("knn empty vector", "SELECT * FROM knn('t', [], 2)", None, "dimension mismatch (query 0 vs table 4)"),
    ("knn empty vector plain", "SELECT * FROM knn('plain', []::FLOAT[], 2)", None, "dimension mismatch"),
    ("knn NaN", "SELECT * FROM knn('t', ['nan'::FLOAT, 0, 0, 0], 2)", None, "NaN"),
    ("knn NaN plain", "SELECT * FROM knn('plain', ['nan'::FLOAT, 0, 0, 0], 2)", None, "NaN"),
    ("knn NULL element", "SELECT * FROM knn('t', [NULL, 0, 0, 1.0], 2)", None, "NULL or NaN"),
    ("knn zero vector", "SELECT * FROM knn('t', [0.0, 0, 0, 0], 2)", None, "all zeros"),
    ("knn zero vector param", "SELECT * FROM knn('t', ?, 1)", [[0.0, 0.0, 0.0, 0.0]], "all zeros"),
    ("knn LATERAL wrong dimension",
     "SELECT q.id, k.id FROM (SELECT 1 AS id, [1.0, 0]::FLOAT[2] AS vector) q, "
     "LATERAL knn('t', q.vector, 1) k", None, "dimension"),
    ("knn LATERAL NaN",
     "SELECT q.id, k.id FROM (SELECT 1 AS id, ['nan'::FLOAT, 0, 0, 1]::FLOAT[4] AS vector) "
     "q, LATERAL knn('t', q.vector, 1) k", None, "NaN"),
    ("knn unknown table", "SELECT * FROM knn('nope', [1.0, 0, 0, 0], 2)", None, "nope"),
    ("knn NULL table", "SELECT * FROM knn(NULL, [1.0, 0, 0, 0], 2)", None, "table_name must be a table name"),
    ("knn int table", "SELECT * FROM knn(5, [1.0, 0, 0, 0], 2)", None, "table name"),
    ("knn table param unknown", "SELECT * FROM knn(?, [1.0, 0, 0, 0], 2)", ["nope"], "nope"),
    ("knn table param injection", "SELECT * FROM knn(?, [1.0, 0, 0, 0], 2)", ['t" UNION ALL SELECT 1 --'],
     'input: t" UNION ALL SELECT 1 --'),
    ("knn table unknown tag", "SELECT * FROM knn('t@nope', [1.0, 0, 0, 0], 2)", None, "no tag 'nope'"),
    ("knn table version -1", "SELECT * FROM knn('t@-1', [1.0, 0, 0, 0], 2)", None, "-1"),
    ("knn table version 99", "SELECT * FROM knn('t@99', [1.0, 0, 0, 0], 2)", None, "no version 99"),
    ("knn table param tag", "SELECT * FROM knn(?, [1.0, 0, 0, 0], 2)", ["t@nope"], "no tag 'nope'"),
    ("knn unknown metric", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, metric := 'hamming')", None,
     "unknown metric 'hamming'"),
    ("knn unknown metric plain", "SELECT * FROM knn('plain', [1.0, 0, 0, 0], 2, metric := 'hamming')", None,
     "unknown metric 'hamming'"),
    ("knn NULL metric param", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, metric := ?)", [5], "metric"),
    ("knn mahalanobis no inv_cov", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, metric := 'mahalanobis')",
     None, "inv_cov"),
    ("knn mahalanobis no inv_cov plain", "SELECT * FROM knn('plain', [1.0, 0, 0, 0], 2, "
     "metric := 'mahalanobis')", None, "inv_cov"),
    ("knn mahalanobis inv_cov dimension", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, metric := "
     "'mahalanobis', inv_cov := [[1.0, 0], [0, 1.0]])", None, "inv_cov"),
    ("knn unknown vector column", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, vector := 'nope')", None,
     "no column named 'nope'"),
    ("knn vector column not a vector", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, vector := 'sec')", None,
     "sec"),
    ("knn filter unknown column", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, filter := 'nope = 1')", None,
     "nope"),
    ("knn filter two statements",
     "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, filter := 'id = 1; DROP TABLE x')",
     None, "is not a predicate"),
    ("knn filter breakout", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, filter := '1=1) OR (1=1')", None,
     "is not a predicate"),
    ("knn filter int", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, filter := 5)", None, "filter"),
    ("knn filter param injection", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, filter := ?)",
     ["1=1) UNION ALL SELECT 1 --"], "is not a predicate"),
    ("knn filter plain unknown column", "SELECT * FROM knn('plain', [1.0, 0, 0, 0], 2, filter := 'nope = 1')",
     None, "nope"),
    ("knn use_index string", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, use_index := 'x')", None,
     "use_index"),
    ("knn unknown option", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, nope := 1)", None,
     "do not match knn(table_name, query_vector, k, metric := "),
    ("knn too few arguments", "SELECT * FROM knn('t', [1.0, 0, 0, 0])", None, "knn"),
    ("EXPLAIN knn k 0", "EXPLAIN SELECT * FROM knn('t', [1.0, 0, 0, 0], 0)", None, "got 0"),
    ("similarity_join unknown right", "SELECT * FROM similarity_join('t', 'nope', 1)", None, "nope"),
    ("similarity_join unknown left", "SELECT * FROM similarity_join('nope', 't', 1)", None, "nope"),
    ("similarity_join NULL table", "SELECT * FROM similarity_join(NULL, 't', 1)", None, "left_table"),
    ("similarity_join default key missing", "SELECT * FROM similarity_join('t', 's', 1)", None,
     "no column named 'id'"),
    ("similarity_join unknown key", "SELECT * FROM similarity_join('t', 't', 1, key := 'nope')", None,
     "no column named 'nope'"),
    ("similarity_join unknown vector", "SELECT * FROM similarity_join('t', 't', 1, vector := 'nope')", None,
     "no column named 'nope'"),
    ("similarity_join unknown metric", "SELECT * FROM similarity_join('t', 't', 1, metric := 'hamming')",
     None, "unknown metric 'hamming'"),
    ("similarity_join unknown metric plain", "SELECT * FROM similarity_join('plain', 'plain', 1, "
     "metric := 'hamming')", None, "unknown metric 'hamming'"),
    ("similarity_join dimensions", "SELECT * FROM similarity_join('t', 'docs', 1)", None,
     "dimension mismatch"),
    ("similarity_join filter breakout", "SELECT * FROM similarity_join('t', 't', 1, left_filter := "
     "'1=1) OR (1=1')", None, "is not a predicate"),
    ("similarity_join unknown tag", "SELECT * FROM similarity_join('t@nope', 't', 1)", None, "no tag 'nope'"),
    ("similarity_join mahalanobis no inv_cov", "SELECT * FROM similarity_join('t', 't', 1, "
     "metric := 'mahalanobis')", None, "inv_cov"),
    # time travel names
    ("view unknown tag", 'SELECT * FROM "t@nope"', None, "no tag 'nope'"),
    ("view version -1", 'SELECT * FROM "t@-1"', None, "-1"),
    ("view version 99", 'SELECT * FROM "t@99"', None, "no version 99"),
    ("view version 0", 'SELECT * FROM "t@0"', None, "version 0"),
    ("view version 01", 'SELECT * FROM "t@01"', None, "'01'"),
    ("view version 1.5", 'SELECT * FROM "t@1.5"', None, "1.5"),
    ("view empty ref", 'SELECT * FROM "t@"', None, "after '@'"),
    ("view double @", 'SELECT * FROM "t@@1"', None, "@"),
    ("view unknown table version", 'SELECT * FROM "nope@1"', None, "nope"),
    ("view unknown table", "SELECT * FROM nope", None, "nope"),
    ("view unknown experiment", 'SELECT * FROM "docs@nope:1"', None, "no experiment 'nope'"),
    ("view experiment version not a number", 'SELECT * FROM "docs@nope:x"', None, "NAME:NUMBER"),
    ("view experiment without name", 'SELECT * FROM "docs@:1"', None, "NAME:NUMBER"),
    ("knn unknown experiment", "SELECT * FROM knn('docs@nope:2', [1.0, 0, 0, 0, 0, 0, 0, 0], 1)", None,
     "no experiment 'nope'"),
    ("view query_table unknown tag", "SELECT * FROM query_table('t@nope')", None, "no tag 'nope'"),
    # vector macros
    ("vec_add dimensions", "SELECT vec_add([1, 2, 3], [1, 2])", None, "vec_add: dimension mismatch (3 vs 2)"),
    ("vec_add empty", "SELECT vec_add([1, 2, 3], [])", None, "vec_add: dimension mismatch (3 vs 0)"),
    ("vec_add string", "SELECT vec_add([1, 2, 3], 'x')", None, "vec_add"),
    ("vec_add number", "SELECT vec_add([1, 2, 3], 5)", None, "vec_add"),
    ("vec_sub dimensions", "SELECT vec_sub([1, 2], [1, 2, 3])", None, "vec_sub: dimension mismatch (2 vs 3)"),
    ("vec_sub string", "SELECT vec_sub('a', 'b')", None, "vec_sub"),
    ("vec_scale string", "SELECT vec_scale([1, 2], 'x')", None, "vec_scale"),
    ("vec_scale list", "SELECT vec_scale([1, 2], [1, 2])", None, "vec_scale"),
    ("vec_dot dimensions", "SELECT vec_dot([1, 2], [1])", None, "vec_dot: dimension mismatch (2 vs 1)"),
    ("vec_dot string", "SELECT vec_dot('x', [1])", None, "vec_dot"),
    ("vec_norm string", "SELECT vec_norm('x')", None, "vec_norm"),
    ("vec_norm number", "SELECT vec_norm(5)", None, "vec_norm"),
    ("vec_normalize string", "SELECT vec_normalize('x')", None, "vec_normalize"),
    ("vec_cosine dimensions", "SELECT vec_cosine([1, 2], [1])", None, "vec_cosine: dimension mismatch"),
    ("vec_cosine string", "SELECT vec_cosine('a', [1])", None, "vec_cosine"),
    ("vec_l2 dimensions", "SELECT vec_l2([1, 2], [1])", None, "vec_l2: dimension mismatch"),
    ("vec_l2 string", "SELECT vec_l2([1, 2], 'b')", None, "vec_l2"),
    ("vec_distance unknown metric", "SELECT vec_distance([1, 2], [1, 0], metric := 'hamming')", None,
     "hamming"),
    ("vec_distance dimensions", "SELECT vec_distance([1, 2], [1, 0, 0])", None, "dimension mismatch"),
    ("vec_mean dimensions", "SELECT vec_mean(v) FROM (VALUES ([1, 2]), ([1, 2, 3])) x(v)", None,
     "vec_mean: dimension mismatch (2 vs 3)"),
    ("vec_mean strings", "SELECT vec_mean(v) FROM (VALUES ('a'), ('b')) x(v)", None, "vec_mean"),
    ("vec_mean numbers", "SELECT vec_mean(v) FROM (VALUES (1), (2)) x(v)", None, "vec_mean"),
    ("vec_sum dimensions", "SELECT vec_sum(v) FROM (VALUES ([1.0, 2]), ([1.0])) x(v)", None,
     "vec_sum: dimension mismatch (2 vs 1)"),
    ("vec_sum strings", "SELECT vec_sum(v) FROM (VALUES ('a')) x(v)", None, "vec_sum"),
    ("list_vec_mean dimensions", "SELECT list_vec_mean([[1, 2], [1]])", None, "dimension mismatch (2 vs 1)"),
    ("list_vec_mean empty list", "SELECT list_vec_mean([])", None, "list_vec_mean"),
    ("list_vec_mean string", "SELECT list_vec_mean('x')", None, "list_vec_mean"),
    ("list_vec_mean flat list", "SELECT list_vec_mean([1, 2])", None, "list_vec_mean"),
    ("list_vec_sum string", "SELECT list_vec_sum('x')", None, "list_vec_sum"),
    ("vec_covariance dimensions", "SELECT vec_covariance(v) FROM (VALUES ([1, 2]), ([1])) x(v)", None,
     "vec_covariance: dimension mismatch (2 vs 1)"),
    ("vec_covariance strings", "SELECT vec_covariance(v) FROM (VALUES ('a')) x(v)", None, "vec_covariance"),
    ("mat_inverse not square", "SELECT mat_inverse([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])", None, "square"),
    ("mat_inverse string", "SELECT mat_inverse('x')", None, "mat_inverse"),
    ("mat_inverse ragged", "SELECT mat_inverse([[1.0, 2.0], [1.0]])", None, "mat_inverse"),
    # statements against store views
    ("INSERT into a store view", "INSERT INTO t VALUES (9, 'a', [1.0, 0, 0, 0])", None, "t"),
    ("DELETE from a store view", "DELETE FROM t WHERE id = 1", None, "t"),
    ("UPDATE a store view", "UPDATE t SET sec = 'z'", None, "t"),
    ("syntax error", "SELEC 1", None, "syntax error"),
    ("knn syntax error", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2", None, "syntax error"),
    ("unknown function", "SELECT vec_nope([1])", None, "vec_nope"),
]


def _lazy(con: SQLConnection, query: str, params: Any) -> Any:
    rel = con.sql(query, params=params) if params is not None else con.sql(query)
    return None if rel is None else rel.fetchall()


@pytest.mark.parametrize("how", ["sql", "execute"])
@pytest.mark.parametrize("case", SQL, ids=[c[0] for c in SQL])
def test_sql_refuses(store: Store, con: SQLConnection, unchanged: None, case: SqlCase, how: str) -> None:
    _name, query, params, fragment = case
    with pytest.raises(Exception) as err:
        if how == "sql":
            _lazy(con, query, params)
        else:
            con.execute(query, params).fetchall()
    assert isinstance(err.value, QueryError), f"{type(err.value).__mro__}: {err.value}"
    assert isinstance(err.value, duckdb.Error), type(err.value).__mro__  # except duckdb.Error still works
    _check_message(err.value, fragment)
    COUNTS["sweep_sql"] += 1


# A relation from sql() is lazy: these fail only when their rows are computed, by any of
# the ways DuckDB offers to fetch them.
LAZY = ["SELECT vec_add([1, 2, 3], [1, 2])",
        "SELECT * FROM knn('t', [1.0, 0, 0, 0], 2, metric := 'hamming')",
        "SELECT q.id, k.id FROM (SELECT 1 AS id, [1.0, 0]::FLOAT[2] AS vector) q, "
        "LATERAL knn('t', q.vector, 1) k"]
FETCH: dict[str, Callable[[Any], Any]] = {
    "fetchall": lambda r: r.fetchall(), "fetchone": lambda r: r.fetchone(),
    "fetchmany": lambda r: r.fetchmany(2), "df": lambda r: r.df(), "fetchdf": lambda r: r.fetchdf(),
    "arrow": lambda r: r.arrow(), "to_arrow_reader": lambda r: r.to_arrow_reader().read_all(),
    "to_arrow_table": lambda r: r.to_arrow_table(), "pl": lambda r: r.pl(),
    "fetchnumpy": lambda r: r.fetchnumpy(), "execute": lambda r: r.execute(),
    "filter then fetch": lambda r: r.filter("true").fetchall(),
    "limit then df": lambda r: r.limit(1).df(), "order then arrow": lambda r: r.order("1").arrow(),
    "to_parquet": lambda r: r.to_parquet(os.devnull),
}


@pytest.mark.parametrize("fetch", sorted(FETCH))
@pytest.mark.parametrize("query", LAZY, ids=["vec_add", "metric", "lateral"])
def test_lazy_relation_fetch_fails_as_query_error(store: Store, con: SQLConnection, unchanged: None,
                                                  query: str, fetch: str) -> None:
    rel = con.sql(query)  # nothing has run yet
    with pytest.raises(QueryError) as err:
        FETCH[fetch](rel)
    assert isinstance(err.value, duckdb.Error)
    _check_message(err.value, "mismatch" if "vec_add" in query or "LATERAL" in query else "hamming")
    COUNTS["sweep_sql_fetch"] += 1


def test_the_wrapped_relation_is_duckdbs_and_keeps_its_result_tables(store: Store,
                                                                    con: SQLConnection) -> None:
    a, b = con.sql("SELECT id FROM t"), con.sql("SELECT id, sec FROM t")
    assert isinstance(a.relation, duckdb.DuckDBPyRelation)
    assert a.columns == ["id"] and a.shape == (4, 1) and len(a) == 4
    assert a.join(b, "id").order("id").limit(1).fetchall() == [(1, "a")]  # relations as arguments
    assert a.union(a).count("id").fetchall() == [(8,)] and pa.table(a.relation).num_rows == 4
    assert a.query("x", "SELECT max(id) FROM x").fetchall() == [(4,)] and "id" in str(a)
    # a relation made from a knn result keeps the result table after its parent is gone
    # (it was dropped at the next statement: "Table with name __ea_knn_1 does not exist")
    r = con.sql("SELECT id, rank FROM knn('t', [1.0, 0, 0, 0], 2)").filter("rank >= 1")
    gc.collect()
    con.execute("SELECT 1").fetchall()
    assert [rank for _, rank in r.order("rank").fetchall()] == [1, 2]
    # DuckDB's replacement scan on the connection the relation belongs to refuses the
    # wrapper (it read it as an Arrow stream and waited forever for its own lock)
    assert not hasattr(a, "__arrow_c_stream__")
    with pytest.raises(duckdb.Error, match="not suitable for replacement scan"):
        con.con.sql("SELECT count(*) FROM a").fetchall()


def test_plain_duckdb_knn_refuses_a_null_query_vector() -> None:
    """sql/vectors.sql alone (no Python) refuses it in the same words."""
    con = plain_duckdb()
    con.execute("CREATE TABLE p AS SELECT 1 AS id, [1.0, 0.0]::FLOAT[2] AS vector")
    for query in ("SELECT * FROM knn('p', NULL::FLOAT[], 1)",
                  "SELECT * FROM (SELECT NULL::FLOAT[2] AS v) q, LATERAL knn('p', q.v, 1)"):
        with pytest.raises(duckdb.InvalidInputException, match="knn: the query vector is NULL"):
            con.execute(query).fetchall()
    assert con.execute("SELECT id FROM knn('p', [1.0, 0.0], 1)").fetchall() == [(1,)]


def test_run_sql_refuses(store: Store, unchanged: None) -> None:
    for query, fragment in [("   ", "empty"), ("SELEC 1", "syntax error"),
                            ("SELECT 1; SELECT * FROM knn('t', NULL, 1)", "the query vector is NULL"),
                            ('SELECT * FROM "t@nope"', "no tag 'nope'")]:
        with pytest.raises(EmbedAssetsError) as err:
            run_sql(store, query, extensions=())
        _check_message(err.value, fragment)
        COUNTS["sweep_sql"] += 1


# -- the command line -------------------------------------------------------------------------
CliCase = tuple[str, tuple[str, ...], str]  # id, arguments (after --store), fragment
CLI: list[CliCase] = [
    # every verb without what it needs
    ("no verb", (), "required"),
    ("unknown verb", ("nope",), "invalid choice"),
    ("embed without arguments", ("embed",), "required"),
    ("embed without --from", ("embed", "x", "--key", "id", "--text", "text"), "--from"),
    ("embed without --key", ("embed", "x", "--from", "{good}", "--text", "text"), "--key"),
    ("embed without --text", ("embed", "x", "--from", "{good}", "--key", "id"), "--text"),
    ("versions without name", ("versions",), "name"),
    ("tag without tag", ("tag", "t"), "tag"),
    ("untag without tag", ("untag", "t"), "tag"),
    ("rollback without --to", ("rollback", "t"), "--to"),
    ("search without text", ("search", "t"), "text"),
    ("export without --to", ("export", "t"), "--to"),
    ("cleanup without name", ("cleanup",), "name"),
    ("index without name", ("index",), "name"),
    ("sql without query", ("sql",), "query"),
    ("snapshot without name", ("snapshot",), "name"),
    ("search-image without query", ("search-image", "t"), "query"),
    ("embed-images without source", ("embed-images", "x"), "source"),
    ("tables with an extra argument", ("tables", "t"), "unrecognized"),
    ("unknown option", ("tables", "--nope"), "unrecognized"),
    # wrong values
    ("search -k 0", ("search", "docs", "editor", "-k", "0"), "positive integer"),
    ("search -k -1", ("search", "docs", "editor", "-k", "-1"), "positive integer"),
    ("search -k x", ("search", "docs", "editor", "-k", "x"), "not an integer"),
    ("search -k 2.5", ("search", "docs", "editor", "-k", "2.5"), "not an integer"),
    ("search unknown table", ("search", "nope", "editor"), "not found"),
    ("search unknown version", ("search", "docs", "editor", "--version", "99"), "no version 99"),
    ("search unknown tag", ("search", "docs", "editor", "--version", "nope"), "no tag 'nope'"),
    ("search version 01", ("search", "docs", "editor", "--version", "01"), "'01'"),
    ("search version -1", ("search", "docs", "editor", "--version", "-1"), "-1"),
    ("search where two statements", ("search", "docs", "editor", "--where", "id = 1; id = 2"), "';'"),
    ("search where unknown column", ("search", "docs", "editor", "--where", "nope = 1"), "nope"),
    ("search unknown mode", ("search", "docs", "editor", "--mode", "nope"), "invalid choice"),
    ("search text mode without index", ("search", "docs", "editor", "--mode", "text"), "index"),
    ("search blank text", ("search", "docs", "   "), "empty"),
    ("search a vector-only table", ("search", "t", "editor"), "model"),
    ("search partition unknown column", ("search", "docs", "editor", "--partition", "nope=1"), "nope"),
    ("versions unknown table", ("versions", "nope"), "not found"),
    ("versions bad name", ("versions", "../x"), "path separator"),
    ("tag bad name", ("tag", "t", "bad tag"), "tag 'bad tag'"),
    ("tag numeric", ("tag", "t", "123"), "must start with a letter"),
    ("tag exists", ("tag", "t", "prod"), "already points"),
    ("tag unknown version", ("tag", "t", "newtag", "--version", "99"), "no version 99"),
    ("tag unknown table", ("tag", "nope", "x"), "not found"),
    ("untag unknown", ("untag", "t", "nope"), "no tag 'nope'"),
    ("rollback unknown version", ("rollback", "t", "--to", "42"), "no version 42"),
    ("rollback unknown tag", ("rollback", "t", "--to", "nope"), "no tag 'nope'"),
    ("rollback -1", ("rollback", "t", "--to", "-1"), "-1"),
    ("rollback empty", ("rollback", "t", "--to", ""), "version"),
    ("rollback unknown table", ("rollback", "nope", "--to", "1"), "not found"),
    ("export not parquet", ("export", "t", "--to", "{dir}/x.csv"), ".parquet"),
    ("export missing folder", ("export", "t", "--to", "/nonexistent/dir/x.parquet"), "does not exist"),
    ("export to a folder", ("export", "t", "--to", "{dir}"), ".parquet"),
    ("export unknown version", ("export", "t", "--to", "{dir}/x.parquet", "--version", "99"),
     "no version 99"),
    ("cleanup nothing", ("cleanup", "t"), "keep"),
    ("cleanup keep-last 0", ("cleanup", "t", "--keep-last", "0"), "positive integer"),
    ("cleanup older-than soon", ("cleanup", "t", "--older-than", "soon"), "bad duration"),
    ("cleanup older-than 7x", ("cleanup", "t", "--older-than", "7x"), "7x"),
    ("cleanup grace bad", ("cleanup", "t", "--keep-last", "1", "--grace", "abc"), "abc"),
    ("cleanup unknown table", ("cleanup", "nope", "--keep-last", "1"), "not found"),
    ("index recall 2", ("index", "t", "--recall", "2"), "recall"),
    ("index recall x", ("index", "t", "--recall", "x"), "invalid float"),
    ("index unknown type", ("index", "t", "--type", "nope"), "invalid choice"),
    ("index unknown table", ("index", "nope"), "not found"),
    ("sql syntax error", ("sql", "SELEC 1"), "syntax error"),
    ("sql empty", ("sql", "  "), "empty"),
    ("sql knn k 0", ("sql", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 0)"), "positive integer, got 0"),
    ("sql knn NULL vector", ("sql", "SELECT * FROM knn('t', NULL, 1)"), "the query vector is NULL"),
    ("sql LATERAL NULL vector", ("sql", "SELECT q.i, k.id FROM (SELECT 1 AS i, NULL::FLOAT[4] AS v) q, "
                                "LATERAL knn('t', q.v, 1) k"), "the query vector is NULL"),
    ("sql unknown tag", ("sql", 'SELECT * FROM "t@nope"'), "no tag 'nope'"),
    ("sql vec_add dimensions", ("sql", "SELECT vec_add([1, 2], [1])"), "dimension mismatch"),
    ("sql unknown metric", ("sql", "SELECT * FROM knn('t', [1.0, 0, 0, 0], 1, metric := 'x')"), "metric"),
    ("snapshot unknown version", ("snapshot", "t", "--version", "99", "--dir", "{dir}/snaps"),
     "no version 99"),
    ("snapshot dir is a file", ("snapshot", "t", "--dir", "{file}"), "not a directory"),
    ("snapshot unknown column", ("snapshot", "t", "--columns", "nope", "--dir", "{dir}/snaps"), "nope"),
    ("snapshot keep-last 0", ("snapshot", "t", "--keep-last", "0"), "positive integer"),
    ("search-image missing file", ("search-image", "t", "/nonexistent.png"), "nonexistent"),
    ("embed-images missing folder", ("embed-images", "pics", "/nonexistent/folder"), "nonexistent"),
    ("embed-images folder without images", ("embed-images", "pics", "{dir}"), "no image files"),
    ("search-image on a text table", ("search-image", "docs", "{txt}"), "--key"),
    ("search-image unknown key", ("search-image", "t", "999", "--key"), "999"),
    ("compare unknown experiment", ("compare", "docs", "nope"), "no experiment 'nope'"),
    ("promote unknown experiment", ("promote", "docs", "nope"), "no experiment 'nope'"),
    ("discard unknown experiment", ("discard", "docs", "nope"), "no experiment 'nope'"),
    ("promote without experiment", ("promote", "docs"), "required"),
    ("experiment bad name", ("experiment", "docs", "bad name", "--model", "hash-bow:8"), "'bad name'"),
    ("experiment unknown table", ("experiment", "nope", "x", "--model", "hash-bow:8"), "not found"),
    ("experiment without source text", ("experiment", "t", "x", "--model", "hash-bow:8"), "no source text"),
    ("experiment unknown metric", ("experiment", "docs", "x", "--metric", "hamming"), "invalid choice"),
    ("serve without tables", ("serve",), "required"),
    ("serve unknown table", ("serve", "nope"), "not found"),
    ("serve max-k 0", ("serve", "t", "--max-k", "0"), "--max-k"),
    ("serve port out of range", ("serve", "t", "--port", "99999"), "--port"),
    ("serve port not a number", ("serve", "t", "--port", "x"), "invalid int"),
    # embed with bad files and arguments
    ("embed missing file", ("embed", "x", "--from", "/nonexistent.parquet", "--key", "id", "--text", "text"),
     "does not exist"),
    ("embed missing csv", ("embed", "x", "--from", "/nonexistent.csv", "--key", "id", "--text", "text"),
     "does not exist"),
    ("embed garbage parquet", ("embed", "x", "--from", "{garbage}", "--key", "id", "--text", "text",
                               "--model", "hash-bow:8"), "garbage.parquet"),
    ("embed garbage csv", ("embed", "x", "--from", "{bad_csv}", "--key", "id", "--text", "text",
                           "--model", "hash-bow:8"), "bad.csv"),
    ("embed txt file", ("embed", "x", "--from", "{txt}", "--key", "id", "--text", "text"),
     ".parquet or .csv"),
    ("embed a folder", ("embed", "x", "--from", "{dir}", "--key", "id", "--text", "text"), "{dir}"),
    ("embed missing key column", ("embed", "x", "--from", "{good}", "--key", "nope", "--text", "text",
                                  "--model", "hash-bow:8"), "key column 'nope'"),
    ("embed missing text column", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "nope",
                                   "--model", "hash-bow:8"), "text column 'nope'"),
    ("embed duplicate keys", ("embed", "x", "--from", "{dup}", "--key", "id", "--text", "text",
                              "--model", "hash-bow:8"), "duplicated key"),
    ("embed null text", ("embed", "x", "--from", "{nulls}", "--key", "id", "--text", "text",
                         "--model", "hash-bow:8"), "8"),
    ("embed unknown mode", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                            "--mode", "merge"),
     "invalid choice"),
    ("embed partition without =", ("embed", "x", "--from", "{csv}", "--key", "id", "--text", "text",
                                    "--partition", "sec"), "COLUMN=VALUE"),
    ("embed partition unknown column", ("embed", "x", "--from", "{csv}", "--key", "id", "--text", "text",
                                        "--partition", "nope=1"), "nope"),
    ("embed replace_partition alone", ("embed", "x", "--from", "{csv}", "--key", "id", "--text", "text",
                                       "--mode", "replace_partition"), "--partition"),
    ("embed batch-size 0", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                            "--batch-size", "0"), "positive integer"),
    ("embed commit-every 0", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                              "--commit-every", "0"), "positive integer"),
    ("embed unknown model path", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                                  "--model", "/nonexistent/model"), "/nonexistent/model"),
    ("embed unknown backend", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                               "--model", "hash-bow:8", "--backend", "nope"), "nope"),
    ("embed unknown kept column", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                                   "--model", "hash-bow:8", "--columns", "nope"), "nope"),
    ("embed other model", ("embed", "docs", "--from", "{good}", "--key", "id", "--text", "text",
                           "--model", "hash-bow:16"), "hash-bow:8"),
    ("embed bad table name", ("embed", "a/b", "--from", "{good}", "--key", "id", "--text", "text",
                              "--model", "hash-bow:8"), "path separator"),
    ("embed ray with commit-every", ("embed", "x", "--from", "{good}", "--key", "id", "--text", "text",
                                     "--ray", "local:1", "--commit-every", "5"), "--commit-every"),
]
# Bad store URIs (the store option itself is the bad input)
CLI_STORES: list[tuple[str, str, tuple[str, ...], str]] = [
    ("store missing folder", "/nonexistent/store", ("tables",), "does not exist"),
    ("store missing folder versions", "/nonexistent/store", ("versions", "t"), "does not exist"),
    ("store is a file", "{file}", ("tables",), "not a directory"),
    ("store unknown scheme", "ftp://host/x", ("tables",), "ftp"),
    ("store empty", "", ("tables",), "store"),
    ("store s3 without bucket", "s3://", ("tables",), "s3://"),
    ("store missing folder sql", "/nonexistent/store", ("sql", "SELECT 1"), "does not exist"),
    ("store missing folder search", "/nonexistent/store", ("search", "t", "x"), "does not exist"),
]


def _env(files: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "EMBED_ASSETS_SNAPSHOT_DIR": os.path.join(files["dir"], "snaps")}
    env.pop("EMBED_ASSETS_DEBUG", None)
    return env


def _argv(args: tuple[str, ...], files: dict[str, str]) -> list[str]:
    return [a.format(**files) for a in args]


@pytest.fixture(scope="module")
def cli_results(store: Store, files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every command line of CLI and CLI_STORES, run by the CLI's main() in one other
    process (tests/cli_sweep_runner.py: ~2 s of imports per process made a process per
    case cost ~4 minutes); a sample also runs as a process of its own below."""
    cases = [(c[0], store.uri, c[1]) for c in CLI] + [(c[0], c[1], c[2]) for c in CLI_STORES]
    job = {"store": store.uri,
           "cases": [[uri.format(**files), _argv(args, files)] for _, uri, args in cases]}
    proc = subprocess.run([sys.executable, "-m", "tests.cli_sweep_runner"], input=json.dumps(job),
                          capture_output=True, text=True, timeout=600, env=_env(files),
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0 and "RESULTS" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULTS\n", 1)[1])
    return {name: r for (name, _, _), r in zip(cases, results, strict=True)}


def _check_cli(rc: int, stderr: str, fragment: str, files: dict[str, str]) -> None:
    # "loading model M..." is the notice printed just before a model loads (seconds)
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("loading model ")]
    assert rc == 2, (rc, stderr)
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and not INTERNAL.search(stderr), stderr
    # an unexpected exception is printed with its type name: a bad input never is
    assert not re.search(r"error: [A-Z]\w*(Error|Exception): ", lines[0]), lines[0]
    assert fragment.format(**files).lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_refuses(cli_results: dict[str, dict[str, Any]], files: dict[str, str], case: CliCase) -> None:
    name, _args, fragment = case
    got = cli_results[name]
    _check_cli(got["rc"], got["stderr"], fragment, files)
    assert not got["changed"], "a refused command line changed the store"
    COUNTS["sweep_cli"] += 1


@pytest.mark.parametrize("case", CLI_STORES, ids=[c[0] for c in CLI_STORES])
def test_cli_refuses_bad_stores(cli_results: dict[str, dict[str, Any]], files: dict[str, str],
                                case: tuple[str, str, tuple[str, ...], str]) -> None:
    name, _uri, _args, fragment = case
    got = cli_results[name]
    _check_cli(got["rc"], got["stderr"], fragment, files)
    assert not got["changed"]
    assert not Path("ftp:").exists() and not Path("s3:").exists()
    COUNTS["sweep_cli"] += 1


# Each as a process of its own, the console script's way: exit code, one line, no traceback.
OWN_PROCESS = ["no verb", "search -k 0", "sql knn NULL vector", "sql LATERAL NULL vector",
               "sql unknown metric", "rollback unknown version", "export missing folder",
               "embed garbage parquet", "snapshot dir is a file", "tag bad name",
               "cleanup older-than soon", "search unknown tag"]


@pytest.mark.parametrize("name", OWN_PROCESS)
def test_cli_refuses_in_its_own_process(store: Store, files: dict[str, str], unchanged: None,
                                        name: str) -> None:
    (args, fragment), = [(c[1], c[2]) for c in CLI if c[0] == name]
    proc = subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", store.uri,
                           *_argv(args, files)],
                          capture_output=True, text=True, timeout=300, env=_env(files))
    _check_cli(proc.returncode, proc.stderr, fragment, files)


def test_the_sweep_is_large_enough() -> None:
    # issue 23 counted 295 bad inputs; SQL cases run twice (sql() and execute())
    assert len(PY) + len(SQL) + len(CLI) + len(CLI_STORES) >= 295
