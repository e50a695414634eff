"""Store and pipeline benchmark, each figure beside its baseline from the same run.

- embed pipeline (validation, hashing, Lance write) vs bare ``model.encode`` on the same texts;
- incremental re-embed of 1% changed rows vs a full re-embed;
- reading an old version vs reading the latest (after many upserts);
- rollback time as the table grows (it is a metadata commit: flat in rows).

    python benchmarks/bench_store.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from embed_assets import SentenceTransformerEmbedder, Store, embed_table
from embed_assets._demo import demo_source


def _best(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    lines = ["| figure | embed_assets | baseline | ratio |", "|---|---|---|---|"]
    src = demo_source().select("package", "section", "description")
    texts = src["description"].to_list()
    emb = SentenceTransformerEmbedder(show_progress=False)
    model = emb._load()
    emb.embed(texts[:64])  # warm up threads and kernels for both sides

    bare = _best(lambda: model.encode(texts, batch_size=64, normalize_embeddings=True), 2)

    def full() -> None:
        embed_table(Store(tmp / "full"), "d", src, key="package", text="description",
                    embedder=emb, mode="overwrite")

    ours = _best(full, 2)
    lines.append(f"| embed {len(texts):,} Debian descriptions (MiniLM, CPU) | {ours:.2f} s | "
                 f"{bare:.2f} s bare `model.encode` | {ours / bare:.3f} |")

    store = Store(tmp / "inc")
    embed_table(store, "d", src, key="package", text="description", embedder=emb)
    changed_keys = set(src["package"].to_list()[::100])
    rounds = []
    for r in range(2):
        changed = src.with_columns(
            pl.when(pl.col("package").is_in(list(changed_keys)))
            .then(pl.col("description") + f" (rev {r})").otherwise(pl.col("description"))
            .alias("description"))
        t0 = time.perf_counter()
        res = embed_table(store, "d", changed, key="package", text="description", embedder=emb)
        rounds.append(time.perf_counter() - t0)
        assert res.rows_embedded == len(changed_keys)
    inc = min(rounds)
    lines.append(f"| re-embed after 1% of rows changed ({len(changed_keys)} rows) | {inc:.2f} s | "
                 f"{ours:.2f} s full re-embed | {inc / ours:.3f} |")

    # Old-version reads after many versions.
    rng = np.random.default_rng(0)
    n, d = 100_000, 384
    mat = rng.normal(size=(n, d)).astype(np.float32)
    vs = Store(tmp / "versions")
    vs.write("t", pa.table({"id": np.arange(n), "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(mat.reshape(-1)), d)}), key="id")
    for i in range(30):
        ids = rng.choice(n, 500, replace=False)
        vs.write("t", pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(rng.normal(size=(500, d)).astype(np.float32).reshape(-1)), d)}),
            key="id", mode="upsert", run_id=f"r{i}")
    t = vs.table("t")
    latest = _best(lambda: t.read(columns=["id", "vector"]))
    old = _best(lambda: t.read(1, columns=["id", "vector"]))
    lines.append(f"| read version 1 of 31 ({n:,} x {d}) | {old * 1e3:.0f} ms | {latest * 1e3:.0f} ms "
                 f"latest | {old / latest:.3f} |")

    # Rollback cost as rows grow.
    base = None
    for rows in (10_000, 100_000, 1_000_000):
        rs = Store(tmp / f"rb{rows}")
        chunk = rng.normal(size=(min(rows, 100_000), 64)).astype(np.float32)
        for start in range(0, rows, len(chunk)):
            rs.write("t", pa.table({"id": np.arange(start, start + len(chunk)),
                                    "vector": pa.FixedSizeListArray.from_arrays(
                                        pa.array(chunk.reshape(-1)), 64)}),
                     key="id", mode="append" if start else "overwrite")
        tt = rs.table("t")
        secs = []
        for _ in range(3):
            t0 = time.perf_counter()
            tt.rollback(1)
            secs.append(time.perf_counter() - t0)
        s = min(secs)
        base = base or s
        lines.append(f"| rollback, {rows:,} rows | {s * 1e3:.1f} ms | {base * 1e3:.1f} ms at "
                     f"10,000 rows | {s / base:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
