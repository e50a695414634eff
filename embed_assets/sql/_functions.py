"""The Python functions a connect()ed session registers in DuckDB, for the macros of
``macros/store.sql`` and ``macros/native.sql`` to call.

DuckDB cannot define an aggregate or a table function from Python, so each is a scalar
Arrow UDF that takes a whole list of vectors (``list(v)``) in one call and returns a list.
The store-aware ones (``_ea_topk_store*``, ``_ea_knn_hits``) ask the connection for the
view's version and rank with the store's own search or cached matrix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.func import ARROW, SPECIAL

from ..kernels import join_topk, mahalanobis_topk, whitening
from . import _ranking
from . import _udf as udf
from ._tree import rows_statement


class _Views(Protocol):
    """What the store-aware functions need of the connection (a :class:`SQLConnection`).
    DuckDB evaluates the functions' annotations when it registers them, so this is a
    runtime name, not an import of the connection module."""

    def _view(self, name: str) -> Any: ...

    def _knn_hits(self, view: str, qs: np.ndarray, k: int, metric: str,
                  use_index: bool, where: str | None = None) -> list[list[dict[str, Any]]]: ...

    def _hybrid_hits(self, view: str, text: str, k: int, mode: str, where: str | None,
                     text_weight: float, vector_weight: float) -> list[dict[str, Any]]: ...

    def _topk_store(self, left: np.ndarray, view: str, sql_keys: pa.Array, k: int, metric: str,
                    inv_cov: Any, approximate: bool) -> pa.Array: ...

    udf_error: BaseException | None

_FL, _LFL, _DD = "FLOAT[]", "FLOAT[][]", "DOUBLE[][]"
_HIT = "STRUCT(l INTEGER, r INTEGER, distance DOUBLE, rank INTEGER)[]"
_KNN_HIT = "STRUCT(ki BIGINT, ks VARCHAR, distance DOUBLE, rank INTEGER)[]"
_KNN_HITS = pa.list_(pa.struct([("ki", pa.int64()), ("ks", pa.string()),
                                ("distance", pa.float64()), ("rank", pa.int32())]))
_TEXT_HIT = ("STRUCT(ki BIGINT, ks VARCHAR, distance DOUBLE, text_score DOUBLE, score DOUBLE, "
             "rank INTEGER)[]")
_TEXT_HITS = pa.list_(pa.struct([("ki", pa.int64()), ("ks", pa.string()), ("distance", pa.float64()),
                                 ("text_score", pa.float64()), ("score", pa.float64()),
                                 ("rank", pa.int32())]))


@dataclass(frozen=True)
class _Function:
    name: str
    fn: Callable[..., pa.Array]
    args: tuple[str, ...]
    returns: str
    # False for functions reading store state that DuckDB must not fold into a constant
    side_effects: bool = True


def register_functions(con: duckdb.DuckDBPyConnection, owner: _Views) -> None:
    """Create every ``_ea_*`` function on ``con``; ``owner`` answers the store-aware ones
    and keeps, in ``owner.udf_error``, the exception a failing function raised."""
    for f in _functions(owner):
        con.create_function(f.name, _recorded(owner, f.fn), list(f.args), f.returns, type=ARROW,
                            null_handling=SPECIAL, side_effects=f.side_effects)


def _recorded(owner: _Views, fn: Callable[..., pa.Array]) -> Callable[..., pa.Array]:
    """``fn``, keeping the exception it raises: DuckDB passes on only its text, inside
    its own wrapper, and the connection reports the exception's own message."""
    @functools.wraps(fn)  # DuckDB counts the parameters of the signature this gives
    def call(*args: Any) -> pa.Array:
        try:
            return fn(*args)
        except Exception as exc:
            owner.udf_error = exc
            raise

    return call


