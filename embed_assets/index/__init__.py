"""ANN index policy: build an index tuned to a recall target, keep it fresh."""

from ._build import (
    EXACT_THRESHOLD_ROWS,
    INDEX_TYPES,
    IndexReport,
    build_index,
    freshness,
    needs_retrain,
    refresh_index,
)

__all__ = [
    "EXACT_THRESHOLD_ROWS",
    "INDEX_TYPES",
    "IndexReport",
    "build_index",
    "freshness",
    "needs_retrain",
    "refresh_index",
]
