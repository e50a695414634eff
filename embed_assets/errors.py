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

The CLI prints any of them as one line and exits non-zero without a traceback.
"""

from __future__ import annotations

__all__ = [
    "EmbedAssetsError",
    "QueryError",
    "SchemaMismatchError",
    "StorageError",
    "TableNotFoundError",
    "ValidationError",
    "VersionNotFoundError",
    "first_line",
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


class QueryError(EmbedAssetsError):
    """A SQL statement failed. Carries DuckDB's first message line; a statement may have
    had effects before it failed (SQL can write), unlike a :class:`ValidationError`."""


def first_line(exc: BaseException) -> str:
    """A foreign exception in one line (its message's first line, else its type), for
    messages that name the cause without a traceback."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
