"""DuckDB's own parse tree of a statement: read, edit and print it back.

``json_serialize_sql`` returns the parse tree of a SELECT as JSON (every expression typed:
constants with their type, ``?``/``$name`` parameters, subqueries, column references,
named arguments as an ``alias``), and ``json_deserialize_sql`` prints a tree back as SQL.
The rewriter (:mod:`._rewrite`) finds ``knn``/``similarity_join`` calls in it and replaces
them by tree edits; nothing here reads SQL text with a pattern.

Both functions run on a private in-memory DuckDB connection: a user's connection may be
busy running the statement whose Python UDF asks for a parse (``__ea_rows`` builds its
statement here), and DuckDB connections are not re-entrant. ~0.25 ms a serialisation and
as much a print (duckdb 1.5, 2 shared cores); trees are cached per statement text.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb

_LOCK = threading.Lock()
_CON: duckdb.DuckDBPyConnection | None = None

Node = dict[str, Any]


class NotConstant(Exception):
    """An expression whose value needs a statement to compute."""


def _run(sql: str, arg: str) -> str:
    global _CON
    with _LOCK:
        if _CON is None:
            _CON = duckdb.connect(":memory:")
        row = _CON.execute(sql, [arg]).fetchone()
    return "" if row is None else str(row[0])


@functools.lru_cache(maxsize=512)
def _serialized(query: str) -> str:
    return _run("SELECT json_serialize_sql(?)", query)


def parse(query: str) -> list[Node] | None:
    """The statements of ``query`` as parse trees (a fresh copy, safe to edit), or None
    when DuckDB cannot serialise them (not a SELECT: INSERT, CREATE ... AS, PRAGMA; or a
    syntax error, which DuckDB reports when the statement runs)."""
    doc = json.loads(_serialized(query))
    if doc.get("error"):
        return None
    return list(doc["statements"])


def parse_error(query: str) -> str | None:
    """DuckDB's message for a statement it cannot serialise, None if it can."""
    doc = json.loads(_serialized(query))
    return str(doc.get("error_message")) if doc.get("error") else None


def unparse(statements: list[Node]) -> str:
    """The SQL text DuckDB prints for parse trees."""
    return _run("SELECT json_deserialize_sql(?::JSON)",
                json.dumps({"error": False, "statements": statements}))


def statement(node: Node) -> Node:
    """A query node (a SELECT, a set operation) as a statement tree of its own."""
    return {"node": node, "named_param_map": []}


@functools.lru_cache(maxsize=64)
def _template(query: str) -> str:
    return json.dumps(parse(query))


def template(query: str) -> list[Node]:
    """The parse trees of a statement this package writes (a copy to fill in)."""
    return list(json.loads(_template(query)))


