"""Streaming embeds (a Parquet path, committed in groups) and the vector-free diff.

Real parts throughout: Parquet files on disk, real Lance stores, a real subprocess killed
with SIGKILL, the Dagster asset run on a real instance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lance
import numpy as np
import polars as pl
import pytest

from embed_assets import HashEmbedder, SchemaMismatchError, Store, ValidationError, embed_table

WORKER = Path(__file__).with_name("stream_worker.py")


class Counting(HashEmbedder):
    """The hashing embedder, counting the texts that reach it."""

    def __init__(self, dimension: int = 32) -> None:
        super().__init__(dimension=dimension)
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.extend(texts)
        return super().embed(texts)


def corpus(debian: pl.DataFrame, n: int) -> pl.DataFrame:
    """``n`` rows of real text: the Debian descriptions, repeated with a numbered suffix."""
    base = debian["description"].to_list()
    return pl.DataFrame({
        "id": list(range(n)),
        "text": [f"{base[i % len(base)]} (variant {i // len(base)})" for i in range(n)],
        "section": [f"s{i % 5}" for i in range(n)],
    })


def write_parquet(df: pl.DataFrame, path: Path) -> str:
    df.write_parquet(path)
    return str(path)


def keys_and_vectors(store: Store, name: str = "t") -> tuple[list[Any], np.ndarray]:
    tbl = store.table(name).read(columns=["id", "vector"]).sort_by("id")
    vecs = tbl.column("vector").combine_chunks()
    return tbl.column("id").to_pylist(), vecs.values.to_numpy().reshape(len(vecs), -1)


def test_parquet_streams_in_committed_groups_equal_to_in_memory(tmp_path, debian) -> None:
    df = corpus(debian, 530)
    path = write_parquet(df, tmp_path / "src.parquet")
    streamed, whole = Store(tmp_path / "a"), Store(tmp_path / "b")
    r = embed_table(streamed, "t", path, key="id", text="text", embedder=HashEmbedder(32),
                    commit_every=100, progress=False)
    embed_table(whole, "t", df, key="id", text="text", embedder=HashEmbedder(32))
    assert r.rows_embedded == 530 and r.write.rows_inserted == 530
    # six groups, six versions; each commit says how far the stream had got
    versions = streamed.table("t").versions()
    assert len(versions) == 6
    assert streamed.table("t").properties(versions[-1].version)["stream_rows_done"] == "530"
    ka, va = keys_and_vectors(streamed)
    kb, vb = keys_and_vectors(whole)
    assert ka == kb and np.array_equal(va, vb)
    # a rerun with nothing changed reads, embeds and writes nothing
    again = Counting()
    r2 = embed_table(streamed, "t", path, key="id", text="text", embedder=again, commit_every=100)
    assert again.texts == [] and not r2.write.committed and r2.rows_unchanged == 530
    # 1% of the texts changed, spread over every group: one commit, five rows embedded
    changed = df.with_columns(pl.when(pl.col("id") % 100 == 7).then(pl.col("text") + " (revised)")
                              .otherwise(pl.col("text")).alias("text"))
    emb = Counting()
    r3 = embed_table(streamed, "t", write_parquet(changed, tmp_path / "c.parquet"), key="id",
                     text="text", embedder=emb, commit_every=100)
    assert len(emb.texts) == r3.rows_embedded == 6 and r3.write.rows_updated == 6
    assert len(streamed.table("t").versions()) == 7


def test_stream_refuses_bad_rows_before_committing_anything(tmp_path, debian) -> None:
    store = Store(tmp_path / "s")
    df = corpus(debian, 300)
    blank = df.with_columns(pl.when(pl.col("id") == 250).then(pl.lit("  ")).otherwise(pl.col("text"))
                            .alias("text"))
    with pytest.raises(ValidationError, match=r"1 row\(s\) have null or empty text \(keys 250\)"):
        embed_table(store, "t", write_parquet(blank, tmp_path / "b.parquet"), key="id", text="text",
                    embedder=HashEmbedder(32), commit_every=50)
    dup = pl.concat([df, df.tail(1)])
    with pytest.raises(ValidationError, match="duplicate"):
        embed_table(store, "t", write_parquet(dup, tmp_path / "d.parquet"), key="id", text="text",
                    embedder=HashEmbedder(32), commit_every=50)
    assert not store.exists("t")  # the bad rows were in the last group: nothing was written
    with pytest.raises(ValidationError, match="commit_every"):
        embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder(32), commit_every=0)
    with pytest.raises(ValidationError, match="does not exist"):
        embed_table(store, "t", str(tmp_path / "nope.parquet"), key="id", text="text",
                    embedder=HashEmbedder(32))


def test_stream_sync_deletes_gone_keys_and_skips_blank_rows(tmp_path, debian) -> None:
    store = Store(tmp_path / "s")
    df = corpus(debian, 400)
    embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder(32))
    newer = df.filter(pl.col("id") >= 100).with_columns(
        pl.when(pl.col("id") == 399).then(pl.lit("")).otherwise(pl.col("text")).alias("text"),
        pl.when(pl.col("id") == 300).then(pl.lit("s9")).otherwise(pl.col("section")).alias("section"))
    emb = Counting()
    r = embed_table(store, "t", write_parquet(newer, tmp_path / "n.parquet"), key="id", text="text",
                    embedder=emb, mode="sync", on_empty="skip", commit_every=128)
    # nothing re-embedded: id 300 only changed its section (rewritten with its stored vector)
    assert emb.texts == [] and r.rows_reused == 1 and r.rows_skipped_empty == 1
    assert r.write.rows_deleted == 101  # ids 0..99 and the now-blank 399
    ids = store.table("t").read(columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == list(range(100, 399))
    row = store.table("t").read(where="id = 300").to_pylist()[0]
    assert row["section"] == "s9"
    assert np.allclose(row["vector"], HashEmbedder(32).embed([df["text"][300]])[0])


def test_sigkill_midway_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path, debian) -> None:
    df = corpus(debian, 3000)
    path = write_parquet(df, tmp_path / "src.parquet")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(killed), path, "100"],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    # Kill once a few groups are committed (30 groups of 100, 0.15 s each at least).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(lance.dataset(str(killed / "t.lance")).versions()) >= 4:
                break
        except (ValueError, OSError, RuntimeError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    store = Store(killed)
    committed = store.table("t").count_rows()
    assert 400 <= committed < 3000 and committed % 100 == 0
    # The rerun embeds exactly the rows that were not committed.
    emb = Counting()
    r = embed_table(store, "t", path, key="id", text="text", embedder=emb, commit_every=100)
    assert len(emb.texts) == 3000 - committed == r.rows_embedded
    assert r.rows_unchanged == committed
    clean = Store(tmp_path / "clean")
    embed_table(clean, "t", path, key="id", text="text", embedder=HashEmbedder(32), commit_every=100)
    ka, va = keys_and_vectors(store)
    kb, vb = keys_and_vectors(clean)
    assert ka == kb == list(range(3000)) and np.array_equal(va, vb)


class _ScanSpy:
    """Records the columns every Python-side Lance read asks for (the reads still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        for meth in ("to_table", "to_batches", "scanner"):
            real = getattr(lance.LanceDataset, meth)

            def spy(ds: Any, *args: Any, _real: Any = real, _meth: str = meth, **kw: Any) -> Any:
                self.calls.append((_meth, kw.get("columns", args[0] if args else None),
                                   kw.get("filter")))
                return _real(ds, *args, **kw)

            monkeypatch.setattr(lance.LanceDataset, meth, spy)

    def vector_reads(self) -> list[tuple[str, Any, Any]]:
        return [c for c in self.calls if c[1] is None or "vector" in list(c[1])]


def test_incremental_diff_never_scans_stored_vectors(tmp_path, debian, monkeypatch) -> None:
    store = Store(tmp_path / "s")
    df = corpus(debian, 2000)
    embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder(32))
    spy = _ScanSpy(monkeypatch)
    # nothing changed, then 1% of the texts changed: no stored vector is read
    embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder(32))
    changed = df.with_columns(pl.when(pl.col("id") % 100 == 0).then(pl.lit("a new text"))
                              .otherwise(pl.col("text")).alias("text"))
    r = embed_table(store, "t", changed, key="id", text="text", embedder=HashEmbedder(32))
    assert r.rows_embedded == 20
    assert spy.calls and spy.vector_reads() == []
    # the diff's scans ask for key, content hash and the compared columns only
    diff_scans = [c for c in spy.calls if c[0] == "to_batches"]
    assert diff_scans and all(set(c[1]) == {"id", "_content_hash", "text", "section"}
                              for c in diff_scans)
    # a changed non-text column: the stored vectors of exactly those rows are read
    moved = changed.with_columns(pl.when(pl.col("id") < 3).then(pl.lit("s9"))
                                 .otherwise(pl.col("section")).alias("section"))
    spy.calls.clear()
    r = embed_table(store, "t", moved, key="id", text="text", embedder=HashEmbedder(32))
    assert r.rows_reused == 3 and r.rows_embedded == 0
    reads = spy.vector_reads()
    assert reads and all(str(filt) == "`id` IN (0, 1, 2)" for _m, _c, filt in reads)


