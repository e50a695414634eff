"""Scale figures (issue 15): object storage vs local disk, and training epochs.

    python benchmarks/bench_scale.py [--rows 100000] [--dim 384] [--quick]

Starts a local S3-compatible server (moto, in memory, on 127.0.0.1: the same one the
tests use) and a local store, writes the same table to both and prints, each beside its
baseline from this run:

* write / full read / exact and indexed search, S3 vs local disk;
* one training epoch (every row once, batches of 1024) from a snapshot
  (``embed_assets.snapshot``, memmap) vs reading the store (local, S3) vs Parquet;
* the commit rate of small appends: one writer, local vs S3, and two processes racing on
  S3 (through Lance alone, and through the store's lease lock), with the manifest PUTs
  that lost a race (HTTP 412 in the server's log). ``--commits-only`` runs just this.

moto keeps objects in memory on the same machine, so the S3 figures carry its HTTP and
XML work on the shared CPU but no network: they bound the protocol's cost, not a real
region's latency (docs/scale.md cites those).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LANCE_LOG", "error")

from embed_assets import Store, snapshot  # noqa: E402
from embed_assets.store import CACHE  # noqa: E402
from tests.s3_server import moto_server  # noqa: E402

BATCH = 1024


def timed(fn: Callable[[], object], repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def data(rows: int, dim: int) -> pa.Table:
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(rows, dim)).astype(np.float32)
    return pa.table({"id": np.arange(rows, dtype=np.int64),
                     "group": pa.array([f"g{i % 97}" for i in range(rows)]),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim)})


def epoch_store(table) -> int:
    n = 0
    for b in table.dataset().to_batches(columns=["id", "vector"], batch_size=BATCH, filter="true"):
        v = b.column("vector")
        mat = np.array(v.flatten().to_numpy(zero_copy_only=False).reshape(len(v), -1))
        n += mat.shape[0]
    return n


def epoch_parquet(path: str) -> int:
    n = 0
    for b in pq.ParquetFile(path).iter_batches(batch_size=BATCH, columns=["id", "vector"]):
        v = b.column("vector")
        mat = np.array(v.flatten().to_numpy(zero_copy_only=False).reshape(len(v), -1))
        n += mat.shape[0]
    return n


def epoch_snapshot(snap, shuffle: bool) -> int:
    n = 0
    for b in snap.batches(BATCH, shuffle=shuffle, seed=0, columns=[]):
        n += np.array(b["vector"]).shape[0]  # every epoch materialises its batches (as a tensor would)
    return n


def search_times(table, queries: np.ndarray, **kw) -> tuple[float, float]:
    """(first query incl. loading, median of the rest) in ms."""
    t0 = time.perf_counter()
    table.search(queries[0], k=10, **kw)
    first = (time.perf_counter() - t0) * 1e3
    lat = []
    for q in queries[1:]:
        t0 = time.perf_counter()
        table.search(q, k=10, **kw)
        lat.append((time.perf_counter() - t0) * 1e3)
    return first, statistics.median(lat)


def lance_index_times(ds, queries: np.ndarray) -> tuple[float, float]:
    t0 = time.perf_counter()
    ds.to_table(nearest={"column": "vector", "q": queries[0], "k": 10, "nprobes": 16}, columns=["id"])
    first = (time.perf_counter() - t0) * 1e3
    lat = []
    for q in queries[1:]:
        t0 = time.perf_counter()
        ds.to_table(nearest={"column": "vector", "q": q, "k": 10, "nprobes": 16}, columns=["id"])
        lat.append((time.perf_counter() - t0) * 1e3)
    return first, statistics.median(lat)


# One racing writer: waits for the start file, then appends argv[2] single-row commits
# with keys argv[1] * 1000 + i, through Lance alone or through the store.
_RACER = r"""
import os, sys, time
sys.path.insert(0, {root!r})
from embed_assets import Store
from tests.conftest import vectors_table
import lance
opts, uri = {opts!r}, {uri!r}
while not os.path.exists({go!r}):
    time.sleep(0.01)
w, n = int(sys.argv[1]), int(sys.argv[2])
store = Store(uri, storage_options=opts)
for i in range(n):
    rows = vectors_table([w * 1000 + i])
    if {mode!r} == "lance":
        lance.write_dataset(rows, uri + "/raw.lance", mode="append", storage_options=opts)
    else:
        store.write("t", rows, key="id", mode="append")
