"""A seeded differential fuzz of search (issue 29, deliverable 5).

Random upserts, appends, overwrites, rollbacks, cleanups, index builds (graph or not)
and refreshes, one build racing an upsert from another process, and after every step
every search path checked against an exact numpy scan of the version read: the graph,
the probe, Lance's own index (``nprobes=`` forces it), exact, a filter, a partition, time
travel to an earlier version, ``get`` and SQL ``knn``. The invariant: 0 rows that are not rows of
the version read, every distance the row's true distance, and recall at or above the
target over the run.

``make test`` runs a short pass (about 40 steps); ``make stress``
(``EMBED_ASSETS_STRESS=full``) runs 3 seeds of 150 steps.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import Store, build_index, connect, refresh_index
from embed_assets.store import CACHE

from .test_index import clustered

FULL = os.environ.get("EMBED_ASSETS_STRESS") == "full"
STEPS = 150 if FULL else 40
SEEDS = (0, 1, 2) if FULL else (0,)
DIM, CLUSTERS, TARGET = 16, 30, 0.95
TENANTS = np.array(["a", "b", "c", "d"])


@dataclass
class Tally:
    hits: int = 0
    wanted: int = 0
    ann_hits: int = 0
    ann_wanted: int = 0
    paths: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, hits: int, wanted: int) -> None:
        self.paths[path] = self.paths.get(path, 0) + 1
        self.hits += hits
        self.wanted += wanted
        if path in ("graph", "probe", "filtered-probe", "lance", "sql"):
            self.ann_hits += hits
            self.ann_wanted += wanted


def batch(rng: np.random.Generator, ids: np.ndarray) -> pa.Table:
    mat = clustered(len(ids), dim=DIM, clusters=CLUSTERS, seed=int(rng.integers(1 << 30)))
    return pa.table({"id": ids.astype(np.int64), "tenant": TENANTS[rng.integers(0, 4, len(ids))],
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), DIM)})


def truth_of(t, version: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = t.read(version, columns=["id", "tenant", "vector"])
    mat = np.stack(r.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    return (np.asarray(r.column("id").to_pylist()), np.asarray(r.column("tenant").to_pylist()),
            mat / np.linalg.norm(mat, axis=1, keepdims=True))


def check_version(t, version: int, rng: np.random.Generator, tally: Tally, step: str,
                  con=None) -> None:
    ids, tenant, unit = truth_of(t, version)
    by_id = {int(i): r for r, i in enumerate(ids)}
    picks = rng.choice(len(ids), size=min(4, len(ids)), replace=False)
    queries = np.concatenate([unit[picks], clustered(4, dim=DIM, clusters=CLUSTERS,
                                                     seed=int(rng.integers(1 << 30)))])
    ten = str(TENANTS[rng.integers(0, 4)])
    cases = [({}, None), ({"where": f"tenant = '{ten}'"}, tenant == ten),
             ({"partition": ("tenant", ten), "where": "id % 2 = 0"}, (tenant == ten) & (ids % 2 == 0)),
             ({"where": "id % 3 <> 0"}, ids % 3 != 0)]
    if rng.random() < 0.3:
        cases.append(({"nprobes": int(rng.integers(1, 8))}, None))  # Lance's own search
    for kw, mask in cases:
        keep = np.ones(len(ids), bool) if mask is None else mask
        for q in queries:
            got, plan = t.search(q, k=10, version=version, explain=True, columns=["id"], **kw)
            dist = 1 - unit @ (q / np.linalg.norm(q))
            for gid, gd in zip(got.column("id").to_pylist(), got.column("distance").to_pylist(),
                               strict=True):
                assert gid in by_id, f"{step}: row {gid} is not in version {version} ({plan})"
                r = by_id[gid]
                assert keep[r], f"{step}: row {gid} is outside {kw} ({plan})"
                assert abs(gd - dist[r]) < 1e-4, f"{step}: row {gid} distance {gd} != {dist[r]} ({plan})"
            d = np.where(keep, dist, np.inf)
            want = ids[np.argsort(d, kind="stable")[:min(10, int(keep.sum()))]]
            # ties at the k-th distance: any of the tied rows is a right answer
            kth = np.sort(d)[len(want) - 1] if len(want) else np.inf
            tied = set(ids[d <= kth + 1e-6].tolist())
            got_ids = got.column("id").to_pylist()
            assert len(got_ids) == len(want), f"{step}: {len(got_ids)} rows, {len(want)} expected ({plan})"
            hits = min(len(want), len(set(got_ids) & tied))
            if plan.path in ("exact", "filtered-exact"):
                assert hits == len(want), f"{step}: an exact path missed rows ({plan})"
            tally.add(plan.path, hits, len(want))
    if con is not None:  # SQL knn on the latest version, through the store's search
        for q in queries[:3]:
            got = con.execute("SELECT id, distance FROM knn('f', ?::FLOAT[], 10) ORDER BY rank",
                              [q.tolist()]).fetchall()
            dist = 1 - unit @ (q / np.linalg.norm(q))
            for gid, gd in got:
                assert gid in by_id, f"{step}: SQL knn row {gid} is not in version {version}"
                assert abs(gd - dist[by_id[gid]]) < 1e-4, f"{step}: SQL knn distance of {gid}"
            kth = np.sort(dist)[9]
            tally.add("sql", min(10, len({g for g, _ in got} & set(ids[dist <= kth + 1e-6].tolist()))),
                      10)
    keys = [*rng.choice(ids, size=min(5, len(ids)), replace=False).tolist(), 10**9]
    got = t.get(keys, version=version, columns=["id", "vector"])
    assert got.column("id").to_pylist() == keys[:-1], step
    for k, v in zip(keys, got.column("vector").to_pylist(), strict=False):
        v = np.asarray(v, np.float32)
        assert np.allclose(v / np.linalg.norm(v), unit[by_id[k]], atol=1e-5), step


RACER = textwrap.dedent("""
    import sys, time, numpy as np, pyarrow as pa
    from embed_assets import Store
    uri, delay = sys.argv[1], float(sys.argv[2])
    start, n, dim = (int(a) for a in sys.argv[3:6])
    time.sleep(delay)
    rng = np.random.default_rng(start)
    m = rng.normal(size=(n, dim)).astype(np.float32)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), dim)
    Store(uri).write("f", pa.table({"id": np.arange(start, start + n, dtype=np.int64),
                                    "tenant": np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)],
                                    "vector": vec}), key="id")
