"""Asset checks for embedding tables.

Integrity checks (finite vectors, expected dimension, no zero vectors, unique keys) are
*blocking* and fail with ERROR, so a run stops before downstream assets consume a broken
table. Index freshness and drift against the previous version are WARN: worth a look,
not worth stopping a pipeline.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    multi_asset_check,
)

from ..index import freshness, partition_freshness
from ..kernels import batch_distances, top_k_rows
from ..store import CACHE, VECTOR_INDEX_NAME, EmbeddingTable, load_matrix
from ._compat import CoercibleToAssetKey
from .metadata import VERSION_KEY, lance_table_name

INTEGRITY_CHECKS = ("vectors_finite", "vector_dimension", "no_zero_vectors", "unique_keys")
WARN_CHECKS = ("index_freshness", "drift")


def _version_vectors(t: EmbeddingTable, version: int) -> tuple[pa.Table, np.ndarray]:
    """The keys (in row order) and the raw vectors of one version; the vectors come from
    the library's cache of immutable versions, shared with search and SQL."""
    ds = t.dataset(version)
    keys = t.read(version, columns=[t.meta_at(version).key])
    mat = CACHE.matrix(t.cache_key(ds.version), ds, "raw")
    return keys, (mat if mat is not None else load_matrix(ds, "raw"))


def neighbour_overlap(a_keys: list[Any], a: np.ndarray, b_keys: list[Any], b: np.ndarray, *,
                      k: int = 10, sample: int = 100, metric: str = "cosine") -> tuple[float, int]:
    """Mean share of the k nearest neighbours kept between two versions, on a fixed sample.

    The sample is the keys present in both versions, evenly spaced in sorted order, so the
    same two versions always give the same number. Returns ``(overlap, sample size)``.
    """
    ia = {key: i for i, key in enumerate(a_keys)}
    ib = {key: i for i, key in enumerate(b_keys)}
    common = sorted(set(ia) & set(ib), key=str)
    if len(common) <= k:
        return 1.0, 0
    pick = [common[i] for i in np.linspace(0, len(common) - 1, min(sample, len(common))).astype(int)]

    def topk(keys: list[Any], mat: np.ndarray, idx: dict[Any, int]) -> list[set[Any]]:
        rows = [idx[p] for p in pick]
        d = batch_distances(mat[rows], mat, metric)
        d[np.arange(len(rows)), rows] = np.inf  # a row is not its own neighbour
        return [{keys[j] for j in row} for row in top_k_rows(d, k)]

    na, nb = topk(a_keys, a, ia), topk(b_keys, b, ib)
    return float(np.mean([len(x & y) / k for x, y in zip(na, nb, strict=True)])), len(pick)


def centroid_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance between the mean vectors of two versions (0 = same direction)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    na, nb = float(np.linalg.norm(ca)), float(np.linalg.norm(cb))
    if na == 0 or nb == 0:
        return 0.0 if na == nb else 1.0
    return float(1.0 - ca @ cb / (na * nb))


# The settings of a checks definition ride in its specs' metadata (shown in the UI beside
# each check), so a rollback job handed the definition runs the very same checks.
CHECK_SETTINGS_KEY = "embed_assets/check_settings"


@dataclass(frozen=True)
class EmbeddingCheckSettings:
    """What :func:`build_embedding_checks` checks the table behind an asset against."""

    table: str
    expected_dimension: int | None = None
    max_centroid_shift: float = 0.05
    min_neighbour_overlap: float = 0.8
    drift_sample: int = 100
    max_unindexed_share: float = 0.1
    # which checks run (default: all six) and severity overrides ("ERROR" / "WARN"):
    # an ERROR check blocks downstream assets, a WARN one does not
    include: tuple[str, ...] | None = None
    severities: tuple[tuple[str, str], ...] = ()

    def enabled(self) -> list[str]:
        names = (*INTEGRITY_CHECKS, *WARN_CHECKS)
        return [n for n in names if self.include is None or n in self.include]

    def severity(self, check: str) -> AssetCheckSeverity:
        default = "ERROR" if check in INTEGRITY_CHECKS else "WARN"
        return AssetCheckSeverity[dict(self.severities).get(check, default)]

    def blocking(self, check: str) -> bool:
        return self.severity(check) == AssetCheckSeverity.ERROR

    def descriptions(self) -> dict[str, str]:
        """One line per check, as the UI shows it."""
        return {
            "vectors_finite": "every vector is finite (no NaN or infinity)",
            "vector_dimension": "vectors have the expected dimension",
            "no_zero_vectors": "no vector is all zeros (cosine distance is undefined for it)",
            "unique_keys": "keys are unique and not null",
            "index_freshness": f"at most {self.max_unindexed_share:.0%} of rows are outside the ANN index",
            "drift": (f"vs the previous version: centroid shift <= {self.max_centroid_shift} and "
                      f"neighbour overlap@10 >= {self.min_neighbour_overlap} on {self.drift_sample} "
                      "fixed keys"),
        }


