"""Embedding throughput: CPU backends vs bare PyTorch `encode`, streaming at corpus scale,
incremental cost, resume after SIGKILL. `python benchmarks/bench_embed.py [--only SECTIONS]`.

Sections (comma-separated for --only):

- ``backends``: on N PyPI summaries (``--texts``, default 1000), ``--rounds`` interleaved
  rounds (default 3, medians of per-round ratios), in one process: bare
  ``SentenceTransformer.encode`` fp32 (the baseline), then each backend (``--backends``,
  default every one this machine runs: torch, onnx, onnx-int8, openvino, openvino-bf16)
  bare (its own ``embed``) and through the pipeline (``embed_table`` into a fresh store),
  and the candidate ``encode`` under torch bf16 autocast; speed ratios vs the baseline
  and vs the backend's bare call, and agreement with fp32 vectors (mean / min cosine;
  top-10 neighbours among the N texts: share kept, share of identical sets).
- ``agreement``: agreement only, on more samples (``--agreement n:seed,...``).
- ``stream``: the hashing embedder (64 dims, no model) on the first 100k / 400k / all
  841,326 summaries from Parquet: peak RSS and time of each run in its own process; then
  at 400k and 841k a 1% text change (upsert) and an unchanged rerun, beside the full run.
- ``resume``: the 841k stream SIGKILLed halfway and rerun; the rerun's embedded rows and
  the final table compared with the uninterrupted run's (keys and vectors).
- ``real``: the real model (``--backend``, default openvino-bf16) on ``--real-rows`` rows
  (default 100,000): a full run, then ``--real-rounds`` x (1% changed, unchanged), each
  through the store in its own process with the model load inside the timing.

Needs ../shared/data/pypi_summaries.parquet (skips with a message without it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from datasets import SHARED  # noqa: E402

PYPI = SHARED / "pypi_summaries.parquet"
BASELINE_ISSUE = {  # measured before issue 14 (the CLI held the whole corpus), hash-bow:64
    "embed_100k_peak_mb": 468,
    "embed_400k_peak_mb": 932,
    "upsert_1pct_400k_peak_mb": 2600,
    "upsert_1pct_400k_s": 7.8,
    "full_400k_s": 8.1,
    "unchanged_400k_s": 7.7,
}
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")


def machine() -> str:
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )


def load() -> str:
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


# -- backends -----------------------------------------------------------------------------
def sample_texts(n: int, seed: int = 14) -> list[str]:
    import polars as pl

    df = pl.read_parquet(PYPI, columns=["summary"])
    df = df.filter(pl.col("summary").str.strip_chars().str.len_chars() > 0).sample(n=n, seed=seed)
    return df["summary"].to_list()


def top10(mat: np.ndarray) -> np.ndarray:
    sims = mat @ mat.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, 10, axis=1)[:, :10]


def agreement(v: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    a, b = top10(v), top10(ref)
    kept = [len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]
    same = [set(x) == set(y) for x, y in zip(a, b, strict=True)]
    return {
        "mean_cosine": float((v * ref).sum(axis=1).mean()),
        "min_cosine": float((v * ref).sum(axis=1).min()),
        "top10_kept": float(np.mean(kept)),
        "top10_identical": float(np.mean(same)),
    }


def available_backends() -> list[str]:
    """The CPU backends this machine can run (openvino-bf16 needs native bf16)."""
    out = ["torch", "onnx", "onnx-int8"]
    try:
        import openvino  # noqa: F401

        from embed_assets.embed._openvino import cpu_has_bf16

        out += ["openvino", *(["openvino-bf16"] if cpu_has_bf16() else [])]
    except ImportError:
        pass
    return out


def bench_backends(n: int, batch: int, rounds: int, backends: list[str]) -> list[dict[str, Any]]:
    """Every method measured once per round, rounds interleaved: on a shared machine the
    load drifts by 2x within minutes, so each ratio is taken against the baseline of its
    own round and the median over rounds is reported (with the spread).

    Beside the shipped backends, one candidate that is not a backend: ``encode`` under
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` (bf16 on AMX through PyTorch/oneDNN),
    bare only."""
    import polars as pl
    import torch

    from embed_assets import SentenceTransformerEmbedder, Store, default_embedder, embed_table

    texts = sample_texts(n)
    src = pl.DataFrame({"id": list(range(n)), "text": texts})
    torch_emb = SentenceTransformerEmbedder(batch_size=batch, show_progress=False)
    st = torch_emb._load()
    embs: dict[str, Any] = {"torch": torch_emb}
    embs.update({b: default_embedder(None, backend=b, batch_size=batch) for b in backends if b != "torch"})
    for e in embs.values():
        e.embed(texts[:64])  # export/quantise (cached), load and warm up outside the timings

    def encode() -> np.ndarray:
        return np.asarray(
            st.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True), np.float32
        )

    def encode_bf16() -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encode()

    def pipeline(e: Any) -> None:
        with tempfile.TemporaryDirectory() as d:
            assert embed_table(Store(d), "t", src, key="id", text="text", embedder=e).rows_embedded == n

    times: dict[str, list[float]] = {}
    vectors: dict[str, np.ndarray] = {}

    def timed(label: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(label, []).append(time.perf_counter() - t0)
        return out

    encode_bf16()
    for _ in range(rounds):
        ref = timed("encode", encode)
        for b, e in embs.items():
            vectors[b] = timed(f"{b}:bare", lambda e=e: e.embed(texts))
            timed(f"{b}:pipeline", lambda e=e: pipeline(e))
        vectors["torch-bf16-autocast"] = timed("torch-bf16-autocast:bare", encode_bf16)
    base = np.array(times["encode"])
    rows = [
        {
            "figure": "bare SentenceTransformer.encode fp32 (baseline)",
            "seconds_median": float(np.median(base)),
            "seconds_min": float(base.min()),
            "seconds_max": float(base.max()),
            "texts_per_s": n / float(np.median(base)),
            "seconds_rounds": " ".join(f"{x:.2f}" for x in base),
        }
    ]
    for b in [*embs, "torch-bf16-autocast"]:
        bare = np.array(times[f"{b}:bare"])
        rows.append(
            {
                "figure": f"{b}: bare embed" + (" (candidate, not a backend)" if b not in embs else ""),
                "seconds_median": float(np.median(bare)),
                "texts_per_s": n / float(np.median(bare)),
                "vs_bare_encode_median": float(np.median(base / bare)),
                "vs_bare_encode_range": f"{(base / bare).min():.2f}-{(base / bare).max():.2f}",
                "seconds_rounds": " ".join(f"{x:.2f}" for x in bare),
                **agreement(vectors[b], ref),
            }
        )
        if b not in embs:
            continue
        pipe = np.array(times[f"{b}:pipeline"])
        rows.append(
            {
                "figure": f"{b}: pipeline (embed_table, store commit)",
                "seconds_median": float(np.median(pipe)),
                "vs_bare_encode_median": float(np.median(base / pipe)),
                "vs_bare_encode_range": f"{(base / pipe).min():.2f}-{(base / pipe).max():.2f}",
                "vs_bare_backend_median": float(np.median(bare / pipe)),
                "vs_bare_backend_range": f"{(bare / pipe).min():.2f}-{(bare / pipe).max():.2f}",
            }
        )
    return rows


def bench_agreement(samples: list[tuple[int, int]], backends: list[str]) -> list[dict[str, Any]]:
    """Agreement only (no timing) on more samples: each backend against PyTorch fp32
    ``encode`` on the same texts (n texts drawn with seed s)."""
    from embed_assets import SentenceTransformerEmbedder, default_embedder

    st = SentenceTransformerEmbedder(batch_size=64, show_progress=False)
    embs = {b: default_embedder(None, backend=b) for b in backends if b != "torch"}
    rows = []
    for n, seed in samples:
        texts = sample_texts(n, seed=seed)
        ref = st.embed(texts)
        for b, e in embs.items():
            rows.append({"figure": f"{b} vs fp32, {n} texts (seed {seed})", **agreement(e.embed(texts), ref)})
    return rows


# -- streaming (each run in its own process, peak RSS from getrusage) ----------------------
CHILD = r"""
import json, sys, time
def hwm_mb():
    # VmHWM: this process image's peak RSS. (getrusage's ru_maxrss survives exec on Linux,
    # so a child of a large parent would report the parent's peak.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
from embed_assets import Store, default_embedder, embed_table
store, name, path, model, every = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
backend = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
t0 = time.perf_counter()
emb = default_embedder(model, backend=backend, batch_size=64)
import polars as pl
data = path if every else pl.read_parquet(path)  # every=0: the in-memory path, one commit
r = embed_table(Store(store), name, data, key="name", text="summary", embedder=emb,
                on_empty="skip", commit_every=every or None, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "embedded": r.rows_embedded,
                  "unchanged": r.rows_unchanged, "versions_written": r.write.version -
                  (r.write.previous_version or 0),
                  "peak_mb": hwm_mb()}))
"""


def child(
    store: str, path: str, model: str = "hash-bow:64", every: int = 50_000, backend: str | None = None
) -> dict[str, Any]:
    """One run in its own process. ``seconds``: from before the model is built (so its
    load is inside) to the commit; ``process_s``: the whole process as the parent saw it
    (interpreter start and imports included)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, store, "t", path, model, str(every), backend or "-"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": wall}


def slices(work: Path, sizes: list[int]) -> dict[int, str]:
    import polars as pl

    df = pl.read_parquet(PYPI)
    paths = {}
    for n in sizes:
        p = work / f"pypi_{n}.parquet"
        df.head(n).write_parquet(p)
        paths[n] = str(p)
    return paths


def changed_copy(path: str, frac: float, dest: Path, seed: int = 1) -> str:
    import polars as pl

    df = pl.read_parquet(path)
    rng = np.random.default_rng(seed)
    pick = np.zeros(df.height, bool)
    pick[rng.choice(df.height, int(df.height * frac), replace=False)] = True
    df = df.with_columns(
        pl.when(pl.Series(pick))
        .then(pl.col("summary") + " (revised)")
        .otherwise(pl.col("summary"))
        .alias("summary")
    )
    df.write_parquet(dest)
    return str(dest)


def bench_stream(work: Path, sizes: list[int]) -> list[dict[str, Any]]:
    paths = slices(work, sizes)
    rows = []
    for n in sizes:
        store = str(work / f"store_{n}")
        full = child(store, paths[n])
        rows.append({"figure": f"stream {n:,} rows, hash-bow:64", **full})
        if n < 400_000:
            continue
        if n == 400_000:  # the path before issue 14: the whole corpus in memory, one commit
            mem = child(str(work / "store_mem"), paths[n], every=0)
            rows.append(
                {
                    "figure": f"  in memory, one commit, {n:,} rows (the old path)",
                    **mem,
                    "stream_vs_memory_s": full["seconds"] / mem["seconds"],
                }
            )
        one = child(store, changed_copy(paths[n], 0.01, work / f"ch_{n}.parquet"))
        rows.append(
            {
                "figure": f"  1% changed (upsert) at {n:,}",
                **one,
                "vs_full_s": one["seconds"] / full["seconds"],
                "vs_full_peak": one["peak_mb"] / full["peak_mb"],
            }
        )
        same = child(store, str(work / f"ch_{n}.parquet"))
        rows.append(
            {"figure": f"  unchanged rerun at {n:,}", **same, "vs_full_s": same["seconds"] / full["seconds"]}
        )
    return rows


def bench_resume(work: Path, n_path: str) -> list[dict[str, Any]]:
    """SIGKILL the 841k stream when about half its rows are committed, then rerun; the
    result is compared with an uninterrupted run of the same file into another store."""
    import lance

    from embed_assets import Store

    reference_store = str(work / "uninterrupted")
    child(reference_store, n_path)

    killed = str(work / "killed")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, killed, "t", n_path, "hash-bow:64", "50000", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    total = 841_326
    while proc.poll() is None:
        try:
            if lance.dataset(f"{killed}/t.lance").count_rows() >= total // 2:
                break
        except (ValueError, OSError, RuntimeError):
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - t0
    committed = Store(killed).table("t").count_rows()
    rerun = child(killed, n_path)
    rows = [
        {
            "figure": "841k stream SIGKILLed",
            "seconds": killed_after,
            "committed_rows": committed,
            "returncode": proc.returncode,
        },
        {"figure": "  rerun resumes", **rerun, "expected_embedded": total - committed},
    ]
    # the final table against the uninterrupted run's: keys and vectors
    a = Store(killed).table("t").read(columns=["name", "vector"]).sort_by("name")
    b = Store(reference_store).table("t").read(columns=["name", "vector"]).sort_by("name")
    same_keys = a.column("name").equals(b.column("name"))
    va = a.column("vector").combine_chunks().values.to_numpy()
    vb = b.column("vector").combine_chunks().values.to_numpy()
    rows.append(
        {
            "figure": "  final table vs uninterrupted run",
            "same_keys": bool(same_keys),
            "same_vectors": bool(same_keys and np.array_equal(va, vb)),
        }
    )
    return rows


def bench_real(work: Path, n: int, backend: str, rounds: int = 1) -> list[dict[str, Any]]:
    """The real model streamed through the store, each run its own process (the model
    load inside the timing): a full run, then ``rounds`` x (1% of texts changed,
    nothing changed), each against the full run."""
    import polars as pl

    p = work / f"real_{n}.parquet"
    pl.read_parquet(PYPI).head(n).write_parquet(p)
    store = str(work / "real_store")
    kw = {"model": "all-MiniLM-L6-v2", "backend": backend, "every": 10_000 if n <= 200_000 else 50_000}
    full = child(store, str(p), **kw)
    rows = [
        {
            "figure": f"real model ({backend}), {n:,} rows, full",
            **full,
            "texts_per_s": full["embedded"] / full["seconds"],
        }
    ]
    src = str(p)
    for r in range(rounds):
        changed = changed_copy(src, 0.01, work / f"real_ch{r}.parquet", seed=1 + r)
        one = child(store, changed, **kw)
        same = child(store, changed, **kw)
        rows += [
            {
                "figure": f"  1% changed (round {r + 1})",
                **one,
                "vs_full_s": one["seconds"] / full["seconds"],
                "vs_full_process": one["process_s"] / full["process_s"],
                "vs_full_peak": one["peak_mb"] / full["peak_mb"],
            },
            {
                "figure": f"  unchanged (round {r + 1})",
                **same,
                "vs_full_s": same["seconds"] / full["seconds"],
                "vs_full_process": same["process_s"] / full["process_s"],
            },
        ]
        src = changed
    return rows


def show(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n## {title} ({load()} when it ended)\n")
    for r in rows:
        rest = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items() if k != "figure"
        )
        print(f"- {r['figure']}: {rest}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="backends,agreement,stream,resume,real")
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the backends section")
    ap.add_argument("--sizes", default="100000,400000,841326")
    ap.add_argument("--real-rows", type=int, default=100_000)
    ap.add_argument("--real-rounds", type=int, default=2, help="1%%/unchanged rounds of the real section")
    ap.add_argument("--backend", default="openvino-bf16", help="the real section's backend")
    ap.add_argument(
        "--backends",
        default=None,
        help="backends section: comma-separated (default: every one this machine runs)",
    )
    ap.add_argument("--agreement", default="1000:14,1000:1,2000:2", help="agreement section: n:seed samples")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if not PYPI.exists():
        print(f"skipped: {PYPI} not found (a fresh clone has no ../shared data)")
        return 0
    only = set(args.only.split(","))
    backends = args.backends.split(",") if args.backends else available_backends()
    print(f"# bench_embed on {machine()}")
    results: dict[str, Any] = {"machine": machine()}
    work = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    try:
        if "backends" in only:
            results["backends"] = bench_backends(args.texts, args.batch, args.rounds, backends)
            show(f"backends on {args.texts} PyPI summaries (batch {args.batch})", results["backends"])
        if "agreement" in only:
            samples = [(int(a), int(b)) for a, b in (x.split(":") for x in args.agreement.split(","))]
            results["agreement"] = bench_agreement(samples, backends)
            show("agreement with PyTorch fp32 (top-10 among the same texts)", results["agreement"])
        sizes = [int(s) for s in args.sizes.split(",")]
        if "stream" in only:
            results["stream"] = bench_stream(work, sizes)
            show("streaming from Parquet (hash-bow:64), each run its own process", results["stream"])
            print(f"  baselines before issue 14 (whole corpus in memory): {BASELINE_ISSUE}")
        if "resume" in only:
            full_path = str(work / "pypi_841326.parquet")
            if not Path(full_path).exists():
                full_path = slices(work, [841_326])[841_326]
            results["resume"] = bench_resume(work, full_path)
            show("SIGKILL and resume at 841k", results["resume"])
        if "real" in only:
            results["real"] = bench_real(work, args.real_rows, args.backend, args.real_rounds)
            show(f"incremental cost with the real model ({args.backend})", results["real"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
