"""Images as store citizens (issue 27, deliverable 2): `embed-assets embed-images` from a
folder, a glob and a Parquet column of bytes; pictures kept as references or Lance blobs;
search by an image file, bytes or a stored key from Python, the CLI and SQL; a PNG of
the query and its neighbours. Real clip art (tests/data/clipart_slice.parquet), the real
EfficientNet-Lite0 weights, real Lance and DuckDB.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import embed_assets
from embed_assets import Store, ValidationError, search_by_image
from embed_assets.cli import main
from embed_assets.embed import neighbours_png, stored_images

DATA = Path(__file__).parent / "data"


def cli(store: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(["--store", str(store), *args])
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 3 categories x 8 real clip-art PNGs, filed as openclipart files them."""
    root = tmp_path_factory.mktemp("pics")
    t = pq.read_table(DATA / "clipart_slice.parquet")
    for label in ("animals/birds", "food/fruit", "transportation/roadsigns"):
        rows = [r for r in t.to_pylist() if r["label"] == label][:8]
        for r in rows:
            p = root / r["key"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(r["png"])
    return root


def _cells(png: bytes) -> int:
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG"
    return (im.width - 4) // (128 + 4)


def _blank(png: bytes, cell: int) -> bool:
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[4:132, 4 + cell * 132: 132 + cell * 132]
    return bool((a == 235).all())


def test_embed_a_folder_then_search_by_file_key_and_sql(pictures: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (pictures / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    try:
        rc, _, err = cli(store, "embed-images", "pics", str(pictures), capsys=capsys)
        assert rc == 2 and "'broken.png': unreadable image" in err and "--skip-bad" in err
        assert not Store(str(store)).exists("pics")  # nothing written
        rc, out, err = cli(store, "embed-images", "pics", str(pictures), "--skip-bad", "--json",
                           capsys=capsys)
    finally:
        (pictures / "broken.png").unlink()
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["rows_embedded"] == 24 and rep["bad_images"][0][0] == "broken.png"
    table = Store(str(store)).table("pics")
    assert table.meta.model == "efficientnet-lite0-imagenet" and table.meta.dimension == 1280
    cols = table.read().column_names
    assert "path" in cols and "image" not in cols  # files are kept as references
    # by file: the file itself is the nearest, then its own category
    fruit = sorted((pictures / "food" / "fruit").iterdir())[0]
    rc, out, _ = cli(store, "search-image", "pics", str(fruit), "-k", "4", "--json", capsys=capsys)
    hits = json.loads(out)
    assert rc == 0 and hits[0]["key"] == f"food/fruit/{fruit.name}" and hits[0]["distance"] < 1e-4
    assert sum(h["key"].startswith("food/fruit/") for h in hits) >= 3
    # by stored key: its own row is left out; the PNG shows the query and k neighbours
    key = f"animals/birds/{sorted((pictures / 'animals' / 'birds').iterdir())[0].name}"
    png = tmp_path / "n.png"
    rc, out, _ = cli(store, "search-image", "pics", key, "-k", "5", "--png", str(png), "--json",
                     capsys=capsys)
    res = json.loads(out)
    assert rc == 0 and key not in [h["key"] for h in res["rows"]] and len(res["rows"]) == 5
    assert [h["rank"] for h in res["rows"]] == [1, 2, 3, 4, 5]
    assert _cells(png.read_bytes()) == 6 and not any(_blank(png.read_bytes(), c) for c in range(6))
    # SQL: a file's vector by image_vector(), a stored row's by a subquery; the same hits
    con = embed_assets.connect(str(store))
    by_file = con.sql(f"SELECT key FROM knn('pics', image_vector('{fruit}'), 4) ORDER BY rank").fetchall()
    assert [r[0] for r in by_file] == [h["key"] for h in hits]
    by_key = con.sql(f"SELECT key FROM knn('pics', (SELECT vector FROM pics WHERE key = '{key}'), 6) "
                     "ORDER BY rank").fetchall()
    assert [r[0] for r in by_key][1:] == [h["key"] for h in res["rows"]]
    with pytest.raises(Exception, match=r"image_vector: '/nope\.png' cannot be used"):
        con.sql("SELECT * FROM knn('pics', image_vector('/nope.png'), 3)").fetchall()
    # an unknown key or file is a clear error
    rc, _, err = cli(store, "search-image", "pics", "no/such.png", capsys=capsys)
    assert rc == 2 and "is not an image file nor a key of 'pics'" in err


def test_blobs_keep_the_pictures_when_the_files_move(pictures: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pictures, copy)
    store = tmp_path / "store"
    rc, _, err = cli(store, "embed-images", "pics", str(copy / "**" / "*.png"), "--store-bytes",
                     capsys=capsys)
    assert rc == 0, err
    table = Store(str(store)).table("pics")
    keys = sorted(table.read(columns=["key"]).column("key").to_pylist())
    original = {k: Path(k).read_bytes() for k in keys}
    # an unchanged rerun writes nothing (the blob column scans as descriptions, which the
    # diff used to see as changed: every row and picture was rewritten on every run)
    rc, out, _ = cli(store, "embed-images", "pics", str(copy / "**" / "*.png"), "--store-bytes",
                     "--json", capsys=capsys)
    assert rc == 0 and json.loads(out)["rows_unchanged"] == 24 and table.version == 1
    # one edited picture: one row re-embedded and rewritten (an upsert into the blob
    # column used to fail: Arrow has no cast from bytes to the blob extension type)
    Path(keys[0]).write_bytes(original[keys[1]])
    rc, out, err = cli(store, "embed-images", "pics", str(copy / "**" / "*.png"), "--store-bytes",
                       "--json", capsys=capsys)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["rows_embedded"] == 1 and rep["write"]["rows_updated"] == 1
    assert stored_images(table, [keys[0]]) == {keys[0]: original[keys[1]]}
    assert stored_images(table, [keys[0]], version=1) == {keys[0]: original[keys[0]]}  # time travel
    Path(keys[0]).write_bytes(original[keys[0]])
    shutil.rmtree(copy)  # the store is self-contained
    assert stored_images(table, keys[1:6]) == {k: original[k] for k in keys[1:6]}
    png = tmp_path / "n.png"
    rc, _, err = cli(store, "search-image", "pics", keys[0], "-k", "3", "--png", str(png), capsys=capsys)
    assert rc == 0, err
    assert not any(_blank(png.read_bytes(), c) for c in range(4))  # query and hits from blobs
    # the SQL views leave the blob column out (Lance reports its storage struct while
    # scanning descriptions: SELECT * and knn failed with "Strings over 4GB"); the pictures
    # come back through stored_images above
    con = embed_assets.connect(str(store))
    assert con.sql("SELECT count(*) FROM pics").fetchone()[0] == 24
    rows = con.sql("SELECT * FROM pics").to_arrow_table()
    assert rows.num_rows == 24 and "image" not in rows.column_names and "vector" in rows.column_names
    hits = con.sql(f"SELECT key FROM knn('pics', (SELECT vector FROM pics WHERE key = '{keys[1]}'), 3)"
                   ).fetchall()
    assert hits[0][0] == keys[1]
    assert con.sql(f"SELECT count(*) FROM knn('pics', (SELECT vector FROM pics WHERE key = '{keys[0]}'), 3)"
                   ).fetchone()[0] == 3


def test_a_parquet_column_of_bytes_and_python_search_by_bytes(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    t = pq.read_table(DATA / "clipart_slice.parquet").slice(0, 30)
    pq.write_table(t, tmp_path / "items.parquet")
    store = tmp_path / "store"
    rc, _, err = cli(store, "embed-images", "items", str(tmp_path / "items.parquet"), capsys=capsys)
    assert rc == 2 and "name its image column (--column" in err
    rc, _, err = cli(store, "embed-images", "items", str(tmp_path / "items.parquet"), "--column", "png",
                     "--key", "key", capsys=capsys)
    assert rc == 0, err
    table = Store(str(store)).table("items")
    assert "label" in table.read().column_names
    query = t.column("png")[3].as_py()
    hits, raw = search_by_image(table, query, k=3)
    assert raw == query and hits.column("key")[0].as_py() == t.column("key")[3].as_py()
    png = neighbours_png(table, hits, raw, label="label", query_label=t.column("label")[3].as_py())
    assert _cells(png) == 4
    # a picture that is not an image is refused in the user's terms
    with pytest.raises(ValidationError, match="the query image cannot be used: empty"):
        search_by_image(table, b"", k=3)
    # a table of another model needs that model to embed a query picture
    from embed_assets.embed import PixelEmbedder, embed_images

    embed_images(Store(str(store)), "px", {"id": [1, 2], "img": [query, query]}, key="id",
                 image="img", embedder=PixelEmbedder())
    with pytest.raises(ValidationError, match="pass that model as embedder="):
        search_by_image(Store(str(store)).table("px"), query)
    hits, _ = search_by_image(Store(str(store)).table("px"), query, embedder=PixelEmbedder(), k=1)
    assert hits.num_rows == 1
    assert pa.types.is_integer(hits.schema.field("id").type)


def test_the_dagster_image_asset_shows_pictures_and_their_neighbours(
        pictures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import re

    from dagster import AssetKey, DagsterInstance, materialize

    from embed_assets.dagster import EmbedStoreResource
    from embed_assets.dagster.images import build_image_embedding_asset

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (pictures / "empty.png").write_bytes(b"")
    try:
        asset = build_image_embedding_asset(["clipart", "embeddings"], source=str(pictures),
                                            label_column="folder", skip_bad=True, neighbours=3)
        with DagsterInstance.get() as instance:
            res = materialize([asset], instance=instance,
                              resources={"embed_store": EmbedStoreResource(uri=str(tmp_path / "s"))})
            assert res.success
            mat = instance.get_latest_materialization_event(AssetKey(["clipart", "embeddings"]))
            md = mat.asset_materialization.metadata
    finally:
        (pictures / "empty.png").unlink()
    assert md["rows"].value == 24 and md["dimension"].value == 1280
    assert md["model"].value == "efficientnet-lite0-imagenet"
    assert "`empty.png`: empty (0 bytes)" in md["bad_images"].value
    m = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", md["neighbours"].value)
    assert m is not None
    im = Image.open(io.BytesIO(base64.b64decode(m.group(1))))
    # one row per folder (3 labels), the query and 3 neighbours each, 64 px cells
    assert (im.width, im.height) == (4 + 4 * 68, 4 + 3 * 68)
    px = np.asarray(im.convert("RGB"))
    green = ((px[..., 0] == 0) & (px[..., 1] == 160) & (px[..., 2] == 0)).sum()
    assert green > 0  # neighbours of the query's own folder are framed green
