"""embed_assets: a versioned embedding store on LanceDB, driven by Dagster, queried from DuckDB.

The package is layered; each layer imports only the ones below it (import-linter checks
this in CI, see ``.importlinter``)::

    cli, dagster          command line, Dagster integration (the only Dagster imports)
    sql                   connect(), versioned views, macros, UDFs, the ea_vec extension
    train                 training snapshots; the digits CNN trained and evaluated
    embed                 embedders, and one embedding plan run by executors
    index                 building and tuning ANN indexes to a recall target
    store                 tables, writes, versions and tags, search, the shared cache
    kernels               distances, normalising, top-k, the in-memory IVF probe
    errors, _config       the exception tree, settings read from the environment

This module is the composition root: the one place where the layers are wired together
(the store calls back into the index policy to rebuild a tuned index after a rollback).

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

from ._version import __version__
from .embed import (
    DEFAULT_MODEL,
    EMBED_BACKENDS,
    EfficientNetEmbedder,
    Embedder,
    EmbedResult,
    HashEmbedder,
    ImageEmbedder,
    ImageLimits,
    OnnxEmbedder,
    OpenVinoEmbedder,
    RayEmbedError,
    RayEmbedResult,
    SentenceTransformerEmbedder,
    SentenceTransformerImageEmbedder,
    TorchImageEmbedder,
    content_hash,
    default_embedder,
    embed_images,
    embed_table,
    embed_table_ray,
    search_by_image,
)
from .errors import (
    EmbedAssetsError,
    KeyNotFoundError,
    QueryError,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
)
from .index import (
    IndexReport,
    build_index,
    build_text_index,
    freshness,
    rebuild_after_rollback,
    refresh_index,
)
from .serve import Client
from .sql import SQLConnection, connect, run_sql
from .store import (
    CleanupReport,
    EmbeddingTable,
    Fusion,
    Plan,
    Store,
    TableMeta,
    VersionInfo,
    WriteResult,
    default_store_uri,
    set_index_keeper,
)
from .train import Snapshot, cleanup_snapshots, open_snapshot, snapshot

set_index_keeper(rebuild_after_rollback)

__all__ = [
    "DEFAULT_MODEL",
    "EMBED_BACKENDS",
    "CleanupReport",
    "Client",
    "EfficientNetEmbedder",
    "EmbedAssetsError",
    "EmbedResult",
    "Embedder",
    "EmbeddingTable",
    "Fusion",
    "HashEmbedder",
    "ImageEmbedder",
    "ImageLimits",
    "IndexReport",
    "KeyNotFoundError",
    "OnnxEmbedder",
    "OpenVinoEmbedder",
    "Plan",
    "QueryError",
    "RayEmbedError",
    "RayEmbedResult",
    "SQLConnection",
    "SchemaMismatchError",
    "SentenceTransformerEmbedder",
    "SentenceTransformerImageEmbedder",
    "Snapshot",
    "StorageError",
    "Store",
    "TableMeta",
    "TableNotFoundError",
    "TorchImageEmbedder",
    "ValidationError",
    "VersionInfo",
    "VersionNotFoundError",
    "WriteResult",
    "__version__",
    "build_index",
    "build_text_index",
    "cleanup_snapshots",
    "connect",
    "content_hash",
    "default_embedder",
    "default_store_uri",
    "embed_images",
    "embed_table",
    "embed_table_ray",
    "freshness",
    "open_snapshot",
    "refresh_index",
    "run_sql",
    "search_by_image",
    "snapshot",
]
