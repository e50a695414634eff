"""Image embeddings (issue 16): the demo's image group materialised from scratch with a real
Dagster instance and a real Lance store; the trained CNN against a PCA baseline computed
here; search by an image; a second model version and a rollback; SQL on the image table;
bad images; paths, bytes and arrays; any torch model or CLIP model given by path.
"""

# No `from __future__ import annotations`: Dagster resolves the test assets' annotations.
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterInstance, materialize

import embed_assets
from embed_assets import Store, ValidationError
from embed_assets.embed import (
    BadImage,
    PixelEmbedder,
    SentenceTransformerImageEmbedder,
    TorchImageEmbedder,
    decode_image,
    embed_images,
    fit_pixel_pca,
    image_hash,
)
from embed_assets.train import (
    digits_dataset,
    knn_label_accuracy,
    model_provenance,
    save_model,
    train_digits_cnn,
)

PREFIX = "digits"
EMB = AssetKey([PREFIX, "embeddings"])
MODEL = AssetKey([PREFIX, "cnn_model"])
EVAL = AssetKey([PREFIX, "knn_eval"])


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def dagster_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("EMBED_ASSETS_STORE", str(tmp_path / "store"))
    from dagster_project.images import build_image_definitions

    instance = DagsterInstance.get()
    try:
        yield {"defs": build_image_definitions(PREFIX), "instance": instance,
               "store": Store(str(tmp_path / "store"))}
    finally:
        instance.dispose()


def _materialize(env: dict[str, Any], selection: Any = None, run_config: dict | None = None) -> Any:
    d = env["defs"]
    res = materialize([*d.assets, *d.asset_checks], resources=d.resources, instance=env["instance"],
                      selection=selection, run_config=run_config)
    assert res.success
    return res


