"""Experiments on Lance branches (issue 25), on the real Debian data.

Production: the 63,666 Debian package descriptions with their all-MiniLM-L6-v2 vectors
(torch fp32, ../shared/data/debian_minilm.npz, as the demo embeds them). Experiments:
the same model on ONNX Runtime int8 (a second backend) and the hashing embedder (another
model). For each: top-10 overlap with production, rank correlation, share of rows whose
nearest neighbour changed, and same-section@10 (the share of a package's 10 neighbours in
its own Debian section) for each side, on a sample of the table's own rows.
Then the promotion of an experiment: time and bytes written, beside the baseline of
rewriting the table with the same rows (``mode="overwrite"``), at 63k rows and (with the
hashing embedder, PyPI summaries) 841k rows.

    flock /work/bench.lock python benchmarks/bench_experiments.py [--sample 500] [--pypi-rows N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.datasets import SHARED, available, debian_vectors
from embed_assets import HashEmbedder, Store, default_embedder
from embed_assets.embed import DEFAULT_MODEL, content_hash

MODEL = DEFAULT_MODEL


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _production(store: Store, name: str, keys: list[str], texts: list[str], vectors: np.ndarray,
                model: str, extra: dict[str, list[object]]) -> None:
    """Write a production table as the embedding pipeline leaves it (text, content hash,
    provenance columns), from vectors already computed."""
    now = dt.datetime.now(dt.UTC)
    n = len(keys)
    tbl = pa.table({
        "package": keys, **extra, "description": texts,
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                    vectors.shape[1]),
        "_content_hash": [content_hash(t) for t in texts], "_model": [model] * n,
        "_embedded_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        "_run_id": ["bench"] * n})
    store.write(name, tbl, key="package", mode="overwrite", model=model, text_column="description")


def _promotion(store: Store, name: str, exp: str) -> dict[str, float]:
    """Promote ``exp``; then the baseline: the same rows written by an overwrite."""
    t = store.table(name)
    folder = Path(t.uri)
    p = t.promote(exp)
    before = _folder_bytes(folder / "data")  # (the promotion's hard links count as files)
    rows = t.read()
    t0 = time.perf_counter()
    store.write(name, rows.set_column(rows.column_names.index("_run_id"), "_run_id",
                                      pa.array(["rewrite"] * rows.num_rows)),
                key="package", mode="overwrite", model=t.meta.model, text_column="description")
    rewrite_s = time.perf_counter() - t0
    rewrite_bytes = _folder_bytes(folder / "data") - before
    return {"rows": p.rows, "promote_s": p.seconds, "promote_bytes": p.bytes_written,
            "referenced_bytes": p.bytes_referenced, "rewrite_s": rewrite_s,
            "rewrite_bytes": rewrite_bytes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", type=int, default=500)
    ap.add_argument("--pypi-rows", type=int, default=841_326)
    ap.add_argument("--skip-onnx", action="store_true")
    args = ap.parse_args()
    if not available():
        print("no ../shared/data: skipped")
        return
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    deb = pl.read_parquet(SHARED / "debian_packages.parquet", columns=["package", "section", "description"])
    with np.load(SHARED / "debian_minilm.npz", allow_pickle=True) as z:
        assert list(z["package"]) == deb["package"].to_list()
    vecs = debian_vectors()
    root = Path(tempfile.mkdtemp(prefix="bench-exp-"))
    try:
        store = Store(root)
        _production(store, "debian", deb["package"].to_list(), deb["description"].to_list(), vecs,
                    MODEL, {"section": deb["section"].to_list()})
        t = store.table("debian")
        table_bytes = _folder_bytes(Path(t.uri) / "data")
        print(f"production: {t.count_rows()} rows, model {MODEL} (torch fp32), "
              f"{table_bytes / 1e6:.1f} MB of data files\n")
        exps = [] if args.skip_onnx else [("int8", default_embedder(MODEL, backend="onnx-int8"))]
        exps.append(("hash", HashEmbedder(dimension=256)))
        lines = ["| experiment | model | embed s | top-10 overlap | rank corr | NN changed | "
                 "same-section@10 production | same-section@10 experiment | latency ms prod / exp |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for name, emb in exps:
            if name == "int8":
                emb.embed(["warm-up: export and quantise once"])
            res = t.experiment(name, embedder=emb, batch_size=256)
            cmp = t.compare(name, sample=args.sample, label_column="section")
            f = cmp.figures_by_name
            rerun = t.experiment(name, embedder=emb)  # nothing changed: no model call
            lines.append(
                f"| {name} | {res.model} | {res.seconds:.1f} | {f['overlap_at_k']:.3f} | "
                f"{f['rank_correlation']:.3f} | {f['nn_changed']:.3f} | "
                f"{f['same_label_at_k_production']:.3f} | {f['same_label_at_k_experiment']:.3f} | "
                f"{f['latency_ms_production']:.2f} / {f['latency_ms_experiment']:.2f} |")
            print(f"{name}: {cmp.summary()}\n  rerun with nothing changed: {rerun.seconds:.2f}s, "
                  f"{rerun.rows_embedded} embedded", flush=True)
        print("\n" + "\n".join(lines) + "\n")
        prom = [("63,666 (Debian, int8 experiment)" if not args.skip_onnx else
                 "63,666 (Debian, hash experiment)",
                 _promotion(store, "debian", exps[0][0]))]
        if args.pypi_rows:
            py = pl.read_parquet(SHARED / "pypi_summaries.parquet", columns=["name", "summary"])
            py = py.filter(pl.col("summary").str.strip_chars().str.len_chars() > 0).unique("name")
            py = py.head(args.pypi_rows)
            texts = py["summary"].to_list()
            t0 = time.perf_counter()
            pv = HashEmbedder(dimension=64).embed(texts)
            print(f"pypi: {len(texts)} rows hashed in {time.perf_counter() - t0:.1f}s", flush=True)
            _production(store, "pypi", py["name"].to_list(), texts, pv, "hash-bow:64", {})
            tp = store.table("pypi")
            r = tp.experiment("h32", embedder=HashEmbedder(dimension=32, seed=1), batch_size=50_000)
            print(f"pypi experiment: {r.seconds:.1f}s", flush=True)
            prom.append((f"{tp.count_rows():,} (PyPI, hash experiment)", _promotion(store, "pypi", "h32")))
        lines = ["| rows | promote s | promote bytes written | data referenced | rewrite s "
                 "(baseline) | rewrite bytes (baseline) | time ratio | bytes ratio |",
                 "|---|---|---|---|---|---|---|---|"]
        for label, p in prom:
            lines.append(
                f"| {label} | {p['promote_s']:.3f} | {p['promote_bytes']:,} | "
                f"{p['referenced_bytes'] / 1e6:.1f} MB | {p['rewrite_s']:.2f} | "
                f"{p['rewrite_bytes'] / 1e6:.1f} MB | {p['rewrite_s'] / p['promote_s']:.0f}x | "
                f"{p['rewrite_bytes'] / max(p['promote_bytes'], 1):.0f}x |")
        print("\n".join(lines))
        print("\nuptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.sync()


if __name__ == "__main__":
    main()
