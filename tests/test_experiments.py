"""Experiments on Lance branches (issue 25): a new model embedded into a branch of the table,
compared with production, promoted in one commit or discarded; production untouched until
then. Real Lance tables in temporary folders; the hashing embedder as the "models"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import HashEmbedder, Store, embed_table
from embed_assets.errors import (
    ProductionMovedError,
    SchemaMismatchError,
    ValidationError,
    VersionNotFoundError,
)
from embed_assets.store import _experiments

from .conftest import snapshot

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "LANCE_LOG": "error", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


class Counting(HashEmbedder):
    """The hashing embedder, counting the texts it embeds."""

    calls: int = 0

    def embed(self, texts: Any) -> np.ndarray:
        self.calls += len(texts)
        return super().embed(texts)


def _source(n: int = 300, word: str = "tool") -> pa.Table:
    return pa.table({"id": list(range(n)), "section": [f"s{i % 5}" for i in range(n)],
                     "text": [f"package {i % 7} {word} number {i} section s{i % 5}"
                              for i in range(n)]})


@pytest.fixture
def table(store: Store) -> Any:
    embed_table(store, "t", _source(), key="id", text="text", embedder=HashEmbedder(dimension=32))
    return store.table("t")


def test_experiment_is_a_branch_production_untouched(store: Store, table: Any) -> None:
    table.tag("prod")
    before = snapshot(store, "t")
    props_before = table.properties()
    res = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    assert res.committed and res.rows_embedded == 300 and res.base_version == 1
    # production: same versions, tags, rows, model
    assert snapshot(store, "t") == before
    assert table.meta.dimension == 32 and table.properties() == props_before
    assert table.tags() == {"prod": 1}
    # the experiment, read every way a version is read
    v = res.version
    for ref in ("small", ("small", v), f"small:{v}", ("small", None)):
        got = table.read(version=ref, columns=["id", "vector"])
        assert got.num_rows == 300
        assert got.schema.field("vector").type.list_size == 16
    assert table.meta_at("small").model == "hash-bow:16"
    info = table.experiment_info("small")
    assert (info.base_version, info.model, info.dimension, info.embedded) == (1, "hash-bow:16", 16, True)
    assert table.properties(("small", v))["experiment_base"] == "1"
    # the same version number on both sides: searches never share a cache entry
    q32 = table.read(columns=["vector"]).column("vector")[0].values.to_numpy()
    q16 = table.read(version="small", columns=["vector"]).column("vector")[0].values.to_numpy()
    assert table.search(q32, k=1).column("id").to_pylist() == [0]
    assert table.search(q16, k=1, version=("small", v)).column("id").to_pylist() == [0]
    with pytest.raises(ValidationError):  # a 16-d query on 32-d production
        table.search(q16, k=1)


def test_rerun_embeds_only_changed_rows(store: Store, table: Any) -> None:
    emb = Counting(dimension=16, seed=1)
    table.experiment("small", embedder=emb)
    assert emb.calls == 300
    again = table.experiment("small", embedder=emb)
    assert (again.committed, again.rows_embedded, emb.calls) == (False, 0, 300)
    src = _source()
    changed = src.set_column(2, "text", pa.array(
        [t + " changed" if i in (3, 4) else t for i, t in enumerate(src.column("text").to_pylist())]))
    changed = changed.set_column(1, "section", pa.array(
        ["moved" if i == 5 else s for i, s in enumerate(changed.column("section").to_pylist())]))
    changed = changed.filter(pa.array([i != 7 for i in range(300)]))
    embed_table(store, "t", changed, key="id", text="text", embedder=HashEmbedder(dimension=32),
                mode="sync")
    res = table.experiment("small", embedder=emb)
    assert (res.rows_embedded, res.rows_rewritten, res.rows_deleted) == (2, 1, 1)
    assert emb.calls == 302 and res.base_version == table.version
    exp = table.read(version="small").sort_by("id")
    prod = table.read().sort_by("id")
    assert exp.column("id").to_pylist() == prod.column("id").to_pylist()
    assert exp.column("section").to_pylist() == prod.column("section").to_pylist()
    want = HashEmbedder(dimension=16, seed=1).embed(prod.column("text").to_pylist())
    got = np.stack(exp.column("vector").to_numpy(zero_copy_only=False))
    assert np.allclose(got, want, atol=1e-6)
    with pytest.raises(SchemaMismatchError, match="holds vectors from"):
        table.experiment("small", embedder=HashEmbedder(dimension=8))


def test_compare_report(table: Any) -> None:
    table.experiment("same", embedder=HashEmbedder(dimension=32))
    table.experiment("other", embedder=HashEmbedder(dimension=16, seed=3))
    same = table.compare("same", sample=40, label_column="section", pairs=[(0, 35), (1, 36)])
    assert same.figures_by_name["overlap_at_k"] == 1.0
    assert same.figures_by_name["nn_changed"] == 0.0
    assert same.figures_by_name["rank_correlation"] == pytest.approx(1.0)
    assert same.figures_by_name["centroid_shift"] == pytest.approx(0.0, abs=1e-6)
    other = table.compare("other", sample=40, label_column="section")
    assert other.figures_by_name["overlap_at_k"] < 1.0
    assert other.figures_by_name["centroid_shift"] is None  # 16-d vs 32-d: no common space
    tbl = other.to_arrow()
    assert set(tbl.column("metric").to_pylist()) >= {
        "overlap_at_k", "rank_correlation", "nn_changed", "same_label_at_k", "latency_ms",
        "index_build_seconds"}
    row = tbl.filter(pa.compute.equal(tbl.column("metric"), "same_label_at_k")).to_pylist()[0]
    assert 0 <= row["production"] <= 1 and 0 <= row["experiment"] <= 1
    assert same.figures_by_name["recall_at_k_production"] == same.figures_by_name["recall_at_k_experiment"]
    assert other.per_query.num_rows == 40 and "overlap" in other.summary()
    texts = table.compare("other", queries=["package 3 tool"],
                          embedders=(HashEmbedder(dimension=32), HashEmbedder(dimension=16, seed=3)))
    assert texts.queries == 1
    with pytest.raises(ValidationError, match="embedders"):
        table.compare("other", queries=["x"])
    with pytest.raises(VersionNotFoundError, match="experiments: other, same"):
        table.compare("nope")


def test_promote_is_one_commit_referencing_files(store: Store, table: Any) -> None:
    table.tag("before")
    res = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    cmp = table.compare("small", sample=20)
    n_versions = len(table.versions(include_maintenance=True))
    p = table.promote("small", comparison=cmp)
    assert (p.previous_version, p.version, p.experiment_version) == (1, 2, res.version)
    assert len(table.versions(include_maintenance=True)) == n_versions + 1
    assert table.meta.dimension == 16 and table.meta.model == "hash-bow:16"
    assert table.meta.table_id == table.meta_at(1).table_id  # the same table
    props = table.properties()
    assert props["mode"] == "promote" and props["experiment"] == "small"
    assert '"overlap_at_k"' in props["comparison"]
    assert table.tags() == {"before": 1}
    got = table.read().sort_by("id")
    exp = table.read(version="small").sort_by("id")
    assert got.column("vector").to_pylist() == exp.column("vector").to_pylist()
    # no vector data copied: the branch's files are linked, only metadata is written
    assert p.files_linked > 0 and p.rows_rewritten == 0
    assert p.bytes_written < p.bytes_referenced / 5
    # rollback is one step back
    table.rollback("before")
    assert table.meta.dimension == 32 and table.read().num_rows == 300
    # the branch can go: production keeps its own links
    table.discard("small", grace=0)
    table.rollback(p.version)
    assert table.read().num_rows == 300 and table.meta.dimension == 16


def test_promote_refuses_when_production_moved_and_resyncs(store: Store, table: Any) -> None:
    emb = Counting(dimension=16, seed=1)
    table.experiment("small", embedder=emb)
    src = _source()
    new_row = pa.table({"id": [1000], "section": ["s1"], "text": ["a concurrent new package"]})
    embed_table(store, "t", new_row, key="id", text="text", embedder=HashEmbedder(dimension=32))
    before = snapshot(store, "t")
    with pytest.raises(ProductionMovedError, match="resync") as err:
        table.promote("small")
    assert err.value.base_version == 1 and err.value.production_version == 2
    assert snapshot(store, "t") == before  # nothing written
    calls = emb.calls
    p = table.promote("small", resync=True, embedder=emb)
    assert emb.calls == calls + 1  # only the new row reached the model
    got = table.read().sort_by("id")
    assert got.num_rows == src.num_rows + 1 and 1000 in got.column("id").to_pylist()
    assert p.previous_version == 2


def test_write_slipping_into_a_promotion_is_kept(store: Store, table: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer on another machine (no shared lock) commits between the promotion's check
    and its commit: Lance's Overwrite does not conflict with it, the promotion undoes
    itself and refuses; the write is the latest production rows."""
    table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    monkeypatch.setenv("EMBED_ASSETS_WRITER_LOCK", "0")
    other = Store(store.uri)

    def slip(_v: int) -> None:
        embed_table(other, "t", pa.table({"id": [5000], "section": ["s0"], "text": ["slipped in"]}),
                    key="id", text="text", embedder=HashEmbedder(dimension=32))

    monkeypatch.setattr(_experiments, "before_promote_commit", slip)
    with pytest.raises(ProductionMovedError, match="undone"):
        table.promote("small")
    got = table.read()
    assert 5000 in got.column("id").to_pylist() and table.meta.dimension == 32
    assert got.num_rows == 301


