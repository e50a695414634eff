"""Named direction vectors: the mean difference ``vector(b) - vector(a)`` over (a, b) pairs.

A direction turns "library -> its development package" or "package -> its documentation"
into one vector you can add to any row's vector and search around. Directions are built
from one version of an embedding table, stored as a versioned store table (one row per
name, so SQL can fetch one by name), applied with the store's nearest-neighbour search,
and evaluated on held-out pairs against the plain nearest-neighbour baseline.

The same query in SQL, in an :func:`embed_assets.connect` session (``emb`` is the
embedding table, ``directions`` the table :func:`write_directions` wrote)::

    SELECT k.package, k.distance, k.rank
    FROM knn('emb',
             (SELECT vec_add((SELECT vector FROM emb WHERE package = 'libfoo1'),
                             (SELECT vector FROM directions WHERE name = 'dev'))),
             11) k
    WHERE k.package <> 'libfoo1'
    ORDER BY k.rank
    LIMIT 10

gives the rows of ``apply_direction(table, "libfoo1", direction, k=10)`` (``knn`` does not
know which row the query came from, so ask for one more and drop the row itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..kernels import normalize_rows
from ..store import VECTOR_COLUMN, EmbeddingTable, Store, VersionRef, WriteResult

Pair = tuple[Any, Any]
DIRECTIONS_TABLE = "directions"
# Queries ranked per block in evaluate_direction: bounds the (queries x rows) distances.
_BLOCK = 256


@dataclass(frozen=True, eq=False)
class Direction:
    """A named direction: the mean of ``vector(b) - vector(a)`` over its pairs.

    Attributes
    ----------
    name : str
        What the direction is called (the key of the ``directions`` table).
    vector : numpy.ndarray
        float32, the embedding table's dimension; not normalised (its length is the mean
        step from ``a`` to ``b``, so ``vector(a) + vector`` lands where ``b`` is on average).
    n_pairs : int
        How many pairs were averaged.
    source_table : str
        The embedding table the vectors were read from.
    source_version : int
        The version of ``source_table`` they were read at.
    pairs : list of tuple
        The (a, b) keys averaged, in the order given.
    model : str or None
        The model of ``source_table`` at that version (a directions table holds
        directions of one model).
    """

    name: str
    vector: np.ndarray
    n_pairs: int
    source_table: str
    source_version: int
    pairs: list[Pair] = field(repr=False)
    model: str | None = None

    @property
    def dimension(self) -> int:
        """The length of :attr:`vector`."""
        return int(self.vector.shape[0])

    @property
    def norm(self) -> float:
        """The Euclidean length of :attr:`vector`."""
        return float(np.linalg.norm(self.vector))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (no vector, no pairs): for logs and asset metadata."""
        return {"name": self.name, "n_pairs": self.n_pairs, "dimension": self.dimension,
                "norm": round(self.norm, 6), "source_table": self.source_table,
                "source_version": self.source_version, "model": self.model}


def build_direction(table: EmbeddingTable, pairs: Iterable[Pair], *, name: str,
                    version: VersionRef = None) -> Direction:
    """The mean of ``vector(b) - vector(a)`` over ``pairs``, read at one version.

    Parameters
    ----------
    table : EmbeddingTable
        Any embedding table; keys are the table's own key values (never converted: the
        string ``"1"`` does not find the integer key ``1``).
    pairs : iterable of (a, b)
        Key pairs; at least one.
    name : str
        The direction's name.
    version : int or str, optional
        A version number or tag of ``table``; the latest by default.

    Returns
    -------
    Direction

    Raises
    ------
    ValidationError
        No pairs, a pair that is not two keys, or keys missing from that version of the
        table (the error names them).

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store
    >>> store = Store(tempfile.mkdtemp())
    >>> _ = store.write("t", {"id": ["a", "b", "c", "d"],
    ...                       "vector": [[1, 0], [1, 1], [2, 0], [2, 2]]}, key="id")
    >>> build_direction(store.table("t"), [("a", "b"), ("c", "d")], name="up").vector
    array([0. , 1.5], dtype=float32)
    """
    name = _check_name(name)
    pairs = _check_pairs(pairs)
    v = table.resolve(version)
    meta = table.meta_at(v)
    mat, pos = _rows(table, v, meta.key, [k for p in pairs for k in p])
    a = np.array([pos[p[0]] for p in pairs])
    b = np.array([pos[p[1]] for p in pairs])
    vec = (mat[b].astype(np.float64) - mat[a].astype(np.float64)).mean(axis=0)
    return Direction(name=name, vector=vec.astype(np.float32), n_pairs=len(pairs),
                     source_table=table.name, source_version=v, pairs=pairs, model=meta.model)


