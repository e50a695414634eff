"""Real MiniLM vectors for benchmarks, cached on disk once (benchmarks/.cache, git-ignored).

- Debian: ../shared/data/debian_minilm.npz (63,666 package descriptions, float16, normalised).
- PyPI: summaries from ../shared/data/pypi_summaries.parquet, embedded here with the
  project's own default embedder the first time they are asked for.
A fresh clone has no ../shared: callers skip with a message when it is absent.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
SHARED = Path(os.environ.get("EMBED_ASSETS_SHARED_DATA", ROOT.parent.parent / "shared" / "data"))


def available() -> bool:
    return (SHARED / "debian_minilm.npz").exists()


def debian_vectors() -> np.ndarray:
    with np.load(SHARED / "debian_minilm.npz", allow_pickle=True) as z:
        return z["vector"].astype(np.float32)


def pypi_vectors(n: int) -> np.ndarray:
    """The first ``n`` non-empty PyPI summaries (a fixed seeded sample), embedded once."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"pypi_minilm_{n}.npy"
    if path.exists():
        return np.load(path).astype(np.float32)
    import polars as pl

    from embed_assets import SentenceTransformerEmbedder

    df = pl.read_parquet(SHARED / "pypi_summaries.parquet", columns=["name", "summary"])
    df = df.filter(pl.col("summary").str.strip_chars().str.len_chars() > 0).sample(n=n, seed=11)
    t0 = time.perf_counter()
    vecs = SentenceTransformerEmbedder(batch_size=128, show_progress=True).embed(
        df["summary"].to_list())
    print(f"embedded {n} PyPI summaries in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    np.save(path, vecs.astype(np.float16))
    return vecs


def real_vectors(n: int = 120_000) -> np.ndarray:
    """``n`` real MiniLM text vectors: all Debian descriptions, topped up with PyPI summaries."""
    deb = debian_vectors()
    if n <= len(deb):
        return deb[:n]
    return np.concatenate([deb, pypi_vectors(n - len(deb))])


def clustered_vectors(n: int, dim: int = 384, clusters: int = 1000, seed: int = 0) -> np.ndarray:
    """Synthetic clustered unit vectors (a Gaussian mixture), for the 1M-row figures."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for i in range(0, n, step):
        m = min(step, n - i)
        lab = rng.integers(0, clusters, size=m)
        out[i:i + m] = centers[lab] + 0.6 * rng.normal(size=(m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


if __name__ == "__main__":
    v = real_vectors(int(sys.argv[1]) if len(sys.argv) > 1 else 120_000)
    print(v.shape)
