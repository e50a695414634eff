"""One loaded, immutable version of one served table.

A request takes the table's current :class:`Snapshot` once, at its start, and reads only
from it: the version it names in its answer is the version every row came from, and a
swap that happens meanwhile (a new snapshot assigned) cannot touch it.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..index import tune_memory_probe
from ..kernels import IvfProbe, normalize_rows
from ..store import (
    CACHE,
    OFFSET_COLUMN,
    VECTOR_COLUMN,
    EmbeddingTable,
    Store,
    TableMeta,
    centroids,
    index_config,
    quote_ident,
    search_defaults,
    sql_literal,
)
from ..store import filter_in as _in_list
from ..store.graph import Graph

# Filter operators a request may use; the value is always rendered by the store's literal()
# and the column always checked against the version's schema, so a request can only ever
# name a column and give values, never write SQL.
OPERATORS: dict[str, str] = {"=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass
class Snapshot:
    """A version held in memory: key -> row, the stored vectors, the scalar columns."""

    table: EmbeddingTable  # a handle of its own: searches of this version only
    version: int
    meta: TableMeta
    rows_of: dict[Any, int]  # key -> row offset
    matrix: np.ndarray  # (rows, dim) float32, as stored
    scalars: pa.Table  # every column but the vector, row-aligned with matrix
    key_type: pa.DataType
    loaded_s: float = 0.0
    embedder: Any = None
    schemas: dict[tuple[str, ...], pa.Schema] = field(default_factory=dict)
    ipc_heads: dict[tuple[str, ...], bytes] = field(default_factory=dict)
    arrays: dict[tuple[str, ...], list[pa.Array]] = field(default_factory=dict)
    # Unfiltered kNN: "graph" / "probe" (the store's in-memory paths the index policy
    # chose), "server-probe" (an in-memory probe this server tuned at load, see
    # memory_knn), or whatever else the store's plan is ("exact", "lance").
    knn_path: str = ""
    # The version's verified HNSW graph, as the store's own searches load it, when its
    # policy chose the graph: the server answers the unfiltered kNN requests that are
    # ready together in one knn_query call (see _batch.Batcher).
    graph: Graph | None = field(default=None, repr=False)
    # Each row as a RESP bulk string ($len CRLF vector CRLF), for --resp-port only: a
    # lookup of 100 keys is then one numpy take and one copy (~20 us) instead of 100
    # sliced rows (~60 us). Costs a second copy of the vectors.
    resp_rows: np.ndarray | None = field(default=None, repr=False)
    # Each key as its RESP frame (a bulk string, or an integer for an integer key), for
    # EA.KNN's answers: a 10-hit answer is 21 joined frames (a few us).
    resp_keys: list[bytes] | None = field(default=None, repr=False)
    probe: IvfProbe | None = None
    probe_nprobes: int = 0
    probe_recall: float | None = None

    @property
    def batched_knn(self) -> bool:
        """Unfiltered kNN runs on an in-memory structure that answers many queries at once."""
        return self.graph is not None or self.probe is not None

    @functools.cached_property
    def str_keys(self) -> bool:  # read by every RESP command: computed once
        return pa.types.is_string(self.key_type) or pa.types.is_large_string(self.key_type)

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dimension(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def columns(self) -> list[str]:
        """Scalar columns a request may ask for or filter on."""
        return [n for n in self.scalars.column_names if n != OFFSET_COLUMN]

    # -- request checks -----------------------------------------------------------------
    def check_columns(self, columns: Any) -> list[str]:
        if columns is None:
            return []
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValidationError("columns must be a list of column names")
        known = self.columns
        for c in columns:
            if c not in known:
                raise ValidationError(f"table has no column {c[:60]!r}; columns: {', '.join(known)}")
        return [c for c in dict.fromkeys(columns) if c != self.meta.key]

    def check_keys(self, keys: Any, limit: int) -> list[Any]:
        if not isinstance(keys, list):
            raise ValidationError("keys must be a list")
        if not keys:
            raise ValidationError("keys is empty")
        if len(keys) > limit:
            raise ValidationError(f"{len(keys)} keys asked; at most {limit} per request")
        want: type | tuple[type, ...] = str if pa.types.is_string(self.key_type) or \
            pa.types.is_large_string(self.key_type) else int
        for k in keys:
            if isinstance(k, bool) or not isinstance(k, want):
                raise ValidationError(f"key {str(k)[:40]!r} is not a {getattr(want, '__name__', want)} "
                                      f"(the key column {self.meta.key!r} is {self.key_type})")
        return keys

    def query_vector(self, value: Any) -> np.ndarray:
        """A query vector from a list of numbers, base64 little-endian float32 (JSON) or
        the float32 bytes themselves (RESP)."""
        if isinstance(value, str | bytes):
            raw: bytes = value if isinstance(value, bytes) else b""
            if isinstance(value, str):
                import base64
                import binascii

                try:
                    raw = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    raise ValidationError("vector is not valid base64") from None
            if len(raw) % 4:
                raise ValidationError(f"a vector must be float32 values (a multiple of 4 bytes), "
                                      f"got {len(raw)} bytes")
            q = np.frombuffer(raw, dtype="<f4")
        elif isinstance(value, list):
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
                raise ValidationError("vector must be a list of numbers")
            with np.errstate(over="ignore"):
                q = np.asarray(value, dtype=np.float32)
        else:
            raise ValidationError("vector must be a list of numbers or base64 float32")
        if q.shape != (self.dimension,):
            raise ValidationError(f"vector has dimension {q.shape[0]}; the table's is {self.dimension}")
        if not np.isfinite(q).all():
            raise ValidationError("vector holds NaN or infinity")
        return q

    def where_sql(self, where: Any) -> str | None:
        """A Lance filter from ``{"column": value | [values] | {"op": value}}``: columns
        checked against this version's schema, values rendered as literals (never
        interpolated text)."""
        if where is None:
            return None
        if not isinstance(where, dict) or not where:
            raise ValidationError(
                'where must be an object of column conditions, e.g. {"section": "editors"}')
        known = set(self.columns)
        parts: list[str] = []
        for col, cond in where.items():
            if col not in known:
                raise ValidationError(f"cannot filter on {col[:60]!r}: not a column of the table "
                                      f"(columns: {', '.join(self.columns)})")
            if isinstance(cond, list):
                parts.append(_in_list(col, [_scalar(v) for v in cond]))
            elif isinstance(cond, dict):
                if not cond:
                    raise ValidationError(f"empty condition for {col!r}")
                for op, v in cond.items():
                    if op == "in":
                        if not isinstance(v, list):
                            raise ValidationError(f"{col!r} in: give a list")
                        parts.append(_in_list(col, [_scalar(x) for x in v]))
                    elif op in OPERATORS:
                        parts.append(f"{quote_ident(col)} {OPERATORS[op]} {sql_literal(_scalar(v))}")
                    else:
                        raise ValidationError(f"unknown operator {str(op)[:10]!r}; use one of "
                                              f"{', '.join([*OPERATORS, 'in'])}")
            else:
                parts.append(f"{quote_ident(col)} = {sql_literal(_scalar(cond))}")
        return " AND ".join(f"({p})" for p in parts)

    # -- reads --------------------------------------------------------------------------
    def lookup(self, keys: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        """Row offsets of the stored keys in the order asked, and the keys not stored."""
        rows_of = self.rows_of
        found: list[int] = []
        missing: list[Any] = []
        for k in keys:
            r = rows_of.get(k)
            if r is None:
                missing.append(k)
            else:
                found.append(r)
        return np.asarray(found, dtype=np.int64), missing

    def rows_table(self, rows: np.ndarray, columns: list[str], vectors: bool) -> pa.Table:
        """Key, the asked columns and (if asked) the vectors of the given rows."""
        names, arrays = self._row_arrays(rows, columns, vectors)
        return pa.Table.from_arrays(arrays, schema=self.schema(tuple(names)))

    def _row_arrays(self, rows: np.ndarray, columns: list[str], vectors: bool,
                    ) -> tuple[list[str], list[pa.Array]]:
        names = [self.meta.key, *columns]
        cols = self.arrays.get(tuple(names))
        if cols is None:  # one contiguous array per column, made once per snapshot
            sub = self.scalars.select(names)
            cols = [c.combine_chunks() if c.num_chunks != 1 else c.chunk(0) for c in sub.columns]
            self.arrays[tuple(names)] = cols
        arrays = cols
        if len(rows) == 1:  # a slice costs nothing; take() copies through a kernel
            r = int(rows[0])
            arrays = [a.slice(r, 1) for a in arrays]
        else:
            idx = pa.array(rows, pa.int64())
            arrays = [a.take(idx) for a in arrays]
        if vectors:
            m = self.matrix[rows]
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), self.dimension))
            names.append(VECTOR_COLUMN)
        return names, arrays

    def schema(self, names: tuple[str, ...]) -> pa.Schema:
        """The answer's schema (cached: the IPC encoder reuses its bytes)."""
        s = self.schemas.get(names)
        if s is None:
            hits = names[-1:] == (_HITS,)  # a search's answer (hits_table)
            fields = [self.scalars.schema.field(n) for n in names
                      if n not in (VECTOR_COLUMN, _HITS)]
            if VECTOR_COLUMN in names:
                fields.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), self.dimension)))
            if hits:
                fields += [_DISTANCE, _RANK]
            s = pa.schema(fields)
            self.schemas[names] = s
        return s

    def search(self, q: np.ndarray, k: int, where: str | None, columns: list[str],
               vectors: bool) -> pa.Table:
        if where is None and self.batched_knn:
            self.check_probe_query(q)
            ((idx, dist),) = self.knn_batch(q[None, :], k)
            return self.hits_table(idx, dist, columns, vectors)
        cols = [self.meta.key, *columns] + ([VECTOR_COLUMN] if vectors else [])
        return self.table.search(q, k=k, where=where, version=self.version, columns=cols)

    def knn_batch(self, qs: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The unfiltered k nearest rows of each query (row offsets, distances in the
        store's conventions before :meth:`hits_table`): the graph answers all of them in
        one hnswlib call (C++, one thread: the event loop's), the probe in one batched
        scan."""
        if self.graph is not None:
            idx, dist = self.graph.search_batch(qs, k)
            return list(zip(idx, dist, strict=True))
        assert self.probe is not None
        return self.probe.search_batch(qs, k, self.probe_nprobes)

    def store_distances(self, dist: np.ndarray) -> np.ndarray:
        """Distances of the in-memory paths (:meth:`knn_batch`) as the store answers them:
        Lance ranks by squared L2, the store answers Euclidean."""
        return np.sqrt(np.maximum(dist, 0)) if self.meta.metric == "l2" else dist

    def check_probe_query(self, q: np.ndarray) -> None:
        """What the store's search refuses before its probe runs (see store._search)."""
        if self.meta.metric == "cosine" and not q.any():
            raise ValidationError("query vector is all zeros: it has no cosine distance to any row")

    def hits_table(self, idx: np.ndarray, dist: np.ndarray, columns: list[str],
                   vectors: bool) -> pa.Table:
        """The store's search answer (key, columns, vector, ``distance``, ``rank``) for
        rows found by this snapshot's own probe."""
        names, arrays = self._row_arrays(np.asarray(idx, np.int64), columns, vectors)
        dist = self.store_distances(dist)
        # one table of every column under a cached schema: two append_column calls made two
        # tables and schemas per answer (~10 us of a kNN's ~60 us in Python)
        arrays += [pa.array(np.asarray(dist, np.float32)), _ranks(len(idx))]
        return pa.Table.from_arrays(arrays, schema=self.schema((*names, _HITS)))

    def embed_text(self, text: str) -> np.ndarray:
        if self.embedder is None:
            raise ValidationError(
                "text queries are off for this server (start it with --text, where the "
                f"table's model {self.meta.model!r} is installed)")
        q = np.asarray(self.embedder.embed([text]), dtype=np.float32)[0]
        return q


_DISTANCE = pa.field("distance", pa.float32())
_RANK = pa.field("rank", pa.int32())
_HITS = "\x00hits"  # the schema cache's mark of a search answer (no column has this name)


@functools.lru_cache(maxsize=64)
def _ranks(n: int) -> pa.Array:
    """1..n (immutable: one per k, shared by every answer)."""
    return pa.array(np.arange(1, n + 1, dtype=np.int32))


def check_k(k: Any, max_k: int) -> int:
    """A request's ``k`` (HTTP and RESP alike)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise ValidationError(f"k must be an integer from 1 to {max_k}, got {str(k)[:20]}")
    return k


def _scalar(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValidationError("a filter value is NaN or infinite")
    if v is None or isinstance(v, list | dict):
        raise ValidationError("a filter value must be a string, number or boolean")
    return v


def _policy_probe(snap: Snapshot, ds: Any, key: Any) -> None:
    """Hold the store's own cached probe of the version (the one its searches use, not a
    copy), with the recorded settings, so unfiltered kNN requests that arrive together
    are answered by one batched scan (:meth:`IvfProbe.search_batch`)."""
    d = search_defaults(ds, key.table_id) or {}
    if "probe_rank" not in d or "probe_nprobes" not in d:
        return  # recorded before per-table settings: the store's path keeps them
    probe = CACHE.probe(key, ds, snap.meta.metric, lambda: centroids(ds), int(d["probe_rank"]),
                        int(d.get("probe_candidates", 0)))
    if probe is not None:
        snap.probe, snap.probe_nprobes = probe, int(d["probe_nprobes"])


def memory_knn(snap: Snapshot, ds: Any) -> None:
    """Give ``snap`` an in-memory probe for unfiltered kNN where the version's index
    policy chose Lance's own ANN search, tuned to the version's recall target on its own
    rows, before the snapshot is swapped in.

    Why: Lance's search costs ~3 ms of per-query overhead on one core (planning, the async
    bridge, decoding) against ~0.2 ms for the probe over the same centroids, and a server
    answers on one event loop, so every queued request waits for it: measured with 16
    clients at 63k rows, p99 368 ms with one version on Lance's path (benchmarks/RESULTS.md).
    The tuner compares the paths on one query at a time in process, where Lance's
    overhead is smaller (and noisier under load) than in a server's queue."""
    cents = centroids(ds)
    if cents is None:
        return
    metric = snap.meta.metric
    target = float((index_config(ds) or {}).get("target_recall") or 0.95)
    mat = normalize_rows(snap.matrix) if metric == "cosine" else snap.matrix
    got = tune_memory_probe(mat, cents, metric, target)
    if got is None:
        return
    snap.probe, snap.probe_nprobes, snap.probe_recall = got
    snap.knn_path = "server-probe"


def resp_rows(matrix: np.ndarray) -> np.ndarray:
    """(rows, len) uint8: each vector framed as a RESP bulk string."""
    n, d = matrix.shape
    head = np.frombuffer(b"$%d\r\n" % (d * 4), np.uint8)
    out = np.empty((n, len(head) + d * 4 + 2), np.uint8)
    out[:, :len(head)] = head
    out[:, len(head):-2] = np.ascontiguousarray(matrix, dtype="<f4").view(np.uint8).reshape(n, d * 4)
    out[:, -2:] = (13, 10)
    return out


def resp_keys(keys: list[Any]) -> list[bytes]:
    out = []
    for k in keys:
        if isinstance(k, str):
            b = k.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        else:
            out.append(b":%d\r\n" % k)
    return out


def load(store: Store, name: str, version: int, *, text: bool = False,
         warm_query: bool = True, resp: bool = False) -> Snapshot:
    """Read one version into memory and run one lookup and one search on it, so the first
    request after a swap finds every cache (Lance handles, the store's search structures)
    already built."""
    t0 = time.perf_counter()
    table = store.table(name)
    ds = table.dataset(version)
    meta = TableMeta.infer(ds.schema)
    key = table.cache_key(version)
    scalars = CACHE.scalars(key, ds)
    if scalars is None:  # larger than the cache budget: read it outside the cache
        names = [n for n in ds.schema.names if n != VECTOR_COLUMN]
        scalars = ds.to_table(columns=names).combine_chunks()
    else:
        scalars = scalars.drop_columns([OFFSET_COLUMN])
    vec = ds.to_table(columns=[VECTOR_COLUMN]).column(VECTOR_COLUMN).combine_chunks()
    dim = vec.type.list_size
    matrix = vec.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
    keys = scalars.column(meta.key).to_pylist()
    snap = Snapshot(table=table, version=version, meta=meta, rows_of={k: i for i, k in enumerate(keys)},
                    matrix=matrix, scalars=scalars, key_type=scalars.schema.field(meta.key).type)
    if resp:
        snap.resp_rows = resp_rows(matrix)
        snap.resp_keys = resp_keys(keys)
    if text and meta.model:  # a table of vectors written by hand records no model
        from ..embed import default_embedder

        try:
            snap.embedder = default_embedder(meta.model)
            snap.embedder.embed(["warm"])
        except Exception:  # the model is not installed here: text queries answer 400
            snap.embedder = None
    if warm_query and snap.rows:
        _, plan = table.search(matrix[0], k=10, version=version, columns=[meta.key], explain=True)
        snap.knn_path = plan.path
        if plan.path == "graph":
            snap.graph, _ = table.unfiltered_graph(version)
        elif plan.path == "probe":
            _policy_probe(snap, ds, key)
        elif plan.path == "lance" and plan.ann:
            memory_knn(snap, ds)
        snap.search(matrix[0], 10, None, [], False)
        snap.rows_table(np.zeros(1, np.int64), [], True)
    snap.loaded_s = time.perf_counter() - t0
    return snap