def write_directions(store: Store, directions: Direction | Iterable[Direction],
                     table: str = DIRECTIONS_TABLE, run_id: str | None = None) -> WriteResult:
    """Store directions as one new version of a table keyed by name (upsert).

    The table has one row per direction: ``name`` (the key), ``vector``
    (``FLOAT[dim]`` in DuckDB), ``n_pairs``, ``source_table``, ``source_version``,
    ``pairs`` (JSON text: ``[[a, b], ...]``; keys that are not JSON values are written as
    strings). Directions already stored under another name stay; a name written again is
    updated, and every write is a new version, so earlier directions stay readable
    (``read_directions(store, version=1)``, or ``"directions@1"`` in SQL).

    Parameters
    ----------
    store : Store
    directions : Direction or iterable of Direction
        One or more, with distinct names and one dimension and model.
    table : str
        The table to write (``"directions"`` by default).
    run_id : str, optional
        Who wrote the version (a Dagster run id...), stored with it.

    Returns
    -------
    WriteResult

    Raises
    ------
    ValidationError
        No directions, repeated names, or directions of different models;
        :class:`~embed_assets.SchemaMismatchError` when the table holds directions of
        another model or dimension.
    """
    ds = [directions] if isinstance(directions, Direction) else list(directions)
    if not ds:
        raise ValidationError("write_directions needs at least one direction")
    bad = [type(d).__name__ for d in ds if not isinstance(d, Direction)]
    if bad:
        raise ValidationError(f"write_directions takes Direction objects, got {', '.join(bad)}")
    names = [d.name for d in ds]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValidationError(f"direction name(s) given more than once: {', '.join(repeated)}")
    models = sorted({d.model for d in ds if d.model is not None})
    if len(models) > 1:
        raise ValidationError(
            f"directions of different models cannot share a table: {', '.join(models)}")
    dims = sorted({d.dimension for d in ds})
    if len(dims) > 1:
        raise ValidationError(
            f"directions of different dimensions cannot share a table: {dims}")
    mat = np.stack([np.asarray(d.vector, np.float32) for d in ds])
    data = pa.table({
        "name": pa.array(names, pa.string()),
        VECTOR_COLUMN: pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dims[0]),
        "n_pairs": pa.array([d.n_pairs for d in ds], pa.int64()),
        "source_table": pa.array([d.source_table for d in ds], pa.string()),
        "source_version": pa.array([d.source_version for d in ds], pa.int64()),
        "pairs": pa.array([_pairs_json(d.pairs) for d in ds], pa.string()),
    })
    if table in store.table_names():
        t = store.table(table)
        stored = t.get(names, columns=data.column_names)
        if stored.num_rows == len(names) and _same_rows(stored, data):
            # The same directions again (a rerun): no version. The store's upsert would
            # rewrite identical rows, and only this recipe knows rows are cheap to compare.
            return WriteResult(table, t.version, t.version, "upsert")
    return store.write(table, data, key="name", mode="upsert",
                       model=models[0] if models else None, run_id=run_id,
                       properties={"recipe": "directions", "directions": ",".join(names)})


def read_directions(store: Store, table: str = DIRECTIONS_TABLE,
                    version: VersionRef = None) -> dict[str, Direction]:
    """The directions stored in ``table`` at a version (latest by default), by name.

    Parameters
    ----------
    store : Store
    table : str
    version : int or str, optional
        A version number or tag.

    Returns
    -------
    dict of str to Direction
    """
    t = store.table(table)
    v = t.resolve(version)
    tbl = t.read(v)
    missing = {"name", VECTOR_COLUMN, "n_pairs", "source_table", "source_version",
               "pairs"} - set(tbl.column_names)
    if missing:
        raise ValidationError(f"table {table!r} is not a directions table: it has no "
                              f"{', '.join(sorted(missing))} column(s)")
    mat = _matrix(tbl.column(VECTOR_COLUMN))
    model = t.meta_at(v).model
    out = {}
    for i, row in enumerate(tbl.drop_columns([VECTOR_COLUMN]).to_pylist()):
        out[row["name"]] = Direction(
            name=row["name"], vector=mat[i].copy(), n_pairs=int(row["n_pairs"]),
            source_table=row["source_table"], source_version=int(row["source_version"]),
            pairs=[(a, b) for a, b in json.loads(row["pairs"])], model=model)
    return dict(sorted(out.items()))


