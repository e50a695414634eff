"""Tiny helpers to build Lance (DataFusion) filter expressions safely."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..errors import ValidationError


def quote_ident(name: str) -> str:
    """Quote a column name for a Lance filter (backticks; embedded backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def literal(value: Any) -> str:
    """Render a Python scalar as a SQL literal."""
    if value is None:
        raise ValidationError("NULL cannot be used as a key or partition value")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and value != value:
            raise ValidationError("NaN cannot be used as a key or partition value")
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ValidationError(f"unsupported value type for a filter: {type(value).__name__}")


def eq(column: str, value: Any) -> str:
    return f"{quote_ident(column)} = {literal(value)}"


def in_list(column: str, values: Iterable[Any]) -> str:
    vals = list(values)
    if not vals:
        return "false"
    return f"{quote_ident(column)} IN ({', '.join(literal(v) for v in vals)})"


def check_closed(where: str) -> None:
    """Refuse a filter that is not one closed expression, so that combining it with
    another as ``(a) AND (b)`` (:func:`conjunction`) can never change what ``b`` means.

    Why a lexer of our own: pylance 14 exposes no expression parser, and its filter
    parser (``SELECT 1 FROM t WHERE <filter>``) stops silently at the end of the first
    complete expression: ``"a=1 a=2"`` filters by ``a=1``, and ``"1=1) OR (1=1"`` pasted
    into ``(where) AND (partition)`` read every partition (issue 29, defect 5). Strings
    (``'...'`` with ``''``), quoted names (``"..."``, `````...`````) and comments (``--``
    to the end of the line, ``/* */`` not nested, as Lance's parser reads them) must
    end, parentheses must balance without ever closing more than they opened, and there
    is no ``;`` or ``$$`` (a dollar-quoted string panics Lance's planner) outside them.
    :func:`conjunction` then wraps each part in parentheses, which makes the parser read
    all of it or fail.
    """
    i, n, depth = 0, len(where), 0
    while i < n:
        c = where[i]
        two = where[i:i + 2]
        if c in "'\"`":
            end = where.find(c, i + 1)
            while end != -1 and where[end + 1:end + 2] == c:
                end = where.find(c, end + 2)  # a doubled quote inside a quoted token
            if end == -1:
                raise ValidationError(f"bad filter {where!r}: it has an unterminated {c}...{c}")
            i = end + 1
            continue
        if two == "--":
            end = where.find("\n", i)
            i = n if end == -1 else end + 1
            continue
        if two == "/*":
            end = where.find("*/", i + 2)
            if end == -1:
                raise ValidationError(f"bad filter {where!r}: it has an unterminated /* comment")
            i = end + 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ValidationError(f"bad filter {where!r}: it closes a parenthesis it never opened: "
                                      "give one expression")
        elif c == ";" or two == "$$":
            raise ValidationError(f"bad filter {where!r}: it holds {two if c == '$' else c!r}: "
                                  "give one expression")
        i += 1
    if depth:
        raise ValidationError(f"bad filter {where!r}: it leaves {depth} parenthesis(es) open")


def conjunction(*parts: str | None) -> str | None:
    """The AND of closed filters (see :func:`check_closed`), each in its own parentheses
    on its own lines, so a trailing ``--`` comment ends where its part does."""
    got = [p for p in parts if p]
    for p in got:
        check_closed(p)
    if not got:
        return None
    return " AND ".join(f"(\n{p}\n)" for p in got)
