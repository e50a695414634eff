"""Exceptions raised by embed_assets: one tree, rooted at :class:`EmbedAssetsError`.

::

    EmbedAssetsError
    ├── ValidationError (ValueError)      bad input or arguments; nothing was written
    │   └── SchemaMismatchError           another model, dimension, key or columns
    ├── TableNotFoundError (LookupError)  no such table (the message lists those that exist)
    ├── VersionNotFoundError (LookupError) no such version or tag (lists what exists)
    ├── KeyNotFoundError (LookupError)    keys asked for with missing="error" are not stored
    ├── StorageError (OSError)            the storage failed: I/O, permissions, credentials,
    │                                     a corrupt or unreadable table
    ├── ConflictError                     concurrent commits kept conflicting; nothing written
    │   └── ProductionMovedError          a promotion found production changed since the
    │                                     experiment's base; production left as it was
    └── QueryError                        a SQL statement failed or was refused; also the
                                          duckdb.Error subclass DuckDB raised

The CLI prints any of them as one line and exits 2 without a traceback. :func:`describe`
turns a foreign exception (Lance, DuckDB, pyarrow) into such a line.
"""

from __future__ import annotations

import re

__all__ = [
    "ConflictError",
    "EmbedAssetsError",
    "KeyNotFoundError",
    "MissingExtraError",
    "ProductionMovedError",
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
    """The requested version, tag or experiment does not exist for the table."""


class KeyNotFoundError(EmbedAssetsError, LookupError):
    """Keys asked for (``get(..., missing="error")``) are not stored at that version; the
    message names them."""


class StorageError(EmbedAssetsError, OSError):
    """The storage under the store failed: unreadable or corrupt table files, permissions,
    credentials, an unreachable object store. The message names the table and the cause."""


class ConflictError(EmbedAssetsError):
    """A write kept conflicting with concurrent commits (or conflicted in a way no retry
    can fix) and was given up; nothing of it was committed."""


class ProductionMovedError(ConflictError):
    """A promotion found that production changed since the experiment was based on it
    (rows written, a rollback): promoting would drop those changes, so nothing was
    committed. ``promote(..., resync=True)`` re-embeds the changed rows first."""

    def __init__(self, message: str, *, base_version: int = 0, production_version: int = 0) -> None:
        super().__init__(message)
        self.base_version = base_version
        self.production_version = production_version


class MissingExtraError(EmbedAssetsError, ImportError):
    """A feature's optional dependency is not installed. The message names the extra that
    installs it: ``pip install 'embed_assets[dagster]'``."""


class QueryError(EmbedAssetsError):
    """A SQL statement failed or was refused (a bad ``k``, a NULL query vector, a filter
    that is not one predicate...), in the user's terms: the message of the function that
    failed, else DuckDB's first line. Raised through ``connect()`` it is also the
    ``duckdb.Error`` subclass DuckDB raised, and where the store failed under the statement
    (``"t@nope"``) also the store's exception (:class:`VersionNotFoundError`...). A
    statement may have had effects before it failed (SQL can write), unlike a
    :class:`ValidationError`."""


# Rust source locations Lance appends to its messages ("..., /home/runner/work/lance/lance/
# rust/lance/src/dataset.rs:123:45"), with the separator before them.
_RUST_PATH_RE = re.compile(r"[\s,;:]*(?:\(|\[)?\s*(?:[A-Za-z]:)?[^\s,;()\[\]]*\.rs:\d+(?::\d+)?"
                           r"\s*(?:\)|\])?")
# DuckDB's wrapping of an exception raised inside a Python UDF, for exceptions from outside
# the SQL layer (which reports a failing function's own exception, see sql/_errors.py).
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


def __getattr__(name: str) -> object:
    # first_line was a second name for describe (issue 22: one name per thing); code
    # written against the old name keeps working, with a warning.
    if name == "first_line":
        import warnings

        warnings.warn("embed_assets.errors.first_line is deprecated: use describe",
                      DeprecationWarning, stacklevel=2)
        return describe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