def _md(instance: DagsterInstance, key: AssetKey) -> dict[str, Any]:
    ev = instance.get_latest_materialization_event(key)
    assert ev is not None and ev.asset_materialization is not None
    return {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def test_image_assets_from_scratch_beat_pca_search_by_image_and_roll_back(
        dagster_env: dict[str, Any]) -> None:
    env, store = dagster_env, dagster_env["store"]
    res = _materialize(env)
    # every asset check of the image table ran and passed
    checks = res.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [(c.check_name, c.passed) for c in checks]
    table = store.table("digits_embeddings")
    assert table.count_rows() == 1797 and table.version == 1
    meta1 = table.meta
    model_md = _md(env["instance"], MODEL)
    rev1 = model_md["revision"]
    assert meta1.model == "embed-assets/digits-cnn" and meta1.model_revision == rev1
    path1 = model_md["artefact_path"]
    assert os.path.isfile(path1) and os.path.basename(path1) == f"{rev1}.pt"
    assert path1.startswith(str(store.uri))  # the artefact lives in the store folder
    assert model_provenance(path1)["data"] == "sklearn.datasets.load_digits"
    emb_md = _md(env["instance"], EMB)
    assert emb_md["rows_embedded"] == 1797 and "projection" in emb_md  # the shared metadata

    # The baseline, computed here: PCA of the raw pixels fitted on the train split.
    data = digits_dataset()
    split = data.column("split").to_pylist()
    pngs = data.column("png").to_pylist()
    train_imgs = [decode_image(v, "L") for v, s in zip(pngs, split, strict=True) if s == "train"]
    embed_images(store, "baseline_here", data, key="digit_id", image="png",
                 embedder=fit_pixel_pca(train_imgs, 32))
    baseline = knn_label_accuracy(store.table("baseline_here"), k=5)
    cnn = knn_label_accuracy(table, k=5)
    ev = _md(env["instance"], EVAL)
    assert ev["pca_knn_accuracy"] == pytest.approx(baseline.accuracy, abs=1e-4)
    assert ev["cnn_knn_accuracy"] == pytest.approx(cnn.accuracy, abs=1e-4)
    print(f"k-NN@5 held-out accuracy: CNN {cnn.accuracy:.4f}, PCA baseline {baseline.accuracy:.4f}; "
          f"neighbour agreement CNN {cnn.agreement:.4f}, PCA {baseline.agreement:.4f}")
    assert cnn.accuracy > baseline.accuracy
    assert ev["cnn_beats_baseline"] is True
    assert ev["neighbours"].startswith("![")  # the picture of nearest neighbours

    # Search by an image: every held-out digit, embedded from its PNG bytes by the model
    # artefact, then searched among the training images of the stored table.
    emb = TorchImageEmbedder(path1)
    test_rows = [i for i, s in enumerate(split) if s == "test"]
    labels = data.column("label").to_pylist()
    qv = emb.embed_images([decode_image(pngs[i], "L") for i in test_rows])
    same = []
    for i, v in zip(test_rows, qv, strict=True):
        hits = table.search(v, k=5, where="split = 'train'", columns=["label"])
        same.extend(lab == labels[i] for lab in hits.column("label").to_pylist())
    agreement = float(np.mean(same))
    print(f"search by image: {agreement:.4f} of 5 nearest training images share the query's label "
          f"({len(test_rows)} queries)")
    assert agreement >= 0.9
    assert agreement == pytest.approx(cnn.agreement, abs=1e-6)  # the stored vectors are the model's

    # The SQL macros on the image table, unchanged.
    con = embed_assets.connect(store=store.uri)
    q = qv[0].tolist()
    got = con.execute("SELECT digit_id, label, rank FROM knn('digits_embeddings', ?, 5) ORDER BY rank",
                      [q]).fetchall()
    want = table.search(qv[0], k=5, columns=["digit_id"]).column("digit_id").to_pylist()
    assert [r[0] for r in got] == want and [r[2] for r in got] == [1, 2, 3, 4, 5]
    con.close()

    # Nothing changed: a second run embeds nothing and writes no version.
    _materialize(env, selection=[EMB])
    assert store.table("digits_embeddings").version == 1
    assert _md(env["instance"], EMB)["rows_embedded"] == 0

    # A second model version (another seed): a new revision, every image re-embedded.
    _materialize(env, selection=[MODEL, EMB],
                 run_config={"ops": {"digits__cnn_model": {"config": {"seed": 1}}}})
    table = store.table("digits_embeddings")
    rev2 = _md(env["instance"], MODEL)["revision"]
    assert rev2 != rev1 and table.version == 2 and table.meta.model_revision == rev2
    assert _md(env["instance"], EMB)["rows_embedded"] == 1797
    # ... and rolled back to the first, from the rollback job
    job = env["defs"].get_job_def("rollback_image_table")
    rb = job.execute_in_process(instance=env["instance"], run_config={
        "ops": {"rollback_image_table_op": {"config": {"table": "digits_embeddings", "to": "1"}}}})
    assert rb.success
    table = store.table("digits_embeddings")
    assert table.version == 3 and table.meta.model_revision == rev1
    assert table.read(3).sort_by("digit_id").equals(table.read(1).sort_by("digit_id"))


def test_bad_images_are_named_or_skipped_and_reported(store: Store, tmp_path: Path) -> None:
    good = _png(np.full((8, 8), 128))
    cases = {
        "ok": good,
        "garbage": b"not an image at all",
        "empty": b"",
        "truncated": good[:40],
        "null": None,
    }
    src_bytes = {"id": list(cases), "img": list(cases.values())}
    with pytest.raises(ValidationError) as exc:
        embed_images(store, "pics", src_bytes, key="id", image="img", embedder=PixelEmbedder())
    msg = str(exc.value)
    assert msg.startswith("4 image(s) cannot be used")
    for k in ("garbage", "empty", "truncated", "null"):
        assert repr(k) in msg
    assert "on_bad='skip'" in msg and "empty (0 bytes)" in msg and "null image" in msg
    assert not store.exists("pics")  # refused before anything was written
    res = embed_images(store, "pics", src_bytes, key="id", image="img", embedder=PixelEmbedder(),
                       on_bad="skip")
    assert res.rows_embedded == 1 and res.rows_skipped_empty == 4 and res.rows_source == 5
    assert "skipped 4 bad image(s)" in res.summary()
    assert sorted(k for k, _ in res.bad_images) == ["empty", "garbage", "null", "truncated"]
    assert store.table("pics").read(columns=["id"]).column("id").to_pylist() == ["ok"]
    # paths: a missing file is named with its path
    paths = {"id": ["a", "b"], "img": [str(tmp_path / "nope.png"), str(tmp_path / "nope.png")]}
    with pytest.raises(ValidationError, match=r"'a': cannot read file .*nope\.png"):
        embed_images(store, "by_path", paths, key="id", image="img", embedder=PixelEmbedder())
    # arrays of the wrong shape, range or size; the reason is given per key
    arrays = {"id": [1, 2, 3, 4], "img": [np.zeros((8, 8, 2), np.uint8), np.full((4, 4), 2.0),
                                          np.zeros((0, 8), np.uint8), np.zeros(64, np.uint8)]}
    with pytest.raises(ValidationError) as exc:
        embed_images(store, "arrs", arrays, key="id", image="img", embedder=PixelEmbedder())
    msg = str(exc.value)
    assert "1: array of shape (8, 8, 2)" in msg and "2: float array outside [0, 1]" in msg
    assert "3: zero-size image" in msg and "4: array of shape (64,)" in msg
    # a column of numbers is not an image column
    with pytest.raises(ValidationError, match="image column 'img' holds int64"):
        embed_images(store, "nums", {"id": [1], "img": [3]}, key="id", image="img",
                     embedder=PixelEmbedder())
    with pytest.raises(BadImage, match="zero-size"):
        from PIL import Image

        decode_image(Image.new("L", (0, 0)))


def test_paths_bytes_and_arrays_key_on_the_image_content(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrs = [rng.integers(0, 256, (8, 8)).astype(np.uint8) for _ in range(4)]
    pngs = [_png(a) for a in arrs]
    files = []
    for i, b in enumerate(pngs):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(b)
        files.append(str(p))
    assert image_hash(files[0]) == image_hash(pngs[0]) != image_hash(pngs[1])
    emb = PixelEmbedder()
    r1 = embed_images(store, "files", {"id": [0, 1, 2, 3], "path": files}, key="id", image="path",
                      embedder=emb, mode="sync")
    assert r1.rows_embedded == 4
    v1 = store.table("files").read().sort_by("id").column("vector").to_pylist()
    # the same files moved elsewhere: the path column changes, the images do not
    moved = []
    for i, f in enumerate(files):
        p = tmp_path / f"moved{i}.png"
        os.rename(f, p)
        moved.append(str(p))
    # ... and one image edited
    Path(moved[2]).write_bytes(_png(255 - arrs[2]))
    r2 = embed_images(store, "files", {"id": [0, 1, 2, 3], "path": moved}, key="id", image="path",
                      embedder=emb, mode="sync")
    assert r2.rows_embedded == 1 and r2.rows_reused == 3
    t = store.table("files")
    assert t.read().sort_by("id").column("path").to_pylist() == moved
    v2 = t.read().sort_by("id").column("vector").to_pylist()
    assert v2[0] == v1[0] and v2[2] != v1[2]
    # the same pixels as bytes (PNG and JPEG), as a Polars Array column, as numpy arrays
    by_bytes = embed_images(store, "b", {"id": [0, 1], "png": pngs[:2]}, key="id", image="png",
                            embedder=emb)
    assert by_bytes.rows_embedded == 2
    df = pl.DataFrame({"id": [0, 1], "px": [a.tolist() for a in arrs[:2]]},
                      schema={"id": pl.Int64, "px": pl.Array(pl.UInt8, (8, 8))})
    embed_images(store, "pl", df, key="id", image="px", embedder=emb)
    embed_images(store, "np", {"id": [0, 1], "px": np.stack(arrs[:2])}, key="id", image="px",
                 embedder=emb)
    a = store.table("b").read().sort_by("id").column("vector").to_pylist()
    assert store.table("pl").read().sort_by("id").column("vector").to_pylist() == a
    assert store.table("np").read().sort_by("id").column("vector").to_pylist() == a
    assert "px" in store.table("pl").read().column_names  # an Arrow pixel column is stored
    assert "px" not in store.table("np").read().column_names  # numpy objects are not
    rgb = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    jpg = embed_images(store, "jpg", {"id": [0], "img": [_png(rgb, "JPEG")]}, key="id",
                       image="img", embedder=PixelEmbedder(image_mode="RGB"))
    assert jpg.rows_embedded == 1 and store.table("jpg").meta.dimension == 8 * 8 * 3


def test_any_torch_model_by_path(store: Store, tmp_path: Path) -> None:
    """A torchvision-style module (its classifier replaced by an identity) saved by the
    user, through the same protocol; no claim about its quality."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Identity()).eval()
    pickled = tmp_path / "tiny.pt"
    torch.save(model, pickled)
    with pytest.raises(ValidationError, match="allow_pickle=True"):
        TorchImageEmbedder(str(pickled), size=(16, 16))
    emb = TorchImageEmbedder(str(pickled), size=(16, 16), allow_pickle=True)
    assert emb.dimension == 16 and emb.name == "tiny.pt" and len(emb.revision) == 16
    exported = tmp_path / "tiny.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 16, 16),),
                                          dynamic_shapes=({0: batch},)), str(exported))
    emb2 = TorchImageEmbedder(str(exported), size=(16, 16))  # no pickle needed
    assert emb2.dimension == 16 and emb2.revision != emb.revision
    scripted = tmp_path / "tiny_script.pt"
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.13; users still have files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(scripted))
    emb3 = TorchImageEmbedder(str(scripted), size=(16, 16))
    rng = np.random.default_rng(1)
    pngs = [_png((rng.random((20, 24, 3)) * 255).astype(np.uint8)) for _ in range(6)]
    r = embed_images(store, "photos", {"id": list(range(6)), "img": pngs}, key="id", image="img",
                     embedder=emb)
    assert r.rows_embedded == 6
    t = store.table("photos")
    assert t.meta.model == "tiny.pt" and t.meta.model_revision == emb.revision
    np.testing.assert_allclose(emb2.embed_images([decode_image(p) for p in pngs]),
                               np.stack(t.read().sort_by("id").column("vector").to_pylist()), atol=1e-5)
    np.testing.assert_allclose(emb3.embed_images([decode_image(p) for p in pngs]),
                               np.stack(t.read().sort_by("id").column("vector").to_pylist()), atol=1e-5)
    hits = t.search(emb.embed_images([decode_image(pngs[3])])[0], k=1)
    assert hits.column("id").to_pylist() == [3]
    # real photos by path: scikit-learn's two bundled sample JPEGs (640 x 427, resized)
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().filenames
    r = embed_images(store, "sample_photos", {"name": ["china", "flower"], "path": photos},
                     key="name", image="path", embedder=emb3)
    assert r.rows_embedded == 2
    hits = store.table("sample_photos").search(
        emb3.embed_images([decode_image(photos[1])])[0], k=2)
    assert hits.column("name").to_pylist()[0] == "flower"
    # another model into the same table is refused unless it overwrites
    with pytest.raises(embed_assets.SchemaMismatchError):
        embed_images(store, "photos", {"id": [9], "img": pngs[:1]}, key="id", image="img", embedder=emb2)
    # a bare state_dict has no architecture
    sd = tmp_path / "sd.pt"
    torch.save(model.state_dict(), sd)
    with pytest.raises(ValidationError, match="state_dict without its architecture"):
        TorchImageEmbedder(str(sd))


def test_the_cnn_artefact_is_hashed_and_checked(tmp_path: Path) -> None:
    import torch

    m = train_digits_cnn(epochs=1)
    path = save_model(m, str(tmp_path))
    assert os.path.basename(path) == f"{m.revision}.pt"
    emb = TorchImageEmbedder(path)
    assert (emb.name, emb.revision, emb.dimension, emb.image_mode, emb.size) == \
        (m.name, m.revision, 32, "L", (8, 8))
    again = train_digits_cnn(epochs=1)
    assert again.revision == m.revision  # seeded: the same weights, the same revision
    obj = torch.load(path, weights_only=True)
    obj["encoder"]["0.bias"] = obj["encoder"]["0.bias"] + 1.0
    bad = tmp_path / "edited.pt"
    torch.save(obj, bad)
    with pytest.raises(ValidationError, match="corrupt or edited"):
        TorchImageEmbedder(str(bad))


def _tiny_clip(folder: Path) -> None:
    """A randomly initialised CLIP of a few thousand weights, with a byte-level vocabulary:
    a real CLIP architecture and processor, built here (no download)."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": 16},
                                                        crop_size={"height": 16, "width": 16}),
                  tokenizer=tok).save_pretrained(folder)


