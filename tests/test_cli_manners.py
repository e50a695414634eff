"""CLI manners (issue 12, items 5 and 9): help text and examples, --json on every verb that
changes something, the exit-code table, the model-loading line, and messages for people
(no Rust source paths, UDF frames or binder internals)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pytest

from embed_assets import (
    EmbedAssetsError,
    HashEmbedder,
    QueryError,
    SentenceTransformerEmbedder,
    Store,
    ValidationError,
    connect,
    embed_table,
)
from embed_assets import cli as cli_mod
from embed_assets.cli import build_parser, main
from embed_assets.embed._backends import default_embedder
from embed_assets.embed._embedders import prepare_texts
from embed_assets.errors import describe
from embed_assets.sql import run_sql

from .conftest import vectors_table

VERBS = ["embed", "tables", "versions", "tag", "untag", "rollback", "search", "export",
         "cleanup", "index", "sql", "demo", "snapshot", "embed-images", "search-image",
         "serve", "experiment", "compare", "promote", "discard"]


def cli(store: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main() in-process (as the console script runs it): exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        rc = main(["--store", str(store), *args])
    except SystemExit as exc:  # argparse's own exits (--help, argument errors)
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _state(store: Store) -> list[Any]:
    out = []
    for name in store.table_names():
        t = store.table(name)
        out.append((name, [(v.version, v.rows, v.tags) for v in t.versions(with_properties=False)],
                    t.read().sort_by(t.meta.key).to_pylist()))
    return out


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A store with table 't' (hash embedder, 3 rows, 2 versions) and source files."""
    root = tmp_path / "store"
    src = {"id": [1, 2, 3], "sec": ["a", "b", "a"], "n": [5, 6, 7],
           "text": ["text editor", "web browser", "mail client"]}
    embed_table(Store(root), "t", src, key="id", text="text", embedder=HashEmbedder(dimension=8))
    src["text"][0] = "a changed text editor"
    embed_table(Store(root), "t", src, key="id", text="text", embedder=HashEmbedder(dimension=8))
    pl.DataFrame(src).write_parquet(tmp_path / "src.parquet")
    pl.DataFrame(src).write_csv(tmp_path / "src.csv")
    (tmp_path / "fake.parquet").write_text("this is not parquet")
    return root


# -- help -----------------------------------------------------------------------------------
def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    raise AssertionError("no verbs")


def test_every_verb_has_an_example_and_every_argument_a_help_string():
    p = build_parser()
    verbs = _subparsers(p)
    assert sorted(verbs) == sorted(VERBS)
    for parser in [p, *verbs.values()]:
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, (parser.prog, action.dest)
    for name, sp in verbs.items():
        assert sp.formatter_class is argparse.RawDescriptionHelpFormatter, name
        assert sp.epilog and "example:" in sp.epilog, name
        assert f"embed-assets {name}" in sp.epilog or name == "demo", name
        text = sp.format_help()
        assert "example:\n  embed-assets" in text, name  # the layout is kept
    top = p.format_help()
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in top
    assert "exit codes:" in top


def test_embed_help_shows_an_example(capsys, tmp_path):
    rc, out, _ = cli(tmp_path, "embed", "--help", capsys=capsys)
    assert rc == 0
    assert "example:\n  embed-assets embed pkgs --from" in out
    assert "--batch-size" in out and "texts per model forward pass" in out


# -- --json on the verbs that change something -----------------------------------------------
def test_the_five_verbs_print_json(small, tmp_path, capsys):
    def js(*args: str) -> Any:
        rc, out, err = cli(small, *args, "--json", capsys=capsys)
        assert rc == 0, err
        return json.loads(out)

    assert js("tag", "t", "prod", "--version", "1") == \
        {"table": "t", "tag": "prod", "version": 1, "action": "tagged"}
    exp = js("export", "t", "--to", str(tmp_path / "o.parquet"), "--version", "prod")
    assert exp == {"table": "t", "version": 1, "rows": 3, "to": str(tmp_path / "o.parquet")}
    assert js("rollback", "t", "--to", "prod") == {"table": "t", "from": 2, "to": 1, "version": 3}
    assert js("untag", "t", "prod") == \
        {"table": "t", "tag": "prod", "version": 1, "action": "untagged"}
    rep = js("cleanup", "t", "--keep-last", "1", "--grace", "0s")
    assert rep["removed_versions"] == [1, 2]


