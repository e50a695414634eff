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
import pyarrow as pa  # module level: Dagster resolves the test assets' annotations here
import pytest

from embed_assets import (
    StorageError,
    Store,
    TableNotFoundError,
    VersionNotFoundError,
    build_index,
    connect,
)
from embed_assets.store import CACHE

from .conftest import COUNTS, vectors_table
from .s3_server import moto_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the local S3 server")
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
    first = s.write("t", vectors_table([1, 2, 3], sec=["a", "a", "b"]), key="id", mode="overwrite")
    assert first.version == 1
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


def test_cleanup_on_s3_removes_orphans_of_killed_writes_and_keeps_versions_whole(s3_store):
    import obstore as obs

    from embed_assets.store._objstore import list_objects, object_store

    s = s3_store
    for i in range(3):
        s.write("t", vectors_table([i], seed=i), key="id", mode="append" if i else "overwrite")
    t = s.table("t")
    uri, opts = t.uri, s.storage_options
    # what a writer killed before its commit leaves: a data file no manifest references
    obs.put(object_store(uri, opts), "data/orphan-of-a-killed-write.lance", b"x" * 100)
    young = t.cleanup(keep_last=1)  # default grace: the versions are too young, and an
    # orphan younger than Lance's 7 days may be a write in flight
    assert young.removed_versions == [] and young.orphan_files == 0
    rep = t.cleanup(keep_last=1, grace=dt.timedelta(0))  # grace 0: no write in flight
    assert rep.removed_versions == [1, 2] and rep.orphan_files == 1
    left = {m["path"] for m in list_objects(uri, opts, "data")}
    assert "data/orphan-of-a-killed-write.lance" not in left
    assert [v.version for v in t.versions()] == [3] and _ids(s, "t") == [0, 1, 2]
    assert rep.files_removed >= 3  # two manifests and the orphan (versions 1-2 share data with 3)


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


def test_plain_duckdb_lance_extension_reads_s3_with_environment_credentials(s3, s3_store, monkeypatch):
    """Without embed_assets: DuckDB's lance extension (from its wheel) opens the table's
    folder on S3 through Lance's object store, which reads the AWS_* variables. DuckDB's
    own S3 secrets would need the httpfs extension, which the offline wheels lack."""
    import duckdb

    from embed_assets.sql import extension_path

    s3_store.write("docs", vectors_table([1, 2, 3]), key="id")
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    plain = duckdb.connect()
    plain.execute(f"LOAD '{extension_path('lance')}'")
    uri = s3_store.table_uri("docs")
    assert plain.sql(f"SELECT count(*), min(id) FROM '{uri}'").fetchone() == (3, 1)


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


# -- concurrent writers ---------------------------------------------------------------------
_RACER = r"""
import os, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from embed_assets import Store, ValidationError
from tests.conftest import vectors_table
opts = {opts!r}
go = {go!r}
while not os.path.exists(go):
    time.sleep(0.01)
mode = sys.argv[1]
if mode == "lance":  # raw Lance appends: only Lance's conditional-PUT commit protocol
    import lance
    for i in range(int(sys.argv[3])):
        lance.write_dataset(vectors_table([int(sys.argv[2]) * 1000 + i]), {uri!r} + "/raw.lance",
                            mode="append", storage_options=opts)
    print("done")
else:
    keys = [int(k) for k in sys.argv[2].split(",")]
    try:
        r = Store({uri!r}, storage_options=opts).write("t", vectors_table(keys), key="id", mode=mode)
        print("committed", r.version)
    except ValidationError as exc:
        print("refused", exc)
"""


def _race(s3, uri: str, tmp_path, *argvs: list[str]) -> list[str]:
    go = str(tmp_path / "go")
    code = _RACER.format(root=ROOT, opts=s3.storage_options(), go=go, uri=uri)
    procs = [subprocess.Popen([sys.executable, "-c", code, *a], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in argvs]
    open(go, "w").close()  # start them together
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip().splitlines()[-1])
    return outs


def test_racing_lance_writers_never_lose_a_commit(s3, bucket, tmp_path):
    """Two processes append through Lance alone, at once: with conditional PUTs every commit
    lands as its own version (a lost race is rebased, not overwritten)."""
    import lance

    uri = f"s3://{bucket}/race"
    lance.write_dataset(vectors_table([0]), uri + "/raw.lance", storage_options=s3.storage_options())
    n = 10
    assert _race(s3, uri, tmp_path, ["lance", "1", str(n)], ["lance", "2", str(n)]) == ["done", "done"]
    ds = lance.dataset(uri + "/raw.lance", storage_options=s3.storage_options())
    ids = sorted(ds.to_table(columns=["id"]).column("id").to_pylist())
    assert ids == [0, *range(1000, 1000 + n), *range(2000, 2000 + n)]
    assert [int(v["version"]) for v in ds.versions()] == list(range(1, 2 + 2 * n))
    # how often a manifest PUT lost the race (HTTP 412) and was rebased: reported, not asserted
    with open(s3.log_path, errors="replace") as f:
        COUNTS["s3_manifest_put_412"] += sum(" 412 " in ln and ".manifest" in ln for ln in f)