def apply_direction(table: EmbeddingTable, key: Any, direction: Direction | np.ndarray,
                    k: int = 10, exclude_self: bool = True, *,
                    version: VersionRef = None) -> pa.Table:
    """The ``k`` rows nearest (cosine) to ``vector(key) + direction``.

    Parameters
    ----------
    table : EmbeddingTable
    key : Any
        The row to start from (a key of ``table``).
    direction : Direction or numpy.ndarray
        What to add; a plain vector of the table's dimension works too (scale a
        direction with ``2 * d.vector``).
    k : int
        How many rows to return.
    exclude_self : bool
        Leave the row ``key`` out of the results (default True).
    version : int or str, optional
        The version of ``table`` searched and read ``vector(key)`` from; latest by default.

    Returns
    -------
    pyarrow.Table
        The table's columns plus ``distance`` (cosine, ``1 - cos``) and ``rank``
        (1 = nearest), nearest first: :meth:`EmbeddingTable.search`'s rows.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValidationError(f"k must be a positive integer, got {k!r}")
    v = table.resolve(version)
    meta = table.meta_at(v)
    mat, _ = _rows(table, v, meta.key, [key])
    d = np.asarray(direction.vector if isinstance(direction, Direction) else direction,
                   dtype=np.float32).reshape(-1)
    if d.shape[0] != meta.dimension:
        raise ValidationError(f"the direction has dimension {d.shape[0]}; table "
                              f"{table.name!r} has {meta.dimension}")
    hits = table.search(mat[0] + d, k=k + 1 if exclude_self else k, version=v, metric="cosine")
    if exclude_self:
        keep = [x != key for x in hits.column(meta.key).to_pylist()]
        hits = hits.filter(pa.array(keep, pa.bool_())).slice(0, k)
        i = hits.column_names.index("rank")
        hits = hits.set_column(i, "rank", pa.array(np.arange(1, hits.num_rows + 1), pa.int32()))
    return hits


def evaluate_direction(table: EmbeddingTable, pairs: Iterable[Pair], *, name: str,
                       holdout: float = 0.3, seed: int = 0, k: int = 10,
                       version: VersionRef = None) -> dict[str, Any]:
    """Build a direction on some pairs and measure it on the others.

    The pairs are shuffled with ``seed``; ``holdout`` of them (at least one) are held out,
    the direction is built on the rest. For each held-out pair (a, b) the rows of the
    table (all of them, ``a`` excluded) are ranked by cosine distance to
    ``vector(a) + direction`` and, for the baseline, to ``vector(a)`` alone. ``b`` is a
    hit at ``k`` when fewer than ``k`` rows are strictly nearer than ``b`` (a row at
    exactly ``b``'s distance, e.g. a duplicate description, does not push it out).

    Parameters
    ----------
    table : EmbeddingTable
    pairs : iterable of (a, b)
        At least two pairs.
    name : str
        The direction's name.
    holdout : float
        The share of pairs held out, in (0, 1).
    seed : int
        Seeds the split.
    k : int
        The cut-off of ``hit@k`` (``hit@1`` is always reported too).
    version : int or str, optional
        The version of ``table``; latest by default.

    Returns
    -------
    dict
        ``name``, ``source_table``, ``source_version``, ``n_pairs``, ``n_train``,
        ``n_test``, ``holdout``, ``seed``, ``k``, ``hit@1``, ``hit@{k}`` (shares of held-out
        pairs whose ``b`` is found with the direction), ``baseline_hit@1``,
        ``baseline_hit@{k}`` (the same with ``vector(a)`` alone), ``median_rank`` and
        ``baseline_median_rank`` (1 = nearest), ``direction_norm``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValidationError(f"k must be a positive integer, got {k!r}")
    if not 0 < holdout < 1:
        raise ValidationError(f"holdout must be between 0 and 1 (exclusive), got {holdout!r}")
    pairs = _check_pairs(pairs)
    if len(pairs) < 2:
        raise ValidationError("evaluate_direction needs at least two pairs (one to build "
                              "the direction on, one to hold out)")
    n_test = min(max(round(len(pairs) * holdout), 1), len(pairs) - 1)
    order = np.random.default_rng(seed).permutation(len(pairs))
    test = [pairs[i] for i in sorted(order[:n_test])]
    train = [pairs[i] for i in sorted(order[n_test:])]
    v = table.resolve(version)
    key = table.meta_at(v).key
    tbl = table.read(v, columns=[key, VECTOR_COLUMN])
    mat = _matrix(tbl.column(VECTOR_COLUMN))
    pos = {x: i for i, x in enumerate(tbl.column(key).to_pylist())}
    _missing(table.name, v, [x for p in pairs for x in p], pos)
    direction = build_direction(table, train, name=name, version=v)
    a = np.array([pos[p[0]] for p in test])
    b = np.array([pos[p[1]] for p in test])
    unit = normalize_rows(mat)
    ranks = _ranks(mat[a] + direction.vector, unit, a, b)
    base = _ranks(mat[a], unit, a, b)
    return {
        "name": name, "source_table": table.name, "source_version": v,
        "n_pairs": len(pairs), "n_train": len(train), "n_test": len(test),
        "holdout": holdout, "seed": seed, "k": k,
        "hit@1": float(np.mean(ranks < 1)), f"hit@{k}": float(np.mean(ranks < k)),
        "baseline_hit@1": float(np.mean(base < 1)), f"baseline_hit@{k}": float(np.mean(base < k)),
        "median_rank": float(np.median(ranks)) + 1, "baseline_median_rank": float(np.median(base)) + 1,
        "direction_norm": direction.norm,
    }


def debian_pairs() -> tuple[Any, dict[str, list[Pair]]]:
    """The shipped Debian pairs slice (``embed_assets/data/debian_pairs*.parquet``).

    Returns
    -------
    packages : polars.DataFrame
        ``package``, ``section``, ``description``, ``source``: every package of a pair.
    pairs : dict
        ``{"dev": [(library, its -dev package), ...], "doc": [(package, its -doc
        package), ...]}`` (the rules are in ``scripts/make_pairs_slice.py``).
    """
    from importlib import resources

    import polars as pl

    base = resources.files("embed_assets") / "data"
    with resources.as_file(base / "debian_pairs.parquet") as p:
        packages = pl.read_parquet(p)
    with resources.as_file(base / "debian_pairs_index.parquet") as p:
        index = pl.read_parquet(p)
    pairs: dict[str, list[Pair]] = {}
    for kind, a, b in index.select("kind", "a", "b").iter_rows():
        pairs.setdefault(kind, []).append((a, b))
    return packages, pairs


# -- helpers ------------------------------------------------------------------------------
def _ranks(queries: np.ndarray, unit: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per query, how many rows (row ``a`` excluded) are strictly nearer than row ``b``."""
    out = np.empty(len(a), np.int64)
    for s in range(0, len(a), _BLOCK):
        rows = np.arange(s, min(s + _BLOCK, len(a)))
        dist = 1.0 - normalize_rows(queries[rows]) @ unit.T
        dist[np.arange(len(rows)), a[rows]] = np.inf
        target = dist[np.arange(len(rows)), b[rows]]
        out[rows] = (dist < target[:, None]).sum(axis=1)
    return out


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"a direction needs a non-empty name, got {name!r}")
    return name


def _check_pairs(pairs: Iterable[Pair]) -> list[Pair]:
    if isinstance(pairs, str | bytes):
        raise ValidationError("pairs must be a list of (a, b) keys, not a string")
    out: list[Pair] = []
    for p in pairs:
        if isinstance(p, str | bytes) or not isinstance(p, Sequence) or len(p) != 2:
            raise ValidationError(f"each pair must be two keys (a, b), got {p!r}")
        a, b = _plain(p[0]), _plain(p[1])
        try:
            hash((a, b))
        except TypeError:
            raise ValidationError(f"pair keys must be single key values, got {p!r}") from None
        out.append((a, b))
    if not out:
        raise ValidationError("a direction needs at least one (a, b) pair")
    return out


def _plain(x: Any) -> Any:
    """numpy scalars as Python values (they are keys looked up in Arrow data)."""
    return x.item() if isinstance(x, np.generic) else x


def _rows(table: EmbeddingTable, version: int, key: str,
          keys: list[Any]) -> tuple[np.ndarray, dict[Any, int]]:
    """The vectors of ``keys`` (each once) and each key's row in that matrix; refuses keys
    the version does not hold, naming them."""
    try:
        unique = list(dict.fromkeys(keys))
    except TypeError:  # an unhashable key
        raise ValidationError(f"keys must be single values of the key column {key!r}") from None
    got = table.get(unique, version=version, columns=[key, VECTOR_COLUMN])
    pos = {x: i for i, x in enumerate(got.column(key).to_pylist())}
    _missing(table.name, version, unique, pos)
    return _matrix(got.column(VECTOR_COLUMN)), pos


def _missing(name: str, version: int, keys: list[Any], pos: dict[Any, int]) -> None:
    missing = list(dict.fromkeys(x for x in keys if x not in pos))
    if missing:
        shown = ", ".join(repr(x) for x in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValidationError(f"{len(missing)} key(s) not in table {name!r} at version "
                              f"{version}: {shown}")


def _matrix(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A ``FixedSizeList<float>`` column as a float32 (rows, dim) matrix."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    dim = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), dim).astype(np.float32)


def _same_rows(stored: pa.Table, data: pa.Table) -> bool:
    """Whether ``data`` holds the stored values (the stored schema may differ in nullability
    and field metadata, such as the key declared as Lance's primary key)."""
    try:
        data = data.cast(stored.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        return False
    return bool(stored.sort_by("name").equals(data.sort_by("name")))


def _pairs_json(pairs: list[Pair]) -> str:
    return json.dumps([[a, b] for a, b in pairs], default=str, ensure_ascii=False)


__all__ = ["DIRECTIONS_TABLE", "Direction", "apply_direction", "build_direction", "debian_pairs",
           "evaluate_direction", "read_directions", "write_directions"]