# -- exit codes ------------------------------------------------------------------------------
BAD: list[tuple[tuple[str, ...], str]] = [
    (("embed", "t2", "--from", "{d}/src.parquet", "--key", "id", "--text", "text",
      "--model", "hash-bow:abc"), "model 'hash-bow:abc'"),
    (("embed", "t2", "--from", "{d}/src.parquet", "--key", "id", "--text", "text",
      "--model", "hash-bow:0"), "model 'hash-bow:0'"),
    (("export", "t", "--to", "/nonexistent/dir/x.parquet"), "directory '/nonexistent/dir' does not exist"),
    (("search", "t", "x", "-k", "abc"), "argument -k: 'abc' is not an integer"),
    (("search", "t", "x", "-k", "0"), "-k: must be a positive integer"),
    (("embed", "t", "--from", "{d}/src.parquet", "--key", "id", "--text", "text",
      "--model", "hash-bow:8", "--batch-size", "0"), "--batch-size: must be a positive integer"),
    (("cleanup", "t", "--keep-last", "0"), "--keep-last: must be a positive integer"),
    (("search", "t", "x", "--where", "((("), "bad filter '((('"),
    (("embed", "t2", "--from", "{d}/fake.parquet", "--key", "id", "--text", "text",
      "--model", "hash-bow:8"), "cannot read"),
    (("embed", "t", "--from", "{d}/src.parquet", "--key", "id", "--text", "text", "--model",
      "hash-bow:8", "--mode", "replace_partition", "--partition", "n=abc"), "'abc' is not one"),
    (("embed", "t2", "--from", "{d}/src.csv", "--key", "id", "--text", "n",
      "--model", "hash-bow:8"), "text column 'n' holds int64 values, not text"),
    (("sql", "SELECT * FROM similarity_join('t', 't', 2, key := 'nope')"),
     "no column named 'nope' (key :=) in table 't'"),
    (("sql", "SELECT * FROM knn('t', [1.0, 2.0], 2)"), "knn: dimension mismatch"),
    (("nosuchverb",), "invalid choice"),
    (("tag", "t", "x", "--version", "99"), "no version 99"),
]


