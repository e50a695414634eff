"""Distributed embedding on Ray, on a real local cluster of two one-CPU worker nodes.

One cluster for the module (a head node with no CPUs, so every task runs on one of the
two workers), started and stopped here. Covers: the result equals the in-process embed
(every mode, the real model too), one version per run, an upsert re-embeds only changed
rows, a task that fails once (its worker killed, or an exception) is retried and the run
commits once, a run whose slice keeps failing leaves the table exactly as it was and
says so, uncommitted fragments are invisible and cleaned by ``cleanup``, the CLI's
``embed --ray`` and the Dagster asset's Ray option.
"""

# No `from __future__ import annotations`: Dagster resolves the test assets' annotations.
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from embed_assets import HashEmbedder, Store  # noqa: E402
from embed_assets._demo import demo_source  # noqa: E402
from embed_assets.embed import RayEmbedError, embed_table, embed_table_ray  # noqa: E402
from embed_assets.embed._ray import parse_address, ray_session, task_rows  # noqa: E402
from embed_assets.errors import ValidationError  # noqa: E402
from embed_assets.store._fragments import fragment_target, write_uncommitted  # noqa: E402

pytestmark = pytest.mark.timeout(600)

# The planted embedders below live in this module, which the workers cannot import: they
# travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

VOLATILE = ["_embedded_at", "_run_id"]  # differ between any two runs, by design
OBJECT_STORE = 100 * 2**20


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node without CPUs and two worker nodes of one CPU each; its address."""
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": OBJECT_STORE, "include_dashboard": False},
    )
    try:
        for _ in range(2):
            c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False, logging_level="warning")
        yield c.address
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture(scope="module")
def source() -> pa.Table:
    """400 Debian packages: package, section, description (real text)."""
    df = demo_source().head(400).select(["package", "section", "description"])
    return df.to_arrow()


def content(store: Store, name: str) -> pa.Table:
    return store.table(name).read().sort_by("package").drop_columns(VOLATILE)


def same_rows(store: Store, a: str, b: str) -> None:
    ta, tb = content(store, a), content(store, b)
    assert ta.schema == tb.schema
    assert ta.equals(tb)


def edit(
    src: pa.Table, *, texts: Sequence[int] = (), sections: Sequence[int] = (), drop: int = 0
) -> pa.Table:
    """The source with some descriptions and sections changed and the last rows gone."""
    d = src.to_pydict()
    for i in texts:
        d["description"][i] = "changed: " + d["description"][i]
    for i in sections:
        d["section"][i] = "moved"
    out = pa.table(d, schema=src.schema)
    return out.slice(0, out.num_rows - drop)


# -- embedders planted with faults (they run in the workers) ---------------------------------
class CrashOnce(HashEmbedder):
    """The hashing embedder; the first call anywhere (a marker file decides) kills its
    worker process (``how="exit"``) or raises an OSError (``how="raise"``)."""

    def __init__(self, marker: str, how: str) -> None:
        super().__init__(dimension=32)
        self.marker, self.how = marker, how

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return super().embed(texts)
        if self.how == "exit":
            os._exit(1)  # the worker dies mid-task, as on an OOM kill
        raise OSError("the disk hiccuped (planted)")


class NeedsEnv(HashEmbedder):
    """The hashing embedder, refusing to run where ``EA_RAY_PROBE`` is not set."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if os.environ.get("EA_RAY_PROBE") != "yes":
            raise ValidationError("EA_RAY_PROBE is not set in this worker")
        return super().embed(texts)


class Poisoned(HashEmbedder):
    """The hashing embedder, failing every time it sees a text containing ``poison``."""

    def __init__(self, poison: str) -> None:
        super().__init__(dimension=32)
        self.poison = poison

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if any(self.poison in t for t in texts):
            raise OSError(f"cannot embed {self.poison!r} (planted)")
        return super().embed(texts)