def test_a_clip_model_by_path_searches_images_by_text(store: Store, tmp_path: Path) -> None:
    """The sentence-transformers path for CLIP-style models, on a tiny random CLIP: the
    code path (images and texts into one space, text-to-image search), not quality."""
    _tiny_clip(tmp_path / "clip")
    clip = SentenceTransformerImageEmbedder(str(tmp_path / "clip"), device="cpu")
    rng = np.random.default_rng(2)
    pngs = [_png((rng.random((20, 20, 3)) * 255).astype(np.uint8)) for _ in range(5)]
    r = embed_images(store, "clip_photos", {"id": list(range(5)), "img": pngs}, key="id", image="img",
                     embedder=clip)
    assert r.rows_embedded == 5 and clip.dimension == 8
    t = store.table("clip_photos")
    assert t.meta.model == clip.name and t.meta.model_revision == clip.revision
    hits = t.search("a photo of a red square", k=3, embedder=clip)  # text -> image search
    assert hits.num_rows == 3 and hits.column("rank").to_pylist() == [1, 2, 3]
    tv = clip.embed(["a photo of a red square"])[0]
    assert hits.column("id").to_pylist() == t.search(tv, k=3).column("id").to_pylist()
    # an image query finds itself first
    iv = clip.embed_images([decode_image(pngs[4])])[0]
    assert t.search(iv, k=1).column("id").to_pylist() == [4]


