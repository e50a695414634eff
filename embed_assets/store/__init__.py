"""The versioned store: tables, writes (one path per mode), versions and tags, search.

Knows nothing of Dagster, DuckDB or the model.
"""

from ._arrow import as_arrow
from ._filters import eq as filter_eq
from ._filters import in_list as filter_in
from ._filters import literal as sql_literal
from ._filters import quote_ident
from ._store import (
    SCAN_ALL,
    VECTOR_COLUMN,
    CleanupReport,
    EmbeddingTable,
    Store,
    TableMeta,
    VersionInfo,
    VersionRef,
    WriteMode,
    WriteResult,
    default_store_uri,
)

__all__ = [
    "SCAN_ALL",
    "VECTOR_COLUMN",
    "CleanupReport",
    "EmbeddingTable",
    "Store",
    "TableMeta",
    "VersionInfo",
    "VersionRef",
    "WriteMode",
    "WriteResult",
    "as_arrow",
    "default_store_uri",
    "filter_eq",
    "filter_in",
    "quote_ident",
    "sql_literal",
]