def test_other_dimension_never_mixed_without_promotion(store: Store, table: Any) -> None:
    table.experiment("wide", embedder=HashEmbedder(dimension=48), metric="l2")
    assert table.meta_at("wide").metric == "l2" and table.meta.metric == "cosine"
    rows = table.read(version="wide").slice(0, 3)
    with pytest.raises(SchemaMismatchError):
        store.write("t", rows, key="id")
    with pytest.raises(SchemaMismatchError):
        embed_table(store, "t", _source(3), key="id", text="text", embedder=HashEmbedder(dimension=48))
    assert table.compare("wide", sample=10).queries == 10
    assert table.meta.dimension == 32 and table.version == 1


def test_cleanup_keeps_what_a_branch_references(store: Store, table: Any) -> None:
    table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    base_rows = table.read(version=("small", 1)).num_rows  # the branch's first version = base
    for i in range(3):
        embed_table(store, "t", _source(word=f"w{i}"), key="id", text="text",
                    embedder=HashEmbedder(dimension=32), mode="overwrite")
    rep = table.cleanup(keep_last=1, grace=0)
    assert 1 not in rep.removed_versions and {2, 3} <= set(rep.removed_versions)
    assert table.read(version=("small", 1)).num_rows == base_rows
    assert table.read(version="small").num_rows == 300
    assert table.read(version=1).num_rows == 300


