"""The versioned store: tables, writes (one path per mode), versions and tags, search.

Knows nothing of Dagster, DuckDB or the model; reads what it needs about an ANN index
(:mod:`._index_facts`) and shares one cache of decoded versions (:data:`CACHE`).
"""

from ._arrow import as_arrow, normalize_types
from ._cache import (
    CACHE,
    OFFSET_COLUMN,
    KeyIndex,
    MatrixCache,
    VersionKey,
    load_matrix,
    probe_kind,
    take_rows,
)
from ._compare import Comparison
from ._experiments import ExperimentInfo, ExperimentResult, PromotionResult
from ._filters import eq as filter_eq
from ._filters import in_list as filter_in
from ._filters import literal as sql_literal
from ._filters import quote_ident
from ._hybrid import RRF_K, SEARCH_MODES, Fusion
from ._index_facts import (
    CONFIG_KEY,
    VECTOR_INDEX_NAME,
    centroids,
    ensure_scalar_indexes,
    forget_facts,
    has_vector_index,
    index_config,
    search_defaults,
    vector_index_type,
)
from ._meta import (
    METRICS,
    PROP_PREFIX,
    SCAN_ALL,
    VECTOR_COLUMN,
    WRITE_MODES,
    TableMeta,
    VersionRef,
    WriteMode,
    is_local,
    local_path,
    version_number,
)
from ._results import CleanupReport, VersionInfo, WriteResult
from ._retention import DEFAULT_GRACE
from ._rollback import IndexKeeper, set_index_keeper
from ._search import BROAD_FILTER, Plan, VersionContext
from ._store import Store, TableInfo, absolute_uri, default_store_uri
from ._subsets import row_addresses
from ._table import EmbeddingTable, table_fingerprint, table_identity
from ._validation import as_duration, to_vector_array, validate_keys, validate_table_name, validate_tag
from ._writes import check_partition

__all__ = [
    "BROAD_FILTER",
    "CACHE",
    "CONFIG_KEY",
    "DEFAULT_GRACE",
    "METRICS",
    "OFFSET_COLUMN",
    "PROP_PREFIX",
    "RRF_K",
    "SCAN_ALL",
    "SEARCH_MODES",
    "VECTOR_COLUMN",
    "VECTOR_INDEX_NAME",
    "WRITE_MODES",
    "CleanupReport",
    "Comparison",
    "EmbeddingTable",
    "ExperimentInfo",
    "ExperimentResult",
    "Fusion",
    "IndexKeeper",
    "KeyIndex",
    "MatrixCache",
    "Plan",
    "PromotionResult",
    "Store",
    "TableInfo",
    "TableMeta",
    "VersionContext",
    "VersionInfo",
    "VersionKey",
    "VersionRef",
    "WriteMode",
    "WriteResult",
    "absolute_uri",
    "as_arrow",
    "as_duration",
    "centroids",
    "check_partition",
    "default_store_uri",
    "ensure_scalar_indexes",
    "filter_eq",
    "filter_in",
    "forget_facts",
    "has_vector_index",
    "index_config",
    "is_local",
    "load_matrix",
    "local_path",
    "normalize_types",
    "probe_kind",
    "quote_ident",
    "row_addresses",
    "search_defaults",
    "set_index_keeper",
    "sql_literal",
    "table_fingerprint",
    "table_identity",
    "take_rows",
    "to_vector_array",
    "validate_keys",
    "validate_table_name",
    "validate_tag",
    "vector_index_type",
    "version_number",
]
