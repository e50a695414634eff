"""DuckDB over the store: connect(), versioned views, vector macros, knn and similarity joins.

Modules, in the order a statement meets them: :mod:`._connect` opens a session,
:mod:`._connection` is the session, :mod:`._rewrite` reads each statement's ``knn`` /
``similarity_join`` calls from DuckDB's parse tree (:mod:`._tree`) and lets the store
answer what it can (:mod:`._answer`), :mod:`._registry` keeps the store views current,
:mod:`._errors` phrases failures as QueryErrors (:mod:`._relation` also those met while the
rows of a relation from ``sql()`` are fetched). :mod:`._functions` are the Python UDFs
behind the macros (:mod:`._udf`, :mod:`._ranking` their kernels), :mod:`._pushdown` answers
DuckDB's pushed filters from memory, :mod:`._native` loads the ea_vec C extension,
``macros/`` holds the SQL. The reference is docs/sql.md.
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
