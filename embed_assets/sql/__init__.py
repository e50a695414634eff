"""DuckDB over the store: connect(), versioned views, vector macros, knn and similarity joins.

Modules: :mod:`._connect` opens a session, :mod:`._connection` is the session (views
that follow the store, the knn fast path), :mod:`._functions` the Python UDFs behind the
macros (:mod:`._udf` their kernels), :mod:`._pushdown` answers DuckDB's pushed filters
from memory, :mod:`._native` loads the ea_vec C extension, ``macros/`` holds the SQL.
"""

from . import _native as native
from ._connect import connect, run_sql
from ._connection import SQLConnection, UnknownColumnError
from ._files import extension_path, load_macros, macro_file
from ._format import format_result

__all__ = [
    "SQLConnection",
    "UnknownColumnError",
    "connect",
    "extension_path",
    "format_result",
    "load_macros",
    "macro_file",
    "native",
    "run_sql",
]