def test_discard(store: Store, table: Any) -> None:
    table.experiment("gone", embedder=HashEmbedder(dimension=16))
    folder = Path(store.uri) / "t.lance" / "tree" / "gone"
    assert folder.is_dir()
    table.discard("gone")
    assert table.experiments() == []
    with pytest.raises(VersionNotFoundError):
        table.read(version=("gone", None))
    with pytest.raises(VersionNotFoundError, match="no tag 'gone'"):
        table.read(version="gone")
    table.cleanup(keep_last=5)  # within the grace period: the files stay
    assert folder.is_dir()
    table.cleanup(keep_last=5, grace=0)
    assert not folder.exists()
    again = table.experiment("gone", embedder=HashEmbedder(dimension=8))  # the name is free
    assert again.rows_embedded == 300


def test_bad_input(store: Store, table: Any) -> None:
    for bad in ("main", "", "has space", "_ea-x", 3):
        with pytest.raises(ValidationError):
            table.experiment(bad, embedder=HashEmbedder(dimension=8))
    with pytest.raises(ValidationError, match="NAME:NUMBER"):
        table.read(version="x:y")
    with pytest.raises(VersionNotFoundError, match="no experiment 'nope'"):
        table.read(version=("nope", 1))
    with pytest.raises(VersionNotFoundError):
        table.promote("nope")
    store.write("plain", {"id": [1, 2], "vector": np.eye(2, dtype=np.float32)}, key="id")
    with pytest.raises(ValidationError, match="keeps no source text"):
        store.table("plain").experiment("x", embedder=HashEmbedder(dimension=8))
    assert store.table("plain").experiments() == []


