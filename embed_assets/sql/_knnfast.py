"""Finding ``knn('view', ?, k)`` calls that the connect() wrapper can answer before DuckDB runs.

Why: a ``knn`` through the table macro pays DuckDB's fixed costs on every statement
(binding three UNION ALL branches, a Python UDF call, a scan that fetches the k rows;
~17-20 ms at 120k rows, against ~2 ms for the store's own search; benchmarks/RESULTS.md).
When the query vector is a bound positional parameter and ``k`` a literal, everything the
macro needs is known in Python before the statement runs: the wrapper searches the store
itself, registers the k result rows as an Arrow table, and the statement reads that table
in place of the call. Any other form (a subquery for the vector, named arguments, ``$n``
parameters) runs the macro, and so does anything the store refuses (the macro then
raises its own error). Both paths return the same rows; tests/test_sql_store.py checks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class KnnCall:
    start: int  # character span of ``knn(...)`` in the statement
    end: int
    view: str
    param: int  # index of the query vector among the statement's positional parameters
    k: int


@functools.lru_cache(maxsize=256)
def tokens(query: str) -> list[tuple[int, int, str, object]]:
    """(start, end, text, type) of each token; statements repeat, so this is memoised."""
    toks = duckdb.tokenize(query)
    out = []
    for i, (pos, typ) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(query)
        text = query[pos:end].rstrip()
        out.append((pos, pos + len(text), text, typ))
    return out


def find_knn_calls(query: str) -> list[KnnCall]:
    """The ``knn('<name>', ?[::TYPE], <int>)`` calls of a statement that uses only ``?``
    parameters; [] when anything else is in the way."""
    try:
        toks = tokens(query)
    except Exception:  # DuckDB will say what is wrong with the statement
        return []
    if any(t[2].startswith("$") for t in toks):
        return []
    tt = duckdb.token_type
    calls: list[KnnCall] = []
    n_params = 0
    i = 0
    while i < len(toks):
        _, _, text, typ = toks[i]
        if text == "?":
            n_params += 1
        if typ == tt.identifier and text.lower() == "knn" and i + 5 < len(toks):
            call = _match(toks, i, n_params)
            if call is not None:
                calls.append(call[0])
                n_params += 1
                i = call[1]
                continue
        i += 1
    return calls


def _match(toks: list[tuple[int, int, str, object]], i: int,
           param: int) -> tuple[KnnCall, int] | None:
    tt = duckdb.token_type
    texts = [t[2] for t in toks]
    if texts[i + 1] != "(" or toks[i + 2][3] != tt.string_const or texts[i + 3] != "," \
            or texts[i + 4] != "?":
        return None
    lit = texts[i + 2]
    view = lit[1:-1].replace("''", "'")
    j = i + 5
    if j < len(toks) and texts[j] == "::":  # a cast of the parameter, up to the next comma
        depth = 0
        while j < len(toks) and not (depth == 0 and texts[j] == ","):
            if texts[j] in ("(", "["):
                depth += 1
            elif texts[j] in (")", "]"):
                depth -= 1
            if texts[j] == "?" or depth < 0:
                return None
            j += 1
    if j + 2 >= len(toks) or texts[j] != "," or toks[j + 1][3] != tt.numeric_const \
            or texts[j + 2] != ")":
        return None
    try:
        k = int(texts[j + 1])
    except ValueError:
        return None
    if k < 1:
        return None
    return KnnCall(toks[i][0], toks[j + 2][1], view, param, k), j + 3


def may_read_column(query: str, column: str) -> bool:
    """Whether a statement could read ``column`` of a knn result: it names it, or uses
    ``*`` or ``COLUMNS(...)``. If not, the wrapper need not fetch it (the vectors of the k
    rows are a Lance ``take``, ~1 ms)."""
    try:
        toks = tokens(query)
    except Exception:
        return True
    col = column.lower()
    return any(t[2] == "*" or t[2].lower() == "columns" or col in t[2].lower() for t in toks)
