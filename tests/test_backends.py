"""CPU backends of the real model: ONNX Runtime fp32 and dynamic int8, OpenVINO fp32 and
bf16, against PyTorch fp32.

The model is exported from the shipped all-MiniLM-L6-v2 weights into a temporary cache
(nothing is downloaded). Agreement is checked at small scale on real Debian descriptions;
benchmarks/bench_embed.py measures it (and the speed) on PyPI summaries.
"""

from __future__ import annotations

import numpy as np
import pytest

from embed_assets import (
    OnnxEmbedder,
    SchemaMismatchError,
    Store,
    ValidationError,
    default_embedder,
    embed_table,
)
from embed_assets.dagster import EmbedderResource
from embed_assets.embed import EMBED_BACKENDS, OpenVinoEmbedder
from embed_assets.embed._openvino import cpu_has_bf16

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
    assert isinstance(emb, OnnxEmbedder | OpenVinoEmbedder)
    return emb


def _needs_openvino() -> None:
    pytest.importorskip("openvino", reason="backends openvino/openvino-bf16 need the openvino extra")


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


def _identical_top10(v: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([set(x) == set(y) for x, y in zip(_top10(v), _top10(ref), strict=True)]))


def test_openvino_fp32_matches_pytorch(cache, texts, fp32, monkeypatch) -> None:
    _needs_openvino()
    v = _embedder("openvino", cache, monkeypatch).embed(texts)
    assert v.shape == fp32.shape and v.dtype == np.float32
    assert float((v * fp32).sum(axis=1).min()) > 0.9999
    assert _identical_top10(v, fp32) >= 0.99


def test_openvino_bf16_meets_the_strict_agreement_floor(cache, texts, fp32, monkeypatch) -> None:
    """The issue's floor read strictly: mean cosine >= 0.99 to fp32 *and* the identical
    top-10 neighbour set for >= 90% of queries (int8 keeps the set for about a third)."""
    _needs_openvino()
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (AMX / AVX-512 BF16): openvino-bf16 refuses to run")
    emb = _embedder("openvino-bf16", cache, monkeypatch)
    v = emb.embed(texts)
    cos = (v * fp32).sum(axis=1)
    assert float(cos.mean()) >= 0.99 and float(cos.min()) >= 0.999
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    same = _identical_top10(v, fp32)
    assert same >= 0.9, f"bf16 keeps the identical top-10 set for {same:.1%} of queries"
    assert np.allclose(emb.embed(texts[:3]), v[:3], atol=2e-3)  # batch composition


def test_saved_tokenizer_matches_the_models(cache, minilm, monkeypatch) -> None:
    """The export's tokenizer.json (used instead of transformers at run time) gives the
    model's own token ids, truncation to max_seq_length included."""
    monkeypatch.setenv("EMBED_ASSETS_MODEL_CACHE", cache)
    from embed_assets.embed._onnx import export_model

    export = export_model(None, "onnx")
    st = minilm._load()
    batch = ["Ünïcode & punctuation: naïve café!", "a", "word " * 600, "MiXeD CaSe tokens"]
    ours = export.tokenizer().encode_batch(batch)
    theirs = st.tokenizer(batch, padding=True, truncation=True, max_length=st.max_seq_length)
    assert [e.ids for e in ours] == theirs["input_ids"]
    assert [e.attention_mask for e in ours] == theirs["attention_mask"]
    assert len(ours[2].ids) == st.max_seq_length


def test_cached_export_runs_without_torch(cache, texts, monkeypatch) -> None:
    """Once exported, the ONNX Runtime and OpenVINO backends load from the cache with
    tokenizers + the runtime only: neither torch nor sentence-transformers is imported."""
    import subprocess
    import sys

    _embedder("onnx-int8", cache, monkeypatch).embed(texts[:2])  # the export exists
    backends = ["onnx", "onnx-int8"]
    try:
        import openvino  # noqa: F401

        backends.append("openvino")
    except ImportError:
        pass
    code = (
        "import sys; from embed_assets import default_embedder\n"
        f"for b in {backends!r}:\n"
        "    e = default_embedder(None, backend=b); e.revision\n"
        "    assert e.embed(['a text editor']).shape == (1, 384)\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "EMBED_ASSETS_MODEL_CACHE": cache},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


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
        embed_table(
            store, "t", str(_parquet(src, tmp_path)), key="package", text="description", embedder=int8
        )
    r = embed_table(store, "t", src, key="package", text="description", embedder=int8, mode="overwrite")
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
    pytest.importorskip("openvino")
    bf16 = OpenVinoEmbedder(precision="bf16")
    assert bf16.name == f"{minilm.name}#openvino-bf16"
    assert bf16.revision == f"{minilm.revision}+openvino-bf16-o1"
    assert _embedder("openvino", cache, monkeypatch).revision.endswith("+openvino-fp32-o1")
    # bf16 vectors are refused on the int8 table too (the identity is checked before any
    # model runs, so this holds on a CPU without bf16 as well)
    with pytest.raises(SchemaMismatchError, match="onnx-int8"):
        embed_table(store, "t", src, key="package", text="description", embedder=bf16)
    again = default_embedder(bf16.name)
    assert isinstance(again, OpenVinoEmbedder) and again.precision == "bf16"


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
    assert "openvino-bf16" in EMBED_BACKENDS
    assert isinstance(EmbedderResource(backend="openvino-bf16").get_embedder(), OpenVinoEmbedder)
    with pytest.raises(ValidationError, match="'fp8'"):
        OpenVinoEmbedder(precision="fp8")