"""


def commit_figures(s3, work: str, n: int = 20) -> list[tuple[str, str, str]]:
    """Small appends (one row each): commits per second."""
    from tests.conftest import vectors_table

    out = []
    rate = {}
    for name, st in (("local", Store(os.path.join(work, "commits"))),
                     ("s3", Store("s3://bench/commits", storage_options=s3.storage_options()))):
        st.write("c", vectors_table([0]), key="id", mode="overwrite")
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            st.write("c", vectors_table([i]), key="id", mode="append")
        rate[name] = n / (time.perf_counter() - t0)
    out.append((f"store appends, one writer ({n} commits)", f"S3 {rate['s3']:.1f} commits/s "
                f"({rate['local'] / rate['s3']:.1f}x slower)", f"local {rate['local']:.1f} commits/s"))
    for mode, label in (("lance", "Lance appends (conditional PUT only)"),
                        ("store", "store appends (lease lock + conditional PUT)")):
        uri = f"s3://bench/race-{mode}"
        go = os.path.join(work, f"go-{mode}")
        if mode == "lance":
            import lance

            lance.write_dataset(vectors_table([0]), uri + "/raw.lance", storage_options=s3.storage_options())
        else:
            Store(uri, storage_options=s3.storage_options()).write("t", vectors_table([0]), key="id")
        with open(s3.log_path, errors="replace") as f:
            before = sum(" 412 " in ln and ".manifest" in ln for ln in f)
        code = _RACER.format(root=str(ROOT), opts=s3.storage_options(), go=go, uri=uri, mode=mode)
        argvs = [[str(w), str(n)] for w in (1, 2)]
        procs = [subprocess.Popen([sys.executable, "-c", code, *a]) for a in argvs]
        time.sleep(3)  # both started and waiting
        t0 = time.perf_counter()
        open(go, "w").close()
        rcs = [p.wait() for p in procs]
        dt_s = time.perf_counter() - t0
        with open(s3.log_path, errors="replace") as f:
            lost = sum(" 412 " in ln and ".manifest" in ln for ln in f) - before
        out.append((f"2 racing writers on S3, {label}, {2 * n} commits",
                    f"{2 * n / dt_s:.1f} commits/s, {lost} manifest PUT(s) lost a race (412)",
                    f"exit codes {rcs}"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--quick", action="store_true", help="20,000 rows, no index figures")
    ap.add_argument("--commits-only", action="store_true", help="only the commit-rate figures")
    args = ap.parse_args()
    if args.commits_only:
        work = tempfile.mkdtemp(prefix="bench-scale-")
        try:
            with moto_server(work) as s3:
                s3.create_bucket("bench")
                rows_out = commit_figures(s3, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("\n| figure | this | baseline |\n|---|---|---|")
        for row in rows_out:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
        return 0
    rows = 20_000 if args.quick else args.rows
    tbl = data(rows, args.dim)
    mb = rows * args.dim * 4 / 1e6
    queries = np.random.default_rng(1).normal(size=(21, args.dim)).astype(np.float32)
    work = tempfile.mkdtemp(prefix="bench-scale-")
    print(f"{rows:,} x {args.dim} float32 ({mb:.0f} MB of vectors); cores: {os.cpu_count()}")
    out: list[tuple[str, str, str]] = []
    with moto_server(work) as s3:
        s3.create_bucket("bench")
        stores = {"local": Store(os.path.join(work, "store")),
                  "s3": Store("s3://bench/store", storage_options=s3.storage_options())}
        w, r, sx, si = {}, {}, {}, {}
        for name, st in stores.items():
            w[name], _ = timed(lambda st=st: st.write("t", tbl, key="id", mode="overwrite"))
            t = st.table("t")
            r[name], _ = timed(lambda t=t: t.read(columns=["id", "vector"]), repeat=3)
            CACHE.clear()
            sx[name] = search_times(t, queries, use_index=False)
            sx[name + "/pinned"] = search_times(t, queries, use_index=False, version=t.version)
            sx[name + "/novec"] = search_times(t, queries, use_index=False, version=t.version,
                                               columns=["id", "group"])
        out.append(("write (overwrite, one version)", f"S3 {w['s3']:.2f} s ({w['s3'] / w['local']:.2f}x)",
                    f"local {w['local']:.2f} s"))
        out.append(("full read (id + vector)", f"S3 {r['s3'] * 1e3:.0f} ms ({r['s3'] / r['local']:.2f}x)",
                    f"local {r['local'] * 1e3:.0f} ms"))
        out.append(("exact search, first query (loads the matrix)",
                    f"S3 {sx['s3'][0]:.0f} ms ({sx['s3'][0] / sx['local'][0]:.2f}x)",
                    f"local {sx['local'][0]:.0f} ms"))
        out.append(("exact search of the latest version, median of 20 (cached matrix; each "
                    "query asks the store for its latest version)",
                    f"S3 {sx['s3'][1]:.2f} ms ({sx['s3'][1] / sx['local'][1]:.2f}x)",
                    f"local {sx['local'][1]:.2f} ms"))
        out.append(("exact search of a pinned version, median of 20 (results carry the vectors: a "
                    "Lance take of k rows)",
                    f"S3 {sx['s3/pinned'][1]:.2f} ms ({sx['s3/pinned'][1] / sx['local/pinned'][1]:.2f}x)",
                    f"local {sx['local/pinned'][1]:.2f} ms"))
        out.append(("exact search of a pinned version, columns=['id', 'group'] (no vector read)",
                    f"S3 {sx['s3/novec'][1]:.2f} ms ({sx['s3/novec'][1] / sx['local/novec'][1]:.2f}x)",
                    f"local {sx['local/novec'][1]:.2f} ms"))
        if not args.quick:
            for name, st in stores.items():
                ds = st.table("t").dataset()
                t0 = time.perf_counter()
                ds = ds.create_index("vector", index_type="IVF_PQ", num_partitions=64,
                                     num_sub_vectors=args.dim // 8, replace=True)
                build = time.perf_counter() - t0
                si[name] = (build, *lance_index_times(ds, queries))
            out.append(("IVF_PQ build (64 partitions)",
                        f"S3 {si['s3'][0]:.1f} s ({si['s3'][0] / si['local'][0]:.2f}x)",
                        f"local {si['local'][0]:.1f} s"))
            out.append(("IVF_PQ search, first query (opens the index)",
                        f"S3 {si['s3'][1]:.0f} ms ({si['s3'][1] / si['local'][1]:.2f}x)",
                        f"local {si['local'][1]:.0f} ms"))
            out.append(("IVF_PQ search, median of 20 (nprobes 16)",
                        f"S3 {si['s3'][2]:.2f} ms ({si['s3'][2] / si['local'][2]:.2f}x)",
                        f"local {si['local'][2]:.2f} ms"))
        # -- epochs ------------------------------------------------------------------------
        pq_path = os.path.join(work, "t.parquet")
        pq.write_table(tbl, pq_path)
        cache = os.path.join(work, "snapshots")
        t_local = stores["local"].table("t")
        export_local, snap = timed(lambda: snapshot(t_local, cache_dir=cache))
        reopen, _ = timed(lambda: snapshot(t_local, cache_dir=cache, verify="size"), repeat=3)
        export_s3, _ = timed(lambda: snapshot(stores["s3"].table("t"), cache_dir=cache))
        e = {
            "snapshot, sequential": timed(lambda: epoch_snapshot(snap, False), repeat=3)[0],
            "snapshot, shuffled": timed(lambda: epoch_snapshot(snap, True), repeat=3)[0],
            "store, local disk": timed(lambda: epoch_store(t_local), repeat=3)[0],
            "store, S3 server": timed(lambda: epoch_store(stores["s3"].table("t")), repeat=3)[0],
            "Parquet file (local)": timed(lambda: epoch_parquet(pq_path), repeat=3)[0],
        }
        base = e["store, local disk"]
        for k, v in e.items():
            out.append((f"epoch: {k}", f"{v * 1e3:.0f} ms ({rows / v / 1e6:.2f} M rows/s)",
                        f"{base / v:.1f}x vs store local"))
        out.append(("snapshot export (once per version)", f"local store {export_local:.2f} s, "
                    f"S3 {export_s3:.2f} s", f"reopen (size check) {reopen * 1e3:.1f} ms"))
        out.extend(commit_figures(s3, work))
    shutil.rmtree(work, ignore_errors=True)
    print("\n| figure | this | baseline |\n|---|---|---|")
    for row in out:
        print(f"| {row[0]} | {row[1]} | {row[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
