"""A process the fault tests kill: ``python tests/fault_worker.py OP STORE [SEED]``.

It imports everything first and prints ``READY`` (so the kill lands in the operation, not
in the imports), runs one operation on table ``t`` of the store, and prints ``DONE``.
Operations: the write modes, rollback, cleanup, index build (see OPS).
"""

from __future__ import annotations

import datetime as dt
import os
import sys

os.environ.setdefault("LANCE_LOG", "error")

import numpy as np
import pyarrow as pa

from embed_assets import Store, build_index

DIM = 16
ROWS = 3000  # the prepared table; big enough that each operation takes a while


def rows(keys: np.ndarray, seed: int, sections: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    mat = rng.normal(size=(len(keys), DIM)).astype(np.float32)
    secs = sections or [f"s{k % 4}" for k in keys.tolist()]
    return pa.table({"id": pa.array(keys, pa.int64()), "section": secs,
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)})


def prepare(path: str) -> None:
    """The table every kill starts from: 3 data versions (history to roll back to and
    clean up), a tag on version 1, a tuned ANN index."""
    store = Store(path)
    store.write("t", rows(np.arange(ROWS), 1), key="id", mode="overwrite")
    store.write("t", rows(np.arange(ROWS // 2, ROWS + 500), 2), key="id", mode="upsert")
    store.write("t", rows(np.arange(ROWS + 500, ROWS + 900), 3), key="id", mode="append")
    store.table("t").tag("first", 1)
    # An ANN index on the latest version: a rollback to version 1 must rebuild it, and
    # writes run beside it.
    build_index(store.table("t"), force_ann=True, recall=0.9)


def run(op: str, path: str, seed: int) -> None:
    store = Store(path)
    if op == "overwrite":
        store.write("t", rows(np.arange(ROWS * 2), seed), key="id", mode="overwrite")
    elif op == "append":
        store.write("t", rows(np.arange(10_000, 10_000 + ROWS), seed), key="id", mode="append")
    elif op == "upsert":
        store.write("t", rows(np.arange(ROWS // 3, ROWS + ROWS // 3), seed), key="id", mode="upsert",
                    delete_keys=list(range(0, 50)))
    elif op == "replace_partition":
        keys = np.arange(0, ROWS * 2, 4)  # section s0 only
        store.write("t", rows(keys, seed, ["s0"] * len(keys)), key="id", mode="replace_partition",
                    partition=("section", "s0"))
    elif op == "rollback":
        store.table("t").rollback(1)
    elif op == "cleanup":
        store.table("t").cleanup(keep_last=1, grace=dt.timedelta(0))
    elif op == "index":
        build_index(store.table("t"), force_ann=True, recall=0.9)
    else:
        raise SystemExit(f"unknown op {op!r}")


if __name__ == "__main__":
    op, path = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    if op == "prepare":
        prepare(path)
        raise SystemExit(0)
    print("READY", flush=True)
    run(op, path, seed)
    print("DONE", flush=True)