def test_the_server_refuses_a_second_conditional_create(s3, bucket):
    """What Lance's S3 commits need from the store: a PUT with If-None-Match: * on an
    existing object fails (412), and If-Match on a stale ETag fails."""
    import obstore as obs
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    from embed_assets.store._objstore import object_store

    st = object_store(f"s3://{bucket}/cond", s3.storage_options())
    first = obs.put(st, "x", b"1", mode="create")
    with pytest.raises(AlreadyExistsError):
        obs.put(st, "x", b"2", mode="create")
    obs.put(st, "x", b"3", mode={"e_tag": first["e_tag"]})
    with pytest.raises(PreconditionError):
        obs.put(st, "x", b"4", mode={"e_tag": first["e_tag"]})
    assert bytes(obs.get(st, "x").bytes()) == b"3"


def test_racing_store_writers_keep_keys_unique(s3, bucket, tmp_path):
    """Fenced commits, no lease: two processes appending the same new keys at once, one
    commits and the other is refused; writers of different keys both commit, one version
    each."""
    uri = f"s3://{bucket}/keys"
    store = Store(uri, storage_options=s3.storage_options())
    store.write("t", vectors_table([0]), key="id")
    outs = _race(s3, uri, tmp_path, ["append", "1,2,3"], ["append", "1,2,3"])
    assert sorted(o.split()[0] for o in outs) == ["committed", "refused"], outs
    assert "already exist" in next(o for o in outs if o.startswith("refused"))
    assert _ids(store, "t") == [0, 1, 2, 3]
    (tmp_path / "go").unlink()
    outs = _race(s3, uri, tmp_path, ["upsert", "10,11"], ["upsert", "20,21"])
    assert sorted(o.split()[0] for o in outs) == ["committed", "committed"]
    assert _ids(store, "t") == [0, 1, 2, 3, 10, 11, 20, 21]
    assert store.table("t").version == 4
    # no lease or lock object: Lance's conditional manifest PUTs are the only coordination
    from embed_assets.store._objstore import list_objects
    assert list_objects(uri, s3.storage_options(), ".embed_assets") == []


# -- the cache --------------------------------------------------------------------------------
def test_cached_matrices_never_shared_between_buckets_or_prefixes(s3):
    """The same table (same id, same version number) copied to another bucket and another
    prefix, then changed differently in each: every copy's search sees its own vectors."""
    src_bucket, other_bucket = s3.create_bucket("ea-cache-a"), s3.create_bucket("ea-cache-b")
    a = Store(f"s3://{src_bucket}/p", storage_options=s3.storage_options())
    a.write("t", vectors_table([1, 2, 3], seed=1), key="id")
    client = s3.client()
    for obj in client.list_objects_v2(Bucket=src_bucket, Prefix="p/")["Contents"]:
        for bkt, key in ((other_bucket, obj["Key"]), (src_bucket, "q/" + obj["Key"][2:])):
            client.copy_object(Bucket=bkt, Key=key, CopySource={"Bucket": src_bucket, "Key": obj["Key"]})
    b = Store(f"s3://{other_bucket}/p", storage_options=s3.storage_options())
    c = Store(f"s3://{src_bucket}/q", storage_options=s3.storage_options())
    assert a.table("t").identity == b.table("t").identity == c.table("t").identity
    target = np.ones(4, np.float32)
    for store, key in ((a, 1), (b, 2), (c, 3)):  # version 2 differs in each copy
        store.write("t", {"id": [key], "vector": [target.tolist()]}, key="id", mode="upsert")
    CACHE.clear()
    for store, key in ((a, 1), (b, 2), (c, 3)):
        t = store.table("t")
        assert t.version == 2
        assert t.search(target, k=1, use_index=False).column("id").to_pylist() == [key]
    uris = {k.uri for k, _ in CACHE._items}
    assert {a.table_uri("t"), b.table_uri("t"), c.table_uri("t")} <= uris


