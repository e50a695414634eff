"""ANN index benchmark: recall@10 and latency of the store's search beside its baselines.

Each figure is measured in the same run as its baseline (numpy exact scan over the same
in-memory matrix; FAISS IVF-PQ+refine and hnswlib as peers) and printed as a ratio.

    python benchmarks/bench_index.py                 # real 120k + synthetic 1M + threshold
    python benchmarks/bench_index.py --only real     # one part: real | synth | threshold
    python benchmarks/bench_index.py --synth-rows 200000

Queries are held out: they are vectors of the same distribution that are *not* in the
table (real: rows set aside before writing; synthetic: fresh draws from the same mixture).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LANCE_LOG", "error")

import datasets

from embed_assets import Store, build_index

K = 10
STORES = datasets.CACHE / "stores"


def _table(mat: np.ndarray) -> pa.Table:
    return pa.table({"id": np.arange(len(mat)),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)),
                                                                 mat.shape[1])})


class _Truth:
    """Exact top-K of held-out queries. ``recall`` counts a found row as a hit when it is
    as near as the K-th exact neighbour (ties, as in ann-benchmarks and the index tuner);
    ``recall_ids`` counts ids only (exact duplicates in the data make it a bit noisy)."""

    def __init__(self, unit: np.ndarray, queries: np.ndarray, sets: list[set[int]] | None = None,
                 kth: np.ndarray | None = None) -> None:
        self.unit, self.queries = unit, queries
        if sets is None or kth is None:
            sets, kths = [], []
            for i in range(0, len(queries), 50):
                s = queries[i:i + 50] @ unit.T
                top = np.argpartition(-s, K, axis=1)[:, :K]
                sets.extend(set(r.tolist()) for r in top)
                kths.append(np.take_along_axis(s, top, axis=1).min(1))
            kth = np.concatenate(kths)
        self.sets, self.kth = sets, kth

    def __getitem__(self, sl: slice) -> _Truth:
        return _Truth(self.unit, self.queries[sl], self.sets[sl], self.kth[sl])

    def recall(self, found: list[list[int]]) -> float:
        hits = [min(K, int((self.unit[f] @ self.queries[i] >= self.kth[i] - 1e-5).sum())) / K
                if len(f) else 0.0 for i, f in enumerate(found)]
        return float(np.mean(hits))

    def recall_ids(self, found: list[list[int]]) -> float:
        return float(np.mean([len(set(f) & t) / K for f, t in zip(found, self.sets, strict=True)]))


def _truth(mat: np.ndarray, queries: np.ndarray) -> _Truth:
    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
    return _Truth(unit, queries / np.linalg.norm(queries, axis=1, keepdims=True))


def _recall(found: list[list[int]], truth: _Truth) -> float:
    return truth.recall(found)


def _lat(fn, queries: np.ndarray) -> tuple[list, float, float]:
    fn(queries[0])  # warm
    res, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        res.append(fn(q))
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1e3
    return res, float(np.percentile(t, 50)), float(np.percentile(t, 99))


def _qps(fn, queries: np.ndarray, threads: int = 2) -> float:
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(fn, queries))
    return len(queries) / (time.perf_counter() - t0)


def _row(name: str, recall: float | None, p50: float, p99: float | None, base_p50: float,
         extra: str = "") -> str:
    r = f"{recall:.3f}" if recall is not None else "1.000"
    p = f"{p99:.2f}" if p99 is not None else "-"
    return f"| {name} | {r} | {p50:.2f} | {p} | {p50 / base_p50:.3f} | {extra} |"


def bench(label: str, mat: np.ndarray, queries: np.ndarray, *, peers: bool = True,
          hnsw: bool = True, index_type: str = "IVF_PQ") -> list[str]:
    n, d = mat.shape
    print(f"\n## {label}: {n:,} x {d}, {len(queries)} held-out queries", flush=True)
    root = STORES / label.replace(" ", "_")
    shutil.rmtree(root, ignore_errors=True)
    store = Store(root)
    t0 = time.perf_counter()
    store.write("t", _table(mat), key="id")
    write_s = time.perf_counter() - t0
    t = store.table("t")
    t0 = time.perf_counter()
    rep = build_index(t, recall=0.95, force_ann=True, index_type=index_type)
    total_build = time.perf_counter() - t0
    print(rep.summary(), flush=True)
    truth = _truth(mat, queries)

    lines = [f"### {label}: {n:,} x {d}",
             "",
             f"write {write_s:.1f}s; `build_index(recall=0.95, index_type={index_type!r})` "
             f"{total_build:.1f}s in all (Lance index build {rep.build_seconds:.1f}s, "
             f"tuning {rep.tune_seconds:.1f}s), "
             f"index {rep.index_bytes / 1e6:.1f} MB, params `{rep.params}`, recall measured "
             f"at build {rep.recall:.3f} (Lance path {rep.lance_recall})",
             "",
             "| path | recall@10 | p50 ms | p99 ms | p50 / numpy exact | notes |",
             "|---|---|---|---|---|---|"]

    unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)

    def numpy_exact(q):
        return np.argpartition(-(unit @ q), K)[:K].tolist()

    _, np_p50, np_p99 = _lat(numpy_exact, queries)
    lines.append(_row("numpy exact (GEMV + argpartition)", 1.0, np_p50, np_p99, np_p50))

    def ours(q):
        return t.search(q, k=K, columns=["id"]).column("id").to_pylist()

    found, p50, p99 = _lat(ours, queries)
    qps = _qps(ours, queries)
    lines.append(_row("embed_assets `search()` (default: IVF probe)", _recall(found, truth), p50,
                      p99, np_p50, f"QPS 2 threads {qps:.0f}; ids only "
                      f"{truth.recall_ids(found):.3f}"))
    if rep.lance_recall is not None and "probe_nprobes" in rep.params:
        def lance_path(q):
            return t.search(q, k=K, columns=["id"], nprobes=rep.params["nprobes"]).column(
                "id").to_pylist()

        found, p50, p99 = _lat(lance_path, queries[:100])
        lines.append(_row("embed_assets via Lance IVF-PQ (filter path)",
                          _recall(found, truth[:100]), p50, p99, np_p50,
                          f"nprobes {rep.params['nprobes']}, refine {rep.params.get('refine_factor')}"))

    def exact_cached(q):
        return t.search(q, k=K, columns=["id"], use_index=False).column("id").to_pylist()

    found, p50, p99 = _lat(exact_cached, queries[:100])
    lines.append(_row("embed_assets exact (`use_index=False`)", _recall(found, truth[:100]), p50,
                      p99, np_p50, "cached matrix"))

    from embed_assets import connect

    con = connect(store, extensions=())
    kq = f"SELECT id FROM knn('t', ?::FLOAT[{d}], {K})"

    def sql_knn(q):
        return [r[0] for r in con.execute(kq, [q]).fetchall()]

    found, p50, p99 = _lat(sql_knn, queries[:100])
    lines.append(_row("embed_assets SQL `knn('t', q, 10)` (DuckDB)", _recall(found, truth[:100]),
                      p50, p99, np_p50, "query vector as a parameter"))
    con.close()

    keys = np.random.default_rng(1).integers(0, n, size=200)
    _, kp50, kp99 = _lat(lambda key: t.get([int(key)], columns=["id", "vector"]), keys)
    batches = [keys[i:i + 100].tolist() for i in range(0, 200, 100)] * 10
    tb = []
    for b in batches:
        t0 = time.perf_counter()
        t.get(b, columns=["id", "vector"])
        tb.append(time.perf_counter() - t0)
    lines.append("")
    lines.append(f"key lookup (BTREE on key): one key p50 {kp50:.2f} ms, p99 {kp99:.2f} ms; "
                 f"100 keys p50 {np.median(tb) * 1e3:.2f} ms")

    if peers:
        import faiss

        faiss.omp_set_num_threads(1)
        nlist = int(rep.params["num_partitions"])
        m = d // 4
        t0 = time.perf_counter()
        quant = faiss.IndexFlatIP(d)
        base = faiss.IndexIVFPQ(quant, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        idx = faiss.IndexRefineFlat(base)
        idx.k_factor = 10
        idx.train(unit[np.random.default_rng(0).choice(n, min(n, 256 * nlist), replace=False)])
        idx.add(unit)
        fb = time.perf_counter() - t0
        for nprobe in (8, 16, 32, 64, 128, 256):
            faiss.ParameterSpace().set_index_parameter(idx, "nprobe", nprobe)
            found, p50, p99 = _lat(lambda q: idx.search(q[None, :], K)[1][0].tolist(), queries)
            r = _recall(found, truth)
            if r >= 0.95 or nprobe == 256:
                lines.insert(-2, _row(f"FAISS IVF{nlist},PQ{m} + refine 10", r, p50, p99, np_p50,
                                      f"nprobe {nprobe}, build {fb:.0f}s"))
                break
        if hnsw:
            import hnswlib

            t0 = time.perf_counter()
            h = hnswlib.Index(space="ip", dim=d)
            h.init_index(max_elements=n, M=16, ef_construction=200)
            h.set_num_threads(2)
            h.add_items(unit)
            hb = time.perf_counter() - t0
            h.set_num_threads(1)
            for ef in (20, 40, 80, 160, 320):
                h.set_ef(ef)
                found, p50, p99 = _lat(lambda q: h.knn_query(q, K)[0][0].tolist(), queries)
                r = _recall(found, truth)
                if r >= 0.95 or ef == 320:
                    lines.insert(-2, _row("hnswlib M=16", r, p50, p99, np_p50,
                                          f"ef {ef}, build {hb:.0f}s (2 threads)"))
                    break
    print("\n".join(lines), flush=True)
    return lines


def threshold() -> list[str]:
    """Where an index starts to pay: exact cached scan vs tuned index, by row count."""
    deb = datasets.debian_vectors()
    rng = np.random.default_rng(3)
    lines = ["### Exact-search threshold (real Debian MiniLM vectors)", "",
             "| rows | exact p50 ms | indexed p50 ms (recall) | index build+tune s |",
             "|---|---|---|---|"]
    for n in (10_000, 20_000, 40_000, 60_000):
        perm = rng.permutation(len(deb))
        mat, queries = deb[perm[:n]], deb[perm[n:n + 100]]
        root = STORES / f"threshold_{n}"
        shutil.rmtree(root, ignore_errors=True)
        store = Store(root)
        store.write("t", _table(mat), key="id")
        t = store.table("t")

        def exact(q, t=t):
            return t.search(q, k=K, columns=["id"], use_index=False)

        def indexed(q, t=t):
            return t.search(q, k=K, columns=["id"]).column("id").to_pylist()

        _, ex50, _ = _lat(exact, queries)
        t0 = time.perf_counter()
        build_index(t, recall=0.95, force_ann=True)
        bs = time.perf_counter() - t0
        truth = _truth(mat, queries)
        found, ix50, _ = _lat(indexed, queries)
        lines.append(f"| {n:,} | {ex50:.2f} | {ix50:.2f} ({_recall(found, truth):.3f}) | {bs:.0f} |")
        print(lines[-1], flush=True)
    return lines


def training(n: int) -> list[str]:
    """build_index with the project's k-means sampling (default_params) beside Lance's own
    defaults (256 samples per centroid, 50 iterations), same rows, same run, alternating."""
    import resource

    vec = datasets.real_vectors(n)
    vec = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
    out = [f"| build_index, {n:,} real rows, graph=True | CPU s | wall s | train s | recall "
           "(graph) | Lance path recall / p50 ms | nprobes, refine |", "|---|---|---|---|---|---|---|"]
    for label, kw in (("Lance's k-means defaults (256, 50)", {"sample_rate": 256, "max_iters": 50}),
                      ("default_params (64, 10)", {})):
        s = Store(tempfile.mkdtemp(prefix="bench_training_"))
        s.write("t", _table(vec), key="id")
        c0, t0 = time.process_time(), time.perf_counter()
        rep = build_index(s.table("t"), recall=0.95, graph=True, **kw)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        out.append(f"| {label} | {cpu:.1f} | {wall:.1f} | {rep.build_seconds:.1f} | {rep.recall:.3f} | "
                   f"{rep.lance_recall or 0:.3f} / {rep.lance_p50_ms or 0:.2f} | "
                   f"{rep.params.get('nprobes')}, {rep.params.get('refine_factor')} |")
        print(out[-1], f"(peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)",
              flush=True)
    return out


_SCALE = r"""
import json, sys, time, tempfile
import numpy as np
sys.path.insert(0, sys.argv[3])