def nodes(tree: Any) -> Iterator[Node]:
    """Every dict node under ``tree``, depth first, parents before children."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def table_functions(tree: Any, names: tuple[str, ...]) -> list[Node]:
    """The ``FROM fn(...)`` table references of ``tree`` calling one of ``names``."""
    return [n for n in nodes(tree)
            if n.get("type") == "TABLE_FUNCTION" and isinstance(n.get("function"), dict)
            and str(n["function"].get("function_name", "")).lower() in names
            and not n["function"].get("schema")]


# The table functions the rewriter reads, and the names of their positional arguments.
SIGNATURES = {"knn": ("table_name", "query_vector", "k"),
              "similarity_join": ("left_table", "right_table", "k")}


def arguments(ref: Node) -> dict[str, Node]:
    """A call's arguments by name: positional ones named from :data:`SIGNATURES`, named
    ones (``filter := ...``) by the alias DuckDB records."""
    fn = str(ref["function"]["function_name"]).lower()
    args: dict[str, Node] = {}
    positional = SIGNATURES[fn]
    for i, child in enumerate(ref["function"]["children"]):
        name = str(child.get("alias") or "").lower()
        if not name:
            if i >= len(positional):
                break
            name = positional[i]
        args[name] = child
    return args


@dataclass(frozen=True)
class Reading:
    """What a statement's text says, read once (statements repeat): its calls' names and
    argument trees (never edited: each run reads them; the printer edits its own copy)."""

    calls: tuple[tuple[str, dict[str, Node]], ...]
    n_statements: int
    reads: frozenset[str]  # lower-cased column names the statement outside the calls reads
    star: bool  # ... or it reads every column (``*``, ``COLUMNS(...)``)


@functools.lru_cache(maxsize=256)
def read(query: str) -> Reading | None:
    """The calls of :data:`SIGNATURES` in a statement, or None when DuckDB cannot serialise
    it (see :func:`parse`)."""
    trees = parse(query)
    if trees is None:
        return None
    refs = table_functions(trees, tuple(SIGNATURES))
    calls = tuple((str(r["function"]["function_name"]).lower(), copy.deepcopy(arguments(r))) for r in refs)
    # Columns named by position (``knn(...) AS k(a, b, c)``) need every column there.
    star = any(ref.get("column_name_alias") for ref in refs)
    for ref in refs:  # what remains is the statement around the calls
        ref["function"]["children"] = []
    reads: set[str] = set()
    for n in nodes(trees):
        star |= n.get("class") == "STAR"
        if n.get("class") == "COLUMN_REF":
            reads.add(str(n["column_names"][-1]).lower())
    return Reading(calls, len(trees), frozenset(reads), star)


def parameters(tree: Any) -> list[Node]:
    return [n for n in nodes(tree) if n.get("class") == "PARAMETER"]


def refers_outside(expr: Node) -> bool:
    """Whether an expression names a column of the statement around it (outside any
    subquery of its own): it cannot be evaluated alone."""
    stack: list[Any] = [expr]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class") == "COLUMN_REF":
                return True
            if item.get("class") == "SUBQUERY":
                continue
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parameter(expr: Node) -> Node | None:
    """The parameter an argument is (``?``, ``$name``, or one cast: ``?::FLOAT[]``)."""
    if expr.get("class") == "CAST" and not expr.get("try_cast"):
        expr = expr["child"]
    return expr if expr.get("class") == "PARAMETER" else None


def constant(expr: Node) -> Any:
    """The Python value of a constant argument (a literal, a list of literals, one cast of
    them); raises :class:`NotConstant` for anything else."""
    cls = expr.get("class")
    if cls == "CONSTANT":
        return _value(expr["value"])
    if cls == "CAST" and not expr.get("try_cast"):
        inner = constant(expr["child"])
        target = str(expr["cast_type"].get("id", ""))
        if target == "BOOLEAN" and isinstance(inner, str) and inner.lower() in ("t", "f", "true", "false"):
            return inner.lower() in ("t", "true")
        if target in ("LIST", "ARRAY") and isinstance(inner, list):
            return inner
        raise NotConstant
    if cls == "FUNCTION" and expr.get("function_name") == "list_value" and expr.get("schema") == "main":
        return [constant(c) for c in expr["children"]]
    raise NotConstant


def _value(v: Node) -> Any:
    if v.get("is_null"):
        return None
    typ = v["type"]
    tid = str(typ.get("id", ""))
    raw: Any = v.get("value")
    if tid == "DECIMAL":  # stored unscaled: 2.5 is 25 with scale 1
        if isinstance(raw, dict):  # past 18 digits: a 128-bit integer in two halves
            raw = int(raw["upper"]) * 2**64 + int(raw["lower"])
        return float(raw) / 10 ** int(typ["type_info"]["scale"])
    if tid in ("VARCHAR", "BOOLEAN", "DOUBLE", "FLOAT") or "INT" in tid:
        return raw
    raise NotConstant


def constant_node(value: str | int | None) -> Node:
    """A VARCHAR/BIGINT constant (or NULL) for a tree."""
    if value is None:
        return {"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "", "query_location": 0,
                "value": {"type": {"id": "NULL", "type_info": None}, "is_null": True}}
    tid = "BIGINT" if isinstance(value, int) else "VARCHAR"
    return {"class": "CONSTANT", "type": "VALUE_CONSTANT", "alias": "", "query_location": 0,
            "value": {"type": {"id": tid, "type_info": None}, "is_null": False, "value": value}}


def base_table(name: str, like: Node) -> Node:
    """A reference to table ``name`` that takes the alias (and column aliases) of the
    table reference ``like`` it replaces; a call without an alias was known by its
    function's name, so the table keeps that name for ``knn.id``."""
    ref = template(f'SELECT * FROM "{name}"')[0]["node"]["from_table"]
    ref["alias"] = like.get("alias") or like["function"]["function_name"]
    ref["column_name_alias"] = list(like.get("column_name_alias") or [])
    return ref


def replace(target: Node, new: Node) -> None:
    """Turn node ``target`` into ``new`` in place (its parent keeps pointing at it)."""
    target.clear()
    target.update(copy.deepcopy(new))


# -- filters -------------------------------------------------------------------------------
def filter_expression(text: str) -> Node:
    """A ``filter :=`` predicate parsed alone, as one expression tree: ``SELECT <text>``
    must be exactly one expression with no FROM, WHERE, set operation or modifier, so
    no text can close the predicate and add to the statement around it. Raises
    ValueError with DuckDB's message otherwise."""
    trees = parse("SELECT " + text)
    if trees is None:
        raise ValueError(parse_error("SELECT " + text) or "not a SQL expression")
    node = trees[0]["node"] if len(trees) == 1 else {}
    clean = (node.get("type") == "SELECT_NODE" and len(node.get("select_list", [])) == 1
             and (node.get("from_table") or {}).get("type") == "EMPTY"
             and not node.get("modifiers") and not node.get("cte_map", {}).get("map")
             and all(node.get(k) is None for k in ("where_clause", "having", "qualify", "sample"))
             and not node.get("group_expressions") and not node.get("group_sets"))
    if not clean:
        raise ValueError("it must be one predicate, not a statement")
    expr: Node = node["select_list"][0]
    if any(n.get("class") == "SUBQUERY" for n in nodes(expr)):
        # A filter reads the table's own columns (the store's search takes no more); a
        # subquery could read any file DuckDB can, one row-or-no-row answer at a time.
        raise ValueError("it may only read the table's columns, not a subquery")
    expr["alias"] = ""
    return expr


def rows_statement(table: str, predicate: str | None, whole: bool = False) -> str:
    """``SELECT * FROM table [WHERE predicate]``, built as a tree: the table is a name
    (data, never SQL: DuckDB prints it quoted), the predicate one parsed expression.
    ``schema.table`` and ``catalog.schema.table`` of plain identifiers name a table of
    that schema unless ``whole`` (store views, whose names may hold dots)."""
    tree = template('SELECT * FROM "__ea_t"')
    ref = tree[0]["node"]["from_table"]
    parts = table.split(".")
    if whole or len(parts) > 3 or not all(p.isidentifier() for p in parts):
        parts = [table]
    ref["table_name"] = parts[-1]
    if len(parts) > 1:
        ref["schema_name"] = parts[-2]
    if len(parts) > 2:
        ref["catalog_name"] = parts[0]
    if predicate is not None:
        tree[0]["node"]["where_clause"] = filter_expression(predicate)
    return unparse(tree)
