"""One rewriter for ``knn(...)`` and ``similarity_join(...)`` calls, on DuckDB's own parse tree.

Every statement run through a :class:`~embed_assets.sql.SQLConnection` passes here. Its
parse tree (:mod:`._tree`) gives each call with typed arguments: a literal, a ``?`` or
``$name`` parameter, a scalar subquery, a column of the statement around it (LATERAL),
and named options (``filter :=``, ``metric :=``...). For each call:

* its values are checked before anything runs: ``k`` must be a positive integer, a NULL
  or non-numeric query vector is refused, a ``filter :=`` must parse as one predicate, a
  table named by a parameter is looked up as a name (it stays data, see ``__ea_rows``);
* a ``knn`` on a store view whose query vector is known first (literal, parameter, an
  expression that stands alone) is searched by the store and the call node becomes a
  reference to the k result rows, registered as an Arrow table (:mod:`._answer`);
* a ``knn`` whose query vector comes from the statement around it becomes a subquery over
  a vectorised row function (:mod:`._answer`);
* everything else (a DuckDB table, ``inv_cov :=``, a ``k`` computed by the statement,
  ``similarity_join``) keeps its call, which the table macro of ``macros/store.sql`` runs.

The edited tree is printed back by DuckDB (``json_deserialize_sql``). A statement DuckDB
cannot serialise (INSERT, CREATE TABLE ... AS, PRAGMA) runs as written: its calls go to
the macros, which check ``k`` and the query vector themselves.

Printing costs ~0.25 ms, so the printed text of each (statement, rewrite) pair is kept
with a placeholder where each result table's name goes (names are fresh per statement).
"""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np

from ..errors import ValidationError
from ..store import VECTOR_COLUMN
from . import _tree
from ._answer import RowFunctions, StoreSearch, query_vector, result_table, store_search
from ._errors import refused
from ._registry import Registry
from ._tree import Node, NotConstant

FUNCTIONS = ("knn", "similarity_join")
# Positional parameters of each function; the rest are named.
_POSITIONAL = _tree.SIGNATURES
_FILTERS = ("filter", "left_filter", "right_filter")
_UNSET = object()
_SLOT = f"__ea_slot_{uuid.uuid4().hex[:12]}_"
_MAX_TEMPLATES = 256


