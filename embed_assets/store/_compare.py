"""The comparison of an experiment with production, on the table's own rows.

Each sampled row is a query on both sides, with each side's own vector of that row (its
model's embedding of the row's text), so two models of different dimension or metric
compare as they would serve: the row itself is left out of its neighbours. Queries the
user passes as texts need the two embedders. Figures:

* ``overlap_at_k``: mean share of the top-k neighbours both sides return;
* ``rank_correlation``: mean Spearman correlation of the ranks of the neighbours both
  return (queries with fewer than two in common are left out);
* ``nn_changed``: share of queries whose nearest neighbour differs;
* ``centroid_shift``: the drift check's figure (cosine distance of the sampled rows' mean
  vectors), for an experiment in the same space only (same dimension; else None);
* ``same_label_at_k`` (with ``label_column``): per side, mean share of the top-k
  neighbours with the query row's label (e.g. the same Debian section);
* ``recall_at_k`` (with ``pairs``): per side, share of labelled pairs (a, b) with b among
  a's top-k;
* ``latency_ms``: per side, median time of one ``search`` (what a served query costs);
* ``index_build_seconds``: per side, from the index report of the version (None: no index).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from . import _filters as sqlx
from ._index_facts import index_config, vector_index_type
from ._meta import VECTOR_COLUMN, TableMeta


@dataclass
class Comparison:
    """The report of :meth:`~embed_assets.store.EmbeddingTable.compare`."""

    table: str
    experiment: str
    production_version: int
    experiment_version: int
    production_model: str | None
    experiment_model: str | None
    k: int
    queries: int
    figures_by_name: dict[str, Any]
    per_query: pa.Table = field(repr=False)

    def figures(self) -> dict[str, Any]:
        return {"production_version": self.production_version,
                "experiment_version": self.experiment_version, "k": self.k,
                "queries": self.queries, **self.figures_by_name}

    def to_arrow(self) -> pa.Table:
        """One row per figure: ``value`` for the figures of the pair, ``production`` and
        ``experiment`` for those of each side."""
        names: list[str] = []
        value: list[float | None] = []
        prod: list[float | None] = []
        exp: list[float | None] = []
        for name, v in self.figures_by_name.items():
            if name.endswith("_production"):
                continue
            if name.endswith("_experiment"):
                base = name[: -len("_experiment")]
                names.append(base)
                value.append(None)
                prod.append(_num(self.figures_by_name.get(base + "_production")))
                exp.append(_num(v))
            else:
                names.append(name)
                value.append(_num(v))
                prod.append(None)
                exp.append(None)
        return pa.table({"metric": pa.array(names, pa.string()),
                         "value": pa.array(value, pa.float64()),
                         "production": pa.array(prod, pa.float64()),
                         "experiment": pa.array(exp, pa.float64())})

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def summary(self) -> str:
        f = self.figures_by_name
        lines = [f"{self.table}: production v{self.production_version} ({self.production_model}) "
                 f"vs experiment {self.experiment!r} v{self.experiment_version} "
                 f"({self.experiment_model}), {self.queries} queries, k={self.k}",
                 f"  top-{self.k} overlap {f['overlap_at_k']:.3f}, rank correlation "
                 f"{_fmt(f.get('rank_correlation'))}, nearest neighbour changed for "
                 f"{100 * f['nn_changed']:.1f}% of rows"
                 + (f", centroid shift {f['centroid_shift']:.4f}"
                    if f.get("centroid_shift") is not None else "")]
        for what in ("same_label_at_k", "recall_at_k", "latency_ms", "index_build_seconds"):
            if f.get(f"{what}_production") is not None or f.get(f"{what}_experiment") is not None:
                lines.append(f"  {what}: production {_fmt(f.get(what + '_production'))}, "
                             f"experiment {_fmt(f.get(what + '_experiment'))}")
        return "\n".join(lines)


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def compare(table: Any, name: str, *, production: Any = None, queries: Sequence[str] | None = None,
            embedders: tuple[Any, Any] | None = None, sample: int = 200, k: int = 10,
            label_column: str | None = None, pairs: Sequence[tuple[Any, Any]] | None = None,
            latency_queries: int = 20, seed: int = 0) -> Comparison:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValidationError(f"k must be a positive integer, got {k!r}")
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 1:
        raise ValidationError(f"sample must be a positive integer, got {sample!r}")
    pds = table.dataset(production)
    eds = table._branch_ds(name)
    pref: Any = pds.version if production is None else production
    eref: Any = (name, eds.version)
    pmeta, emeta = TableMeta.infer(pds.schema), TableMeta.infer(eds.schema)
    key = pmeta.key
    if label_column is not None and label_column not in pds.schema.names:
        raise ValidationError(f"label column {label_column!r} is not a column of {table.name!r}")
    pkeys = pds.to_table(columns=[key]).column(key).to_pylist()
    common = sorted(set(pkeys) & set(eds.to_table(columns=[key]).column(key).to_pylist()),
                    key=lambda x: (str(type(x)), x))
    rng = np.random.default_rng(seed)
    shift: float | None = None
    per_query: dict[str, list[Any]] = {"query": [], "overlap": [], "rank_correlation": [],
                                       "nn_changed": []}
    figures: dict[str, Any] = {}
    if queries is not None:
        if embedders is None or len(embedders) != 2:
            raise ValidationError("queries given as texts need embedders=(production's, the experiment's)")
        qs = list(queries)
        a = _top(table, qs, k, pref, key, None, embedder=embedders[0])
        b = _top(table, qs, k, eref, key, None, embedder=embedders[1])
        labels_of = qs
    else:
        if not common:
            raise ValidationError(f"experiment {name!r} and production share no rows to compare")
        chosen = [common[i] for i in sorted(rng.choice(len(common), min(sample, len(common)),
                                                       replace=False))]
        pv, ev = _vectors(pds, key, chosen), _vectors(eds, key, chosen)
        if pv.shape[1] == ev.shape[1]:  # the drift check's centroid shift (same space only)
            shift = _centroid_shift(pv, ev)
        a = _top(table, pv, k, pref, key, chosen)
        b = _top(table, ev, k, eref, key, chosen)
        labels_of = chosen
        if label_column is not None:
            lab = dict(zip(pkeys, pds.to_table(columns=[label_column]).column(label_column)
                           .to_pylist(), strict=True))
            for side, tops in (("production", a), ("experiment", b)):
                figures[f"same_label_at_k_{side}"] = float(np.mean(
                    [sum(lab.get(n) == lab.get(q) for n in top) / k
                     for q, top in zip(chosen, tops, strict=True)]))
    for q, ta, tb in zip(labels_of, a, b, strict=True):
        common_n = [n for n in ta if n in set(tb)]
        per_query["query"].append(str(q))
        per_query["overlap"].append(len(common_n) / k)
        per_query["rank_correlation"].append(_spearman(ta, tb, common_n))
        per_query["nn_changed"].append(bool(ta[:1] != tb[:1]))
    figures = {"overlap_at_k": float(np.mean(per_query["overlap"])),
               "centroid_shift": shift,
               "rank_correlation": _mean([r for r in per_query["rank_correlation"] if r is not None]),
               "nn_changed": float(np.mean(per_query["nn_changed"])), **figures}
    if pairs:
        present = set(common)
        use = [(x, y) for x, y in pairs if x in present]
        if use:
            heads = sorted({x for x, _ in use}, key=lambda x: (str(type(x)), x))
            for side, ds, ref in (("production", pds, pref), ("experiment", eds, eref)):
                by_head = dict(zip(heads, _top(table, _vectors(ds, key, heads), k, ref, key, heads),
                                   strict=True))
                figures[f"recall_at_k_{side}"] = sum(y in by_head[x] for x, y in use) / len(use)
    vecs = _vectors(pds, key, labels_of[:latency_queries]) if queries is None else None
    evecs = _vectors(eds, key, labels_of[:latency_queries]) if queries is None else None
    figures["latency_ms_production"] = _latency(table, vecs, pref, k, key,
                                                queries, embedders[0] if embedders else None)
    figures["latency_ms_experiment"] = _latency(table, evecs, eref, k, key,
                                                queries, embedders[1] if embedders else None)
    for side, ds in (("production", pds), ("experiment", eds)):
        rep = index_config(ds, table.identity) or {}
        figures[f"index_build_seconds_{side}"] = (rep.get("build_seconds")
                                                  if vector_index_type(ds) else None)
    return Comparison(table.name, name, pds.version, eds.version, pmeta.model, emeta.model, k,
                      len(per_query["query"]), figures, pa.table(per_query))


def _vectors(ds: Any, key: str, keys: list[Any]) -> np.ndarray:
    """The stored vectors of ``keys``, in that order."""
    if not keys:
        return np.zeros((0, 1), np.float32)
    got = ds.to_table(columns=[key, VECTOR_COLUMN], filter=sqlx.in_list(key, keys))
    vec = got.column(VECTOR_COLUMN).combine_chunks()
    mat = vec.values.to_numpy(zero_copy_only=False).reshape(len(vec), -1)
    pos = {k: i for i, k in enumerate(got.column(key).to_pylist())}
    return np.ascontiguousarray(mat[[pos[k] for k in keys]], np.float32)


def _top(table: Any, queries: Any, k: int, ref: Any, key: str, own: list[Any] | None,
         embedder: Any = None) -> list[list[Any]]:
    """Each query's top-k keys at ``ref``; a query that is a stored row leaves itself out."""
    extra = 1 if own is not None else 0
    res = table.search_batch(queries, k=k + extra, version=ref, columns=[key], embedder=embedder)
    qcol = res.column("query").to_pylist()
    kcol = res.column(key).to_pylist()
    n = len(queries)
    out: list[list[Any]] = [[] for _ in range(n)]
    for q, hit in zip(qcol, kcol, strict=True):
        if own is not None and hit == own[q]:
            continue
        out[q].append(hit)
    return [o[:k] for o in out]


def _spearman(a: list[Any], b: list[Any], common: list[Any]) -> float | None:
    if len(common) < 2:
        return None
    ra = np.array([a.index(x) for x in common], float)
    rb = np.array([b.index(x) for x in common], float)
    ra, rb = np.argsort(np.argsort(ra)), np.argsort(np.argsort(rb))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _centroid_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between the mean vectors of the sampled rows on each side, as the
    drift asset check computes it between two versions (0 = same direction)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    na, nb = float(np.linalg.norm(ca)), float(np.linalg.norm(cb))
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return float(1.0 - ca @ cb / (na * nb))


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _latency(table: Any, vecs: np.ndarray | None, ref: Any, k: int, key: str,
             texts: Sequence[str] | None, embedder: Any) -> float | None:
    """Median milliseconds of one search at ``ref`` (after one warm-up search)."""
    qs: list[Any] = list(vecs) if vecs is not None else list(texts or [])[:20]
    if not qs:
        return None
    table.search(qs[0], k=k, version=ref, columns=[key], embedder=embedder)
    times = []
    for q in qs:
        t0 = time.perf_counter()
        table.search(q, k=k, version=ref, columns=[key], embedder=embedder)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)
