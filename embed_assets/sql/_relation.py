"""The relations of ``sql()``, ``query()``, ``from_query()`` and ``table()``: DuckDB's own,
whose failures are QueryErrors too.

Why: a DuckDB relation is lazy. A statement whose rows fail while they are computed (a
dimension mismatch inside ``vec_add``, a bad ``metric :=`` reaching a knn function, a
LATERAL row the store refuses) raises only when they are fetched, and then DuckDB's own
exception, with DuckDB's "Python exception occurred while executing the UDF" wrapping
(issue 23). DuckDB's relation type cannot be given a Python subclass after the fact
(pybind11 refuses the ``__class__`` change: "deallocator differs"), so the relation is
wrapped: every attribute is DuckDB's, every call runs inside the connection's failure
handler, and the relations a call returns (``filter``, ``limit``, ``join``...) are
wrapped alike. ``.relation`` is DuckDB's own object.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import duckdb

Failures = Callable[[], contextlib.AbstractContextManager[None]]


class Relation:
    """A ``duckdb.DuckDBPyRelation`` whose failures are :class:`~embed_assets.QueryError`.

    Every method and property of DuckDB's relation is available (``fetchall``, ``df``,
    ``arrow``, ``pl``, ``filter``, ``limit``, ``show``...); relations it returns are
    wrapped the same way; :attr:`relation` is DuckDB's own object, for what needs DuckDB's
    type itself (``pa.table(rel.relation)``, a query on ``con.con`` naming it).
    """

    __slots__ = ("__weakref__", "_failures", "_parent", "relation")

    def __init__(self, relation: duckdb.DuckDBPyRelation, failures: Failures,
                 parent: Relation | None = None) -> None:
        self.relation = relation
        self._failures = failures
        # A relation made from this one reads its result tables (see SQLConnection): the
        # parent, whose lifetime decides when they are dropped, lives as long as it does.
        self._parent = parent

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        args = tuple(a.relation if isinstance(a, Relation) else a for a in args)
        kwargs = {k: v.relation if isinstance(v, Relation) else v for k, v in kwargs.items()}
        with self._failures():
            out = fn(*args, **kwargs)
        if isinstance(out, duckdb.DuckDBPyRelation):
            return Relation(out, self._failures, self)
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            # Not DuckDB's special methods: DuckDB's replacement scan would read this object
            # as an Arrow stream (__arrow_c_stream__) and, on the connection it belongs to,
            # wait forever for the lock of the statement scanning it.
            raise AttributeError(name)
        with self._failures():
            attr = getattr(self.relation, name)
        if isinstance(attr, duckdb.DuckDBPyRelation):
            return Relation(attr, self._failures, self)
        if not callable(attr):
            return attr
        return functools.partial(self._call, attr)

    def __dir__(self) -> list[str]:
        return sorted({*dir(self.relation), "relation"})

    # Special methods are looked up on the type, not through __getattr__.
    def __repr__(self) -> str:
        return str(self._call(repr, self.relation))

    def __str__(self) -> str:
        return str(self._call(str, self.relation))

    def __len__(self) -> int:
        return int(self._call(len, self.relation))

    def __getitem__(self, item: Any) -> Any:
        return self._call(self.relation.__getitem__, item)

    def __contains__(self, item: Any) -> bool:
        return bool(self._call(self.relation.__contains__, item))
