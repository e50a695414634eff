"""Finding ``knn('view', <vector>, k, ...)`` calls that the connect() wrapper can answer
before DuckDB runs.

Why: a ``knn`` through the table macro pays DuckDB's fixed costs on every statement
(binding three UNION ALL branches, a Python UDF call, a scan that fetches the k rows;
~17-20 ms at 120k rows, against ~2 ms for the store's own search; benchmarks/RESULTS.md).
When everything the macro needs can be known before the statement runs, the wrapper
searches the store itself, registers the k result rows as an Arrow table, and the
statement reads that table in place of the call. The query vector may be:

* a bound positional parameter (``?``, with or without a cast);
* any expression that does not refer to the statement around it: a scalar subquery
  (``(SELECT vector FROM centroids WHERE section = 'editors')``, what analysts write),
  a list literal, a cast. It is evaluated first, on the same connection, by one
  ``SELECT``. An expression that cannot stand alone (a LATERAL reference to another
  table's column) is rewritten into a call of a vectorised row function instead
  (:mod:`._knnrows`).

``k`` is an integer literal; the named arguments ``filter :=``, ``metric :=`` and
``use_index :=`` may follow as literals. Anything else (``vector :=``, ``inv_cov :=``,
``$n`` parameters) runs the macro, and so does anything the store refuses (the macro then
raises its own error). Both paths return the same rows; tests/test_sql_store.py and
tests/test_sql_knn_forms.py check it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

# Named arguments of knn the fast path understands (others run the macro).
FAST_OPTIONS = ("filter", "metric", "use_index")


@dataclass(frozen=True)
class KnnCall:
    start: int  # character span of ``knn(...)`` in the statement
    end: int
    view: str
    param: int | None  # the query vector's index among the positional parameters, or
    expr: str | None  # the expression that computes it (no parameters in it)
    k: int
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@functools.lru_cache(maxsize=256)
def tokens(query: str) -> list[tuple[int, int, str, object]]:
    """(start, end, text, type) of each token; statements repeat, so this is memoised."""
    toks = duckdb.tokenize(query)
    out: list[tuple[int, int, str, object]] = []
    for i, (pos, typ) in enumerate(toks):
        end = toks[i + 1][0] if i + 1 < len(toks) else len(query)
        text = query[pos:end].rstrip()
        out.append((pos, pos + len(text), text, typ))
    return out


def find_knn_calls(query: str) -> list[KnnCall]:
    """The ``knn('<name>', <vector>, <int>[, option := literal]...)`` calls of a statement
    that uses only ``?`` parameters; [] when anything else is in the way."""
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
            call = _match(query, toks, i, n_params)
            if call is not None:
                calls.append(call[0])
                n_params += call[0].param is not None
                i = call[1]
                continue
        i += 1
    return calls


def _argument_end(toks: list[tuple[int, int, str, object]], j: int) -> int | None:
    """The index of the ``,`` or ``)`` that ends the argument starting at ``j``."""
    depth = 0
    while j < len(toks):
        t = toks[j][2]
        if depth == 0 and t in (",", ")"):
            return j
        if t in ("(", "["):
            depth += 1
        elif t in (")", "]"):
            depth -= 1
        j += 1
    return None


def _literal(tok: tuple[int, int, str, object]) -> tuple[bool, Any]:
    tt = duckdb.token_type
    text, typ = tok[2], tok[3]
    if typ == tt.string_const and text.startswith("'"):
        return True, text[1:-1].replace("''", "'")
    if typ == tt.numeric_const:
        try:
            return True, int(text)
        except ValueError:
            return True, float(text)
    if text.lower() in ("true", "false"):
        return True, text.lower() == "true"
    if text.lower() == "null":
        return True, None
    return False, None


def _match(query: str, toks: list[tuple[int, int, str, object]], i: int,
           param: int) -> tuple[KnnCall, int] | None:
    tt = duckdb.token_type
    texts = [t[2] for t in toks]
    if texts[i + 1] != "(" or toks[i + 2][3] != tt.string_const or texts[i + 3] != ",":
        return None
    view = texts[i + 2][1:-1].replace("''", "'")
    a = i + 4
    end = _argument_end(toks, a)
    if end is None or end == a or texts[end] != ",":
        return None
    arg = texts[a:end]
    if arg[0] == "?" and "?" not in arg[1:] and (len(arg) == 1 or arg[1] == "::"):
        pidx, expr = param, None
    elif "?" in arg:
        return None  # a parameter inside an expression: the macro binds it
    else:
        pidx, expr = None, query[toks[a][0]:toks[end - 1][1]]
    j = end + 1
    if j + 1 >= len(toks) or toks[j][3] != tt.numeric_const or texts[j + 1] not in (",", ")"):
        return None
    try:
        k = int(texts[j])
    except ValueError:
        return None
    if k < 1:
        return None
    j += 1
    options: dict[str, Any] = {}
    while j < len(toks) and texts[j] == ",":
        if j + 4 > len(toks) - 1 or texts[j + 2] != ":=":
            return None
        name = texts[j + 1].lower()
        ok, value = _literal(toks[j + 3])
        if name not in FAST_OPTIONS or not ok or texts[j + 4] not in (",", ")"):
            return None
        options[name] = value
        j += 4
    if j >= len(toks) or texts[j] != ")":
        return None
    return KnnCall(toks[i][0], toks[j][1], view, pidx, expr, k, options), j + 1


@dataclass(frozen=True)
class StoreSearch:
    """How the store's search answers a knn call's options (``search()``'s arguments)."""

    metric: str
    use_index: bool | None
    where: str | None


def store_search(options: dict[str, Any], meta: Any) -> StoreSearch | None:
    """The search for a call's literal options on a view with TableMeta ``meta``; None
    leaves the call to the macro (mahalanobis needs inv_cov; a non-literal type)."""
    metric = str(options.get("metric") or meta.metric).lower()
    use_index = options.get("use_index", True)
    where = options.get("filter")
    if metric not in ("cosine", "dot", "l2") or not isinstance(use_index, bool) \
            or not (where is None or isinstance(where, str)):
        return None
    return StoreSearch(metric, None if use_index and metric == meta.metric else False, where)


def sql_distances(res: Any) -> Any:
    """A search result with ``distance`` as DOUBLE, the type the macro returns."""
    i = res.column_names.index("distance")
    return res.set_column(i, "distance", pc.cast(res.column(i), pa.float64()))


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
