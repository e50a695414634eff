"""Exceptions raised by embed_assets: one tree, rooted at :class:`EmbedAssetsError`.

::

    EmbedAssetsError
    ├── ValidationError (ValueError)      bad input or arguments; nothing was written
    │   └── SchemaMismatchError           another model, dimension, key or columns
    ├── TableNotFoundError (LookupError)  no such table (the message lists those that exist)
    ├── VersionNotFoundError (LookupError) no such version or tag (lists what exists)
    ├── StorageError (OSError)            the storage failed: I/O, permissions, credentials,
    │                                     a corrupt or unreadable table
    ├── ConflictError                     concurrent commits kept conflicting; nothing written
    └── QueryError                        a SQL statement failed (DuckDB's message)

The CLI prints any of them as one line and exits 2 without a traceback. :func:`describe`
turns a foreign exception (Lance, DuckDB, pyarrow) into such a line.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ConflictError",
    "EmbedAssetsError",
    "MissingExtraError",
    "QueryError",
    "SchemaMismatchError",
    "StorageError",
    "TableNotFoundError",
    "ValidationError",
    "VersionNotFoundError",
    "describe",
]


class EmbedAssetsError(Exception):
    """Base class of every error embed_assets raises on purpose."""


class ValidationError(EmbedAssetsError, ValueError):
    """Input data or arguments failed validation; nothing was written."""


class SchemaMismatchError(ValidationError):
    """Data does not match the table: another model, dimension, key column or columns."""


class TableNotFoundError(EmbedAssetsError, LookupError):
    """The named table does not exist in the store."""


class VersionNotFoundError(EmbedAssetsError, LookupError):
    """The requested version or tag does not exist for the table."""


class StorageError(EmbedAssetsError, OSError):
    """The storage under the store failed: unreadable or corrupt table files, permissions,
    credentials, an unreachable object store. The message names the table and the cause."""


class ConflictError(EmbedAssetsError):
    """A write kept conflicting with concurrent commits (or conflicted in a way no retry
    can fix) and was given up; nothing of it was committed."""


class MissingExtraError(EmbedAssetsError, ImportError):
    """A feature's optional dependency is not installed. The message names the extra that
    installs it: ``pip install 'embed_assets[dagster]'``."""


class QueryError(EmbedAssetsError):
    """A SQL statement failed. Carries DuckDB's first message line; a statement may have
    had effects before it failed (SQL can write), unlike a :class:`ValidationError`."""


# Rust source locations Lance appends to its messages ("..., /home/runner/work/lance/lance/
# rust/lance/src/dataset.rs:123:45"), with the separator before them.
_RUST_PATH_RE = re.compile(r"[\s,;:]*(?:\(|\[)?\s*(?:[A-Za-z]:)?[^\s,;()\[\]]*\.rs:\d+(?::\d+)?"
                           r"\s*(?:\)|\])?")
# DuckDB's wrapping of an exception raised inside a Python UDF.
_UDF_RE = re.compile(r"^(?:Invalid Input Error: )?Python exception occurred while executing "
                     r"the UDF: (?:[A-Za-z_][\w.]*(?:Error|Exception): )?")
# The Python frames DuckDB appends after a UDF's message ("At:" then "  file(line): fn").
_FRAME_RE = re.compile(r"^\s*(?:At:|\S+\.py\(\d+\): .*)\s*$")


def describe(exc: BaseException | str) -> str:
    """A foreign exception (or message) as one line for people: its first meaningful line
    without Lance's Rust source paths, DuckDB's "Python exception occurred while executing
    the UDF" wrapper and the Python frame lines after it; the type name if nothing is left.

    >>> describe(ValueError("bad filter, /home/x/lance/rust/lance/src/dataset.rs:1:2"))
    'bad filter'
    >>> describe("Invalid Input Error: Python exception occurred while executing the UDF: "
    ...          "ValueError: knn: dimension mismatch\\n\\nAt:\\n  /x/_functions.py(1): f")
    'knn: dimension mismatch'
    """
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not _FRAME_RE.match(ln)]
    line = lines[0].strip() if lines else ""
    line = _UDF_RE.sub("", line)
    line = _RUST_PATH_RE.sub("", line).strip().rstrip(",;:").strip()
    if line:
        return line
    return "error" if isinstance(exc, str) else type(exc).__name__


def __getattr__(name: str) -> Any:
    # first_line was a second name for describe (issue 22: one name per thing); code
    # written against the old name keeps working, with a warning.
    if name == "first_line":
        import warnings

        warnings.warn("embed_assets.errors.first_line is deprecated: use describe",
                      DeprecationWarning, stacklevel=2)
        return describe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_EMPTY_COLUMNS_RE = re.compile(
    r'Star expression "COLUMNS\(list_filter\(\[(?P<cols>.*?)\], \(c -> \(c = (?P<want>.*?)\)\)\)\)" '
    r"resulted in an empty set of columns")
_CALL_RE = re.compile(r"\b(?P<fn>knn|similarity_join)\s*\(\s*'(?P<a>(?:[^']|'')*)'"
                      r"(?:\s*,\s*'(?P<b>(?:[^']|'')*)')?", re.IGNORECASE)
_STRING_RE = re.compile(r"'((?:[^']|'')*)'")


def unknown_column_message(text: str, query: str,
                           columns_of: Any = None) -> str | None:
    """DuckDB's binder text for a ``key :=`` / ``vector :=`` (or ``left_key``/``right_key``)
    of ``knn``/``similarity_join`` naming no column (``COLUMNS(list_filter(...)) resulted in
    an empty set of columns``) as one line naming the column, the argument and the table;
    None for any other message. ``columns_of(table)`` (optional) lists a table's columns,
    to tell which of a join's two tables lacks the column."""
    m = _EMPTY_COLUMNS_RE.search(text)
    if m is None:
        return None
    wanted = [w.replace("''", "'") for w in _STRING_RE.findall(m.group("want"))]
    if not wanted:
        return None
    col = wanted[0]
    cols = [c.replace("''", "'") for c in _STRING_RE.findall(m.group("cols"))]
    cols = [c for c in cols if not c.startswith("__")]
    calls = list(_CALL_RE.finditer(query))
    fn = calls[0].group("fn").lower() if calls else "knn/similarity_join"
    arg_m = re.search(r"\b(key|vector|left_key|right_key)\s*:=\s*'" + re.escape(col.replace("'", "''"))
                      + "'", query, re.IGNORECASE)
    arg = arg_m.group(1).lower() if arg_m else ("vector" if col == "vector" else "key")
    arg_text = f"the default {arg} := '{col}'" if arg_m is None else f"{arg} :="
    table = None
    for call in calls:
        names = [n.replace("''", "'") for n in (call.group("a"), call.group("b")) if n is not None]
        if call.group("fn").lower() == "knn" or arg == "left_key":
            names = names[:1]
        elif arg == "right_key":
            names = names[1:]
        for n in names:
            if columns_of is None:
                table = table or n
                continue
            try:
                have = columns_of(n)
            except Exception:  # not a table we can describe
                have = None
            if have is not None and [c for c in have if not c.startswith("__")] == cols:
                table, fn = n, call.group("fn").lower()
                break
        if table is not None and columns_of is not None:
            break
    where = f" in table {table!r}" if table else ""
    shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "")
    return f"{fn}: no column named {col!r} ({arg_text}){where}; its columns are {shown}"
