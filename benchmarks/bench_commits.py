"""Commits per second with 1, 2, 4, 8 concurrent writers (processes) of one table, on
local disk and on a moto S3 server, for the code at ``--code`` (a checkout: this branch,
or /work/main for the lease lock it replaces); and the cost of one fenced commit against
one unfenced (``--fence``).

    python benchmarks/bench_commits.py --code /work/main --code . --writers 1 2 4 8
    python benchmarks/bench_commits.py --fence

Each writer upserts 5 rows of its own keys ``--commits`` times (every write commits one
version). The clock starts when every writer has imported everything and stops when the
last one is done.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WRITER = r"""
import os, sys, time, json
sys.path.insert(0, {code!r})
import numpy as np, pyarrow as pa
from embed_assets import Store
w, n, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
store = Store({uri!r}, storage_options=opts)
print("READY", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
retries = 0
for r in range(n):
    keys = np.arange(5) + 1000 * (w + 1)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.full(5 * 8, r, np.float32)), 8)
    retries += store.write("t", pa.table({{"id": keys, "vector": vec}}), key="id", mode="upsert").retries
print(json.dumps({{"retries": retries}}), flush=True)
"""


def run(code: str, uri: str, writers: int, commits: int, opts: dict | None) -> dict:
    sys.path.insert(0, code)
    import numpy as np
    import pyarrow as pa

    from embed_assets import Store

    store = Store(uri, storage_options=opts)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8 * 10, np.float32)), 8)
    store.write("t", pa.table({"id": np.arange(10), "vector": vec}), key="id", mode="overwrite")
    sys.path.remove(code)
    go = tempfile.mktemp()
    src = _WRITER.format(code=code, uri=uri)
    env = {**os.environ, "LANCE_LOG": "error", "PYTHONPATH": code}
    procs = [subprocess.Popen([sys.executable, "-c", src, str(w), str(commits), go]
                              + ([json.dumps(opts)] if opts else []),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for w in range(writers)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "READY", p.stderr.read()
    t0 = time.perf_counter()
    open(go, "w").close()
    retries = 0
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err
        retries += json.loads(out.strip().splitlines()[-1])["retries"]
    wall = time.perf_counter() - t0
    os.remove(go)
    return {"writers": writers, "commits": writers * commits, "seconds": round(wall, 2),
            "commits_per_s": round(writers * commits / wall, 2), "retries": retries}


def fence_cost(n: int) -> dict:
    """One commit of a 5-row fragment as a fenced Update (the table's lowest fragment
    listed) against the same as a plain Update (rebased silently by Lance)."""
    import lance
    import numpy as np
    import pyarrow as pa
    from lance import LanceOperation

    sys.path.insert(0, str(ROOT))
    from embed_assets.store._commits import commit, fence

    def rows(k: int) -> pa.Table:
        vec = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(5 * 8, np.float32)), 8)
        return pa.table({"id": np.arange(5) + k, "vector": vec})

    out = {}
    for kind in ("unfenced", "fenced", "unfenced", "fenced"):
        uri = tempfile.mkdtemp() + "/t.lance"
        ds = lance.write_dataset(rows(0), uri)
        times = []
        for i in range(n):
            frags = lance.fragment.write_fragments(rows(10 * (i + 1)), uri, mode="append")
            t0 = time.perf_counter()
            op = fence(ds, [], [], frags) if kind == "fenced" else \
                LanceOperation.Update(removed_fragment_ids=[], updated_fragments=[], new_fragments=frags)
            ds = commit(ds, op, ds.version, {}, None)
            times.append(time.perf_counter() - t0)
        out[kind] = round(1000 * float(np.median(times)), 2)  # the second pass of each kind wins
    return {"median_commit_ms": out, "commits": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", action="append", default=[])
    ap.add_argument("--writers", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--commits", type=int, default=5)
    ap.add_argument("--where", choices=["local", "s3", "both"], default="both")
    ap.add_argument("--fence", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("LANCE_LOG", "error")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.fence:
        print(json.dumps(fence_cost(40)))
        return
    sys.path.insert(0, str(ROOT))
    from tests.s3_server import moto_server

    with tempfile.TemporaryDirectory() as tmp, moto_server(tmp) as s3:
        for code in args.code or [str(ROOT)]:
            for where in (("local", "s3") if args.where == "both" else (args.where,)):
                for n in args.writers:
                    if where == "local":
                        uri, opts = tempfile.mkdtemp(dir=tmp), None
                    else:
                        bucket = s3.create_bucket(f"b{abs(hash((code, n))) % 10**8}")
                        uri, opts = f"s3://{bucket}/s", s3.storage_options()
                    res = run(os.path.abspath(code), uri, n, args.commits, opts)
                    print(json.dumps({"code": code, "where": where, **res}), flush=True)


if __name__ == "__main__":
    main()
