"""Checks applied before anything is written, so a refused write changes nothing."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ValidationError
from ._filters import check_closed

MAX_TABLE_NAME_LENGTH = 128
MAX_TAG_LENGTH = 128
# Letters, digits, '_', '-', '.' only: names become directory names and SQL view names,
# and '@' is reserved for "name@version" views.
# (matched with fullmatch: "$" would accept a trailing newline)
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_TAG_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Tags the store keeps for itself (cleanup markers, rollback guards: store/_retention.py).
_INTERNAL_TAG = "_ea-"


def _describe(s: str, limit: int = 40) -> str:
    shown = s if len(s) <= limit else s[:limit] + "..."
    return repr(shown)


def validate_table_name(name: Any) -> str:
    """Return ``name`` if it is a safe table name, else raise ValidationError."""
    if not isinstance(name, str):
        raise ValidationError(f"table name must be a string, got {type(name).__name__}")
    if not name:
        raise ValidationError("table name is empty")
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise ValidationError(
            f"table name {_describe(name)} is {len(name)} characters; "
            f"the limit is {MAX_TABLE_NAME_LENGTH}"
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValidationError(f"table name {_describe(name)} contains control characters")
    if "/" in name or "\\" in name:
        raise ValidationError(f"table name {_describe(name)} contains a path separator")
    if ".." in name:
        raise ValidationError(f"table name {_describe(name)} contains '..'")
    if name.endswith(".lance"):
        raise ValidationError(f"table name {_describe(name)} must not end in '.lance'")
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"table name {_describe(name)} may only contain letters, digits, '_', '-' and '.' "
            "and must not start with '.' or '-'"
        )
    return name


def validate_tag(tag: Any) -> str:
    """Return ``tag`` if it is a usable tag name (not all digits, so it never reads as a version)."""
    if not isinstance(tag, str) or not tag:
        raise ValidationError("tag must be a non-empty string")
    if len(tag) > MAX_TAG_LENGTH:
        raise ValidationError(f"tag {_describe(tag)} is longer than {MAX_TAG_LENGTH} characters")
    if not _TAG_RE.fullmatch(tag):
        raise ValidationError(
            f"tag {_describe(tag)} must start with a letter or '_' and contain only "
            "letters, digits, '_', '-' and '.'"
        )
    if tag.startswith(_INTERNAL_TAG):
        raise ValidationError(f"tag {_describe(tag)}: tags starting with {_INTERNAL_TAG!r} are "
                              "reserved for the store's own bookkeeping")
    return tag


def _sample(values: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:n])
    more = f" (and {len(values) - n} more)" if len(values) > n else ""
    return shown + more


def validate_keys(table: pa.Table, key: str) -> None:
    """Keys must exist, be non-null and be unique within one write."""
    if key not in table.column_names:
        raise ValidationError(
            f"key column {key!r} not found; columns are {', '.join(table.column_names)}"
        )
    col = table.column(key)
    if col.null_count:
        raise ValidationError(f"key column {key!r} has {col.null_count} null value(s)")
    if table.num_rows == 0:
        return
    counts = pc.value_counts(col.combine_chunks())
    dup_mask = pc.greater(counts.field("counts"), 1)
    dups = counts.field("values").filter(dup_mask).to_pylist()
    if dups:
        raise ValidationError(
            f"key column {key!r} has {len(dups)} duplicated key(s) in this write: {_sample(dups)}"
        )


def to_vector_array(values: Any, *, column: str = "vector") -> pa.FixedSizeListArray:
    """Convert lists, numpy matrices or Arrow list arrays to ``FixedSizeList<float32>``.

    Ragged input, nulls, non-numeric values and non-finite numbers are refused.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.list_(pa.float32()))
    if isinstance(values, np.ndarray) and values.ndim == 2:
        mat = values
    elif isinstance(values, pa.FixedSizeListArray):
        if values.null_count:
            raise ValidationError(f"column {column!r} has {values.null_count} null vector(s)")
        dim = values.type.list_size
        flat = values.flatten()
        if flat.null_count:
            raise ValidationError(f"column {column!r} has vectors with null elements")
        mat = flat.to_numpy(zero_copy_only=False).reshape(-1, dim) if dim else np.zeros((len(values), 0))
    else:
        if isinstance(values, pa.Array):
            if values.null_count:
                raise ValidationError(f"column {column!r} has {values.null_count} null vector(s)")
            values = values.to_pylist()
        rows = list(values)
        if not rows:
            raise ValidationError(f"column {column!r} is empty; cannot infer a dimension")
        lengths = set()
        for i, r in enumerate(rows):
            if r is None:
                raise ValidationError(f"column {column!r} has a null vector at row {i}")
            if isinstance(r, str | bytes) or not hasattr(r, "__len__"):
                raise ValidationError(f"column {column!r} holds {type(r).__name__} {r!r} at row {i}, "
                                      "not a vector (a list of numbers)")
            lengths.add(len(r))
        if len(lengths) > 1:
            raise ValidationError(
                f"column {column!r} has vectors of different lengths: {sorted(lengths)}"
            )
        try:
            mat = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"column {column!r} holds non-numeric values: {exc}") from None
    if mat.dtype.kind not in "fiu":
        raise ValidationError(f"column {column!r} must hold numbers, got dtype {mat.dtype}")
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise ValidationError(f"column {column!r} must hold non-empty vectors")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused below
        mat32 = mat.astype(np.float32, copy=False)
    finite = np.isfinite(mat32).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValidationError(
            f"column {column!r} has {bad.size} vector(s) with NaN or infinite values "
            f"(rows {_sample(bad.tolist())})"
        )
    flat = pa.array(np.ascontiguousarray(mat32).reshape(-1), type=pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, mat32.shape[1])


