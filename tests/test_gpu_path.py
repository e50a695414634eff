"""The batch-pipelined PyTorch embedder behind benchmarks/gpu.py, checked on the CPU.

No GPU here: the same code runs without pinned memory and streams, so what is checked is
that the pipelining (length-sorted batches, tokenisation on a worker thread ahead of the
forward pass, results scattered back to input order) gives sentence-transformers' vectors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embed_assets import Store, ValidationError, embed_table
from embed_assets.embed import FastTorchEmbedder

pytestmark = pytest.mark.e2e


def test_pipelined_embedder_matches_encode_on_cpu(debian, minilm) -> None:
    texts = debian["description"].head(300).to_list()
    emb = FastTorchEmbedder(device="cpu", batch_size=37, prefetch=2)
    v = emb.embed(texts)
    ref = minilm.embed(texts)
    assert v.shape == ref.shape and v.dtype == np.float32
    assert float((v * ref).sum(axis=1).min()) > 0.9999
    # fp32 on the CPU is the same model identity as the plain embedder: tables mix freely
    assert (emb.name, emb.revision) == (minilm.name, minilm.revision)
    assert emb.embed([]).shape == (0, 384)


def test_pipelined_embedder_through_the_store(tmp_path, debian, minilm) -> None:
    src = debian.head(120)
    r = embed_table(Store(tmp_path / "s"), "t", src, key="package", text="description",
                    embedder=FastTorchEmbedder(device="cpu", batch_size=50))
    assert r.rows_embedded == 120
    # the plain embedder continues the same table (same name and revision)
    r2 = embed_table(Store(tmp_path / "s"), "t", src, key="package", text="description",
                     embedder=minilm)
    assert r2.rows_embedded == 0


def test_fp16_needs_cuda_and_is_its_own_model() -> None:
    emb = FastTorchEmbedder(device="cpu", half=True)
    assert emb.name.endswith("#torch-fp16")
    with pytest.raises(ValidationError, match="CUDA"):
        emb.embed(["a text"])


def test_gpu_benchmark_exits_cleanly_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: benchmarks/gpu.py would run for real")
    script = Path(__file__).parents[1] / "benchmarks" / "gpu.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout
