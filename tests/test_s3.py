"""The store on S3-compatible object storage: a real moto server on 127.0.0.1.

The session fixture starts ``moto_server`` in a subprocess on a free port and kills it
at the end. Every test gets its own bucket, so tests never see each other's tables.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from embed_assets import (
    HashEmbedder,
    StorageError,
    Store,
    TableNotFoundError,
    VersionNotFoundError,
    build_index,
    connect,
    embed_table,
)
from embed_assets.store import CACHE

from .conftest import vectors_table
from .s3_server import moto_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    with moto_server(str(tmp_path_factory.mktemp("moto"))) as server:
        yield server


@pytest.fixture
def bucket(s3) -> str:
    return s3.create_bucket(f"ea-test-{next(_bucket_ids)}")


@pytest.fixture
def s3_store(s3, bucket) -> Store:
    return Store(f"s3://{bucket}/stores/main", storage_options=s3.storage_options())


def _ids(store: Store, name: str, version=None) -> list:
    return sorted(store.table(name).read(version, columns=["id"]).column("id").to_pylist())


def test_writes_in_every_mode_versions_tags_time_travel(s3_store):
    s = s3_store
    assert s.write("t", vectors_table([1, 2, 3], sec=["a", "a", "b"]), key="id", mode="overwrite").version == 1
    assert s.write("t", vectors_table([4], sec=["b"]), key="id", mode="append").version == 2
    r = s.write("t", vectors_table([1, 5], seed=9, sec=["a", "b"]), key="id", mode="upsert", delete_keys=[3])
    assert (r.version, r.rows_inserted, r.rows_updated, r.rows_deleted) == (3, 1, 1, 1)
    r = s.write("t", vectors_table([2, 9], seed=3, sec=["a", "a"]), key="id", mode="replace_partition",
                partition=("sec", "a"))
    assert r.version == 4
    assert _ids(s, "t") == [2, 4, 5, 9]
    assert _ids(s, "t", 1) == [1, 2, 3]
    t = s.table("t")
    t.tag("prod", 2)
    assert _ids(s, "t", "prod") == [1, 2, 3, 4]
    assert [v.version for v in t.versions()] == [1, 2, 3, 4]
    assert t.versions()[1].tags == ["prod"]
    assert s.table_names() == ["t"] and s.tables()[0].rows == 4
    assert t.properties(3)["mode"] == "upsert"
    with pytest.raises(VersionNotFoundError, match="no version 9"):
        t.read(9)
    with pytest.raises(VersionNotFoundError, match="no tag 'nope'"):
        t.read("nope")
    with pytest.raises(TableNotFoundError, match="'missing' not found"):
        s.table("missing")
    assert [v.version for v in t.versions()] == [1, 2, 3, 4]  # refusals changed nothing


def test_rollback_and_cleanup(s3_store):
    s = s3_store
    for i in range(4):
        s.write("t", vectors_table([i], seed=i), key="id", mode="append" if i else "overwrite")
    t = s.table("t")
    t.tag("keep", 1)
    new = t.rollback(2)
    assert new == 5 and _ids(s, "t") == [0, 1]
    rep = t.cleanup(keep_last=2, grace=dt.timedelta(0))
    assert rep.removed_versions == [2, 3]
    assert [v.version for v in t.versions()] == [1, 4, 5]
    assert _ids(s, "t", "keep") == [0] and _ids(s, "t") == [0, 1]


def test_index_build_and_search(s3_store):
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(2000, 16)).astype(np.float32)
    s3_store.write("t", {"id": np.arange(2000), "vector": mat}, key="id")
    t = s3_store.table("t")
    exact = t.search(mat[7], k=5, use_index=False)
    assert exact.column("id").to_pylist()[0] == 7
    report = build_index(t, recall=0.9, force=True)
    assert report.recall >= 0.9
    got = t.search(mat[7], k=5)
    assert got.column("id").to_pylist()[0] == 7
    assert t.search(mat[7], k=3, where="id < 100").column("id").to_pylist()[0] == 7


def test_duckdb_views_and_knn(s3_store):
    s3_store.write("docs", vectors_table([1, 2, 3]), key="id")
    s3_store.write("docs", vectors_table([4], seed=4), key="id", mode="append")
    s3_store.table("docs").tag("prod", 1)
    con = connect(s3_store, extensions=())
    assert con.sql("SELECT count(*) FROM docs").fetchone()[0] == 4
    assert con.sql('SELECT count(*) FROM "docs@1"').fetchone()[0] == 3
    assert con.sql('SELECT count(*) FROM "docs@prod"').fetchone()[0] == 3
    q = vectors_table([1]).column("vector").to_pylist()[0]
    assert con.sql(f"SELECT id FROM knn('docs', {q}::FLOAT[4], 1)").fetchone()[0] == 1
    con.close()


def test_credentials_from_the_standard_environment(s3, bucket, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    s = Store(f"s3://{bucket}/env")
    s.write("t", vectors_table([1, 2]), key="id")
    assert _ids(s, "t") == [1, 2]


def test_missing_credentials_and_unreachable_endpoint_are_clear_storage_errors(s3, bucket, monkeypatch):
    good = Store(f"s3://{bucket}/p", storage_options=s3.storage_options())
    good.write("t", vectors_table([1]), key="id")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    no_keys = {k: v for k, v in s3.storage_options().items() if "access_key" not in k}
    anon = Store(f"s3://{bucket}/p", storage_options=no_keys)
    with pytest.raises(StorageError, match="no AWS credentials found"):
        anon.write("t", vectors_table([2]), key="id", mode="append")
    with pytest.raises(StorageError, match="no AWS credentials found"):
        anon.table("t")
    dead = Store(f"s3://{bucket}/p", storage_options={**s3.storage_options(),
                                                       "aws_endpoint": "http://127.0.0.1:9"})
    with pytest.raises(StorageError, match=r"cannot reach http://127.0.0.1:9"):
        dead.table_names()
    with pytest.raises(StorageError, match=r"cannot reach http://127.0.0.1:9"):
        dead.write("t", vectors_table([3]), key="id", mode="append")
    # nothing stored changed
    assert _ids(good, "t") == [1] and [v.version for v in good.table("t").versions()] == [1]
