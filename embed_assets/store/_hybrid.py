"""Full-text and hybrid search: BM25 over Lance's inverted index, fused with vector ranks.

Why both: a vector finds what a text *means*, and misses a term that only appears
literally (a package name, an error code, a version string); BM25 finds the term and
misses the paraphrase. Reciprocal rank fusion (Cormack et al., SIGIR 2009) combines the
two rankings without calibrating their scores against each other: a row's fused score is

    score = w_vector / (rrf_k + vector_rank) + w_text / (rrf_k + text_rank)

(a missing rank adds nothing), with ``rrf_k = 60`` and both weights 1 by default. A
larger ``w_text`` favours literal matches, a larger ``rrf_k`` flattens the advantage of
the first few ranks. Each side contributes its top ``candidates`` rows (``max(4k, 50)``).

The inverted index (``INVERTED``, Lance's BM25) is built by
:func:`embed_assets.index.build_text_index` on the text column and a string key; rows
written after it are searched too (Lance scans unindexed fragments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lance
import numpy as np
import pyarrow as pa

from ..errors import ValidationError, first_line
from ..kernels import pair_distances
from ._cache import CACHE, VersionKey, take_rows
from ._meta import VECTOR_COLUMN, TableMeta

RRF_K = 60
SEARCH_MODES = ("vector", "text", "hybrid")


@dataclass(frozen=True)
class Fusion:
    """How ``mode="hybrid"`` combines the two rankings (see the module docstring)."""

    vector_weight: float = 1.0
    text_weight: float = 1.0
    rrf_k: int = RRF_K

    def check(self) -> Fusion:
        if self.vector_weight < 0 or self.text_weight < 0 or \
                not np.isfinite([self.vector_weight, self.text_weight]).all():
            raise ValidationError("fusion weights must be finite and >= 0")
        if not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            raise ValidationError(f"rrf_k must be a positive integer, got {self.rrf_k!r}")
        return self


def text_columns(ds: lance.LanceDataset) -> list[str]:
    """The columns of this version that have an inverted (full-text) index."""
    out: list[str] = []
    for idx in ds.describe_indices():
        if "Inverted" in idx.type_url or str(getattr(idx, "index_type", "")).upper() == "INVERTED":
            out.extend(c for c in idx.field_names if c not in out)
    return out


def text_hits(name: str, ds: lance.LanceDataset, meta: TableMeta, text: str, n: int,
              where: str | None) -> pa.Table:
    """(key, text_score) of the ``n`` best BM25 matches, best first."""
    from lance.query import MultiMatchQuery

    if not isinstance(text, str) or not text.strip():
        raise ValidationError("text search needs a non-empty query text")
    cols = text_columns(ds)
    if not cols:
        raise ValidationError(
            f"table {name!r} has no full-text index at this version: build one with "
            "build_text_index(table) or `embed-assets index NAME --text`")
    try:
        res = ds.to_table(full_text_query=MultiMatchQuery(text, cols), columns=[meta.key, "_score"],
                          limit=n, filter=where, prefilter=where is not None)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"text search on {name!r} failed: {first_line(exc)}") from None
    res = res.rename_columns([("text_score" if c == "_score" else c) for c in res.column_names])
    return res.sort_by([("text_score", "descending")])


def fuse(vector_keys: list[Any], text_keys: list[Any], k: int, fusion: Fusion,
         ) -> list[tuple[Any, float, int | None, int | None]]:
    """(key, fused score, vector rank, text rank) of the k best, best first; ties keep
    the vector ranking's order, then the text ranking's."""
    vr = {key: i + 1 for i, key in enumerate(vector_keys)}
    tr = {key: i + 1 for i, key in enumerate(text_keys)}
    keys = list(dict.fromkeys([*vector_keys, *text_keys]))

    def score(key: Any) -> float:
        s = 0.0
        if key in vr:
            s += fusion.vector_weight / (fusion.rrf_k + vr[key])
        if key in tr:
            s += fusion.text_weight / (fusion.rrf_k + tr[key])
        return s

    order = sorted(keys, key=lambda key: (-score(key), vr.get(key, 1 << 30), tr.get(key, 1 << 30)))
    return [(key, score(key), vr.get(key), tr.get(key)) for key in order[:k]]


def rows_by_key(key: VersionKey, ds: lance.LanceDataset, meta: TableMeta, keys: list[Any],
                columns: list[str] | None) -> tuple[pa.Table, np.ndarray]:
    """The rows of ``keys`` (in that order) and their offsets in the version."""
    idx = CACHE.key_index(key, ds, meta.key)
    if idx is None:
        raise ValidationError("the table's keys do not fit in the cache for a hybrid search")
    offsets = idx.lookup(keys)
    return take_rows(key, ds, offsets, columns), offsets


def vector_distances(ds: lance.LanceDataset, offsets: np.ndarray, q: np.ndarray,
                     metric: str) -> np.ndarray:
    """The exact distance of each row at ``offsets`` to ``q``, in the search convention
    (cosine 1 - cos, dot 1 - dot, l2 Euclidean)."""
    if not len(offsets):
        return np.zeros(0, np.float32)
    vec = ds.take(offsets.tolist(), columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN)
    mat = np.stack(vec.to_numpy(zero_copy_only=False)).astype(np.float32)
    qs = np.broadcast_to(q, mat.shape)
    if metric == "dot":
        return (1.0 - mat @ q).astype(np.float32)
    return pair_distances(mat, qs, metric).astype(np.float32)
