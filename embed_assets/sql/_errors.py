"""SQL failures as :class:`~embed_assets.QueryError`.

Each is also an instance of the DuckDB exception class the failure belongs to
(``duckdb.BinderException``, ``duckdb.InvalidInputException``...), so code written
against a plain DuckDB connection (``except duckdb.Error``) keeps catching it.
"""

from __future__ import annotations

import duckdb

from ..errors import QueryError

_TYPES: dict[type[BaseException], type[QueryError]] = {}


class UnknownColumnError(QueryError, duckdb.BinderException):
    """A ``key :=`` / ``vector :=`` of ``knn``/``similarity_join`` names no column of its
    table; both a :class:`~embed_assets.QueryError` and a ``duckdb.BinderException``."""


def error_type(base: type[BaseException]) -> type[QueryError]:
    """The QueryError class that is also a ``base`` (a DuckDB exception class)."""
    if issubclass(base, QueryError):
        return base
    t = _TYPES.get(base)
    if t is None:
        bases = (QueryError, base) if issubclass(base, duckdb.Error) else (QueryError,)
        t = _TYPES[base] = type("QueryError", bases, {"__module__": "embed_assets.errors",
                                                      "__doc__": QueryError.__doc__})
    return t


def refused(message: str) -> QueryError:
    """A statement refused before it ran (bad ``k``, NULL vector...): what DuckDB would
    raise as invalid input, phrased in the user's terms."""
    return error_type(duckdb.InvalidInputException)(message)


def from_duckdb(exc: duckdb.Error, udf_error: BaseException | None) -> QueryError:
    """A DuckDB failure as a QueryError: the message of the exception a Python function
    of ours raised when that is what failed (DuckDB only carries it as text, wrapped in its
    own frame dump), else DuckDB's first line."""
    source: BaseException = exc if udf_error is None else udf_error
    lines = [ln for ln in str(source).splitlines() if ln.strip()]
    message = lines[0].strip() if lines else type(source).__name__
    return error_type(type(exc))(message)
