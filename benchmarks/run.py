"""One command for every comparison table: `python benchmarks/run.py` (or `make bench`).

Runs each benchmark in its own process (so caches and threads of one do not flatter the
next) and prints its tables. Each figure sits beside its baseline from the same run.
Pass `--quick` for a shorter pass (no 1M-row figures).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    runs = [
        ["bench_store.py"],
        ["bench_sql.py", *(["--quick"] if quick else [])],
        ["bench_index.py", *(["--only", "real"] if quick else [])],
        ["bench_scale.py", *(["--quick"] if quick else [])],  # S3 vs local, training epochs
        ["bench_embed.py", *(["--only", "backends,stream", "--sizes", "100000,400000"]
                             if quick else [])],
    ]
    rc = 0
    for args in runs:
        print(f"\n# {' '.join(args)}\n", flush=True)
        rc |= subprocess.call([sys.executable, str(HERE / args[0]), *args[1:]])
    return rc


if __name__ == "__main__":
    sys.exit(main())