def status(field):  # bytes; VmHWM is this process's own peak (ru_maxrss keeps the parent's)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024


def mark():  # the resident set now; the peak restarts from it
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")


EF = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def truth_of(mat, queries, k=10):  # exact top-k by blocks of the memory-mapped rows
    best = np.full((len(queries), k), -np.inf, np.float32)
    ids = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(mat), 100_000):
        sc = queries @ np.asarray(mat[s:s + 100_000]).T
        top = np.argpartition(-sc, k, axis=1)[:, :k]
        both = np.concatenate([best, np.take_along_axis(sc, top, 1)], 1)
        bid = np.concatenate([ids, top + s], 1)
        keep = np.argsort(-both, 1)[:, :k]
        best, ids = np.take_along_axis(both, keep, 1), np.take_along_axis(bid, keep, 1)
    return ids


def recall_of(found, truth):
    return float(np.mean([len(set(map(int, f)) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def p50_ms(fn, queries):
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def tuned(search, set_ef, queries, truth, target=0.95):
    # the smallest search width whose recall on the fresh queries meets the target
    for ef in EF:
        set_ef(ef)
        r = recall_of([search(q) for q in queries], truth)
        if r >= target:
            return {"recall": r, "p50_ms": p50_ms(search, queries), "path": f"ef {ef}"}
    return {"recall": r, "p50_ms": p50_ms(search, queries), "path": f"ef {EF[-1]} (target not met)"}


mat = np.load(sys.argv[1], mmap_mode="r")
queries = np.load(sys.argv[5])
which = sys.argv[2]
base = mark()
c0, t0 = time.process_time(), time.perf_counter()
out = {}
search = set_ef = None
if which.startswith("build_index"):
    import pyarrow as pa
    from embed_assets import Store, build_index
    s = Store(tempfile.mkdtemp(prefix="bench_scale_"))
    s.write("t", pa.table({"id": np.arange(len(mat)), "vector": pa.FixedSizeListArray.from_arrays(
        pa.array(np.ascontiguousarray(mat).reshape(-1)), mat.shape[1])}), key="id")
    base = mark()
    c0, t0 = time.process_time(), time.perf_counter()
    rep = build_index(s.table("t"), recall=0.95, graph=which == "build_index")
    out = {"built_recall": rep.recall, "train_s": rep.build_seconds,
           "tune_s": rep.tune_seconds, "path": "graph" if "graph_ef" in rep.params else rep.kind,
           **({"store": s.uri} if which == "build_index" else {})}
    if which == "build_index-ivf":
        t = s.table("t")
        search = lambda q: t.search(q, k=10, columns=["id"]).column("id").to_numpy()
elif which == "load":  # a fresh reader: open the store built above, first search
    from embed_assets import Store
    t = Store(sys.argv[4]).table("t")
    base = mark()
    c0, t0 = time.process_time(), time.perf_counter()
    t.search(queries[0], k=10, columns=["id"])
    search = lambda q: t.search(q, k=10, columns=["id"]).column("id").to_numpy()
elif which == "faiss-ivfpq":
    import faiss
    x = np.ascontiguousarray(mat, dtype=np.float32)
    nlist = int(round(len(x) ** 0.5))
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, x.shape[1] // 4, 8,
                             faiss.METRIC_INNER_PRODUCT)
    index.train(x)
    index.add(x)
elif which == "faiss-hnsw":  # M and efConstruction as the project's graph (hnswlib)
    import faiss
    from embed_assets.store.graph import ef_construction
    x = np.ascontiguousarray(mat, dtype=np.float32)
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction(len(x))
    index.add(x)
    def search(q):
        return index.search(q[None], 10)[1][0]
    def set_ef(ef):
        index.hnsw.efSearch = ef
elif which.startswith("usearch"):
    from usearch.index import Index
    from embed_assets.store.graph import ef_construction
    index = Index(ndim=mat.shape[1], metric="cos", dtype=which.split("-")[1], connectivity=16,
                  expansion_add=ef_construction(len(mat)))
    for s in range(0, len(mat), 100_000):
        index.add(np.arange(s, min(s + 100_000, len(mat))), np.asarray(mat[s:s + 100_000]), threads=2)
    def search(q):
        return index.search(q, 10, threads=1).keys
    def set_ef(ef):
        index.expansion_search = ef
res = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0,
       "peak_gb": status("VmHWM") / 1e9, "base_gb": base / 1e9, **out}
if search is not None:  # recall and single-query p50 on fresh queries, after the peak is read
    import faiss  # noqa: F401 - one BLAS thread for every library's p50
    truth = truth_of(mat, queries)
    if set_ef is None:
        res.update(recall=recall_of([search(q) for q in queries], truth),
                   p50_ms=p50_ms(search, queries))
    else:
        faiss.omp_set_num_threads(1)
        res.update(tuned(search, set_ef, queries, truth))
print(json.dumps(res))
"""


def scale(n: int, peers: tuple[str, ...], ivf: bool = True) -> list[str]:
    """build_index on n synthetic 384-d rows beside FAISS (IVF-PQ train+add, HNSW) and
    usearch building the same rows, each in a fresh process (its own peak RSS), one after
    the other; then a fresh reader's first search of the built store (``load``: the graph
    and what it reads). ``build_index-ivf`` is the same build with ``graph=False`` (Lance's
    IVF-PQ and the in-memory probe only), searched in the building process. Recall and
    single-query p50 are measured on 200 fresh queries
    from the same mixture (never rows of the table, never seen by the tuner): the graph
    peers at the smallest search width reaching recall 0.95, ours as the build tuned it."""
    import json
    import subprocess

    allv = datasets.clustered_vectors(n + 200)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    path, qpath = tmp / "mat.npy", tmp / "queries.npy"
    np.save(path, allv[200:])
    np.save(qpath, allv[:200])
    out = [f"| {n:,} x 384 synthetic (matrix {(allv.nbytes - 200 * 384 * 4) / 1e9:.2f} GB) | wall s | "
           "CPU s | peak RSS GB (over the resident set before the step) | recall@10 / p50 "
           "(200 fresh queries) |",
           "|---|---|---|---|---|"]
    del allv
    built = ""
    for which in (*peers, *(("build_index-ivf",) if ivf else ()), "build_index", "load"):
        src = str(Path(__file__).resolve().parents[1])
        got = subprocess.run([sys.executable, "-c", _SCALE, str(path), which, src, built, str(qpath)],
                             capture_output=True, text=True)
        if got.returncode != 0:
            out.append(f"| {which} | failed: {got.stderr.strip().splitlines()[-1:]} | | | |")
            print(out[-1], flush=True)
            continue
        r = json.loads(got.stdout.strip().splitlines()[-1])
        built = r.get("store", built)
        extra = ""
        if "recall" in r:
            extra = f"{r['recall']:.3f} / {r['p50_ms']:.2f} ms ({r['path']})" if "path" in r else \
                f"{r['recall']:.3f} / {r['p50_ms']:.2f} ms"
        if "built_recall" in r:
            extra = (f"{extra} " if extra else "") + (
                f"(recall at build {r['built_recall']:.3f}, {r['path']}; train+graph "
                f"{r['train_s']:.0f} s, tune {r['tune_s']:.0f} s)")
        out.append(f"| {which} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_gb']:.2f} "
                   f"({r['peak_gb'] - r['base_gb']:.2f}) | {extra} |")
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["real", "synth", "threshold", "training", "scale"],
                    default=None)
    ap.add_argument("--real-rows", type=int, default=120_000)
    ap.add_argument("--synth-rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--type", default="IVF_PQ", choices=["IVF_PQ", "IVF_HNSW_SQ"])
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-ivf", action="store_true", help="--only scale without the graph=False build")
    ap.add_argument("--scale-peers", default="faiss-ivfpq,faiss-hnsw,usearch-f16,usearch-i8",
                    help="the peers of --only scale, comma-separated (faiss-ivfpq, faiss-hnsw, "
                         "usearch-f32|f16|i8)")
    args = ap.parse_args()
    if not datasets.available():
        print("benchmarks need ../shared/data (absent on a fresh clone): skipped")
        return
    out: list[str] = []
    if args.only in (None, "real"):
        allv = datasets.real_vectors(args.real_rows)  # queries are set aside from these
        perm = np.random.default_rng(0).permutation(len(allv))
        out += bench(f"real MiniLM {args.real_rows // 1000}k {args.type}", allv[perm[args.queries:]],
                     allv[perm[:args.queries]], index_type=args.type, peers=not args.no_peers)
    if args.only in (None, "synth"):
        n = args.synth_rows
        allv = datasets.clustered_vectors(n + args.queries)
        out += bench(f"synthetic {n // 1000}k {args.type}", allv[args.queries:], allv[:args.queries],
                     hnsw=n <= 200_000, index_type=args.type, peers=not args.no_peers)
    if args.only in (None, "threshold"):
        out += threshold()
    if args.only == "training":
        out += training(args.real_rows)
    if args.only == "scale":
        out += scale(args.synth_rows, tuple(p for p in args.scale_peers.split(",") if p),
                     ivf=not args.no_ivf)
    print("\n\n" + "\n".join(out))


if __name__ == "__main__":
    main()
