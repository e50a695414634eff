"""The versioned store: tables, writes (one path per mode), versions and tags, search.

Knows nothing of Dagster, DuckDB or the model; reads what it needs about an ANN index
(:mod:`._index_facts`) and keeps what it holds in memory in one object, :data:`STATE`
(a :class:`StoreState`: bounded, evicted per table; see "What the library holds in
memory" in docs/store.md).

``__all__`` is what a user of the store layer imports (tests/test_public_api.py pins it).
The names imported as ``X as X`` (and the three filter helpers) are the store's side of
the layers above it (the index policy, SQL, Dagster, serving): importable, not public.
"""

from . import _filters
from ._arrow import as_arrow as as_arrow
from ._arrow import normalize_types as normalize_types
from ._cache import CACHE as CACHE
from ._cache import OFFSET_COLUMN as OFFSET_COLUMN
from ._cache import STATE, StoreState
from ._cache import Facts as Facts
from ._cache import KeyIndex as KeyIndex
from ._cache import MatrixCache as MatrixCache
from ._cache import VersionKey as VersionKey
from ._cache import large_allocations_unpooled as large_allocations_unpooled
from ._cache import load_matrix as load_matrix
from ._cache import load_partitioned as load_partitioned
from ._cache import probe_kind as probe_kind
from ._cache import release_freed_memory as release_freed_memory
from ._cache import take_rows as take_rows
from ._compare import Comparison
from ._experiments import ExperimentInfo, ExperimentResult, PromotionResult
from ._filters import quote_ident as quote_ident
from ._hybrid import RRF_K as RRF_K
from ._hybrid import SEARCH_MODES, Fusion
from ._index_facts import CONFIG_KEY as CONFIG_KEY
from ._index_facts import VECTOR_INDEX_NAME as VECTOR_INDEX_NAME
from ._index_facts import centroids as centroids
from ._index_facts import ensure_scalar_indexes as ensure_scalar_indexes
from ._index_facts import has_vector_index as has_vector_index
from ._index_facts import index_config
from ._index_facts import search_defaults as search_defaults
from ._index_facts import vector_index_type as vector_index_type
from ._meta import METRICS, VECTOR_COLUMN, WRITE_MODES, TableMeta, VersionRef, WriteMode
from ._meta import PROP_PREFIX as PROP_PREFIX
from ._meta import SCAN_ALL as SCAN_ALL
from ._meta import is_local as is_local
from ._meta import local_path as local_path
from ._meta import version_number as version_number
from ._results import CleanupReport, VersionInfo, WriteResult
from ._retention import DEFAULT_GRACE
from ._rollback import IndexKeeper
from ._search import BROAD_FILTER as BROAD_FILTER
from ._search import Plan
from ._search import VersionContext as VersionContext
from ._store import Store, TableInfo, default_store_uri
from ._store import absolute_uri as absolute_uri
from ._subsets import row_addresses as row_addresses
from ._table import EmbeddingTable
from ._table import table_fingerprint as table_fingerprint
from ._table import table_identity as table_identity
from ._validation import as_duration as as_duration
from ._validation import to_vector_array as to_vector_array
from ._validation import validate_keys as validate_keys
from ._validation import validate_table_name as validate_table_name
from ._validation import validate_tag as validate_tag
from ._writes import check_partition as check_partition

filter_eq, filter_in, sql_literal = _filters.eq, _filters.in_list, _filters.literal

__all__ = [
    "DEFAULT_GRACE",
    "METRICS",
    "SEARCH_MODES",
    "STATE",
    "VECTOR_COLUMN",
    "WRITE_MODES",
    "CleanupReport",
    "Comparison",
    "EmbeddingTable",
    "ExperimentInfo",
    "ExperimentResult",
    "Fusion",
    "IndexKeeper",
    "Plan",
    "PromotionResult",
    "Store",
    "StoreState",
    "TableInfo",
    "TableMeta",
    "VersionInfo",
    "VersionRef",
    "WriteMode",
    "WriteResult",
    "default_store_uri",
    "index_config",
]
