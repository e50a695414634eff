"""DuckDB over the store: connect(), versioned views, vector macros, knn and similarity joins."""

from ._connection import (
    SQLConnection,
    connect,
    extension_path,
    format_result,
    load_macros,
    macro_file,
    run_sql,
)

__all__ = [
    "SQLConnection",
    "connect",
    "extension_path",
    "format_result",
    "load_macros",
    "macro_file",
    "run_sql",
]
