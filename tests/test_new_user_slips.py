"""What a new user trips over (issue 23, points 6-8): CLI manners (--version, a closed pipe,
a mistyped --store, a file given as the snapshot cache), third-party noise on stderr, and
raw Python errors on common slips in the recipes. Each test failed on the code before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from embed_assets import HashEmbedder, Store, ValidationError, __version__, embed_table
from embed_assets.cli import main

CLI = [sys.executable, "-m", "embed_assets.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LANCE_LOG"}
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


@pytest.fixture
def small(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    src = {"id": list(range(200)), "text": [f"package number {i} does thing {i % 7}" for i in range(200)]}
    embed_table(Store(root), "t", src, key="id", text="text", embedder=HashEmbedder(dimension=8))
    return root


def test_version_flag_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"embed-assets {__version__}"


def test_a_closed_pipe_is_not_an_error(small):
    """`embed-assets sql ... | head -1`: no BrokenPipeError traceback, exit 0."""
    proc = subprocess.Popen([*CLI, "--store", str(small), "sql", "SELECT * FROM range(200000)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as head does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "BrokenPipe" not in err and "Traceback" not in err, err


@pytest.mark.parametrize("verb", [["tables"], ["versions", "t"], ["sql", "SELECT 1"]])
def test_a_mistyped_store_is_named_not_empty(tmp_path, capsys, verb):
    missing = tmp_path / "no-such-store"
    rc = main(["--store", str(missing), *verb])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"store {str(missing)!r} does not exist" in err
    assert not missing.exists()  # a read never creates the folder


def test_snapshot_into_a_file_is_bad_input(small, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    rc = main(["--store", str(small), "snapshot", "t", "--dir", str(afile)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "is a file, not a directory" in err and "FileExistsError" not in err
    assert afile.read_text() == "not a folder"


def test_text_search_prints_no_lance_deprecation_warning(small):
    """Lance warned about `_score` autoprojection on every text/hybrid search, even from
    the CLI (whose LANCE_LOG default came too late to silence it)."""
    base = [*CLI, "--store", str(small)]
    subprocess.run([*base, "index", "t", "--text"], check=True, capture_output=True, env=_env())
    proc = subprocess.run([*base, "search", "t", "package thing", "-k", "3", "--mode", "text"],
                          capture_output=True, text=True, env=_env(LANCE_LOG="warn"))
    assert proc.returncode == 0, proc.stderr
    assert "WARN" not in proc.stderr and "_score" not in proc.stderr, proc.stderr
    assert "text_score" in proc.stdout


# -- recipes: raw numbers where an error belongs ----------------------------------------------
@pytest.fixture
def items(tmp_path: Path) -> Store:
    s = Store(tmp_path / "recipes")
    rng = np.random.default_rng(0)
    s.write("items", {"package": ["a", "b", "c", "d"], "vector": rng.random((4, 8), dtype=np.float32)},
            key="package", mode="overwrite")
    s.write("flat", {"package": ["a", "b", "c"], "vector": np.ones((3, 8), dtype=np.float32)},
            key="package", mode="overwrite")
    return s


def test_hit_rate_of_an_empty_history_is_refused(items):
    from embed_assets.recipes import next_item_hit_rate

    empty = pl.DataFrame(schema={"user": pl.String, "package": pl.String,
                                 "ts": pl.Datetime("us", "UTC")})
    with pytest.raises(ValidationError, match="history has no rows"):
        next_item_hit_rate(empty, items, "items")
    with pytest.raises(ValidationError, match="history has no rows"):
        next_item_hit_rate([], items, "items")


def test_user_vectors_of_an_empty_list_says_empty(items):
    from embed_assets.recipes import user_vectors

    with pytest.raises(ValidationError, match="history has no rows"):
        user_vectors(items, [], "items")
    assert "user_vectors" not in items.table_names()


def test_pca_of_identical_vectors_is_refused_and_keeps_the_old_model(items):
    from embed_assets.recipes import fit_pca

    fit_pca(items.table("items"), 2, store=items, name="pca")
    before = items.table("pca").version
    with pytest.raises(ValidationError, match="no variance to explain"):
        fit_pca(items.table("flat"), 2, store=items, name="pca")
    assert items.table("pca").version == before  # nothing stored changed


@pytest.mark.parametrize("uri", ["s3:bucket/x", "s3:/bucket/x", "gs:bucket"])
def test_a_scheme_without_slashes_is_not_a_local_folder(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValidationError, match="looks like a URI without '//'"):
        Store(uri)
    assert list(tmp_path.iterdir()) == []
