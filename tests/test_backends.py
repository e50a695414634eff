"""CPU backends of the real model: ONNX Runtime fp32 and dynamic int8, against PyTorch fp32.

The model is exported from the shipped all-MiniLM-L6-v2 weights into a temporary cache
(nothing is downloaded). Agreement is checked at small scale on real Debian descriptions;
benchmarks/bench_embed.py measures it (and the speed) on PyPI summaries.
"""

from __future__ import annotations

import numpy as np
import pytest

from embed_assets import (
    EMBED_BACKENDS,
    OnnxEmbedder,
    SchemaMismatchError,
    Store,
    ValidationError,
    default_embedder,
    embed_table,
)
from embed_assets.dagster import EmbedderResource

pytestmark = pytest.mark.e2e
# The onnx extra (make test installs it); without it the backends cannot run at all.
pytest.importorskip("onnxruntime", reason="backends onnx/onnx-int8 need the onnx extra")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("model_cache"))


@pytest.fixture(scope="module")
def texts(debian) -> list[str]:
    return debian["description"].head(400).to_list()


@pytest.fixture(scope="module")
def fp32(minilm, texts) -> np.ndarray:
    return minilm.embed(texts)


def _embedder(backend: str, cache: str, monkeypatch: pytest.MonkeyPatch) -> OnnxEmbedder:
    monkeypatch.setenv("EMBED_ASSETS_MODEL_CACHE", cache)
    emb = default_embedder(None, backend=backend)
    assert isinstance(emb, OnnxEmbedder)
    return emb


def _top10(mat: np.ndarray) -> np.ndarray:
    sims = mat @ mat.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :10]


def test_onnx_fp32_matches_pytorch(cache, texts, fp32, monkeypatch) -> None:
    emb = _embedder("onnx", cache, monkeypatch)
    v = emb.embed(texts)
    assert v.shape == fp32.shape and v.dtype == np.float32
    assert float((v * fp32).sum(axis=1).min()) > 0.9999
    # batch composition (length-sorted, padded per batch) does not change a vector
    assert np.allclose(emb.embed(texts[:3]), v[:3], atol=1e-5)


def test_onnx_int8_agrees_with_fp32(cache, texts, fp32, monkeypatch) -> None:
    emb = _embedder("onnx-int8", cache, monkeypatch)
    v = emb.embed(texts)
    cos = (v * fp32).sum(axis=1)
    assert float(cos.mean()) >= 0.99
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # Each query's top-10 neighbours among the 400 texts: int8 keeps >= 90% of fp32's.
    # (Identical top-10 sets are rarer: a 0.996 cosine still swaps near-ties at rank 10;
    # benchmarks/RESULTS.md records both figures.)
    a, b = _top10(v), _top10(fp32)
    kept = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)])
    assert kept >= 0.9, f"int8 keeps {kept:.1%} of the fp32 top-10 neighbours"


def test_backend_is_part_of_the_model_identity(tmp_path, debian, minilm, cache, monkeypatch) -> None:
    int8 = _embedder("onnx-int8", cache, monkeypatch)
    assert int8.name == f"{minilm.name}#onnx-int8"
    assert int8.revision.startswith(minilm.revision) and "qint8" in int8.revision
    assert _embedder("onnx", cache, monkeypatch).revision.endswith("+onnx-fp32-r2")
    store = Store(tmp_path / "s")
    src = debian.head(40)
    embed_table(store, "t", src, key="package", text="description", embedder=minilm)
    # int8 vectors never join fp32 ones in a table without an overwrite
    with pytest.raises(SchemaMismatchError, match="onnx-int8"):
        embed_table(store, "t", src, key="package", text="description", embedder=int8)
    with pytest.raises(SchemaMismatchError, match="onnx-int8"):
        embed_table(store, "t", str(_parquet(src, tmp_path)), key="package", text="description",
                    embedder=int8)
    r = embed_table(store, "t", src, key="package", text="description", embedder=int8,
                    mode="overwrite")
    assert r.rows_embedded == 40
    meta = store.table("t").meta
    assert (meta.model, meta.model_revision) == (int8.name, int8.revision)
    # the stored name rebuilds the same backend for queries
    again = default_embedder(meta.model)
    assert isinstance(again, OnnxEmbedder) and again.quantize
    hit = store.table("t").search(src["description"][0], k=1, embedder=again)
    assert hit["package"].to_pylist() == [src["package"][0]]
    # and the fp32 torch embedder is refused on the int8 table
    with pytest.raises(SchemaMismatchError, match="onnx-int8"):
        embed_table(store, "t", src, key="package", text="description", embedder=minilm)


def _parquet(df, tmp_path):
    path = tmp_path / "src.parquet"
    df.write_parquet(path)
    return path


def test_unknown_backend_is_a_validation_error_naming_it() -> None:
    assert "onnx-int8" in EMBED_BACKENDS
    with pytest.raises(ValidationError, match="'tpu'"):
        default_embedder(None, backend="tpu")
    with pytest.raises(ValidationError, match="'tpu'"):
        EmbedderResource(backend="tpu").get_embedder()
    with pytest.raises(ValidationError, match="names backend 'onnx'"):
        default_embedder("all-MiniLM-L6-v2#onnx", backend="onnx-int8")
    assert isinstance(EmbedderResource(backend="onnx-int8").get_embedder(), OnnxEmbedder)
