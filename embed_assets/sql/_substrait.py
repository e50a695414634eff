"""What a pushed-down filter asks of an integer key, read from the filter's Substrait form.

DuckDB hands store-view scans their filters as pyarrow expression objects. Arrow gives no
way to walk one from Python, and ``str()`` of it is not a stable format; but
``Expression.to_substrait(schema)`` serialises it to Substrait, a versioned standard
(protobuf ``ExtendedExpression``), in ~5 us. This module reads the few message types a
key filter is made of, by their field numbers in Substrait's ``algebra.proto`` and
``extended_expression.proto``, and nothing else: a conjunction (``and``) of
``equal``/``lt``/``lte``/``gt``/``gte`` between the key and an integer literal, and
``IN`` lists of integer literals (Substrait's ``SingularOrList``). Anything else (an OR,
a NULL, a float, a cast, another column) is reported as not understood, and the caller
evaluates the expression with Arrow instead, which is always exact.

Why not evaluate every filter with Arrow: that evaluates the filter over every key of
the version (an Acero plan, ~0.2 ms at 64k keys for ``id = 5``, ~0.5 ms for a join
filter), where a binary search over the sorted keys answers in microseconds: on the SQL
key lookup it cost 1.18 -> 1.39 ms per statement (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A Substrait filter larger than this (a join filter of thousands of keys) is evaluated by
# Arrow: reading its literals one by one in Python would cost more than that evaluation.
MAX_BYTES = 16_384

_INT64_WRAP = 1 << 64
_INT64_SIGN = 1 << 63

# Literal.literal_type field numbers of the integer kinds: i8, i16, i32, i64.
_INT_LITERALS = frozenset({2, 3, 5, 7})
_COMPARISONS = frozenset({"equal", "lt", "lte", "gt", "gte"})


class _NotAKeyFilter(Exception):
    """The expression holds something this reader does not interpret."""


@dataclass
class KeyFilter:
    """An integer key restricted to value sets and/or a range (all of them at once).
    Read-only once built: :func:`_parse` hands the same one to every statement."""

    values: np.ndarray | None = None  # None: any value in the range
    lo: int | None = None
    hi: int | None = None

    def select(self, keys: np.ndarray) -> np.ndarray:
        """Positions in the *sorted* ``keys`` that pass."""
        if self.values is not None:
            vals = self.values
            if self.lo is not None:
                vals = vals[vals >= self.lo]
            if self.hi is not None:
                vals = vals[vals <= self.hi]
            if not len(keys) or not len(vals):
                return np.zeros(0, np.int64)
            pos = np.minimum(np.searchsorted(keys, vals), len(keys) - 1)
            return pos[keys[pos] == vals]
        start = 0 if self.lo is None else int(np.searchsorted(keys, self.lo, side="left"))
        stop = len(keys) if self.hi is None else int(np.searchsorted(keys, self.hi, side="right"))
        return np.arange(start, max(start, stop), dtype=np.int64)

    def _restrict(self, op: str, n: int) -> None:
        if op == "equal":
            self._values(np.array([n], dtype=np.int64))
        elif op in ("gt", "gte"):
            lo = n + 1 if op == "gt" else n
            self.lo = lo if self.lo is None else max(self.lo, lo)
        else:
            hi = n - 1 if op == "lt" else n
            self.hi = hi if self.hi is None else min(self.hi, hi)

    def _values(self, vals: np.ndarray) -> None:
        vals = np.unique(vals)
        self.values = vals if self.values is None else np.intersect1d(self.values, vals)


# -- protobuf wire format --------------------------------------------------------------------
Fields = list[tuple[int, int | bytes]]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _fields(buf: bytes) -> Fields:
    """(field number, value) of one message: an int for varints, bytes otherwise."""
    out: Fields = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        wire = tag & 7
        if wire == 0:
            v, pos = _varint(buf, pos)
            out.append((tag >> 3, v))
        elif wire == 2:
            n, pos = _varint(buf, pos)
            out.append((tag >> 3, buf[pos:pos + n]))
            pos += n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            out.append((tag >> 3, buf[pos:pos + n]))
            pos += n
        else:
            raise _NotAKeyFilter(f"wire type {wire}")
    return out


def _one(fields: Fields, number: int) -> int | bytes | None:
    for n, v in fields:
        if n == number:
            return v
    return None


def _message(value: int | bytes | None) -> bytes:
    if not isinstance(value, bytes):
        raise _NotAKeyFilter("expected a message")
    return value


# -- Substrait -------------------------------------------------------------------------------
def key_filter(filt: pc.Expression, key: str, key_type: pa.DataType) -> KeyFilter | None:
    """The restriction ``filt`` puts on the integer column ``key``, when ``filt`` reads
    that column alone through the terms this module knows; else None."""
    if not pa.types.is_integer(key_type) or key_type == pa.uint64():
        return None  # uint64 keys past 2**63 have no Substrait literal
    try:
        raw = filt.to_substrait(pa.schema([(key, key_type)]))
    except (pa.ArrowException, ValueError, TypeError):
        return None  # reads another column, or a term Arrow cannot express in Substrait
    buf = bytes(raw)
    return None if len(buf) > MAX_BYTES else _parse(buf)


@functools.lru_cache(maxsize=256)
def _parse(buf: bytes) -> KeyFilter | None:
    """One Substrait filter read (cached by its bytes, which name the key and its type: a
    repeated statement pushes the same filter, and reading it is most of the ~30 us)."""
    try:
        top = _fields(buf)
        names = _function_names(top)
        refs = [_fields(_message(v)) for n, v in top if n == 3]  # referred_expr
        if len(refs) != 1:
            return None
        out = KeyFilter()
        _read(_fields(_message(_one(refs[0], 1))), names, out)
    except (_NotAKeyFilter, IndexError):
        return None
    return out


def _function_names(top: Fields) -> dict[int, str]:
    """function anchor -> name, from the SimpleExtensionDeclarations (field 2)."""
    names: dict[int, str] = {}
    for n, v in top:
        if n != 2:
            continue
        fn = _one(_fields(_message(v)), 3)  # extension_function
        if fn is None:
            continue
        f = _fields(_message(fn))
        anchor = _one(f, 2)
        name = _one(f, 3)
        if isinstance(name, bytes):
            # a name may carry its signature ("equal:any_any")
            names[int(anchor) if isinstance(anchor, int) else 0] = name.decode().split(":")[0]
    return names


def _read(expr: Fields, names: dict[int, str], out: KeyFilter) -> None:
    """Add one boolean Expression's restriction to ``out`` (an AND of all of them)."""
    for n, v in expr:
        if n == 3:  # scalar_function
            _call(_fields(_message(v)), names, out)
            return
        if n == 8:  # singular_or_list: key IN (literals)
            f = _fields(_message(v))
            _key(_fields(_message(_one(f, 1))))
            vals = [_int_literal(_fields(_message(o))) for k, o in f if k == 2]
            out._values(np.array(vals, dtype=np.int64))
            return
    raise _NotAKeyFilter("not a comparison, AND or IN list")


