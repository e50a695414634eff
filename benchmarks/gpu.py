"""The GPU path on one CUDA card: bare `SentenceTransformer.encode` vs the pipeline.

    python benchmarks/gpu.py [--texts 200000] [--batch 1024] [--json out.json]

One short prepared script, the same texts and the same card for every figure:

1. bare ``SentenceTransformer.encode``, fp32, its default batch of 32 (the baseline),
   and fp16 with a batch of 256 (the usual "fast" call);
2. :class:`embed_assets.embed.FastTorchEmbedder` bare (fp16 weights, length-sorted
   batches of ``--batch``, tokenisation on a worker thread ahead of the forward pass,
   pinned host memory, host-to-device copies on a side stream);
3. the pipeline: ``embed_table`` with that embedder into a fresh store (hashes, diff,
   Lance commit included).

Prints texts/s, each ratio against bare fp32 ``encode`` measured in the same run, the
agreement of fp16 vectors with fp32 ones (mean cosine), and the card's name. The floor
of issue 14 is pipeline >= 3x bare ``encode`` on the same card.

Texts: the PyPI summaries from ../shared/data when present, else the Debian slice shipped
in the package, repeated with a numbered suffix. Without a CUDA device it prints a
message and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def load_texts(n: int) -> list[str]:
    import polars as pl

    shared = Path(os.environ.get("EMBED_ASSETS_SHARED_DATA",
                                 Path(__file__).resolve().parents[2] / "shared" / "data"))
    pypi = shared / "pypi_summaries.parquet"
    if pypi.exists():
        df = pl.read_parquet(pypi, columns=["summary"])
        texts = [t for t in df["summary"].to_list() if t and t.strip()]
    else:
        from embed_assets._demo import demo_source

        base = demo_source()["description"].to_list()
        texts = [f"{base[i % len(base)]} ({i // len(base)})" for i in range(n)]
    return texts[:n]


def timed(fn, sync) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description="GPU embedding: bare encode vs the pipeline")
    ap.add_argument("--texts", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("no CUDA device: torch is not installed; nothing to measure")
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device available (torch.cuda.is_available() is False); "
              "benchmarks/gpu.py measures nothing on this machine")
        return 0
    import numpy as np

    from embed_assets import SentenceTransformerEmbedder, Store, embed_table
    from embed_assets.embed import FastTorchEmbedder

    card = torch.cuda.get_device_name(0)
    texts = load_texts(args.texts)
    n = len(texts)
    print(f"# gpu.py on {card} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB), "
          f"torch {torch.__version__}, {n:,} texts", flush=True)
    sync = torch.cuda.synchronize
    st = SentenceTransformerEmbedder(device="cuda")._load()
    st.encode(texts[:2048], batch_size=32)  # CUDA context, kernels: outside the timings
    rows: list[dict[str, object]] = []

    base_s, ref = timed(lambda: st.encode(texts, batch_size=32, normalize_embeddings=True,
                                          convert_to_numpy=True), sync)
    rows.append({"figure": "bare encode fp32, batch 32 (baseline)", "seconds": base_s})
    st16 = SentenceTransformerEmbedder(device="cuda")._load().half()
    st16.encode(texts[:2048], batch_size=256)
    s16, v16 = timed(lambda: st16.encode(texts, batch_size=256, normalize_embeddings=True,
                                         convert_to_numpy=True), sync)
    rows.append({"figure": "bare encode fp16, batch 256", "seconds": s16,
                 "mean_cosine_vs_fp32": float((np.asarray(v16, np.float32) * ref).sum(1).mean())})
    st16 = None  # the card is freed for the next figures
    fast = FastTorchEmbedder(device="cuda", half=True, batch_size=args.batch)
    fast.embed(texts[:4096])
    fs, fv = timed(lambda: fast.embed(texts), sync)
    rows.append({"figure": f"FastTorchEmbedder fp16, batch {args.batch} (bare)", "seconds": fs,
                 "mean_cosine_vs_fp32": float((fv * ref).sum(1).mean())})
    import polars as pl

    src = pl.DataFrame({"id": list(range(n)), "text": texts})
    with tempfile.TemporaryDirectory() as d:
        ps, res = timed(lambda: embed_table(Store(d), "t", src, key="id", text="text",
                                            embedder=fast), sync)
        assert res.rows_embedded == n  # type: ignore[attr-defined]
    rows.append({"figure": "pipeline: embed_table + FastTorchEmbedder fp16", "seconds": ps,
                 "vs_bare_fast": fs / ps})
    again, _ = timed(lambda: st.encode(texts, batch_size=32, normalize_embeddings=True,
                                       convert_to_numpy=True), sync)
    rows.append({"figure": "bare encode fp32 again (drift check)", "seconds": again})
    print()
    for r in rows:
        s = float(r["seconds"])  # type: ignore[arg-type]
        extra = ", ".join(f"{k} {v:.4f}" for k, v in r.items()
                          if k not in ("figure", "seconds") and isinstance(v, float))
        print(f"{r['figure']:<52} {s:8.2f} s {n / s:10,.0f} texts/s  {base_s / s:5.2f}x bare fp32"
              + (f"  ({extra})" if extra else ""))
        r["texts_per_s"] = n / s
        r["vs_bare_encode_fp32"] = base_s / s
    floor = base_s / ps
    print(f"\npipeline / bare encode on {card}: {floor:.2f}x (floor 3x: "
          f"{'met' if floor >= 3 else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"card": card, "texts": n, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
