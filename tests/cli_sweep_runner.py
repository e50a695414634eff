"""Runs many ``embed-assets`` command lines in one process, for tests/test_bad_input_sweep.py.

A fresh interpreter per command line costs ~2 s of imports on a loaded machine, ~4 min
for the whole sweep; here the CLI's ``main()`` runs each one in this one process, as the
console script would: its exit code (``SystemExit`` from argparse included), everything
written to the file descriptors of stdout and stderr (Rust and C libraries too), and an
exception escaping ``main()`` printed as the interpreter would print it (a traceback,
exit code 1). After each command line the store is read again: ``changed`` says whether
its versions, tags or rows differ from before.

stdin: JSON ``{"store": URI, "cases": [[STORE_ARG, [ARG, ...]], ...]}``; stdout: a line
``RESULTS`` and then one JSON list of ``{"rc", "stdout", "stderr", "changed"}``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from typing import Any


def state(uri: str) -> list[Any]:
    from embed_assets import Store

    store = Store(uri)
    out = []
    for name in store.table_names():
        t = store.table(name)
        out.append((name, [(v.version, v.rows, v.tags) for v in t.versions(with_properties=False)],
                    repr(t.read().sort_by(t.meta.key).to_pylist())))
    return out


def run(argv: list[str]) -> tuple[int, str, str]:
    from embed_assets.cli import main

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            try:
                rc = main(argv)
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the interpreter prints for an uncaught exception
                traceback.print_exc()
                rc = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace")


def main() -> None:
    job = json.load(sys.stdin)
    results = []
    before = state(job["store"])
    for store_arg, args in job["cases"]:
        rc, out, err = run(["--store", store_arg, *args])
        after = state(job["store"])
        results.append({"rc": rc, "stdout": out, "stderr": err, "changed": after != before})
        before = after
    print("RESULTS")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
