"""Per-partition sub-indices that survive writes to other partitions.

A table written by partition (``replace_partition``, Dagster partitions) changes one
partition per version. The rows of a partition that a version did not write keep their
row addresses (same fragment, same offset), so the block of that partition's vectors
gathered at one version serves every later version until the partition is written again:
only the partitions that changed are read from Lance again.

A partition's *epoch* is the last version, at or before the one searched, whose write
may have touched it: a write of that partition, or any write that is not a partition
write (overwrite, upsert, append, a rollback's restore). Index and config bookkeeping
touch no rows. A write of another partition can still move a key out of this one (the
key is re-used there); the carried block is therefore checked against the version's row
addresses, and rebuilt when any of its rows is gone.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from ._cache import STATE, VersionKey
from ._filters import eq as filter_eq
from ._results import is_maintenance

_SIMPLE_EQ = re.compile(r"""^\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s*=\s*'((?:[^']|'')*)'\s*$""")


def partition_value(where: str, column: str | None) -> str | None:
    """The value of ``column`` that ``where`` selects, when it is exactly one string
    partition (``section = 'editors'``, as ``search(partition=...)`` writes it)."""
    if column is None:
        return None
    m = _SIMPLE_EQ.match(where)
    if m is None or m.group(1) != column:
        return None
    return m.group(2).replace("''", "'")


def canonical(column: str, value: str) -> str:
    return filter_eq(column, value)


def touches(props: dict[str, str], column: str, value: str) -> bool:
    """Whether a version with this provenance may have changed the rows of one partition."""
    if is_maintenance(props):
        return False
    written = props.get("partition")
    if written is None or not written.startswith(column + "="):
        return True  # not a partition write of this column: it may have changed anything
    got = written[len(column) + 1:]
    if got.startswith("["):
        try:
            return value in [str(v) for v in ast.literal_eval(got)]
        except (ValueError, SyntaxError):
            return True
    return got == value


def epoch(key: VersionKey, column: str, value: str,
          properties: Callable[[int], dict[str, str]]) -> int:
    """The partition's epoch at version ``key.version`` (see the module docstring); a fact
    of the version, kept in STATE.facts (versions are immutable)."""
    kind = f"epoch\x1f{column}\x1f{value}"
    got = STATE.facts.peek(key, kind)
    if got is not None:
        return int(got)
    found = 1
    for v in range(key.version, 0, -1):
        try:
            props = properties(v)
        except Exception:  # an unreadable (cleaned) version: assume it changed everything
            found = v
            break
        if touches(props, column, value):
            found = v
            break
    STATE.facts.put(key, kind, found)
    return found


__all__ = ["canonical", "epoch", "partition_value", "touches"]