def _call(fn: Fields, names: dict[int, str], out: KeyFilter) -> None:
    if _one(fn, 5) is not None:  # options (e.g. overflow or NULL handling): not ours
        raise _NotAKeyFilter("function options")
    ref = _one(fn, 1)
    name = names.get(int(ref) if isinstance(ref, int) else 0)
    args = [_fields(_message(v)) for n, v in fn if n == 4]  # FunctionArgument
    values = [_fields(_message(_one(a, 3))) for a in args]  # FunctionArgument.value
    if name == "and":
        for v in values:
            _read(v, names, out)
        return
    if name not in _COMPARISONS or len(values) != 2:
        raise _NotAKeyFilter(f"function {name!r}")
    try:
        _key(values[0])
        op, n = name, _int_literal(values[1])
    except _NotAKeyFilter:  # "5 < id": the same test with the sides swapped
        _key(values[1])
        op = {"lt": "gt", "lte": "gte", "gt": "lt", "gte": "lte"}.get(name, name)
        n = _int_literal(values[0])
    out._restrict(op, n)


def _key(expr: Fields) -> None:
    """Check that an Expression is a reference to field 0 (the schema holds the key only)."""
    sel = _one(expr, 2)  # selection: FieldReference
    if len(expr) != 1 or sel is None:
        raise _NotAKeyFilter("not a column reference")
    ref = _fields(_message(sel))
    direct = _one(ref, 1)  # direct_reference: ReferenceSegment
    seg = _fields(_message(direct))
    struct = _one(seg, 2)  # struct_field
    if len(seg) != 1 or struct is None:
        raise _NotAKeyFilter("not a plain column")
    sf = _fields(_message(struct))
    if any(n != 1 or v != 0 for n, v in sf):  # field index 0, no child segment
        raise _NotAKeyFilter("not the key column")


def _int_literal(expr: Fields) -> int:
    lit = _one(expr, 1)  # literal
    if len(expr) != 1 or lit is None:
        raise _NotAKeyFilter("not a literal")
    f = _fields(_message(lit))
    kinds = [(n, v) for n, v in f if n != 50]  # 50: nullable, a flag on the type
    if len(kinds) != 1 or kinds[0][0] not in _INT_LITERALS or not isinstance(kinds[0][1], int):
        raise _NotAKeyFilter("not an integer literal")
    v = kinds[0][1]
    return v - _INT64_WRAP if v >= _INT64_SIGN else v
