"""A writer the concurrency tests pause or race: ``python tests/concurrency_worker.py
STORE MODE KEYS SEED [--pause-before-commit] [--options JSON]``.

With ``--pause-before-commit`` it prints ``PLANNED`` and stops itself (SIGSTOP) just
before its first commit reaches Lance, after the write was planned (keys checked, rows
merged): the test runs another writer meanwhile and sends SIGCONT. The hook sits on
Lance's own entry points (``LanceDataset.commit``, ``write_dataset`` in append mode), so
the same worker pauses the landed code of main (lease lock) and this branch's.
It prints one JSON line: the outcome (``committed`` with the version and retries,
``refused`` with the message, or ``error``).
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("LANCE_LOG", "error")

import lance
import numpy as np
import pyarrow as pa

DIM = 8


def rows(keys: list[int], seed: int, section: str | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    mat = rng.normal(size=(len(keys), DIM)).astype(np.float32)
    return pa.table({"id": pa.array(keys, pa.int64()),
                     "src": pa.array([f"s{seed}"] * len(keys)),
                     "section": pa.array([section or f"p{k % 3}" for k in keys]),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)})


def _pause_before_first_commit() -> None:
    state = {"paused": False}

    def pause() -> None:
        if not state["paused"]:
            state["paused"] = True
            print("PLANNED", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    real_commit = lance.LanceDataset.commit
    real_write = lance.write_dataset

    def commit(*args, **kwargs):
        pause()
        return real_commit(*args, **kwargs)

    def write_dataset(data, uri, *args, **kwargs):
        if kwargs.get("mode") == "append":
            pause()
        return real_write(data, uri, *args, **kwargs)

    lance.LanceDataset.commit = staticmethod(commit)
    lance.write_dataset = write_dataset


def main() -> None:
    path, mode, keys, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    opts = None
    if "--options" in sys.argv:
        opts = json.loads(sys.argv[sys.argv.index("--options") + 1])
    if "--pause-before-commit" in sys.argv:
        _pause_before_first_commit()
    from embed_assets import Store, ValidationError

    store = Store(path, storage_options=opts)
    ids = [int(k) for k in keys.split(",")]
    try:
        r = store.write("t", rows(ids, seed), key="id", mode=mode)
        out = {"outcome": "committed", "version": r.version, "retries": r.retries,
               "inserted": r.rows_inserted, "updated": r.rows_updated}
    except ValidationError as exc:
        out = {"outcome": "refused", "message": str(exc)}
    except Exception as exc:  # reported to the test, which fails on it
        out = {"outcome": "error", "message": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