def validate_column_names(names: Sequence[str]) -> None:
    """Column names a table can be created with: non-empty, no control characters, no
    backtick (Lance filters quote names with backticks, so such a column could never be
    filtered on)."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValidationError("column names must be non-empty strings")
        if "`" in name:
            raise ValidationError(f"column name {_describe(name)} contains a backtick")
        if any(unicodedata.category(c).startswith("C") for c in name):
            raise ValidationError(f"column name {_describe(name)} contains control characters")


def as_list(values: Any, what: str, single: str) -> list[Any]:
    """Keys or column names given as a list (any iterable): a lone string, which would be
    taken letter by letter, and what cannot be iterated are refused."""
    if isinstance(values, str | bytes):
        raise ValidationError(f"{what} must be a list of {single}s, got the string {values!r} "
                              f"(write [{values!r}] for one {single})")
    try:
        return list(values)
    except TypeError:
        raise ValidationError(f"{what} must be a list of {single}s, got "
                              f"{type(values).__name__} {values!r}") from None


def validate_columns(columns: Any, have: Sequence[str], table: str) -> list[str] | None:
    """``columns=`` of a read: None (all), or a list of the table's columns."""
    if columns is None:
        return None
    cols = as_list(columns, "columns", "column name")
    missing = [c for c in cols if c not in have]
    if missing:
        raise ValidationError(f"no column {missing[0]!r} in {table!r}; its columns are "
                              f"{', '.join(have)}")
    return cols or None


def validate_where(where: Any) -> str | None:
    """A filter for ``where=``: one SQL expression. Refuses a ``;`` outside string
    literals, which Lance's parser would otherwise stop at, silently ignoring the rest."""
    if where is None:
        return None
    if not isinstance(where, str):
        raise ValidationError(f"where must be a SQL expression string, got {type(where).__name__}")
    if not where.strip():
        raise ValidationError("where is empty")
    quote: str | None = None
    for c in where:
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"`":
            quote = c
        elif c == ";":
            raise ValidationError(f"where {_describe(where)} holds ';': give one expression")
    check_closed(where)
    return where


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*", re.ASCII)
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def as_duration(value: object, name: str) -> dt.timedelta:
    """A duration given as a ``timedelta``, a number of seconds, or text with a unit
    (``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"``); never negative."""
    if isinstance(value, dt.timedelta):
        out = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out = dt.timedelta(seconds=value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        out = dt.timedelta(**{_DURATION_UNITS[m.group(2)]: float(m.group(1))})
    else:
        raise ValidationError(f"bad duration {value!r} for {name}: give a timedelta, seconds, or "
                              "a number and a unit: 90s, 15m, 12h, 7d, 2w")
    if out < dt.timedelta(0):
        raise ValidationError(f"{name} must not be negative, got {value!r}")
    return out