_KILLED = """
import sys, time
from embed_assets import Store, HashEmbedder
from embed_assets.store import _experiments
t = Store(sys.argv[1]).table("t")
if sys.argv[2] == "promote":
    def hang(_v):
        print("READY", flush=True)
        time.sleep(60)
    _experiments.before_promote_commit = hang
    t.promote("small")
else:
    class Slow(HashEmbedder):
        def embed(self, texts):
            print("READY", flush=True)
            time.sleep(60)
    t.experiment("slow", embedder=Slow(dimension=8))
"""


@pytest.mark.parametrize("op", ["promote", "experiment"])
def test_killed_promotion_or_experiment_leaves_production(store: Store, table: Any, op: str) -> None:
    table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    before = snapshot(store, "t")
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED), store.uri, op],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    line = p.stdout.readline() if p.stdout else ""
    assert line.strip() == "READY", p.stderr.read() if p.stderr else ""
    p.send_signal(signal.SIGKILL)
    p.wait()
    t = Store(store.uri).table("t")
    assert snapshot(store, "t") == before and t.meta.dimension == 32
    if op == "promote":  # the files it linked are orphans: promoting again works
        assert t.promote("small").version == 2
    else:  # a branch with no embedded rows: listed as such, run again to fill it
        assert not t.experiment_info("slow").embedded
        assert t.experiment("slow", embedder=HashEmbedder(dimension=8)).rows_embedded == 300


def test_sql_reads_experiment_versions(store: Store, table: Any) -> None:
    from embed_assets import connect

    res = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    con = connect(store=store.uri)
    dims = 'SELECT count(*), max(len(vector)) FROM "{}"'
    assert con.sql(dims.format("t@small")).fetchall() == [(300, 16)]
    assert con.sql(dims.format(f"t@small:{res.version}")).fetchall() == [(300, 16)]
    assert con.sql(dims.format("t@1")).fetchall() == [(300, 32)]  # the same number, production
    assert con.sql(dims.format("t")).fetchall() == [(300, 32)]
    got = con.sql("SELECT id FROM knn('t@small', (SELECT vector FROM \"t@small\" WHERE id = 3), 3) "
                  "ORDER BY rank").fetchall()
    assert got[0] == (3,)
    with pytest.raises(Exception, match="experiments: small"):
        con.sql('SELECT * FROM "t@nope"').fetchall()


