"""Distributed embedding on Ray: 1 worker against 2 workers on this machine, the real model.

``python benchmarks/bench_ray.py [--texts N] [--rounds R] [--json PATH]``

One local Ray cluster: a head node with no CPUs and two worker nodes of one CPU each;
only the first has the custom resource ``solo``, so a run asking for it has one worker
and a run without it has two. Every task reserves one CPU and runs one torch thread.
The same ``N`` PyPI summaries (default 4,000, a seeded sample of
../shared/data/pypi_summaries.parquet) are embedded with all-MiniLM-L6-v2 into a fresh
table per run (one version each). A warm-up run per configuration loads the model in
each worker process (its load time is reported); then ``R`` rounds (default 3) each run
1 worker and 2 workers, in alternating order, so both see the same machine load; the
figures are medians over rounds, and the ratio is the median of per-round ratios.

In-process references from the same run: ``embed_table`` in this process with torch on
1 thread and on 2 threads.

Where the time goes (per run, from :attr:`RayEmbedResult.ray`): the driver's diff and
hashing, the driver's serialisation of the slices into Ray's object store, each task's
fetch (transfer and unpickling), model load, embedding, fragment writes (summed over
tasks: worker-seconds), and the driver's commit of all fragments as one version.

Run it under the shared lock: ``flock /work/bench.lock python benchmarks/bench_ray.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from datasets import SHARED  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# the worker nodes are children of this process: they must import this checkout
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(HERE.parent), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
)

PYPI = SHARED / "pypi_summaries.parquet"
PHASES = [
    ("diff_s", "driver: read, hash, diff"),
    ("submit_s", "driver: serialise slices into the object store"),
    ("worker_fetch_s", "workers: fetch + unpickle slices (sum)"),
    ("worker_model_load_s", "workers: model load (sum)"),
    ("worker_embed_s", "workers: embedding (sum)"),
    ("worker_write_s", "workers: fragment writes (sum)"),
    ("wait_s", "driver: wall time waiting for the tasks"),
    ("commit_s", "driver: commit of all fragments (one version)"),
]


def sample(n: int, seed: int = 15) -> Any:
    import polars as pl

    df = pl.read_parquet(PYPI, columns=["name", "summary"])
    df = df.filter(pl.col("summary").str.strip_chars().str.len_chars() > 0).unique("name")
    return df.sample(n=n, seed=seed).sort("name").to_arrow()


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"load {'/'.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def ray_run(store: Any, name: str, src: Any, workers: int) -> dict[str, Any]:
    from embed_assets import SentenceTransformerEmbedder, embed_table
    from embed_assets.embed import OnRay

    t0 = time.perf_counter()
    r = embed_table(
        store,
        name,
        src,
        key="name",
        text="summary",
        embedder=SentenceTransformerEmbedder(show_progress=False),
        mode="overwrite",
        executor=OnRay(resources={"solo": 1} if workers == 1 else None),
    )
    wall = time.perf_counter() - t0
    assert r.ray["workers"] == workers, r.ray
    assert store.table(name).count_rows() == src.num_rows
    return {"wall_s": wall, "tasks": r.ray["tasks"], "nodes": r.ray["nodes"], **r.ray["timings"]}


def local_run(src: Any, threads: int, embedder: Any) -> float:
    import torch

    from embed_assets import Store, embed_table

    torch.set_num_threads(threads)
    store = Store(tempfile.mkdtemp(prefix="bench-ray-local-"))
    t0 = time.perf_counter()
    embed_table(store, "t", src, key="name", text="summary", embedder=embedder, mode="overwrite")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-local", action="store_true", help="skip the in-process references")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if not PYPI.exists():
        print(f"skipped: {PYPI} not found", file=sys.stderr)
        return 0
    import ray
    from ray.cluster_utils import Cluster

    from embed_assets import SentenceTransformerEmbedder, Store

    load_before = os.getloadavg()
    src = sample(args.texts)
    print(f"# distributed embedding on Ray: {src.num_rows} PyPI summaries, all-MiniLM-L6-v2")
    print(f"machine: {machine()}")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 200 * 2**20, "include_dashboard": False},
    )
    out: dict[str, Any] = {"texts": src.num_rows, "machine": machine(), "rounds": []}
    try:
        cluster.add_node(num_cpus=1, resources={"solo": 1}, object_store_memory=200 * 2**20)
        cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, logging_level="warning")
        store = Store(tempfile.mkdtemp(prefix="bench-ray-"))
        warm = src.slice(0, 400)
        cold = {w: ray_run(store, f"warm{w}", warm, w) for w in (1, 2)}
        out["cold"] = cold
        print(
            "warm-up (model load per worker process): "
            + ", ".join(
                f"{w} worker(s): {c['worker_model_load_s']:.1f} s over {c['nodes']} node(s)"
                for w, c in cold.items()
            )
        )
        local_emb = None if args.no_local else SentenceTransformerEmbedder(show_progress=False)
        if local_emb is not None:
            local_run(warm, 2, local_emb)  # load the driver's model outside the timings
        for i in range(args.rounds):
            row: dict[str, Any] = {}
            for w in (1, 2) if i % 2 == 0 else (2, 1):
                row[w] = ray_run(store, f"r{i}w{w}", src, w)
            if local_emb is not None:
                for th in (1, 2) if i % 2 == 0 else (2, 1):
                    row[f"local{th}"] = local_run(src, th, local_emb)
            out["rounds"].append(row)
            extra = (
                f", in-process 1 thread {row['local1']:.1f} s, 2 threads {row['local2']:.1f} s"
                if local_emb is not None
                else ""
            )
            print(
                f"round {i + 1}: 1 worker {row[1]['wall_s']:.1f} s, 2 workers {row[2]['wall_s']:.1f} s "
                f"(x{row[1]['wall_s'] / row[2]['wall_s']:.2f}){extra}; load {os.getloadavg()[0]:.1f}"
            )
    finally:
        ray.shutdown()
        cluster.shutdown()
    rounds = out["rounds"]

    def med(w: Any, k: str) -> float:
        return statistics.median(r[w][k] if isinstance(r[w], dict) else r[w] for r in rounds)

    ratio = statistics.median(r[1]["wall_s"] / r[2]["wall_s"] for r in rounds)
    embed_ratio = statistics.median(
        (r[1]["worker_embed_s"] / 1) / (r[2]["worker_embed_s"] / 2) for r in rounds
    )
    n = src.num_rows
    print()
    print("| figure | 1 worker | 2 workers |")
    print("|---|---:|---:|")
    print(f"| wall time of the run (median) | {med(1, 'wall_s'):.2f} s | {med(2, 'wall_s'):.2f} s |")
    print(f"| texts/s | {n / med(1, 'wall_s'):.0f} | {n / med(2, 'wall_s'):.0f} |")
    print(f"| tasks | {rounds[0][1]['tasks']} | {rounds[0][2]['tasks']} |")
    for k, label in PHASES:
        print(f"| {label} | {med(1, k):.3f} s | {med(2, k):.3f} s |")
    print()
    print(f"2 workers vs 1 worker (median of per-round ratios): x{ratio:.2f} wall (floor 1.6)")
    print(f"embedding throughput alone (worker-seconds per worker): x{embed_ratio:.2f}")
    if not args.no_local:
        l1 = statistics.median(r["local1"] for r in rounds)
        l2 = statistics.median(r["local2"] for r in rounds)
        print(
            f"in-process embed_table: 1 thread {l1:.2f} s, 2 threads {l2:.2f} s; "
            f"Ray 1 worker / in-process 1 thread: x{l1 / med(1, 'wall_s'):.2f}; "
            f"Ray 2 workers / in-process 2 threads: x{l2 / med(2, 'wall_s'):.2f}"
        )
    load_after = os.getloadavg()
    print(
        f"load average before {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after {'/'.join(f'{x:.2f}' for x in load_after)}"
    )
    out.update(ratio=ratio, embed_ratio=embed_ratio, load_before=load_before, load_after=load_after)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
