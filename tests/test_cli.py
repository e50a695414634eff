"""The embed-assets command line, run as users run it (a subprocess on a real store)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

EXE = shutil.which("embed-assets") or ""


def run(store: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [EXE] if EXE else [sys.executable, "-m", "embed_assets.cli"]
    proc = subprocess.run([*cmd, "--store", str(store), *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def fails(store: Path, *args: str, pattern: str) -> None:
    proc = run(store, *args, ok=False)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr
    assert pattern in err[0], err[0]


@pytest.mark.e2e
def test_must_show_through_the_cli_alone(tmp_path, debian):
    """Issue 2's acceptance walk-through, with the real model."""
    store = tmp_path / "store"
    src = debian.sample(n=200, seed=3).select("package", "section", "description")
    f_a = tmp_path / "v_a.parquet"
    src.write_parquet(f_a)

    out = run(store, "embed", "pkgs", "--from", str(f_a), "--key", "package",
              "--text", "description", "--json")
    res = json.loads(out.stdout)
    assert res["rows_embedded"] == 200 and res["write"]["version"] == 1

    changed_keys = src["package"].to_list()[::10]
    changed = src.with_columns(
        pl.when(pl.col("package").is_in(changed_keys))
        .then(pl.lit("changed: ") + pl.col("description"))
        .otherwise(pl.col("description")).alias("description"))
    f_b = tmp_path / "v_b.parquet"
    changed.write_parquet(f_b)
    out = run(store, "embed", "pkgs", "--from", str(f_b), "--key", "package",
              "--text", "description", "--mode", "upsert")
    assert "embedded 20 row(s)" in out.stdout and "updated 20" in out.stdout

    run(store, "tag", "pkgs", "prod", "--version", "1")
    out = run(store, "rollback", "pkgs", "--to", "prod", "--json")
    assert json.loads(out.stdout) == {"table": "pkgs", "from": 2, "to": 1, "version": 3}

    run(store, "export", "pkgs", "--to", str(tmp_path / "a.parquet"), "--version", "prod")
    run(store, "export", "pkgs", "--to", str(tmp_path / "now.parquet"))
    a = pq.read_table(tmp_path / "a.parquet").sort_by("package")
    now = pq.read_table(tmp_path / "now.parquet").sort_by("package")
    assert a.column("package").equals(now.column("package"))
    assert np.array_equal(np.stack(a.column("vector").to_pylist()),
                          np.stack(now.column("vector").to_pylist()))

    versions = json.loads(run(store, "versions", "pkgs", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["tags"] for v in versions] == [["prod"], [], []]
    assert all({"version", "timestamp", "rows", "tags"} <= set(v) for v in versions)
    assert versions[2]["mode"] == "rollback"

    out = run(store, "cleanup", "pkgs", "--keep-last", "1", "--grace", "0s", "--json")
    assert json.loads(out.stdout)["removed_versions"] == [2]
    versions = json.loads(run(store, "versions", "pkgs", "--json").stdout)
    assert [v["version"] for v in versions] == [1, 3]
    assert pq.read_table(tmp_path / "a.parquet").num_rows == 200
    run(store, "export", "pkgs", "--to", str(tmp_path / "p.parquet"), "--version", "prod")

    hits = json.loads(run(store, "search", "pkgs", src["description"][5], "-k", "3",
                          "--json").stdout)
    assert hits[0]["package"] == src["package"][5] and hits[0]["rank"] == 1
    tables = json.loads(run(store, "tables", "--json").stdout)
    assert tables[0]["name"] == "pkgs" and tables[0]["version"] == 3 and tables[0]["rows"] == 200


@pytest.fixture
def small_store(tmp_path, debian) -> Path:
    store = tmp_path / "store"
    f = tmp_path / "src.csv"
    debian.head(30).select("package", "section", "description").write_csv(f)
    run(store, "embed", "t", "--from", str(f), "--key", "package", "--text", "description",
        "--model", "hash-bow:16")
    return store


def test_listing_verbs_and_search_with_filter(small_store):
    tables = json.loads(run(small_store, "tables", "--json").stdout)
    assert tables == [{"name": "t", "version": 1, "rows": 30, "dimension": 16,
                       "model": "hash-bow:16", "metric": "cosine", "key": "package", "tags": []}]
    out = run(small_store, "search", "t", "library", "-k", "2", "--where", "section = 'admin'",
              "--json")
    assert len(json.loads(out.stdout)) <= 2
    assert "version" in run(small_store, "versions", "t").stdout


@pytest.mark.parametrize(("args", "pattern"), [
    (("versions", "missing"), "table 'missing' not found"),
    (("search", "t", "x", "--version", "9"), "no version 9"),
    (("search", "t", "x", "--version", "nope"), "no tag 'nope'"),
    (("rollback", "t", "--to", "42"), "no version 42"),
    (("untag", "t", "ghost"), "no tag 'ghost'"),
    (("tag", "t", "bad tag"), "tag 'bad tag'"),
    (("cleanup", "t", "--older-than", "soon"), "bad duration"),
    (("cleanup", "t"), "cleanup needs"),
    (("export", "t", "--to", "out.csv"), "must end in .parquet"),
    (("search", "t", "   "), "search text is empty"),
    (("search", "t", "x", "-k", "0"), "-k: must be a positive integer"),
    (("search", "t", "x", "--where", "nosuchcol = 1"), "bad filter 'nosuchcol = 1'"),
    (("embed", "../x", "--from", "f.parquet", "--key", "a", "--text", "b"), "does not exist"),
    (("versions", "../etc"), "table name '../etc'"),
])
def test_bad_input_gives_one_line_and_nonzero_exit(small_store, args, pattern):
    before = run(small_store, "versions", "t", "--json").stdout
    fails(small_store, *args, pattern=pattern)
    assert run(small_store, "versions", "t", "--json").stdout == before


def test_embed_bad_files_and_columns(small_store, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("package,description\na,one\na,two\n")
    fails(small_store, "embed", "t2", "--from", str(f), "--key", "package", "--text",
          "description", "--model", "hash-bow", pattern="duplicated key")
    fails(small_store, "embed", "t2", "--from", str(f), "--key", "nope", "--text",
          "description", "--model", "hash-bow", pattern="key column 'nope' not found")
    g = tmp_path / "g.json"
    g.write_text("{}")
    fails(small_store, "embed", "t2", "--from", str(g), "--key", "a", "--text", "b",
          pattern="must end in .parquet or .csv")
    e = tmp_path / "empty.csv"
    e.write_text("package,description\na,\nb,fine\n")
    fails(small_store, "embed", "t2", "--from", str(e), "--key", "package", "--text",
          "description", "--model", "hash-bow", pattern="null or empty text")
    out = run(small_store, "embed", "t2", "--from", str(e), "--key", "package", "--text",
              "description", "--model", "hash-bow", "--skip-empty")
    assert "skipped 1 empty" in out.stdout
    assert "t2" in run(small_store, "tables").stdout


def test_sql_verb_uses_the_default_store_from_the_environment(small_store, tmp_path):
    cmd = [EXE] if EXE else [sys.executable, "-m", "embed_assets.cli"]
    proc = subprocess.run([*cmd, "sql", "SELECT count(*) AS n FROM t", "--json"],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "EMBED_ASSETS_STORE": str(small_store)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"n": 30}]
    out = run(small_store, "sql", "SELECT package, rank FROM knn('t', (SELECT vector FROM t "
              "WHERE package = (SELECT min(package) FROM t)), 1)", "--json")
    assert json.loads(out.stdout)[0]["rank"] == 1
    fails(small_store, "sql", "SELECT * FROM nope", pattern="nope")