def _functions(owner: _Views) -> list[_Function]:
    store_args = ("VARCHAR", "VARCHAR[]", "BIGINT", "VARCHAR", _DD, "BOOLEAN")
    join_args = ("BIGINT", "VARCHAR", _DD, "BOOLEAN")
    return [
        _Function("_ea_list_vec_agg_f", _agg, (_LFL, "VARCHAR"), "DOUBLE[]"),
        _Function("_ea_list_vec_agg_d", _agg, (_DD, "VARCHAR"), "DOUBLE[]"),
        _Function("_ea_list_vec_cov", udf.list_vec_cov, (_DD,), _DD),
        _Function("_ea_mat_inverse", udf.mat_inverse, (_DD,), _DD),
        _Function("_ea_distance", udf.pair_distance, ("DOUBLE[]", "DOUBLE[]", "VARCHAR", _DD), "DOUBLE"),
        _Function("_ea_knn_rows", _knn_rows, ("DOUBLE[]", _DD, "BIGINT", _DD), _HIT),
        _Function("_ea_topk", partial(_topk, _first_matrix), (_LFL, _LFL, *join_args), _HIT),
        _Function("_ea_topk_packed", partial(_topk, udf.packed_matrix), ("BLOB", "BLOB", *join_args),
                  _HIT),
        _Function("_ea_topk_store", partial(_topk_store, owner, _first_matrix), (_LFL, *store_args),
                  _HIT, side_effects=False),
        _Function("_ea_topk_store_packed", partial(_topk_store, owner, udf.packed_matrix),
                  ("BLOB", *store_args), _HIT, side_effects=False),
        _Function("_ea_knn_hits", partial(_knn_hits, owner),
                  ("VARCHAR", _FL, "BIGINT", "VARCHAR", "BOOLEAN", _DD, "VARCHAR"), _KNN_HIT),
        _Function("_ea_text_hits", partial(_text_hits, owner),
                  ("VARCHAR", "VARCHAR", "BIGINT", "VARCHAR", "VARCHAR", "DOUBLE", "DOUBLE"),
                  _TEXT_HIT),
        _Function("_ea_rows_sql", _rows_sql, ("VARCHAR", "VARCHAR", "BOOLEAN"), "VARCHAR",
                  side_effects=False),
    ]


def _rows_sql(table: pa.Array, predicate: pa.Array, whole: pa.Array) -> pa.Array:
    """The statement ``__ea_rows`` runs with ``query()``: the rows of a table, or those a
    ``filter :=`` predicate selects, built as a parse tree (see ``_tree.rows_statement``):
    the table is a name, never SQL text, and the predicate one parsed expression, so
    neither can add to the statement (a bound parameter stays data)."""
    out = []
    for t, p, w in zip(_combine(table).to_pylist(), _combine(predicate).to_pylist(),
                       _combine(whole).to_pylist(), strict=True):
        if t is None:
            raise ValueError("the table name is NULL")
        try:
            out.append(rows_statement(t, p, whole=bool(w)))
        except ValueError as exc:
            raise ValueError(f"filter := {p!r} is not a predicate: {exc}") from None
    return pa.array(out, pa.string())


def _agg(vs: pa.Array, how: pa.Array) -> pa.Array:
    return udf.list_vec_agg(vs, udf._scalar(how) or "mean")


def _knn_rows(q: pa.Array, vs: pa.Array, k: pa.Array, inv: pa.Array) -> pa.Array:
    """Mahalanobis knn over one list of vectors (a table that is not a store view), for
    each row's own query vector (a LATERAL call has one per outer row; the first one was
    answered for all of them): hits as 1-based positions ``r`` in that list, the list
    whitened once per chunk (see mahalanobis_topk)."""
    qs, cells, invs = _combine(q), _combine(vs), _combine(inv)
    kk = int(udf._scalar(k))
    out: list[pa.Array] = []
    seen: tuple[Any, Any] | None = None  # (list, inv_cov) whitened last
    mat = w = None
    for i in range(len(cells)):
        qc, cell = qs[min(i, len(qs) - 1)], cells[i]
        if not qc.is_valid:  # (the macro refuses it first)
            raise ValueError("knn: the query vector is NULL")
        if not cell.is_valid or len(cell.values) == 0:
            out.append(udf.hits_array(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 1))
            continue
        inv_i = invs[min(i, len(invs) - 1)] if len(invs) else None
        if seen is None or not (cell.values.equals(seen[0]) and inv_i == seen[1]):
            mat = udf.vectors_matrix(cell.values, "knn", np.float64)
            w = whitening(udf.matrix_value(invs, min(i, len(invs) - 1)), mat.shape[1])
            seen = (cell.values, inv_i)
        assert mat is not None and w is not None
        qv = qc.values.to_numpy(zero_copy_only=False).astype(np.float64)
        if qv.shape[0] != mat.shape[1]:
            raise ValueError(f"knn: dimension mismatch (query {qv.shape[0]} vs table {mat.shape[1]})")
        if np.isnan(qv).any():
            raise ValueError("knn: the query vector has NULL or NaN elements")
        idx, dist = mahalanobis_topk(mat, qv, kk, w)
        out.append(udf.hits_array(np.zeros(len(idx), np.int64), idx, dist, max(len(idx), 1)))
    return pa.concat_arrays(out) if out else pa.array([], udf.HIT_TYPE)


def _topk(matrix: Callable[[pa.Array], np.ndarray], lv: pa.Array, rv: pa.Array, k: pa.Array,
          metric: pa.Array, inv: pa.Array, approx: pa.Array) -> pa.Array:
    """similarity_join of two plain sides: each is one list (or packed BLOB) of vectors."""
    left, right = matrix(lv), matrix(rv)
    kk = int(udf._scalar(k))
    li, ri, dist = join_topk(left, right, kk, udf._scalar(metric), udf.matrix_value(inv))
    return _repeat(udf.hits_array(li, ri, dist, min(kk, right.shape[0])), len(lv))


