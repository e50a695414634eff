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
