"""SQL failures as :class:`~embed_assets.QueryError`.

Each is also an instance of the DuckDB exception class the failure belongs to
(``duckdb.BinderException``, ``duckdb.InvalidInputException``...), so code written
against a plain DuckDB connection (``except duckdb.Error``) keeps catching it; a failure
of the store under a statement (an unknown version in ``"t@99"``) is also the store's
exception (``VersionNotFoundError``...), so both kinds of ``except`` keep working.
"""

from __future__ import annotations

import itertools

import duckdb

from ..errors import (
    EmbedAssetsError,
    QueryError,
    StorageError,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
)

_TYPES: dict[tuple[type[BaseException], type[EmbedAssetsError] | None], type[QueryError]] = {}


class UnknownColumnError(QueryError, duckdb.BinderException):
    """A ``key :=`` / ``vector :=`` of ``knn``/``similarity_join`` names no column of its
    table; both a :class:`~embed_assets.QueryError` and a ``duckdb.BinderException``."""


def error_type(base: type[BaseException], store: type[EmbedAssetsError] | None = None) -> type[QueryError]:
    """The QueryError class that is also a ``base`` (a DuckDB exception class) and, where
    given, the ``store`` exception a statement met (it keeps that one's name)."""
    if issubclass(base, QueryError) and store is None:
        return base
    t = _TYPES.get((base, store))
    if t is None:
        bases: tuple[type[BaseException], ...] = (QueryError,)
        if store is not None and not issubclass(store, QueryError):
            bases += (store,)
        if issubclass(base, duckdb.Error) and not issubclass(base, QueryError):
            bases += (base,)
        name = "QueryError" if len(bases) == 1 or store is None else store.__name__
        t = _TYPES[(base, store)] = type(name, bases, {"__module__": "embed_assets.errors",
                                                        "__doc__": QueryError.__doc__})
    return t


def refused(message: str) -> QueryError:
    """A statement refused before it ran (bad ``k``, NULL vector...): what DuckDB would
    raise as invalid input, phrased in the user's terms."""
    return error_type(duckdb.InvalidInputException)(message)


def from_store(exc: EmbedAssetsError) -> QueryError:
    """A failure of the store while a statement was prepared (``"t@nope"``, a table that
    vanished) as a QueryError that is also the store's exception and the DuckDB exception
    DuckDB gives the like (a missing version is a missing catalog entry)."""
    if isinstance(exc, VersionNotFoundError | TableNotFoundError):
        base: type[duckdb.Error] = duckdb.CatalogException
    elif isinstance(exc, ValidationError):
        base = duckdb.InvalidInputException
    elif isinstance(exc, StorageError):
        base = duckdb.IOException
    else:
        base = duckdb.Error
    return error_type(base, type(exc))(str(exc))


# Our functions, whose own messages ("knn: ...") DuckDB's error() prefixes with its category.
_OWN = ("knn", "similarity_join", "hybrid_search", "mat_inverse")
_OWN_PREFIXES = ("vec_", "list_vec_")
_INVALID = "Invalid Input Error: "
# DuckDB's refusals of an argument's type, which name the built-in function inside our
# macro the value reached ('list_inner_product(STRING_LITERAL, ...)'), not the macro.
_TYPE_REFUSALS = ("No function matches the given name and argument types",
                  "Could not choose a best candidate function", "Parameter type needs to be",
                  "No matching aggregate function", "Cannot mix values of type")
_UNMATCHED = "() does not support the supplied arguments"


def _ours(name: str) -> bool:
    name = name.lower()
    return name in _OWN or name.startswith(_OWN_PREFIXES)


def from_duckdb(exc: duckdb.Error, udf_error: BaseException | None, query: str | None = None) -> QueryError:
    """A DuckDB failure as a QueryError: the message of the exception a Python function
    of ours raised when that is what failed (DuckDB only carries it as text, wrapped in its
    own frame dump), else DuckDB's first line; an argument of the wrong type given to a
    vector macro of ``query`` is named by that macro."""
    source: BaseException = exc if udf_error is None else udf_error
    lines = [ln for ln in str(source).splitlines() if ln.strip()]
    message = lines[0].strip() if lines else type(source).__name__
    if message.startswith(_INVALID) and _ours(message[len(_INVALID):].split(":", 1)[0]):
        message = message[len(_INVALID):]
    if _UNMATCHED in message and "Macro " in message:
        # the signature DuckDB lists on later lines says what the macro takes
        fn = message.split("Macro ", 1)[1].split("()", 1)[0]
        takes = [ln.strip() for ln in lines[1:] if ln.strip().startswith(fn + "(")]
        if takes and _ours(fn):
            message = f"{fn}: these arguments do not match {' or '.join(takes)}"
    if udf_error is None and query is not None:
        message = _macro_argument(message, query) or message
    return error_type(type(exc))(message)


def _macro_argument(message: str, query: str) -> str | None:
    """``vec_norm: an argument has the wrong type (VARCHAR): vectors are lists of
    numbers`` for DuckDB's refusal of a type deep inside a vector macro; None when the
    statement calls none, or the function DuckDB names is one the statement calls."""
    cast = "can't be cast to the destination type" in message and message.rstrip().endswith("]")
    if not cast and not any(r in message for r in _TYPE_REFUSALS):
        return None
    called = _called(query)
    macros = [name for name in called if name.startswith(_OWN_PREFIXES) or name == "mat_inverse"]
    if not macros:
        return None
    named = _named_call(message)
    if named is not None:
        if named[0].lower() in called:
            return None  # the user's own call: DuckDB's words are about it
        types = named[1].replace("STRING_LITERAL", "VARCHAR").replace("_LITERAL", "")
    else:
        types = message.split("Type ", 1)[1].split(" with value", 1)[0] if cast and "Type " in message else ""
    shown = f" ({types})" if types else ""
    return f"{', '.join(macros)}: an argument has the wrong type{shown}: vectors are lists of numbers"


def _called(query: str) -> list[str]:
    """The names a statement calls (a name followed by "("), lower-cased, by DuckDB's
    tokenizer (a string or a comment holding such text is not a call)."""
    try:
        toks = duckdb.tokenize(query)
    except Exception:  # not SQL DuckDB can read: nothing is named
        return []
    out: list[str] = []
    for (pos, _), (nxt, _) in itertools.pairwise(toks):
        name = query[pos:nxt].strip().strip('"').lower()
        if query[nxt] == "(" and name and name not in out:
            out.append(name)
    return out


def _named_call(message: str) -> tuple[str, str] | None:
    """The quoted call DuckDB names in a message (``'len(INTEGER_LITERAL)'``) as (name,
    argument types)."""
    for quote in ("'", '"'):
        parts = message.split(quote)
        for inner in parts[1::2]:
            if "(" in inner and inner.endswith(")"):
                name, _, args = inner.partition("(")
                return name, args[:-1]
    return None
