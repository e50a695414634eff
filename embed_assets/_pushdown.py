"""Reading the filters DuckDB pushes into store-view scans, to answer them from memory.

DuckDB hands a registered dataset's ``scanner()`` its pushed-down filters as a pyarrow
expression: key lookups (``WHERE id = 5``), ranges, and the join filters it builds from
a small build side (``is_in(id, {value_set=int64:[...]}) and (id >= lo) and (id <= hi)``,
which is what ``knn`` and key joins produce). Lance plans each such scan in ~10 ms here;
the version's key index (:class:`._cache.KeyIndex`) answers the same question in
microseconds. Anything this module cannot read exactly returns None and the scan goes to
the general path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_IS_IN = re.compile(
    r"is_in\((?P<f>[A-Za-z_][A-Za-z0-9_]*), \{value_set=(?P<t>u?int(?:8|16|32|64)):"
    r"\[(?P<v>[-0-9,\s]*)\], null_matching_behavior=\w+\}\)")
_CMP = re.compile(r"\((?P<f>[A-Za-z_][A-Za-z0-9_]*) (?P<op>==|>=|<=|>|<) (?P<n>-?[0-9]+)\)")
_GLUE = re.compile(r"[()\s]|\band\b")


@dataclass
class KeyFilter:
    """An integer key restricted to a value set and/or a closed range."""

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


def integer_key_filter(expr: str, key: str) -> KeyFilter | None:
    """The restriction ``expr`` (a pyarrow expression's text) puts on integer column ``key``,
    if ``expr`` is a conjunction of ``is_in``/comparison terms on ``key`` alone."""
    f = KeyFilter()
    rest = expr
    for m in _IS_IN.finditer(expr):
        if m.group("f") != key:
            return None
        vals = np.array([int(v) for v in m.group("v").replace(",", " ").split()], dtype=np.int64)
        f.values = vals if f.values is None else np.intersect1d(f.values, vals)
        rest = rest.replace(m.group(0), " ", 1)
    for m in _CMP.finditer(rest):
        if m.group("f") != key:
            return None
        n, op = int(m.group("n")), m.group("op")
        lo = n if op in ("==", ">=") else n + 1 if op == ">" else None
        hi = n if op in ("==", "<=") else n - 1 if op == "<" else None
        if lo is not None:
            f.lo = lo if f.lo is None else max(f.lo, lo)
        if hi is not None:
            f.hi = hi if f.hi is None else min(f.hi, hi)
    rest = _CMP.sub(" ", rest)
    if _GLUE.sub("", rest):  # something else in there (an OR, another column, a function)
        return None
    if f.values is None and (f.lo is None or f.hi is None):
        return None  # an open range: a scan, not a lookup
    return f