@pytest.mark.parametrize(("args", "pattern"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line(small, capsys, args, pattern):
    before = _state(Store(small))
    d = str(small.parent)
    rc, out, err = cli(small, *(a.format(d=d) for a in args), capsys=capsys)
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and ".rs:" not in err and "At:" not in err
    assert "Python exception" not in err and "list_filter" not in err
    assert pattern in lines[0], lines[0]
    assert _state(Store(small)) == before


def test_unexpected_error_exits_1_and_interrupt_130(small, capsys, monkeypatch):
    monkeypatch.delenv("EMBED_ASSETS_DEBUG", raising=False)

    def boom(args: Any) -> int:
        raise RuntimeError("disk on fire, /home/runner/work/lance/lance/rust/lance/src/io.rs:1:2")

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod, "cmd_tables", boom)
    rc, _, err = cli(small, "tables", capsys=capsys)
    assert rc == 1
    assert err.strip().splitlines() == [
        "embed-assets: error: RuntimeError: disk on fire (set EMBED_ASSETS_DEBUG=1 for a traceback)"]
    monkeypatch.setattr(cli_mod, "cmd_tables", interrupted)
    rc, _, err = cli(small, "tables", capsys=capsys)
    assert rc == 130 and len(err.strip().splitlines()) == 1


def test_exit_codes_through_the_installed_command(small):
    """One real process: argparse's own errors are one line too, with exit 2."""
    cmd = [sys.executable, "-m", "embed_assets.cli", "--store", str(small)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*cmd, "search", "t", "x", "-k", "abc"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = subprocess.run([*cmd, "export", "t", "--to", "/nonexistent/dir/x.parquet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "embed-assets: error: --to '/nonexistent/dir/x.parquet': directory '/nonexistent/dir' "
        "does not exist"]


# -- the loading line ------------------------------------------------------------------------
def test_text_search_says_it_loads_the_model(tmp_path, capsys, monkeypatch):
    root = tmp_path / "st"
    Store(root).write("m", vectors_table([1, 2, 3], dim=4), key="id", model="some/st-model")
    calls: list[int] = []

    def fake_embed(self: SentenceTransformerEmbedder, texts: Any) -> np.ndarray:
        calls.append(len(texts))
        return np.ones((len(texts), 4), dtype=np.float32)

    monkeypatch.setattr(SentenceTransformerEmbedder, "embed", fake_embed)
    rc, out, err = cli(root, "search", "m", "a query", "-k", "2", "--json", capsys=capsys)
    assert rc == 0, err
    assert err.strip().splitlines() == ["loading model some/st-model..."]
    assert len(json.loads(out)) == 2  # stdout is the JSON alone
    assert calls == [1]
    rc, out, err = cli(root, "search", "m", "a query", capsys=capsys)
    assert rc == 0 and "loading model some/st-model..." in err and "loading" not in out


def test_hash_search_and_refused_searches_print_no_loading_line(small, tmp_path, capsys,
                                                                 monkeypatch):
    rc, _, err = cli(small, "search", "t", "editor", capsys=capsys)
    assert rc == 0 and err == ""
    root = tmp_path / "st"
    Store(root).write("m", vectors_table([1, 2], dim=4), key="id", model="some/st-model")
    monkeypatch.setattr(SentenceTransformerEmbedder, "embed",
                        lambda self, texts: np.ones((len(texts), 4), dtype=np.float32))
    rc, _, err = cli(root, "search", "m", "   ", capsys=capsys)  # refused before the model
    assert rc == 2 and err.strip().splitlines() == ["embed-assets: error: search text is empty"]


# -- messages for people ---------------------------------------------------------------------
def test_describe_strips_rust_paths_and_udf_wrappers():
    exc = ValueError("LanceError(IO): Not found: /data/x.lance, "
                     "/home/x/lance/rust/lance/src/dataset.rs:1:2")
    assert describe(exc) == "LanceError(IO): Not found: /data/x.lance"
    assert describe(OSError("failed (/home/runner/work/lance/lance/rust/lance-io/src/a.rs:9:3)"
                            "\nmore")) == "failed"
    udf = duckdb.InvalidInputException(
        "Invalid Input Error: Python exception occurred while executing the UDF: ValueError: "
        "knn: dimension mismatch (query 2 vs table 8)\n\nAt:\n"
        "  /work/embed_assets/sql/_functions.py(123): _knn_hits\n")
    assert describe(udf) == "knn: dimension mismatch (query 2 vs table 8)"
    assert describe(ValueError("")) == "ValueError"
    assert describe(ValueError("plain message\nsecond line")) == "plain message"


def test_knn_dimension_mismatch_through_run_sql_has_no_frames(small):
    with pytest.raises(QueryError) as ei:
        run_sql(small, "SELECT * FROM knn('t', [1.0, 2.0], 2)", extensions=())
    msg = str(ei.value)
    assert msg == "knn: dimension mismatch (query 2 vs table 8)", msg
    assert "At:" not in msg and "Python exception" not in msg and "\n" not in msg


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT * FROM similarity_join('t', 't', 2, key := 'nope')",
     "similarity_join: no column named 'nope' (key :=) in table 't'"),
    ("SELECT * FROM similarity_join('t', 't', 2, vector := 'vec')",
     "similarity_join: no column named 'vec' (vector :=) in table 't'"),
    ("SELECT * FROM knn('t', [1.0, 0, 0, 0, 0, 0, 0, 0], 2, vector := 'emb')",
     "knn: no column named 'emb' (vector :=) in table 't'"),
])
def test_unknown_key_or_vector_names_the_column(small, query, expected):
    with pytest.raises(QueryError) as ei:
        run_sql(small, query, extensions=())
    assert str(ei.value).startswith(expected), str(ei.value)
    assert "list_filter" not in str(ei.value) and "its columns are id, sec, n, text" in str(ei.value)
    con = connect(small, extensions=())
    try:  # on a connection: one clean line, still a duckdb.Error for existing handlers
        with pytest.raises(duckdb.BinderException) as di:
            con.sql(query)
        assert isinstance(di.value, QueryError) and str(di.value).startswith(expected)
        with pytest.raises(duckdb.Error) as ei2:
            con.execute(query)
        assert isinstance(ei2.value, QueryError) and str(ei2.value).startswith(expected)
        with pytest.raises(QueryError, match="no column named 'nope'"):  # with parameters too
            con.execute("SELECT * FROM knn('t', ?, 2, vector := 'nope')", [[1.0] * 8])
        with pytest.raises(duckdb.CatalogException) as ci:  # other errors keep DuckDB's type
            con.sql("SELECT * FROM nope")
        assert isinstance(ci.value, QueryError) and isinstance(ci.value, EmbedAssetsError)  # issue 23
    finally:
        con.close()


def test_integer_or_binary_text_column_is_not_text(tmp_path):
    s = Store(tmp_path / "s")
    for values, typ in (([1, 2], "int64"), ([b"a", b"b"], "binary")):
        with pytest.raises(ValidationError, match=f"text column 'n' holds {typ} values, not text"):
            embed_table(s, "x", {"id": [1, 2], "n": values}, key="id", text="n",
                        embedder=HashEmbedder(dimension=8))
    assert s.table_names() == []
    with pytest.raises(ValidationError, match="hold int values, not text"):
        prepare_texts([1, 2], ["fine", 3])
    with pytest.raises(ValidationError, match="null or empty text"):  # blanks keep their message
        prepare_texts([1, 2], ["fine", "  "])


def test_bad_hash_model_names_the_model_argument():
    for bad in ("hash-bow:abc", "hash-bow:", "hash-bow:-3", "hash-bowl"):
        with pytest.raises(ValidationError, match=f"model '{bad}'"):
            default_embedder(bad)
    assert default_embedder("hash-bow").dimension == 64
    assert default_embedder("hash-bow:16").dimension == 16


def test_the_dagster_embedder_resource_refuses_a_bad_hash_dimension() -> None:
    from embed_assets import ValidationError
    from embed_assets.dagster import EmbedderResource

    assert EmbedderResource(model="hash-bow:16").get_embedder().dimension == 16
    with pytest.raises(ValidationError, match="'hash-bow:abc'"):
        EmbedderResource(model="hash-bow:abc").get_embedder()