def check_settings_of(checks: AssetChecksDefinition) -> tuple[AssetKey, EmbeddingCheckSettings]:
    """The asset and settings of a definition made by :func:`build_embedding_checks`.

    Raises
    ------
    ValueError
        If ``checks`` was not made by :func:`build_embedding_checks`.
    """
    for spec in checks.check_specs:
        raw = (spec.metadata or {}).get(CHECK_SETTINGS_KEY)
        if raw is not None:
            value = dict(raw.value if isinstance(raw, MetadataValue) else raw)
            if value.get("include") is not None:
                value["include"] = tuple(value["include"])
            value["severities"] = tuple(tuple(p) for p in value.get("severities") or ())
            return spec.asset_key, EmbeddingCheckSettings(**value)
    raise ValueError(f"{checks.node_def.name!r} was not made by build_embedding_checks "
                     "(its specs carry no check settings)")


def build_embedding_checks(
    asset: CoercibleToAssetKey,
    *,
    table: str | None = None,
    store_key: str = "embed_store",
    expected_dimension: int | None = None,
    max_centroid_shift: float = 0.05,
    min_neighbour_overlap: float = 0.8,
    drift_sample: int = 100,
    max_unindexed_share: float = 0.1,
    name: str | None = None,
    include: Sequence[str] | None = None,
    severities: Mapping[str, str] | None = None,
) -> AssetChecksDefinition:
    """Checks on the latest version of the table behind ``asset``.

    ``expected_dimension`` defaults to the dimension recorded when the table was created.
    Hand the result to :func:`~embed_assets.dagster.build_version_jobs` (``checks=``) and
    a rollback evaluates the same checks on the version it makes. ``include`` picks
    checks by name (default all); ``severities`` maps a check to ``ERROR`` (blocking) or
    ``WARN``.
    """
    known = (*INTEGRITY_CHECKS, *WARN_CHECKS)
    for n in [*(include or []), *(severities or {})]:
        if n not in known:
            raise ValueError(f"unknown check {n!r}; the checks are {', '.join(known)}")
    for n, sev in (severities or {}).items():
        if sev not in ("ERROR", "WARN"):
            raise ValueError(f"severity of {n}: ERROR or WARN, got {sev!r}")
    asset_key = AssetKey.from_coercible(asset)
    settings = EmbeddingCheckSettings(
        table=table or lance_table_name(asset_key), expected_dimension=expected_dimension,
        max_centroid_shift=max_centroid_shift, min_neighbour_overlap=min_neighbour_overlap,
        drift_sample=drift_sample, max_unindexed_share=max_unindexed_share,
        include=tuple(include) if include is not None else None,
        severities=tuple(sorted((severities or {}).items())))
    descriptions = settings.descriptions()
    spec_md = {CHECK_SETTINGS_KEY: MetadataValue.json(asdict(settings))}
    specs = [AssetCheckSpec(n, asset=asset_key, blocking=settings.blocking(n),
                            description=descriptions[n], metadata=spec_md)
             for n in settings.enabled()]

    @multi_asset_check(specs=specs, name=name or f"{settings.table}_checks",
                       required_resource_keys={store_key})
    def _checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        store = getattr(context.resources, store_key).get_store()
        yield from evaluate_embedding_checks(store.table(settings.table), asset_key, settings)

    return _checks


def evaluate_embedding_checks(t: EmbeddingTable, asset_key: AssetKey,
                              settings: EmbeddingCheckSettings) -> list[AssetCheckResult]:
    """The six checks on the latest version of ``t``, as the checks definition reports them.

    Shared by the checks definition and the rollback job, so a rolled-back version is
    judged exactly as a materialised one.
    """
    version = t.version
    meta = t.meta
    tbl, mat = _version_vectors(t, version)
    base = {VERSION_KEY: MetadataValue.int(version)}

    def result(check: str, passed: bool, severity: AssetCheckSeverity,
               **md: Any) -> AssetCheckResult:
        return AssetCheckResult(check_name=check, asset_key=asset_key, passed=bool(passed),
                                severity=severity, metadata={**base, **md})

    err = AssetCheckSeverity.ERROR
    out = []
    finite = np.isfinite(mat).all(axis=1)
    bad_keys = tbl.column(meta.key).filter(pa.array(~finite)).to_pylist()[:10]
    out.append(result("vectors_finite", finite.all(), err,
                      non_finite_rows=int((~finite).sum()), examples=MetadataValue.json(
                          [str(k) for k in bad_keys])))
    want = settings.expected_dimension or meta.dimension
    out.append(result("vector_dimension", mat.shape[1] == want, err,
                      dimension=int(mat.shape[1]), expected=int(want)))
    zero = ~np.any(mat != 0, axis=1)
    out.append(result("no_zero_vectors", not zero.any(), err, zero_vectors=int(zero.sum())))
    keys = tbl.column(meta.key)
    dups = int(tbl.num_rows - len(pc.unique(keys)))
    out.append(result("unique_keys", dups == 0 and keys.null_count == 0, err,
                      duplicate_keys=dups, null_keys=int(keys.null_count)))
    out.append(_index_freshness(t, version, result, settings.max_unindexed_share))
    out.append(_drift(t, version, tbl, mat, finite, result, settings.max_centroid_shift,
                      settings.min_neighbour_overlap, settings.drift_sample))
    enabled = settings.enabled()
    return [AssetCheckResult(check_name=r.check_name, asset_key=r.asset_key, passed=r.passed,
                             severity=settings.severity(str(r.check_name)), metadata=r.metadata)
            for r in out if r.check_name in enabled]


