"""What a new user trips over (issue 23, points 6-8): CLI manners (--version, a closed pipe,
a mistyped --store, a file given as the snapshot cache), third-party noise on stderr, and
raw Python errors on common slips in the recipes. Each test failed on the code before."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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


# -- versions that change nothing (point 3) ----------------------------------------------------
def test_an_overwrite_with_the_stored_rows_writes_no_version(tmp_path):
    s = Store(tmp_path / "s")
    v = np.random.default_rng(1).random((6, 4), dtype=np.float32)
    first = s.write("t", {"id": list(range(6)), "vector": v}, key="id", mode="overwrite")
    again = s.write("t", {"id": list(range(6))[::-1], "vector": v[::-1]}, key="id", mode="overwrite")
    assert again.version == first.version == s.table("t").version
    v[2, 1] += 1
    assert s.write("t", {"id": list(range(6)), "vector": v}, key="id", mode="overwrite").version == 2


def test_refitting_the_same_pca_writes_no_version(items):
    from embed_assets.recipes import fit_pca

    fit_pca(items.table("items"), 2, store=items, name="pca")
    v = items.table("pca").version
    rep = fit_pca(items.table("items"), 2, store=items, name="pca")
    assert items.table("pca").version == v and rep.model_version == v


def test_rollback_to_what_is_current_writes_no_version(small, capsys):
    t = Store(small).table("t")
    embed_table(Store(small), "t", {"id": [1], "text": ["changed"]}, key="id", text="text",
                embedder=HashEmbedder(dimension=8))
    t = t.refresh()
    latest = t.version
    assert t.rollback(latest) == latest and t.refresh().version == latest
    rc = main(["--store", str(small), "rollback", "t", "--to", str(latest)])
    assert rc == 0 and "nothing to roll back" in capsys.readouterr().out
    assert t.refresh().version == latest
    assert t.rollback(latest - 1) == latest + 1  # a real rollback still writes one


# -- raw Python errors on common slips (point 7) ------------------------------------------------
def test_cleanup_takes_durations_as_seconds_or_text(small):
    t = Store(small).table("t")
    assert t.cleanup(keep_last=1, grace=0).kept_versions
    t.cleanup(older_than="7d")
    t.cleanup(keep_last=1, grace="1h")
    with pytest.raises(ValidationError, match="bad duration 'soon' for older_than"):
        t.cleanup(older_than="soon")
    with pytest.raises(ValidationError, match="grace must not be negative"):
        t.cleanup(keep_last=1, grace=-5)


@pytest.mark.parametrize("embedder", [None, 42, object()])
def test_embed_table_without_an_embedder_is_bad_input(tmp_path, embedder):
    s = Store(tmp_path / "s")
    with pytest.raises(ValidationError, match="embedder must be an embedder object"):
        embed_table(s, "t", {"id": [1], "text": ["a"]}, key="id", text="text", embedder=embedder)
    assert s.table_names() == []


def test_embed_table_takes_a_model_name(tmp_path):
    s = Store(tmp_path / "s")
    res = embed_table(s, "t", {"id": [1], "text": ["a"]}, key="id", text="text", embedder="hash-bow:16")
    assert res.rows_embedded == 1 and s.table("t").meta.dimension == 16


def test_get_names_missing_keys_when_asked(small):
    from embed_assets import KeyNotFoundError

    t = Store(small).table("t")
    assert t.get([999, 1]).column("id").to_pylist() == [1]  # documented default: skipped
    with pytest.raises(KeyNotFoundError, match=r"1 key\(s\) not in 't' at version \d+: 999"):
        t.get([999, 1], missing="error")
    with pytest.raises(KeyNotFoundError, match="999"):
        t.get([999, 1], columns=["text"], missing="error")
    assert t.get([1, 2], missing="error").num_rows == 2


# -- object-store messages name the cloud asked for (point 8) -----------------------------------
def test_no_credentials_names_the_cloud_of_the_store():
    from embed_assets.store._objstore import explain

    exc = "Generic GCS error: Failed to get credentials: no credentials found"
    assert explain(exc, "gs://b/x").startswith("no Google Cloud credentials found")
    assert explain(exc, "s3://b/x").startswith("no AWS credentials found")
    assert explain(exc, "az://b/x").startswith("no Azure credentials found")
    region = "Generic S3 error: Failed to resolve region for bucket 'b'"
    assert explain(region, "s3://b/x").startswith("cannot find the region of the bucket: set AWS_REGION")


def test_cli_on_an_s3_store_without_region_or_credentials_says_what_to_set(tmp_path):
    env = {k: v for k, v in _env().items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    proc = subprocess.run([*CLI, "--store", "s3://no-such-bucket-ea/x", "tables"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "set AWS_REGION" in proc.stderr or "no AWS credentials found" in proc.stderr, proc.stderr


def test_the_progress_bar_moves_and_keeps_one_number_format(tmp_path, capsys):
    from embed_assets.embed import Streamed

    n = 12_000
    src = {"id": list(range(n)), "text": [f"row {i} text {i % 97}" for i in range(n)]}
    class Slow(HashEmbedder):  # as slow per call as a model on a CPU, for tqdm's throttle
        def embed(self, texts):  # type: ignore[no-untyped-def]
            time.sleep(0.12)
            return super().embed(texts)

    embed_table(Store(tmp_path / "s"), "t", src, key="id", text="text",
                embedder=Slow(dimension=8), executor=Streamed(50_000, progress=True))
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").splitlines() if "embed t" in f]
    assert len(frames) >= n // 1024, frames  # a step at least every ~1k rows (4,096 before)
    assert "1e+" not in err and "12,000" in err, frames[-3:]


def test_text_search_on_an_image_table_says_to_search_by_image(tmp_path, capsys):
    import io

    from PIL import Image

    from embed_assets.embed import PixelEmbedder, embed_images

    def png(v: int) -> bytes:
        b = io.BytesIO()
        Image.new("L", (4, 4), v).save(b, "PNG")
        return b.getvalue()

    root = tmp_path / "s"
    embed_images(Store(root), "pics", {"id": [1, 2], "png": [png(10), png(200)]}, key="id",
                 image="png", embedder=PixelEmbedder(size=(4, 4)))
    rc = main(["--store", str(root), "search", "pics", "a red car"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds image embeddings" in err and "search-image pics" in err, err