# -- results equal the in-process embed -------------------------------------------------------
def test_first_embed_equals_in_process_and_is_one_version(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    r = embed_table_ray(store, "r", source, key="package", text="description", embedder=emb, rows_per_task=64)
    embed_table(store, "p", source, key="package", text="description", embedder=emb)
    same_rows(store, "r", "p")
    assert [v.version for v in store.table("r").versions()] == [1]
    assert r.rows_embedded == 400 and r.version == 1 and r.write.rows_inserted == 400
    assert r.ray["tasks"] == 7 and r.ray["workers"] == 2
    assert r.ray["nodes"] == 2  # both worker nodes embedded a share
    props = store.table("r").properties()
    want = store.table("p").properties()
    for k in (
        "model",
        "model_revision",
        "mode",
        "rows_written",
        "rows_embedded",
        "text_column",
        "embed_mode",
    ):
        assert props[k] == want[k], k
    assert props["executor"] == "ray" and props["ray_tasks"] == "7"
    ma, mb = store.table("r").meta, store.table("p").meta
    assert (ma.key, ma.dimension, ma.model, ma.model_revision, ma.text_column) == (
        mb.key,
        mb.dimension,
        mb.model,
        mb.model_revision,
        mb.text_column,
    )
    # search works on what the workers wrote
    hits = store.table("r").search("text editor", k=3, embedder=emb)
    assert hits.num_rows == 3


@pytest.mark.parametrize("mode", ["upsert", "sync", "replace_partition", "append", "overwrite"])
def test_second_run_equals_in_process_in_every_mode(cluster, source, tmp_path, mode):
    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    first, partition = source, None
    if mode == "replace_partition":
        partition = ("section", "moved")
        first = source
    elif mode == "append":
        first = source.slice(0, 300)
    for name in ("r", "p"):
        embed_table(store, name, first, key="package", text="description", embedder=emb)
    if mode == "replace_partition":
        # the partition "moved": 5 rows moved into it (2 with a new text), nothing else
        second = edit(source, texts=[3, 4], sections=[1, 2, 3, 4, 5])
        second = second.filter(pa.compute.equal(second.column("section"), "moved"))
    elif mode == "append":
        second = source.slice(300)
    else:
        second = edit(source, texts=[0, 1, 2], sections=[10, 11], drop=4)
    kw: dict[str, Any] = dict(key="package", text="description", embedder=emb, mode=mode, partition=partition)
    r = embed_table_ray(store, "r", second, rows_per_task=64, **kw)
    p = embed_table(store, "p", second, **kw)
    same_rows(store, "r", "p")
    assert r.version == 2 and len(store.table("r").versions()) == 2
    assert (r.rows_embedded, r.rows_reused, r.rows_unchanged) == (
        p.rows_embedded,
        p.rows_reused,
        p.rows_unchanged,
    )
    w, q = r.write, p.write
    assert (w.rows_inserted, w.rows_updated, w.rows_deleted) == (
        q.rows_inserted,
        q.rows_updated,
        q.rows_deleted,
    )


def test_upsert_reembeds_only_changed_rows(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    first = embed_table_ray(
        store, "r", source, key="package", text="description", embedder=emb, run_id="run-1"
    )
    assert first.version == 1
    again = embed_table_ray(
        store, "r", source, key="package", text="description", embedder=emb, run_id="run-2"
    )
    # nothing changed: no task, no version, no cluster work at all
    assert (again.rows_embedded, again.version, again.ray["tasks"]) == (0, 1, 0)
    changed = edit(source, texts=[5, 6, 7], sections=[8])
    r = embed_table_ray(store, "r", changed, key="package", text="description", embedder=emb, run_id="run-3")
    assert (r.rows_embedded, r.rows_reused, r.rows_unchanged) == (3, 1, 396)
    assert r.ray["tasks"] == 1 and r.version == 2
    assert (r.write.rows_updated, r.write.rows_inserted, r.write.rows_deleted) == (4, 0, 0)
    t = store.table("r").read().sort_by("package")
    runs = dict(zip(t.column("package").to_pylist(), t.column("_run_id").to_pylist(), strict=True))
    pkgs = source.column("package").to_pylist()
    # only the three changed texts carry this run's id; the moved row kept its vector's
    assert sorted(k for k, v in runs.items() if v == "run-3") == sorted(pkgs[5:8])
    assert runs[pkgs[8]] == "run-1"
    assert t.num_rows == 400


# -- failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["exit", "raise"])
def test_a_task_that_fails_once_is_retried_and_the_run_commits_once(cluster, source, tmp_path, how):
    store = Store(tmp_path / "s")
    marker = str(tmp_path / "crashed")
    emb = CrashOnce(marker, how)
    r = embed_table_ray(
        store, "r", source, key="package", text="description", embedder=emb, rows_per_task=100, max_retries=2
    )
    assert os.path.exists(marker)  # the first attempt of one slice did fail
    embed_table(store, "p", source, key="package", text="description", embedder=HashEmbedder(dimension=32))
    same_rows(store, "r", "p")
    assert r.ray["tasks"] == 4 and [v.version for v in store.table("r").versions()] == [1]


def test_a_run_whose_slice_keeps_failing_commits_nothing(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    embed_table(store, "r", source.slice(0, 200), key="package", text="description", embedder=emb)
    before = store.table("r").read().sort_by("package")
    data = Path(store.table("r").uri) / "data"
    files_before = sorted(os.listdir(data))
    poison = source.column("description")[390].as_py()
    with pytest.raises(RayEmbedError) as err:
        embed_table_ray(
            store,
            "r",
            source,
            key="package",
            text="description",
            embedder=Poisoned(poison),
            rows_per_task=50,
            max_retries=1,
        )
    msg = str(err.value)
    assert "failed" in msg and "OSError" in msg and "planted" in msg
    assert "nothing was committed" in msg and "stays at version 1" in msg
    t = store.table("r")
    assert [v.version for v in t.versions()] == [1]
    assert t.read().sort_by("package").equals(before)
    # the slices that succeeded had their files deleted: nothing new is left behind
    assert sorted(os.listdir(data)) == files_before


def test_input_errors_are_not_retried(cluster, source, tmp_path):
    class Wrong(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> np.ndarray:
            return super().embed(texts)[:, :3]

    store = Store(tmp_path / "s")
    with pytest.raises(RayEmbedError, match=r"declares dimension 32 but returned 3.*not retried"):
        embed_table_ray(store, "r", source, key="package", text="description", embedder=Wrong(dimension=32))
    assert not store.exists("r")


def test_uncommitted_fragments_are_invisible_and_cleanup_removes_them(cluster, source, tmp_path):
    """What a worker that died after writing leaves: files no version references."""
    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    embed_table(store, "r", source, key="package", text="description", embedder=emb)
    t = store.table("r")
    rows = t.read().slice(0, 50)
    frags = write_uncommitted(fragment_target(store, "r", replace=False), rows)
    assert frags and t.count_rows() == 400 and [v.version for v in t.versions()] == [1]
    rep = t.cleanup(keep_last=1, grace=dt.timedelta(0))
    assert rep.orphan_files >= 1
    data = Path(t.uri) / "data"
    assert not any((data / f.path).exists() for fr in frags for f in fr.files)
    assert t.count_rows() == 400


def test_a_table_changed_under_the_run_is_not_committed_over(source, tmp_path):
    """The store hook alone: fragments written for a new table are refused once someone
    else has created it, and fragments in the old columns once it was overwritten."""
    from embed_assets.errors import ConflictError
    from embed_assets.store._fragments import commit_fragments
    from embed_assets.store._writes import WriteRequest

    store = Store(tmp_path / "s")
    emb = HashEmbedder(dimension=32)
    embed_table(store, "src", source, key="package", text="description", embedder=emb)
    rows = store.table("src").read().slice(0, 20)
    req = WriteRequest(name="t", key="package", mode="upsert", model=emb.name)
    target = fragment_target(store, "t", replace=True)
    frags = write_uncommitted(target, rows)
    embed_table(store, "t", source.slice(100, 10), key="package", text="description", embedder=emb)
    with pytest.raises(ConflictError, match="nothing was committed"):
        commit_fragments(store, req, target, frags, schema=rows.schema, keys=rows.column("package"))
    assert [v.version for v in store.table("t").versions()] == [1]
    target = fragment_target(store, "t", replace=False)
    frags = write_uncommitted(target, rows)
    store.write("t", rows.drop_columns(["section"]), key="package", mode="overwrite", model=emb.name)
    with pytest.raises(ConflictError, match="other columns"):
        commit_fragments(store, req, target, frags, schema=rows.schema, keys=rows.column("package"))
    assert [v.version for v in store.table("t").versions()] == [1, 2]


def test_model_and_dimension_refusals_hold(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    embed_table(store, "r", source, key="package", text="description", embedder=HashEmbedder(dimension=32))
    with pytest.raises(ValidationError, match="holds vectors from model"):
        embed_table_ray(
            store,
            "r",
            edit(source, texts=[0]),
            key="package",
            text="description",
            embedder=HashEmbedder(dimension=16),
        )
    assert len(store.table("r").versions()) == 1


def test_on_object_storage(cluster, source, tmp_path):
    """The workers write their fragments to S3 (a local moto server), the driver commits."""
    pytest.importorskip("moto.server", reason="moto[server] (the dev extra) runs the local S3 server")
    from .s3_server import moto_server

    emb = HashEmbedder(dimension=32)
    local = Store(tmp_path / "local")
    with moto_server(str(tmp_path)) as s3:
        bucket = s3.create_bucket("ea-ray")
        remote = Store(f"s3://{bucket}/store", storage_options=s3.storage_options())
        for store in (remote, local):
            embed_table(store, "t", source.slice(0, 300), key="package", text="description", embedder=emb)
        changed = edit(source, texts=[0, 1], sections=[2])
        r = embed_table_ray(
            remote,
            "t",
            changed,
            key="package",
            text="description",
            embedder=emb,
            mode="sync",
            rows_per_task=40,
        )
        embed_table(local, "t", changed, key="package", text="description", embedder=emb, mode="sync")
        assert r.version == 2 and r.ray["tasks"] == 3
        assert content(remote, "t").equals(content(local, "t"))
        with pytest.raises(RayEmbedError, match="stays at version 2"):
            embed_table_ray(
                remote,
                "t",
                edit(source, texts=[5]),
                key="package",
                text="description",
                embedder=Poisoned("changed:"),
                max_retries=0,
            )
        assert [v.version for v in remote.table("t").versions()] == [1, 2]
        assert content(remote, "t").equals(content(local, "t"))
        # every data file left is one a version references: the failed run deleted its own
        from embed_assets.store._objstore import list_objects
        from embed_assets.store._retention import referenced_files

        t = remote.table("t")
        listed = {m["path"] for m in list_objects(t.uri, s3.storage_options(), "data")}
        kept: set[str] = set()
        for v in (1, 2):
            kept |= {f for f in referenced_files(t.dataset(v))[0] if f.startswith("data/")}
        assert listed == kept


# -- addresses --------------------------------------------------------------------------------
def test_addresses_are_checked():
    assert parse_address("local:2") == ("local", 2)
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1:6379", None)
    assert parse_address("ray://head:10001") == ("ray://head:10001", None)
    assert parse_address("auto") == ("auto", None)
    for bad in ("local:0", "local:x", "nohost", ""):
        with pytest.raises(ValidationError, match=r"Ray address|local:N"):
            parse_address(bad)
    assert task_rows(400, 2) == 256 and task_rows(100_000, 2) == 12_500
    assert task_rows(10**7, 2) == 32_768


def test_runtime_env_reaches_the_tasks(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    kw: dict[str, Any] = dict(key="package", text="description", embedder=NeedsEnv(dimension=32))
    with pytest.raises(RayEmbedError, match="EA_RAY_PROBE is not set"):
        embed_table_ray(store, "r", source, **kw)
    r = embed_table_ray(store, "r", source, runtime_env={"env_vars": {"EA_RAY_PROBE": "yes"}}, **kw)
    assert r.version == 1 and r.rows_embedded == 400


def test_resources_a_cluster_lacks_are_refused(cluster, source, tmp_path):
    store = Store(tmp_path / "s")
    with pytest.raises(ValidationError, match=r"no node .* has the resources .*gpu_box=1"):
        embed_table_ray(
            store,
            "r",
            source,
            key="package",
            text="description",
            embedder=HashEmbedder(dimension=32),
            resources={"gpu_box": 1},
        )
    with pytest.raises(ValidationError, match="CPU=2"):
        embed_table_ray(
            store,
            "r",
            source,
            key="package",
            text="description",
            embedder=HashEmbedder(dimension=32),
            cpus_per_task=2,
        )
    assert not store.exists("r")


def test_an_unreachable_address_fails_fast_with_its_name(tmp_path):
    code = "from embed_assets.embed._ray import ray_session\nwith ray_session('127.0.0.1:9'):\n    pass\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in proc.stderr


def test_missing_ray_says_to_install_the_extra(monkeypatch):
    # issue 28: a missing extra is an ImportError naming it (MissingExtraError)
    from embed_assets import MissingExtraError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"embed_assets\[ray\]"), ray_session("local:1"):
        pass


# -- the CLI and Dagster ----------------------------------------------------------------------
def test_cli_embed_ray(cluster, source, tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "src.parquet"
    pq.write_table(source, path)
    cmd = [
        sys.executable,
        "-m",
        "embed_assets.cli",
        "--store",
        str(tmp_path / "s"),
        "embed",
        "r",
        "--from",
        str(path),
        "--key",
        "package",
        "--text",
        "description",
        "--model",
        "hash-bow:32",
        "--ray",
        cluster,
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout)
    assert out["rows_embedded"] == 400 and out["ray"]["tasks"] >= 1
    assert out["write"]["version"] == 1
    store = Store(tmp_path / "s")
    embed_table(store, "p", source, key="package", text="description", embedder=HashEmbedder(dimension=32))
    same_rows(store, "r", "p")
    bad = subprocess.run([*cmd[:-3], "--ray", "local:zero"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "local:N needs N a positive integer" in bad.stderr
    both = subprocess.run([*cmd, "--commit-every", "10"], capture_output=True, text=True, timeout=120)
    # local:N: the command starts (and stops) a cluster of its own
    own = subprocess.run(
        [*cmd[:-3], "--ray", "local:2", "--mode", "overwrite"], capture_output=True, text=True, timeout=300
    )
    assert own.returncode == 0, own.stderr
    assert "on Ray: 2 task(s) over 2 worker(s)" in own.stdout and "version 2" in own.stdout
    # nothing else on stderr: Ray's token-auth WARNING and lance's fork-safety UserWarning
    # were printed by every local:N run (issue 23.6)
    assert "WARNING" not in own.stderr and "Warning" not in own.stderr, own.stderr
    assert both.returncode == 2 and "--commit-every" in both.stderr


def test_dagster_asset_with_the_ray_option(cluster, source, tmp_path, monkeypatch):
    from dagster import DagsterInstance, asset, materialize

    from embed_assets.dagster import (
        EmbedderResource,
        EmbedStoreResource,
        LanceDBIOManager,
        build_embedding_asset,
    )

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @asset(key="pkgs")
    def pkgs() -> pa.Table:
        return source

    emb_asset = build_embedding_asset(
        "pkg_vectors", source="pkgs", key_column="package", text_column="description"
    )
    store_res = EmbedStoreResource(uri=str(tmp_path / "s"))
    resources = {
        "embed_store": store_res,
        "lance_io_manager": LanceDBIOManager(store=store_res),
        "embedder": EmbedderResource(backend="hash", dimension=32, ray_address=cluster),
    }
    with DagsterInstance.ephemeral() as instance:
        res = materialize([pkgs, emb_asset], resources=resources, instance=instance)
        assert res.success
        mat = res.asset_materializations_for_node("pkg_vectors")[0]
        assert mat.metadata["rows_embedded"].value == 400
        store = Store(tmp_path / "s")
        props = store.table("pkg_vectors").properties()
        assert props["executor"] == "ray" and props["run_id"] == res.run_id
        # the run config's address wins over the resource's; an unchanged source: 0 rows
        again = materialize(
            [pkgs, emb_asset],
            resources=resources,
            instance=instance,
            run_config={"ops": {"pkg_vectors": {"config": {"ray_address": cluster}}}},
        )
        assert again.success
        md = again.asset_materializations_for_node("pkg_vectors")[0].metadata
        assert md["rows_embedded"].value == 0
    embed_table(store, "p", source, key="package", text="description", embedder=HashEmbedder(dimension=32))
    a = store.table("pkg_vectors").read().sort_by("package").drop_columns(VOLATILE)
    assert a.equals(content(store, "p"))


# -- the real model ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_real_model_on_two_workers_equals_in_process(cluster, source, tmp_path, minilm):
    from embed_assets import SentenceTransformerEmbedder

    store = Store(tmp_path / "s")
    src = source.slice(0, 160)
    r = embed_table_ray(
        store,
        "r",
        src,
        key="package",
        text="description",
        embedder=SentenceTransformerEmbedder(show_progress=False),
        rows_per_task=40,
    )
    embed_table(store, "p", src, key="package", text="description", embedder=minilm)
    assert r.ray["nodes"] == 2 and r.ray["timings"]["worker_model_load_s"] > 0
    a = store.table("r").read().sort_by("package")
    b = store.table("p").read().sort_by("package")
    assert a.column("package").equals(b.column("package"))
    va = np.stack(a.column("vector").to_numpy(zero_copy_only=False))
    vb = np.stack(b.column("vector").to_numpy(zero_copy_only=False))
    assert va.shape == (160, 384)
    np.testing.assert_allclose(va, vb, atol=1e-4)
    assert store.table("r").meta.model_revision == store.table("p").meta.model_revision
    hits = store.table("r").search("a text editor", k=5, embedder=minilm)
    assert hits.num_rows == 5