""")


def racing_build(store: Store, rng: np.random.Generator, n_ids: int) -> None:
    """build_index while another process upserts 200 existing keys."""
    start = int(rng.integers(0, max(1, n_ids - 200)))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", RACER, store.uri, f"{rng.uniform(0.2, 1.5):.2f}",
                             str(start), "200", str(DIM)], env=env)
    try:
        build_index(store.table("f"), recall=TARGET, force_ann=True, graph=bool(rng.random() < 0.7))
    finally:
        assert proc.wait(timeout=120) == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_search_agrees_with_an_exact_scan_through_random_histories(tmp_path, seed):
    rng = np.random.default_rng(seed)
    store = Store(str(tmp_path))
    n = 3000
    store.write("f", batch(rng, np.arange(n)), key="id")
    next_id = n
    tally = Tally()
    seen: list[int] = [store.table("f").version]
    raced = False
    con = connect(store)
    t0 = time.perf_counter()
    for step in range(STEPS):
        t = store.table("f")
        op = rng.choice(["upsert", "append", "build", "refresh", "rollback", "cleanup",
                         "overwrite", "race"],
                        p=[0.3, 0.12, 0.16, 0.14, 0.1, 0.06, 0.04, 0.08])
        if step == 5:
            op = "race"  # every run has one build racing a write in another process
        elif op == "race" and raced and not FULL:
            op = "upsert"
        if op == "upsert":
            live = t.read(columns=["id"]).column("id").to_numpy()
            old = rng.choice(live, size=int(rng.integers(1, 200)), replace=False)
            new = np.arange(next_id, next_id + int(rng.integers(0, 50)))
            next_id += len(new)
            store.write("f", batch(rng, np.concatenate([old, new])), key="id")
        elif op == "append":
            new = np.arange(next_id, next_id + int(rng.integers(1, 300)))
            next_id += len(new)
            store.write("f", batch(rng, new), key="id", mode="append")
        elif op == "overwrite":
            m = int(rng.integers(2000, 3500))
            store.write("f", batch(rng, np.arange(next_id, next_id + m)), key="id", mode="overwrite")
            next_id += m
        elif op == "build":
            graph = [True, False, None][int(rng.integers(0, 3))]
            build_index(t, recall=TARGET, force_ann=True, graph=graph)
        elif op == "refresh":
            refresh_index(t)
        elif op == "rollback":
            alive = [v for v in seen if t._readable(v)]
            if alive:
                t.rollback(int(rng.choice(alive)))
        elif op == "cleanup":
            t.cleanup(keep_last=int(rng.integers(2, 6)), grace=dt.timedelta(0))
        elif op == "race":
            racing_build(store, rng, next_id)
            raced = True
        if rng.random() < 0.1:
            CACHE.clear()  # a new process
        t = store.table("f")
        seen.append(t.version)
        label = f"seed {seed} step {step} ({op})"
        check_version(t, t.version, rng, tally, label, con)
        older = [v for v in seen[:-1] if t._readable(v)]
        if older and rng.random() < 0.4:
            check_version(t, int(rng.choice(older)), rng, tally, label + " time travel")
    elapsed = time.perf_counter() - t0
    recall = tally.ann_hits / max(tally.ann_wanted, 1)
    print(f"seed {seed}: {STEPS} steps in {elapsed:.0f}s; paths {tally.paths}; "
          f"ANN recall {recall:.3f} over {tally.ann_wanted} answers")
    assert recall >= TARGET, f"recall {recall:.3f} over the ANN paths ({tally.paths})"
    assert {"graph", "probe", "exact", "filtered-exact"} <= set(tally.paths), tally.paths