def test_stream_refuses_another_backend_of_the_same_model(tmp_path, debian) -> None:
    store = Store(tmp_path / "s")
    df = corpus(debian, 50)
    embed_table(store, "t", df, key="id", text="text", embedder=HashEmbedder(32))
    other = HashEmbedder(32, name="hash-bow:32#onnx-int8")
    with pytest.raises(SchemaMismatchError, match="onnx-int8"):
        embed_table(store, "t", write_parquet(df, tmp_path / "x.parquet"), key="id", text="text",
                    embedder=other)
    r = embed_table(store, "t", write_parquet(df, tmp_path / "x.parquet"), key="id", text="text",
                    embedder=other, mode="overwrite", commit_every=20)
    assert r.rows_embedded == 50 and store.table("t").meta.model == "hash-bow:32#onnx-int8"
    assert store.table("t").count_rows() == 50


def test_cli_streams_parquet_and_resumes(tmp_path, debian) -> None:
    df = corpus(debian, 250)
    path = write_parquet(df, tmp_path / "src.parquet")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "embed_assets.cli", "--store", str(tmp_path / "s"), "embed", "t",
           "--from", path, "--key", "id", "--text", "text", "--model", "hash-bow:32",
           "--commit-every", "100", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert len(Store(tmp_path / "s").table("t").versions()) == 3
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and '"rows_embedded": 0' in again.stdout
    bad = subprocess.run([*cmd[:-1], "--backend", "tpu"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "tpu" in bad.stderr


def test_dagster_asset_failed_halfway_reexecutes_and_resumes(tmp_path, debian) -> None:
    from dagster import DagsterInstance, ReexecutionOptions, execute_job

    from tests import stream_dagster  # the job (re-execution needs a reconstructable one)

    home = tmp_path / "dagster_home"
    home.mkdir()
    os.environ["STREAM_TEST_STORE"] = str(tmp_path / "store")
    os.environ["STREAM_TEST_SOURCE"] = write_parquet(corpus(debian, 1000), tmp_path / "src.parquet")
    os.environ["STREAM_TEST_FAIL_AFTER"] = "450"
    try:
        with DagsterInstance.local_temp(str(home)) as instance:
            job = stream_dagster.reconstructable_job()
            first = execute_job(job, instance=instance, raise_on_error=False)
            assert not first.success
            store = Store(tmp_path / "store")
            committed = store.table("t").count_rows()
            assert committed == 400  # four groups of 100 committed before the failure
            os.environ["STREAM_TEST_FAIL_AFTER"] = "0"
            second = execute_job(job, instance=instance, raise_on_error=False,
                                 reexecution_options=ReexecutionOptions.from_failure(
                                     first.run_id, instance))
            assert second.success
            mat = second.asset_materializations_for_node("t")[0]
            assert mat.metadata["rows_embedded"].value == 600
            assert store.table("t").count_rows() == 1000
    finally:
        for k in ("STREAM_TEST_STORE", "STREAM_TEST_SOURCE", "STREAM_TEST_FAIL_AFTER"):
            os.environ.pop(k, None)


def test_pyarrow_table_with_commit_every_streams_too(tmp_path, debian) -> None:
    store = Store(tmp_path / "s")
    tbl = corpus(debian, 90).to_arrow()
    r = embed_table(store, "t", tbl, key="id", text="text", embedder=HashEmbedder(32), commit_every=40)
    assert r.rows_embedded == 90 and len(store.table("t").versions()) == 3


def test_progress_bar_shows_rows_per_second_and_eta(tmp_path, debian, capfd) -> None:
    path = write_parquet(corpus(debian, 300), tmp_path / "src.parquet")
    embed_table(Store(tmp_path / "s"), "t", path, key="id", text="text", embedder=HashEmbedder(32),
                commit_every=100, progress=True)
    err = capfd.readouterr().err
    # tqdm's line: "embed t: 100%|...| 300/300 [00:00<00:00, 1.2k rows/s, committed=3, ...]"
    assert "embed t" in err and "300/300" in err and "rows/s" in err and "<" in err
    assert "committed=3" in err
