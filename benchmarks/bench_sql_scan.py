"""CPU of the SQL pushdown per filtered scan, for several checkouts in the same run.

    python benchmarks/bench_sql_scan.py --codes /tmp/old /tmp/main . --rounds 3

For ``SELECT id, section FROM t WHERE id = 12345`` (a key lookup with no knn), each
checkout's ``ScanDataset.scanner`` (where DuckDB's pushed filter is answered) is timed with
``time.thread_time()`` on the thread DuckDB calls it from, so that a busy machine's
descheduling is not counted; the statement's process CPU-time p50 is printed beside it.
One process per checkout (each imports its own embed_assets), interleaved over rounds,
on one store of 63,666 rows that all of them read. The whole statement's figure on 2
shared cores is bimodal under load (see benchmarks/RESULTS.md); the scan's is not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
SQL = "SELECT id, section FROM t WHERE id = 12345"


def measure(code: str, store_dir: str, rows: int, reps: int) -> dict[str, float]:
    sys.path.insert(0, code)
    import pyarrow as pa

    from embed_assets import Store, connect
    from embed_assets.sql import _pushdown

    store = Store(store_dir)
    if "t" not in store.table_names():
        rng = np.random.default_rng(0)
        store.write("t", pa.table({
            "id": np.arange(rows), "section": np.array(["a", "b", "c", "d"])[np.arange(rows) % 4],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(rng.normal(size=rows * 32).astype(np.float32)), 32)}), key="id")
    con = connect(store, progress_bar=False)
    scans: list[float] = []
    orig = _pushdown.ScanDataset.scanner

    def timed(self, *a, **k):
        t0 = time.thread_time()
        got = orig(self, *a, **k)
        scans.append(time.thread_time() - t0)
        return got

    _pushdown.ScanDataset.scanner = timed
    for _ in range(50):
        con.execute(SQL).fetchall()
    scans.clear()
    stmt = []
    for _ in range(reps):
        t0 = time.process_time()
        con.execute(SQL).fetchall()
        stmt.append(time.process_time() - t0)
    return {"scan_ms_p50": float(np.median(scans) * 1e3), "scans": len(scans),
            "statement_ms_p50": float(np.median(stmt) * 1e3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--codes", nargs="+", required=True, help="checkouts to compare")
    ap.add_argument("--rows", type=int, default=63_666)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--measure", nargs=2, metavar=("CODE", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.rows, args.reps)))
        return 0
    store_dir = tempfile.mkdtemp(prefix="bench_sql_scan_")
    codes = [str(Path(c).resolve()) for c in args.codes]
    got: dict[str, list[dict[str, float]]] = {c: [] for c in codes}
    for _ in range(args.rounds):
        for c in codes:
            cmd = [sys.executable, str(HERE), "--codes", c, "--rows", str(args.rows),
                   "--reps", str(args.reps), "--measure", c, store_dir]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=tempfile.gettempdir())
            if out.returncode != 0:
                print(f"{c} died ({out.returncode}):\n{out.stderr[-3000:]}", file=sys.stderr)
                out.check_returncode()
            got[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(c, got[c][-1], flush=True)
    print("\n| code | scan p50 per round (ms) | statement p50 per round (ms) |\n|---|---|---|")
    for c in codes:
        scan = " / ".join(f"{r['scan_ms_p50']:.3f}" for r in got[c])
        stmt = " / ".join(f"{r['statement_ms_p50']:.2f}" for r in got[c])
        print(f"| {c} | {scan} | {stmt} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