def test_image_tables_share_listing_tags_and_the_index_policy(store: Store) -> None:
    """The store treats an image table like any other: listed, tagged, indexed to a
    recall target (forced here: 1,797 rows are below the exact-search threshold)."""
    data = digits_dataset()
    assert isinstance(data, pa.Table)
    embed_images(store, "pixels", data, key="digit_id", image="png", embedder=PixelEmbedder())
    t = store.table("pixels")
    t.tag("first")
    info = {i.name: i for i in store.tables()}["pixels"]
    assert (info.rows, info.dimension, info.model, info.tags) == (1797, 64, "pixels-raw:8x8:L", ["first"])
    props = t.properties(1)
    assert any(v == "image" for k, v in props.items() if k.endswith("input_kind"))
    assert embed_assets.build_index(t).kind == "exact"  # the policy: exact below the threshold
    rep = embed_assets.build_index(t, recall=0.9, force_ann=True, sample_queries=50)
    # the build measured its recall against exact search (0.89 here: at 1,797 rows the
    # tuner's candidates stop short of the target, which the report says honestly)
    assert rep.kind == "ann" and rep.target_recall == 0.9 and 0.5 < rep.recall <= 1.0
    fresh = embed_assets.freshness(t)
    assert fresh["indexed"] and fresh["unindexed_rows"] == 0
    q = t.get([7], columns=["vector"]).column("vector")[0].as_py()
    assert t.search(q, k=1).column("digit_id").to_pylist() == [7]  # through the index


def test_the_demo_and_image_rollback_jobs_offer_their_own_tables() -> None:
    """Both job sets live in one Definitions; each rollback job's table Enum holds its own
    tables (a shared Enum name made Dagster refuse 'digits_embeddings' in the image job)."""
    from dagster_project.definitions import defs

    for job, table in (("rollback_image_table", "digits_embeddings"),
                       ("rollback_table", "debian_embeddings")):
        fields = defs.get_job_def(job).run_config_schema.config_type.fields
        op_cfg = fields["ops"].config_type.fields[f"{job}_op"].config_type.fields["config"]
        enum_type = op_cfg.config_type.fields["table"].config_type
        assert table in [v.config_value for v in enum_type.enum_values], job