# -- Dagster and the CLI ---------------------------------------------------------------------
def test_dagster_io_manager_on_s3(s3, bucket, tmp_path, monkeypatch):
    from dagster import AssetIn, DagsterInstance, asset, materialize

    from embed_assets.dagster import EmbedStoreResource, LanceDBIOManager

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    uri = f"s3://{bucket}/dagster"
    calls = itertools.count(1)

    @asset(io_manager_key="lance", metadata={"key": "id", "write_mode": "upsert"})
    def vecs() -> pa.Table:
        n = next(calls)
        return pa.table({"id": list(range(n + 1)), "vector": np.eye(n + 1, 3, dtype=np.float32).tolist()})

    @asset(io_manager_key="lance", ins={"vecs": AssetIn(metadata={"version": 1})})
    def pinned(vecs: pa.Table) -> pa.Table:
        return vecs.select(["id", "vector"])

    res = {"lance": LanceDBIOManager(store=EmbedStoreResource(uri=uri,
                                                              storage_options=s3.storage_options()))}
    instance = DagsterInstance.get()
    try:
        assert materialize([vecs], resources=res, instance=instance).success
        assert materialize([vecs, pinned], resources=res, instance=instance).success
    finally:
        instance.dispose()
    store = Store(uri, storage_options=s3.storage_options())
    assert store.table("vecs").version == 2 and _ids(store, "vecs") == [0, 1, 2]
    assert _ids(store, "pinned") == [0, 1]  # read at version 1 of vecs


def test_cli_on_s3_with_environment_credentials(s3, bucket, tmp_path, debian):
    src = tmp_path / "src.parquet"
    debian.head(200).write_parquet(src)
    env = {**os.environ, **s3.env(), "HF_HUB_OFFLINE": "1", "LANCE_LOG": "error",
           "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    uri = f"s3://{bucket}/cli"

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "embed_assets.cli", "--store", uri, *args],
                           capture_output=True, text=True, env=env, timeout=600)
        assert (p.returncode == 0) == ok, p.stderr
        return p

    cli("embed", "pk", "--from", str(src), "--key", "package", "--text", "description",
        "--model", "hash-bow:32")
    cli("embed", "pk", "--from", str(src), "--key", "package", "--text", "description",
        "--model", "hash-bow:32", "--mode", "overwrite")
    cli("tag", "pk", "first", "--version", "1")
    versions = json.loads(cli("versions", "pk", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2] and versions[0]["tags"] == ["first"]
    assert json.loads(cli("tables", "--json").stdout)[0]["rows"] == 200
    hits = json.loads(cli("search", "pk", "a text editor", "-k", "3", "--version", "first",
                          "--json").stdout)
    assert len(hits) == 3
    assert json.loads(cli("rollback", "pk", "--to", "first", "--json").stdout)["version"] == 3
    out = tmp_path / "out.parquet"
    assert json.loads(cli("export", "pk", "--to", str(out), "--json").stdout)["rows"] == 200
    n = json.loads(cli("sql", 'SELECT count(*) AS n FROM "pk@first"', "--json").stdout)
    assert n == [{"n": 200}]
    bad = cli("versions", "nope", ok=False)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_training_snapshot_of_an_s3_table(s3_store, tmp_path):
    from embed_assets import snapshot

    s3_store.write("t", vectors_table(list(range(50)), dim=8), key="id")
    s3_store.write("t", vectors_table([99], dim=8), key="id", mode="append")
    t = s3_store.table("t")
    snap = snapshot(t, 1, cache_dir=tmp_path / "snaps")
    assert snap.rows == 50 and snap.manifest["store"] == s3_store.uri and not snap.reused
    stored = dict(zip(t.read(1).column("id").to_pylist(), t.read(1).column("vector").to_pylist(),
                      strict=True))
    for k, row in zip(snap.keys().tolist(), snap.vectors, strict=True):
        assert np.array_equal(row, np.asarray(stored[k], np.float32))
    assert snapshot(t, 1, cache_dir=tmp_path / "snaps").reused


def test_experiment_compare_promote_on_s3(s3_store):
    """Experiments on an object store (issue 25): the branch lives under the table's prefix;
    promotion rewrites the branch's files into production (no hard links there)."""
    from embed_assets import HashEmbedder, embed_table

    src = pa.table({"id": list(range(120)), "section": [f"s{i % 4}" for i in range(120)],
                    "text": [f"package {i % 9} tool {i}" for i in range(120)]})
    embed_table(s3_store, "t", src, key="id", text="text", embedder=HashEmbedder(dimension=32))
    t = s3_store.table("t")
    res = t.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    assert t.version == 1 and t.meta.dimension == 32
    assert t.read(version=("small", res.version)).num_rows == 120
    assert t.compare("small", sample=20, label_column="section").queries == 20
    p = t.promote("small")
    assert p.rows_rewritten == 120 and p.version == 2
    fresh = Store(s3_store.uri, storage_options=s3_store.storage_options).table("t")
    assert fresh.meta.dimension == 16 and fresh.read().num_rows == 120
    t.discard("small", grace=0)
    assert t.experiments() == [] and fresh.read().num_rows == 120