def _partition_table(parts: list[dict[str, Any]]) -> MetadataValue:
    lines = ["| partition | rows | last written (version) | search plan | unindexed rows |",
             "|---|---:|---:|---|---:|"]
    lines += [f"| {p['value']} | {p['rows']} | {p['last_written']} | {p['plan']} | "
              f"{p['unindexed_rows']} |" for p in parts]
    return MetadataValue.md("\n".join(lines))


def _index_freshness(t: EmbeddingTable, version: int, result: Any, max_share: float) -> AssetCheckResult:
    parts = partition_freshness(t)
    if parts:
        # One row per partition: which sub-index serves it, and how fresh its rows are.
        stale = [str(p["value"]) for p in parts if p["rows"] and p["unindexed_rows"] / p["rows"] > max_share]
        got = _whole_table_freshness(t, version, result, max_share)
        md = {**got.metadata, "partitions": _partition_table(parts),
              "stale_partitions": MetadataValue.json(stale)}
        return result("index_freshness", got.passed and not stale, AssetCheckSeverity.WARN, **md)
    return _whole_table_freshness(t, version, result, max_share)


def _whole_table_freshness(t: EmbeddingTable, version: int, result: Any,
                           max_share: float) -> AssetCheckResult:
    warn = AssetCheckSeverity.WARN
    fresh = freshness(t)  # the index policy's own measure, on the latest version
    if fresh["pending_rebuild"]:  # a rollback or build stopped before the index was ready
        return result("index_freshness", False, warn, note=str(fresh["pending_rebuild"]),
                      remedy="refresh_index(table) or `embed-assets index NAME --refresh`")
    if not fresh["indexed"]:
        return result("index_freshness", True, warn,
                      note="no ANN index yet: searches scan exactly, nothing can be stale")
    share = float(fresh["share_unindexed"])
    return result("index_freshness", share <= max_share, warn, index=VECTOR_INDEX_NAME,
                  unindexed_rows=int(fresh["unindexed_rows"]),
                  unindexed_share=MetadataValue.float(round(share, 4)))


def _drift(t: EmbeddingTable, version: int, tbl: pa.Table, mat: np.ndarray, finite: np.ndarray,
           result: Any, max_shift: float, min_overlap: float, sample: int) -> AssetCheckResult:
    warn = AssetCheckSeverity.WARN
    earlier = [v.version for v in t.versions(with_properties=False) if v.version < version]
    if not earlier:
        return result("drift", True, warn, note="first version: nothing to compare with")
    prev = max(earlier)
    meta, pmeta = t.meta_at(version), t.meta_at(prev)
    ptbl, pmat = _version_vectors(t, prev)
    if ptbl.num_rows == 0 or tbl.num_rows == 0:
        return result("drift", True, warn, previous_version=prev, note="an empty version")
    if pmat.shape[1] != mat.shape[1]:
        return result("drift", False, warn, previous_version=prev,
                      note=f"dimension changed {pmat.shape[1]} -> {mat.shape[1]}")
    pfin = np.isfinite(pmat).all(axis=1)
    keys = [k for k, ok in zip(tbl.column(meta.key).to_pylist(), finite, strict=True) if ok]
    pkeys = [k for k, ok in zip(ptbl.column(pmeta.key).to_pylist(), pfin, strict=True) if ok]
    cur, old = mat[finite], pmat[pfin]
    shift = centroid_shift(old, cur)
    overlap, n = neighbour_overlap(pkeys, old, keys, cur, sample=sample, metric=meta.metric)
    passed = shift <= max_shift and overlap >= min_overlap
    return result("drift", passed, warn, previous_version=prev,
                  centroid_shift=MetadataValue.float(round(shift, 6)),
                  neighbour_overlap_at_10=MetadataValue.float(round(overlap, 4)),
                  sample_keys=n)
