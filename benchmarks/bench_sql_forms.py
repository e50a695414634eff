"""SQL knn forms and per-statement overhead, one checkout against another in the same run.

    python benchmarks/bench_sql_forms.py --before /work/main --rows 120000 --rounds 3

The SQL part of bench_search.py (bound parameter, scalar subquery, literal, filter :=,
LATERAL per row) plus a statement with no knn (the rewriter's fixed cost) and $name,
measured for the checkout this file is in ("after") and for ``--before``, each in its own
process (both import their own embed_assets), alternating rounds so that a busy machine
slows both alike. One store of real MiniLM vectors, no ANN index (the store's cached exact
scan), shared by both. Prints a markdown table of the p50 CPU time (this process, all its
threads) per form, median over rounds: on 2 shared cores under load, wall time measures
the neighbours more than the code.
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


def measure(code: str, store_dir: str, rows: int, reps: int, only: str = "") -> dict[str, float]:
    sys.path.insert(0, code)
    sys.path.insert(0, str(HERE.parent))
    import datasets
    import pyarrow as pa

    from embed_assets import Store, connect

    store = Store(store_dir)
    vec = datasets.real_vectors(rows)
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    if "t" not in store.table_names():
        sections = np.array(["editors", "libdevel", "games", "net"])[np.arange(rows) % 4]
        store.write("t", pa.table({
            "id": np.arange(rows), "section": sections, "bucket": np.arange(rows) % 200,
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.astype(np.float32).ravel()), 384)}),
            key="id")
    con = connect(store, progress_bar=False)
    con.execute("CREATE TABLE cents AS SELECT section, vec_mean(vector) AS vector FROM t "
                "WHERE section IN ('editors', 'libdevel', 'games') GROUP BY section")
    rng = np.random.default_rng(0)
    qs = vec[rng.choice(rows, 30, replace=False)]
    qv = qs[0].tolist()
    lit = "[" + ", ".join(f"{x:.7g}" for x in qs[0]) + "]::FLOAT[]"
    con.execute("CREATE TABLE q30 AS SELECT i AS qid, v::FLOAT[] AS vector FROM "
                "(SELECT unnest(range(30)) AS i, unnest(?::FLOAT[][]) AS v)", [qs.tolist()])
    if "q1k" not in store.table_names():
        store.write("q1k", pa.table({"id": np.arange(1000), "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(vec[:1000].astype(np.float32).ravel()), 384)}), key="id")
        con.refresh()
    con.execute("CREATE TABLE small AS SELECT id, vector::FLOAT[] AS vector FROM t WHERE id < 5000")
    forms: dict[str, tuple[str, object, int]] = {
        "no knn (key lookup)": ("SELECT id, section FROM t WHERE id = 12345", None, 1),
        "bound parameter": ("SELECT id, distance FROM knn('t', ?::FLOAT[], 10)", [qv], 1),
        "scalar subquery": ("SELECT id, distance FROM knn('t', (SELECT vector FROM cents "
                            "WHERE section = 'editors'), 10)", None, 1),
        "literal": (f"SELECT id, distance FROM knn('t', {lit}, 10)", None, 1),
        "filter := (5%)": ("SELECT id, distance FROM knn('t', ?::FLOAT[], 10, filter := 'bucket < 10')",
                           [qv], 1),
        "subquery + filter :=": ("SELECT id, distance FROM knn('t', (SELECT vector FROM cents "
                                 "WHERE section = 'editors'), 10, filter := 'section = ''editors''')",
                                 None, 1),
        "LATERAL, per outer row (3 rows)": ("SELECT k.id, k.distance FROM cents c, "
                                            "LATERAL knn('t', c.vector, 10) k", None, 3),
        "LATERAL, per outer row (30 rows)": ("SELECT k.id, k.distance FROM q30 c, "
                                             "LATERAL knn('t', c.vector, 10) k", None, 30),
        "knn on a DuckDB table (macro, 5,000 rows)": ("SELECT id, distance FROM knn('small', ?, 10)",
                                                       [qv], 1),
        "similarity_join 1,000 x all, k=10 (store views)": (
            "SELECT count(*) FROM similarity_join('q1k', 't', 10)", None, 1),
    }
    out: dict[str, float] = {}
    for name, (sql, params, n_outer) in forms.items():
        if only and not any(o.strip() and o.strip() in name for o in only.split(",")):
            continue
        con.execute(sql, params).fetchall()  # warm: caches, first registration
        times = []
        for _ in range(reps if n_outer == 1 and "join" not in name else max(5, reps // 4)):
            t0 = time.process_time()
            con.execute(sql, params).fetchall()
            times.append(time.process_time() - t0)
        out[name] = float(np.median(times) * 1e3) / n_outer
    con.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="checkout to compare with (its embed_assets)")
    ap.add_argument("--rows", type=int, default=120_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--only", default="", help="comma-separated parts of form names to run")
    ap.add_argument("--measure", nargs=2, metavar=("CODE", "STORE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args.rows, args.reps,
                                 args.only)))
        return 0
    sys.path.insert(0, str(HERE.parent))
    import datasets

    if not datasets.available():
        print("skipped: ../shared/data is not here (a fresh clone)")
        return 0
    store_dir = tempfile.mkdtemp(prefix="bench_sql_forms_")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    codes = {"before": str(Path(args.before).resolve()), "after": str(HERE.parents[1])}
    for _ in range(args.rounds):
        for label in ("before", "after"):
            cmd = [sys.executable, str(HERE), "--before", args.before, "--rows", str(args.rows),
                   "--reps", str(args.reps), "--only", args.only, "--measure", codes[label], store_dir]
            got = subprocess.run(cmd, capture_output=True, text=True)
            if got.returncode != 0:  # say why (a crash under load once said nothing)
                print(f"{label} died ({got.returncode}):\n{got.stderr[-3000:]}", file=sys.stderr)
                got.check_returncode()
            runs[label].append(json.loads(got.stdout.strip().splitlines()[-1]))
            print(label, runs[label][-1], flush=True)
    print(f"\n| SQL form ({args.rows:,} rows; p50 CPU ms, median of {args.rounds} rounds) "
          "| before | after | after/before |")
    print("|---|---|---|---|")
    for name in runs["after"][0]:
        b = float(np.median([r[name] for r in runs["before"]]))
        a = float(np.median([r[name] for r in runs["after"]]))
        print(f"| {name} | {b:.2f} | {a:.2f} | {a / b:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
