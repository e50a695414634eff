"""embed_assets: a versioned embedding store on LanceDB, driven by Dagster, queried from DuckDB.

Examples
--------
>>> import tempfile
>>> from embed_assets import Store, HashEmbedder, embed_table
>>> store = Store(tempfile.mkdtemp())
>>> src = {"id": [1, 2, 3], "text": ["text editor", "web browser", "image viewer"]}
>>> r = embed_table(store, "docs", src, key="id", text="text", embedder=HashEmbedder())
>>> store.table("docs").search("text editor", k=1, embedder=HashEmbedder())["id"].to_pylist()
[1]
"""

import os as _os

# Lance logs "No existing dataset ... will be created" at WARN on every new table.
_os.environ.setdefault("LANCE_LOG", "error")

from ._version import __version__
from .embed._embedders import (
    DEFAULT_MODEL,
    Embedder,
    HashEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    default_embedder,
)
from .embed._pipeline import EmbedResult, embed_table
from .errors import (
    EmbedAssetsError,
    SchemaMismatchError,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
)
from .index._build import IndexReport, build_index, freshness, refresh_index
from .sql._connection import SQLConnection, connect, run_sql
from .store._store import (
    CleanupReport,
    EmbeddingTable,
    Store,
    TableMeta,
    VersionInfo,
    WriteResult,
    default_store_uri,
)

__all__ = [
    "DEFAULT_MODEL",
    "CleanupReport",
    "EmbedAssetsError",
    "EmbedResult",
    "Embedder",
    "EmbeddingTable",
    "HashEmbedder",
    "IndexReport",
    "SQLConnection",
    "SchemaMismatchError",
    "SentenceTransformerEmbedder",
    "Store",
    "TableMeta",
    "TableNotFoundError",
    "ValidationError",
    "VersionInfo",
    "VersionNotFoundError",
    "WriteResult",
    "__version__",
    "build_index",
    "connect",
    "content_hash",
    "default_embedder",
    "default_store_uri",
    "embed_table",
    "freshness",
    "refresh_index",
    "run_sql",
]
