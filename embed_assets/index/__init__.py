"""ANN index policy: build an index tuned to a recall target, keep it fresh.

Sits above the store: it reads and writes tables through :mod:`embed_assets.store`.
"""

from ._build import EXACT_THRESHOLD_ROWS, MIN_ANN_ROWS, build_index, exact_threshold_rows
from ._build import rebuild_after_rollback as rebuild_after_rollback
from ._refresh import freshness, needs_retrain, partition_freshness, refresh_index
from ._report import INDEX_TYPES, IndexReport, default_params
from ._text import build_text_index
from ._tune import tune_memory_probe

__all__ = [
    "EXACT_THRESHOLD_ROWS",
    "INDEX_TYPES",
    "MIN_ANN_ROWS",
    "IndexReport",
    "build_index",
    "build_text_index",
    "default_params",
    "exact_threshold_rows",
    "freshness",
    "needs_retrain",
    "partition_freshness",
    "rebuild_after_rollback",
    "refresh_index",
    "tune_memory_probe",
]