def _topk_store(owner: _Views, matrix: Callable[[pa.Array], np.ndarray], lv: pa.Array,
                view: pa.Array, keys: pa.Array, k: pa.Array, metric: pa.Array, inv: pa.Array,
                approx: pa.Array) -> pa.Array:
    """similarity_join with a store view on the right: its vectors come from the store."""
    cell = _combine(keys)[0]
    sql_keys = cell.values if cell.is_valid else pa.array([], pa.string())
    res = owner._topk_store(matrix(lv), udf._scalar(view), sql_keys, int(udf._scalar(k)),
                            udf._scalar(metric), udf.matrix_value(inv), bool(udf._scalar(approx)))
    return _repeat(res, len(lv))


def _knn_hits(owner: _Views, view: pa.Array, q: pa.Array, k: pa.Array, metric: pa.Array,
              use_index: pa.Array, inv: pa.Array, where: pa.Array) -> pa.Array:
    """knn on a store view: the keys, distances and ranks of the k nearest rows among
    those ``where`` selects (mahalanobis: ranked on the view's cached matrix, whitened
    once per inv_cov)."""
    views, qs, ks = _combine(view), _combine(q), _combine(k)
    metrics, idx, wheres = _combine(metric), _combine(use_index), _combine(where)
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(views))]
    # rows asking the same search of the same view: answered by one batched search
    batches: dict[tuple[Any, ...], list[tuple[int, np.ndarray]]] = {}
    for i in range(len(views)):
        if not ks[i].is_valid or ks[i].as_py() <= 0:  # the macro refused it; k = 0: another arm
            continue
        if not qs[i].is_valid:  # (the macro refuses it first, as Table.search(None) is)
            raise ValueError("knn: the query vector is NULL")
        name = views[i].as_py()
        qv = qs[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        dim = owner._view(name).meta.dimension
        if qv.shape[0] != dim:
            raise ValueError(f"knn: dimension mismatch (query {qv.shape[0]} vs table {dim})")
        if np.isnan(qv).any():
            raise ValueError("knn: the query vector has NULL or NaN elements")
        if not np.any(qv) and str(metrics[i].as_py()).lower() == "cosine":
            raise ValueError("knn: the query vector is all zeros: it has no cosine distance to any row")
        flt = wheres[i].as_py()
        if str(metrics[i].as_py()).lower() == "mahalanobis":
            if flt is not None:
                raise ValueError("knn: filter := is not supported with metric 'mahalanobis'")
            out[i] = _ranking.mahalanobis_hits(owner._view(name), qv, int(ks[i].as_py()),
                                               udf.matrix_value(inv, i))
            continue
        batches.setdefault((name, int(ks[i].as_py()), metrics[i].as_py(), bool(idx[i].as_py()),
                            flt), []).append((i, qv))
    for (name, kk, m, use, flt), rows in batches.items():
        hits = owner._knn_hits(name, np.stack([qv for _, qv in rows]), kk, m, use, flt)
        for (i, _), h in zip(rows, hits, strict=True):
            out[i] = h
    return pa.array(out, _KNN_HITS)


def _text_hits(owner: _Views, view: pa.Array, text: pa.Array, k: pa.Array, mode: pa.Array,
               where: pa.Array, text_weight: pa.Array, vector_weight: pa.Array) -> pa.Array:
    """hybrid_search / text_search on a store view: keys and scores of the k best rows."""
    cols = [_combine(a) for a in (view, text, k, mode, where, text_weight, vector_weight)]
    out: list[list[dict[str, Any]]] = []
    for i in range(len(cols[0])):
        v, t, kk, m, w, tw, vw = (c[i].as_py() for c in cols)
        if kk is None or kk <= 0:  # the macro refused it
            out.append([])
            continue
        if t is None:  # refused, as a NULL knn query vector is (it gave no rows, silently)
            raise ValueError("hybrid_search: the query text is NULL")
        out.append(owner._hybrid_hits(v, t, int(kk), m or "hybrid", w,
                                      1.0 if tw is None else float(tw),
                                      1.0 if vw is None else float(vw)))
    return pa.array(out, _TEXT_HITS)


def _combine(arr: Any) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _first_matrix(lv: pa.Array) -> np.ndarray:
    """The list of vectors of the (single-row) argument as a matrix; empty if NULL."""
    cell = _combine(lv)[0]
    if not cell.is_valid or len(cell.values) == 0:
        return np.zeros((0, 0), np.float32)
    return udf.vectors_matrix(cell.values, "similarity_join")


def _repeat(one: pa.Array, n: int) -> pa.Array:
    # The UDF is called with a chunk of n identical rows (the CTEs hold one row each).
    return one if n == 1 else pa.concat_arrays([one] * n)