@dataclass
class Call:
    """One call found in a parse tree."""

    fn: str
    ref: Node  # its TABLE_FUNCTION table reference (edited in place)
    args: dict[str, Node]  # argument name -> expression node
    values: dict[str, Any] = field(default_factory=dict)  # the arguments known before running

    def value(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


@dataclass(frozen=True)
class Rewritten:
    """A statement ready for DuckDB: its text, parameters, the result tables registered
    for it, and the calls found (for error messages)."""

    query: str
    params: Any
    names: list[str]
    calls: tuple[Call, ...] = ()


def find_calls(statements: list[Node]) -> list[Call]:
    """The ``knn``/``similarity_join`` calls of parse trees, arguments by name."""
    return [Call(str(ref["function"]["function_name"]).lower(), ref, _tree.arguments(ref))
            for ref in _tree.table_functions(statements, FUNCTIONS)]


def _read_values(call: Call, params: Any) -> None:
    """Fill ``call.values`` with the arguments known before the statement runs:
    literals and bound parameters (by position or by name)."""
    for name, node in call.args.items():
        p = _tree.parameter(node)
        if p is not None:
            value = _param_value(p, params)
        else:
            try:
                value = _tree.constant(node)
            except NotConstant:
                continue
        if value is not _UNSET:
            call.values[name] = value


def _param_value(p: Node, params: Any) -> Any:
    ident = str(p["identifier"])
    if isinstance(params, dict):
        return params.get(ident, _UNSET)
    if ident.isdigit() and params is not None and 0 < int(ident) <= len(params):
        return params[int(ident) - 1]
    return _UNSET


def check_call(call: Call) -> None:
    """Refuse what the call cannot run with, in the user's terms (the macro checks the
    same when a value is only known while the statement runs)."""
    if "k" in call.values:
        k = call.values["k"]
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise refused(f"{call.fn}: k must be a positive integer, got {_shown(k)}")
    for name in ("table_name", "left_table", "right_table"):
        if name in call.values and not isinstance(call.values[name], str):
            raise refused(f"{call.fn}: {name} must be a table name (a string), "
                          f"got {_shown(call.values[name])}")
    if call.fn == "knn" and "query_vector" in call.values:
        q = call.values["query_vector"]
        if q is None:
            raise refused("knn: the query vector is NULL")
        if isinstance(q, str | bytes) or not hasattr(q, "__len__"):
            raise refused(f"knn: the query vector must be a list of numbers, got {_shown(q)}")
    metric = call.values.get("metric")
    if metric is not None and not isinstance(metric, str):
        raise refused(f"{call.fn}: metric := must be the name of a metric (cosine, dot, l2 or "
                      f"mahalanobis), got {_shown(metric)}")
    for name in ("use_index", "approximate"):
        if call.values.get(name, False) is not None and not isinstance(call.values.get(name, False), bool):
            raise refused(f"{call.fn}: {name} := must be true or false, got {_shown(call.values[name])}")
    for name in _FILTERS:
        text = call.values.get(name)
        if text is None:
            continue
        if not isinstance(text, str):
            raise refused(f"{call.fn}: {name} := must be a SQL predicate (a string), got {_shown(text)}")
        try:
            _tree.filter_expression(text)
        except ValueError as exc:
            raise refused(f"{call.fn}: {name} := {_shown(text)} is not a predicate: {exc}") from None


def _shown(value: Any) -> str:
    if value is None:
        return "NULL"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the rewriter -------------------------------------------------------------------------------
class Rewriter:
    """Rewrites the statements of one connection (see the module docstring)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.con = registry.con
        self.enabled = True  # False: every call runs its macro (tests compare both)
        self.answered = 0  # knn calls answered by a result table so far
        self.rows: RowFunctions | None = None
        self._texts: OrderedDict[tuple[Any, ...], tuple[list[str], list[str]]] = OrderedDict()

    def rewrite(self, query: str, params: Any) -> Rewritten:
        """The statement to run in place of ``query`` with ``params``."""
        self.registry.prepare(query)
        lowered = query.lower()
        if "knn" not in lowered and "similarity_join" not in lowered:
            return Rewritten(query, params, [])
        parsed = _tree.read(query)
        if parsed is None:
            head, inner = _explained(query)
            if not inner:
                return Rewritten(query, params, [])
            done = self.rewrite(inner, params)
            return Rewritten(head + done.query, done.params, done.names, done.calls)
        if not parsed.calls:
            return Rewritten(query, params, [])
        calls = [Call(fn, {}, args) for fn, args in parsed.calls]
        if isinstance(params, list | tuple | dict) or params is None:
            for call in calls:
                _read_values(call, params)
                self._resolve_names(call)
                check_call(call)
        if not self.enabled or (params and parsed.n_statements > 1):
            return Rewritten(query, params, [], tuple(calls))
        with_vector = parsed.star or VECTOR_COLUMN in parsed.reads
        answers = [self._answer(call, with_vector) for call in calls]
        if not any(answers):
            return Rewritten(query, params, [], tuple(calls))
        return self._edited(query, params, calls, answers)

    def _resolve_names(self, call: Call) -> None:
        """A table named by a parameter is registered like one written in the statement."""
        for name in ("table_name", "left_table", "right_table"):
            value = call.values.get(name)
            if isinstance(value, str) and _tree.parameter(call.args[name]) is not None \
                    and self.registry.ensure(value):
                self.registry.publish_metadata()

    def _answer(self, call: Call, with_vector: bool) -> tuple[str, str] | None:
        """("table", name) for a call answered by a result table, ("rows", function) for
        one answered per outer row, None for the macro."""
        info = self.registry.views.get(call.value("table_name", _UNSET))
        if call.fn != "knn" or info is None or "k" not in call.values:
            return None
        if set(call.args) - set(call.values) - {"query_vector"}:
            return None  # an option computed by the statement: the macro binds it
        if set(call.args) - {"table_name", "query_vector", "k", "filter", "metric", "use_index", "vector"}:
            return None  # inv_cov and the like
        how = store_search(call.values, info.meta)
        if how is None:
            return None
        if "query_vector" in call.values:
            return self._table(call, info, call.values["query_vector"], how, with_vector)
        expr = call.args["query_vector"]
        if _tree.parameters(expr):
            return None  # a parameter inside an expression: the macro binds it
        if not _tree.refers_outside(expr):
            value = self._standalone(expr)
            if value is not _UNSET:
                return self._table(call, info, value, how, with_vector)
        if self.rows is None:
            self.rows = RowFunctions(self.con, self.registry)
        name = self.rows.function(info, self.registry.handle(info), int(call.values["k"]), how, with_vector)
        return None if name is None else ("rows", name)

    def _table(self, call: Call, info: Any, value: Any, how: StoreSearch,
               with_vector: bool) -> tuple[str, str]:
        q = query_vector(value, info.meta.dimension, how.metric)
        try:
            res = result_table(self.registry.handle(info), info, q, int(call.values["k"]), how, with_vector)
        except ValidationError as exc:  # the store refuses the filter: a refused statement
            raise refused(f"knn: {exc}") from None
        with self.registry.lock:
            self.answered += 1
            name = f"__ea_knn_{self.answered}"
            self.con.register(name, res)
        return ("table", name)

    def _standalone(self, expr: Node) -> Any:
        """The value of a query-vector expression that does not refer to the statement
        around it, or _UNSET when it cannot be computed alone (DuckDB then decides).
        A scalar subquery runs as its own SELECT (its plan as a scalar costs ~0.6 ms
        more); anything but exactly one row of one column is left to the macro."""
        try:
            return _tree.constant(expr)
        except NotConstant:
            pass
        try:
            if expr.get("class") == "SUBQUERY" and expr.get("subquery_type") == "SCALAR":
                rows = self.con.execute(_evaluation_sql(json.dumps(expr), True)).fetchmany(2)
                return rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else _UNSET
            row = self.con.execute(_evaluation_sql(json.dumps(expr), False)).fetchone()
        except duckdb.Error:
            return _UNSET
        return _UNSET if row is None else row[0]

    def _edited(self, query: str, params: Any, calls: list[Call],
                answers: list[tuple[str, str] | None]) -> Rewritten:
        shape = tuple(a[1] if a and a[0] == "rows" else (a[0] if a else None) for a in answers)
        key = (query, shape, isinstance(params, dict))
        got = self._texts.get(key)
        if got is None:
            got = self._texts[key] = _print_edited(query, shape)
            while len(self._texts) > _MAX_TEMPLATES:
                self._texts.popitem(last=False)
        pieces, kept = got
        names = [a[1] for a in answers if a and a[0] == "table"]
        text = pieces[0] + "".join(n + p for n, p in zip(names, pieces[1:], strict=True))
        if isinstance(params, dict):
            out: Any = {k: v for k, v in params.items() if k in kept}
        elif params is None:
            out = None
        else:
            out = [params[int(i) - 1] for i in kept]
        return Rewritten(text, out, names, tuple(calls))


@functools.lru_cache(maxsize=256)
def _explained(query: str) -> tuple[str, str]:
    """``EXPLAIN [ANALYZE] <statement>`` as its keywords and the statement explained
    (which DuckDB serialises when it is a SELECT), by DuckDB's tokens; ("", "") otherwise."""
    try:
        toks = duckdb.tokenize(query)
    except Exception:
        return "", ""
    words = [query[pos:toks[i + 1][0] if i + 1 < len(toks) else len(query)].strip().upper()
             for i, (pos, _) in enumerate(toks[:2])]
    if not words or words[0] != "EXPLAIN":
        return "", ""
    n = 2 if len(words) > 1 and words[1] == "ANALYZE" else 1
    if len(toks) <= n:
        return "", ""
    start = toks[n][0]
    return query[:start], query[start:]


@functools.lru_cache(maxsize=256)
def _evaluation_sql(expr_json: str, subquery: bool) -> str:
    """The statement that computes a standalone query vector (printed once per form)."""
    expr = json.loads(expr_json)
    if subquery:
        return _tree.unparse([_tree.statement(expr["subquery"]["node"])])
    tree = _tree.template("SELECT CAST(NULL AS FLOAT[])")
    tree[0]["node"]["select_list"][0]["child"] = expr
    return _tree.unparse(tree)


def _print_edited(query: str, shape: tuple[str | None, ...]) -> tuple[list[str], list[str]]:
    """The statement with its calls replaced as ``shape`` says (None: kept; "table": a
    result table, whose name goes between the pieces returned; else the row function of
    that name), and the parameters it still uses (positions, or names)."""
    trees = _tree.parse(query)
    assert trees is not None
    calls = find_calls(trees)
    slots = 0
    for call, how in zip(calls, shape, strict=True):
        if how == "table":
            _tree.replace(call.ref, _tree.base_table(f"{_SLOT}{slots}", call.ref))
            slots += 1
        elif how is not None:
            _tree.replace(call.ref, _rows_subquery(how, call))
    kept = _renumber(trees)
    text = _tree.unparse(trees)
    pieces = [text]
    for i in range(slots):
        head, _, tail = pieces[-1].partition(f"{_SLOT}{i}")
        pieces[-1:] = [head, tail]
    return pieces, kept


def _rows_subquery(function: str, call: Call) -> Node:
    """``(SELECT unnest(function(CAST((vector) AS FLOAT[])), max_depth := 2)) AS alias``."""
    ref = _tree.template("SELECT * FROM (SELECT unnest(__ea_fn(CAST(NULL AS FLOAT[])), max_depth := 2))")
    sub = ref[0]["node"]["from_table"]
    inner = sub["subquery"]["node"]["select_list"][0]["children"][0]
    inner["function_name"] = function
    inner["children"][0]["child"] = copy.deepcopy(call.args["query_vector"])
    sub["alias"] = call.ref.get("alias") or call.ref["function"]["function_name"]
    sub["column_name_alias"] = list(call.ref.get("column_name_alias") or [])
    return sub


def _renumber(trees: list[Node]) -> list[str]:
    """Number the positional parameters left after the edit 1..n (DuckDB wants no gaps);
    returns the original identifiers kept, in order (the names of named ones)."""
    params = _tree.parameters(trees)
    numbered = sorted({str(p["identifier"]) for p in params if str(p["identifier"]).isdigit()}, key=int)
    new = {old: str(i + 1) for i, old in enumerate(numbered)}
    for p in params:
        ident = str(p["identifier"])
        if ident in new:
            p["identifier"] = new[ident]
    for st in trees:
        st["named_param_map"] = [{"key": n, "value": i + 1} for i, n in enumerate(
            sorted({str(p["identifier"]) for p in _tree.parameters(st)}, key=_param_order))]
    named = sorted({str(p["identifier"]) for p in params if not str(p["identifier"]).isdigit()})
    return numbered or named


def _param_order(ident: str) -> tuple[int, str]:
    return (int(ident), "") if ident.isdigit() else (0, ident)


# -- for tests and tools: the calls the store answers before DuckDB runs ---------------------
@dataclass(frozen=True)
class KnnCall:
    view: str
    param: int | None  # the query vector's index among the positional parameters, or
    expr: str | None  # the expression that computes it
    k: int
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def find_knn_calls(query: str) -> list[KnnCall]:
    """The ``knn('<name>', <vector>, <int>[, option := literal]...)`` calls of a statement
    whose query vector, k and options are known before it runs."""
    trees = _tree.parse(query)
    if trees is None:
        return []
    out = []
    for call in find_calls(trees):
        _read_values(call, None)
        vec = call.args.get("query_vector")
        if call.fn != "knn" or vec is None or not isinstance(call.values.get("table_name"), str):
            continue
        options = {k: v for k, v in call.values.items() if k not in _POSITIONAL["knn"]}
        k = call.values.get("k")
        if set(call.args) - {"table_name", "query_vector", "k", "filter", "metric", "use_index"} \
                or set(call.args) - set(call.values) - {"query_vector"} \
                or not isinstance(k, int) or k < 1:
            continue
        p = _tree.parameter(vec)
        if p is not None:
            if not str(p["identifier"]).isdigit():
                continue
            out.append(KnnCall(call.values["table_name"], int(p["identifier"]) - 1, None, k, options))
        elif not _tree.parameters(vec):
            out.append(KnnCall(call.values["table_name"], None, _source(query, vec, call), k, options))
    return out


def _source(query: str, vec: Node, call: Call) -> str:
    """The text of the query-vector argument as written: from where DuckDB says it starts
    to where the ``k`` argument starts (its positions in the statement)."""
    start, end = vec.get("query_location"), call.args["k"].get("query_location")
    if isinstance(start, int) and isinstance(end, int) and start < end <= len(query):
        return query[start:end].rstrip().removesuffix(",").rstrip()
    tree = _tree.template("SELECT NULL")
    tree[0]["node"]["select_list"][0] = vec
    return _tree.unparse(tree).removeprefix("SELECT ")


def correlated_k(calls: tuple[Call, ...], message: str) -> str | None:
    """For DuckDB's "Correlated columns not supported in LIMIT/OFFSET": the call whose
    ``k`` comes from the statement around it, in the user's terms."""
    if "LIMIT/OFFSET" not in message:
        return None
    for call in calls:
        expr = call.args.get("k")
        if expr is not None and "k" not in call.values and _tree.refers_outside(expr):
            return (f"{call.fn}: k must be the same positive integer for every row, not a column "
                    "of the statement around the call")
    return None


Columns = Callable[[str], "list[str] | None"]


def unknown_column(calls: tuple[Call, ...], columns_of: Columns) -> str | None:
    """For a statement DuckDB refused while binding: the first ``key :=``/``vector :=``
    (or ``left_key``/``right_key``) of its calls that names no column of its table, as
    one line naming the column, the argument and the table's columns; None if all exist."""
    for call in calls:
        for table_arg, col_args in _COLUMN_ARGS[call.fn]:
            table = call.values.get(table_arg)
            if not isinstance(table, str):
                continue
            have = columns_of(table)
            if have is None:
                continue
            for arg in col_args:
                col, given = _column_arg(call, arg)
                if isinstance(col, str) and col not in have:
                    shown = [c for c in have if not c.startswith("__")]
                    cols = ", ".join(shown[:12]) + (", ..." if len(shown) > 12 else "")
                    label = f"{given} :=" if given else f"the default {arg} := '{col}'"
                    return (f"{call.fn}: no column named {col!r} ({label}) in table {table!r}; "
                            f"its columns are {cols}")
    return None


_COLUMN_ARGS = {"knn": (("table_name", ("vector",)),),
                "similarity_join": (("left_table", ("left_key", "vector")),
                                    ("right_table", ("right_key", "vector")))}
_DEFAULTS = {"vector": VECTOR_COLUMN, "key": "id"}


def _column_arg(call: Call, arg: str) -> tuple[Any, str | None]:
    """The column an argument names, and the argument the user wrote it in (None: the
    default)."""
    if arg in call.values:
        return call.values[arg], arg
    if arg in ("left_key", "right_key"):
        if "key" in call.values:
            return call.values["key"], "key"
        return _DEFAULTS["key"], None
    return _DEFAULTS.get(arg), None