def test_cli_verbs(store: Store, table: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from embed_assets.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        rc = main(["--store", store.uri, *argv])
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, out, _ = run("experiment", "t", "small", "--model", "hash-bow:16", "--json")
    assert rc == 0 and json.loads(out)["rows_embedded"] == 300
    rc, out, _ = run("experiment", "t", "--json")
    assert [e["name"] for e in json.loads(out)] == ["small"]
    rc, out, _ = run("compare", "t", "small", "--label", "section", "--sample", "20", "--json")
    figures = json.loads(out)
    assert rc == 0 and figures["queries"] == 20 and "same_label_at_k_experiment" in figures
    rc, out, _ = run("search", "t", "package 3 tool", "--version", "small", "-k", "2", "--json")
    assert rc == 0 and len(json.loads(out)) == 2
    embed_table(store, "t", _source(1, word="moved"), key="id", text="text",
                embedder=HashEmbedder(dimension=32))
    rc, _, err = run("promote", "t", "small")
    assert rc == 2 and "changed since experiment 'small'" in err and "--resync" in err
    rc, out, _ = run("promote", "t", "small", "--resync", "--json")
    promoted = json.loads(out)
    # row 0 was updated in the branch: its fragment has a deletion vector, which Lance's
    # Overwrite refuses, so that fragment alone is rewritten
    assert rc == 0 and promoted["previous_version"] == 2 and promoted["rows_rewritten"] > 0
    t = store.table("t")
    assert t.meta.dimension == 16 and t.read().num_rows == 300
    assert "moved" in t.get([0], columns=["text"]).column("text")[0].as_py()
    rc, out, _ = run("discard", "t", "small", "--now")
    assert rc == 0 and store.table("t").experiments() == []
    rc, _, err = run("experiment", "t", "x")
    assert rc == 2 and "--model" in err
    rc, _, err = run("compare", "t", "nope")
    assert rc == 2 and "no experiment 'nope'" in err


def test_production_index_untouched_then_rebuilt_on_promotion(store: Store) -> None:
    from embed_assets import build_index
    from embed_assets.store import vector_index_type

    src = pa.table({"id": list(range(1200)), "section": [f"s{i % 5}" for i in range(1200)],
                    "text": [f"package {i % 37} tool {i % 11} number {i}" for i in range(1200)]})
    embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder(dimension=32))
    t = store.table("t")
    build_index(t, recall=0.5, force_ann=True, graph=False)
    indexed = t.version
    kind = vector_index_type(t.dataset())
    assert kind is not None
    t.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    assert t.version == indexed and vector_index_type(t.dataset()) == kind
    cmp = t.compare("small", sample=20)
    assert cmp.figures_by_name["index_build_seconds_production"] is not None
    assert cmp.figures_by_name["index_build_seconds_experiment"] is None  # exact search
    p = t.promote("small")
    # the promotion's own commit, then the index rebuilt on the promoted rows
    assert p.index_rebuilt == kind and vector_index_type(t.dataset()) == kind
    assert [v.version for v in t.versions()][-1] == p.version
    assert t.dataset().schema.field("vector").type.list_size == 16


def test_state_survives_a_run_killed_before_its_branch_metadata(store: Store, table: Any) -> None:
    """The experiment's commit records its base and model with its rows: a run killed
    after the commit and before the branch metadata is written loses nothing."""
    res = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    table.dataset().branches.replace_metadata("small", {})  # as if killed in between
    info = table.experiment_info("small")
    assert (info.embedded, info.base_version, info.version) == (True, 1, res.version)
    again = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    assert again.rows_embedded == 0 and not again.committed
    assert table.promote("small").experiment_version == res.version


def test_experiment_versions_are_never_taken_for_production_ones(store: Store, table: Any,
                                                                 tmp_path: Path) -> None:
    """An experiment's version numbers overlap production's: where a production version is
    meant (rollback, tag, resolve), an experiment's is refused rather than read as the
    production version of that number."""
    from embed_assets.cli import main

    res = table.experiment("small", embedder=HashEmbedder(dimension=16, seed=1))
    embed_table(store, "t", _source(word="later"), key="id", text="text",
                embedder=HashEmbedder(dimension=32))  # production version 2 exists too
    for ref in ("small", ("small", res.version), f"small:{res.version}"):
        with pytest.raises(ValidationError, match="experiment 'small'"):
            table.resolve(ref)
        with pytest.raises(ValidationError, match="experiment 'small'"):
            table.rollback(ref)
        with pytest.raises(ValidationError, match="experiment 'small'"):
            table.tag("x", ref)
    assert table.version == 2 and table.tags() == {}
    out = tmp_path / "exp.parquet"
    assert main(["--store", store.uri, "export", "t", "--version", "small", "--to", str(out)]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(out).schema.field("vector").type.list_size == 16
