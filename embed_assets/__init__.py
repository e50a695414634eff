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

This module is the composition root: the one place where the layers are wired together.
Importing it changes nothing anywhere: the one upward call (a rollback to before a
table's ANN index rebuilds the index through the index policy) is wired per store, by
:class:`Store` below passing ``index_keeper`` (the index layer's
``rebuild_after_rollback``, imported when a rollback first needs it).

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

import os
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    ConflictError,
    EmbedAssetsError,
    KeyNotFoundError,
    MissingExtraError,
    ProductionMovedError,
    QueryError,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
)
from .store import EmbeddingTable, Fusion, IndexKeeper
from .store import Store as _LayerStore


def _rebuild_after_rollback(*args: object, **kwargs: object) -> None:
    # The index layer is imported when a rollback first needs it, not with the package.
    from .index import rebuild_after_rollback

    rebuild_after_rollback(*args, **kwargs)  # type: ignore[arg-type]


class Store(_LayerStore):
    __doc__ = _LayerStore.__doc__

    def __init__(self, uri: str | os.PathLike[str] | None = None, *,
                 storage_options: dict[str, str] | None = None,
                 index_keeper: IndexKeeper | None = _rebuild_after_rollback) -> None:
        super().__init__(uri, storage_options=storage_options, index_keeper=index_keeper)


# The other public names load with their subpackage on first use (PEP 562): a process
# that only searches a store never imports polars, DuckDB, the embedders, Dagster's
# neighbours or the serving client. Importing them all up front cost ~1.2 of the 1.5 s
# that `import embed_assets` took (benchmarks/RESULTS.md, cold start, issue 29).
_LAZY = {
    "EfficientNetEmbedder": "embed", "Embedder": "embed", "EmbedResult": "embed",
    "HashEmbedder": "embed", "ImageEmbedder": "embed", "OnRay": "embed",
    "RayEmbedError": "embed", "SentenceTransformerEmbedder": "embed",
    "SentenceTransformerImageEmbedder": "embed", "Streamed": "embed",
    "TorchImageEmbedder": "embed", "default_embedder": "embed", "embed_table": "embed",
    "search_by_image": "embed",
    "build_index": "index", "build_text_index": "index", "freshness": "index",
    "refresh_index": "index",
    "Client": "serve", "ServeError": "serve",
    "SQLConnection": "sql", "UnknownColumnError": "sql", "connect": "sql",
    "Snapshot": "train", "cleanup_snapshots": "train", "open_snapshot": "train",
    "snapshot": "train",
}
if TYPE_CHECKING:  # the lazy names, for type checkers and the API docs (griffe reads these)
    from .embed import (
        EfficientNetEmbedder,
        Embedder,
        EmbedResult,
        HashEmbedder,
        ImageEmbedder,
        OnRay,
        RayEmbedError,
        SentenceTransformerEmbedder,
        SentenceTransformerImageEmbedder,
        Streamed,
        TorchImageEmbedder,
        default_embedder,
        embed_table,
        search_by_image,
    )
    from .index import build_index, build_text_index, freshness, refresh_index
    from .serve import Client, ServeError
    from .sql import SQLConnection, UnknownColumnError, connect
    from .train import Snapshot, cleanup_snapshots, open_snapshot, snapshot

_SUBPACKAGES = frozenset({"cli", "dagster", "embed", "index", "kernels", "recipes", "serve",
                          "sql", "store", "train"})

# The public names (tests/test_public_api.py pins them): what a user imports. Everything
# else lives in its subpackage (embed_assets.store, .index, .sql, .embed, .recipes,
# .dagster, .train, .serve), documented there where it is meant for users.
__all__ = [
    "Client",
    "ConflictError",
    "EfficientNetEmbedder",
    "EmbedAssetsError",
    "EmbedResult",
    "Embedder",
    "EmbeddingTable",
    "Fusion",
    "HashEmbedder",
    "ImageEmbedder",
    "KeyNotFoundError",
    "MissingExtraError",
    "OnRay",
    "ProductionMovedError",
    "QueryError",
    "RayEmbedError",
    "SQLConnection",
    "SchemaMismatchError",
    "SentenceTransformerEmbedder",
    "SentenceTransformerImageEmbedder",
    "ServeError",
    "Snapshot",
    "StorageError",
    "Store",
    "Streamed",
    "TableNotFoundError",
    "TorchImageEmbedder",
    "UnknownColumnError",
    "ValidationError",
    "VersionNotFoundError",
    "__version__",
    "build_index",
    "build_text_index",
    "cleanup_snapshots",
    "connect",
    "default_embedder",
    "embed_table",
    "freshness",
    "open_snapshot",
    "refresh_index",
    "search_by_image",
    "snapshot",
]

# Names the package root exported before issue 22 trimmed it to the public ones: they
# still resolve (from their subpackage), with a DeprecationWarning naming the new home.
_MOVED = {
    "DEFAULT_MODEL": "embed_assets.embed",
    "EMBED_BACKENDS": "embed_assets.embed",
    "content_hash": "embed_assets.embed",
    "RayEmbedResult": "embed_assets.embed",
    "IndexReport": "embed_assets.index",
    "run_sql": "embed_assets.sql",
    "CleanupReport": "embed_assets.store",
    "Plan": "embed_assets.store",
    "TableMeta": "embed_assets.store",
    "default_store_uri": "embed_assets.store",
    # embed_table is the one entry point (issue 22): images with image=, Ray with executor=OnRay
    "embed_images": "embed_assets.embed",
    "embed_table_ray": "embed_assets.embed",
    "VersionInfo": "embed_assets.store",
    "WriteResult": "embed_assets.store",
    # backends are chosen by name (default_embedder(model, backend="onnx")); the classes
    # and the executors' default stay in embed_assets.embed
    "OnnxEmbedder": "embed_assets.embed",
    "OpenVinoEmbedder": "embed_assets.embed",
    "InProcess": "embed_assets.embed",
    "ImageLimits": "embed_assets.embed",
}


def __getattr__(name: str) -> object:
    import importlib

    sub = _LAZY.get(name)
    if sub is not None:
        value = getattr(importlib.import_module(f"{__name__}.{sub}"), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(f"embed_assets.{name} moved: import it from {home}", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
