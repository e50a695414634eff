"""The library's in-memory state, in one object: :data:`STATE` (a :class:`StoreState`).

What it holds, and how each part is bounded:

- ``matrices`` (:class:`MatrixCache`, also reachable as :data:`CACHE`): decoded vectors,
  in-memory IVF probes, HNSW graphs, key indexes, scalar columns and row addresses of
  immutable table versions; bounded by bytes (``EMBED_ASSETS_CACHE_BYTES``, half the
  machine's memory by default), least recently used out first.
- ``facts`` (:class:`Facts`): small facts of versions (schema, TableMeta, row count,
  index report, fragment fingerprint, partition epochs, graphs found unusable); bounded
  by count, least recently used out first.
- ``clients``: object-store clients, one per (store URI, options); bounded by count.
- ``locks``: one thread lock per table lock file (writers of one process take turns);
  held weakly, so an entry lives only while a writer holds its lock. Never cleared.

Keys are :class:`VersionKey` (the table's absolute URI, its identity, the version number)
plus a kind. A Lance version never changes, and the identity changes when a table is
dropped and created again under the same name (whose versions start again at 1), so a
cached entry can never describe rows that are not there. Entries are still dropped per
table when they stop being useful (:meth:`StoreState.clear`): every entry of a table when
it is dropped, those of the versions before an overwrite or a rollback when one commits.
Search, SQL, asset checks and the index tuner all read through :data:`STATE`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import lance
import numpy as np
import pyarrow as pa

from .._config import settings
from ..errors import ValidationError
from ..kernels import IvfProbe, assign_rows, normalize_rows, partition_bounds, prepare_centroids
from ._meta import SCAN_ALL, VECTOR_COLUMN, TableMeta

OFFSET_COLUMN = "__ea_offset"


class VersionKey(NamedTuple):
    """Which rows an entry describes: one version of one incarnation of one table.

    A tuple rather than a frozen dataclass: every search hashes it several times (cache
    and fact lookups), and a dataclass's ``__hash__``/``__eq__`` run in Python (~0.4 us
    each, ~4 us per search at 19k rows, where the whole graph query costs ~35 us)."""

    uri: str  # absolute table URI
    table_id: str
    version: int


class MatrixCache:
    """A byte-bounded LRU of items that have an ``nbytes`` attribute."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = settings().cache_bytes if max_bytes is None else max_bytes
        self._items: OrderedDict[tuple[VersionKey, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held now (the sum of the items' ``nbytes``)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get_or_build(self, key: VersionKey, kind: str, size: Callable[[], int],
                     build: Callable[[], Any | None]) -> Any | None:
        """The cached item, else ``build()``'s (then cached), or None when the estimated
        ``size()`` exceeds the budget or ``build()`` returns None. ``size`` is only asked
        on a miss (it may read the dataset). Two threads missing the same key may both
        build; the first insert wins and both get that item, so bytes are counted once."""
        k = (key, kind)
        with self._lock:
            item = self._items.get(k)
            if item is not None:
                self._items.move_to_end(k)
                return item
        if size() > self.max_bytes:
            return None
        item = build()
        if item is None:
            return None
        with self._lock:
            have = self._items.get(k)
            if have is not None:
                self._items.move_to_end(k)
                return have
            self._items[k] = item
            self._bytes += int(item.nbytes)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= int(old.nbytes)
        return item

    def get(self, key: VersionKey, kind: str) -> Any | None:
        """The cached item, or None (nothing is built)."""
        k = (key, kind)
        item = self._items.get(k)  # one dict lookup under the GIL: safe without the lock
        if item is not None:
            try:  # noqa: SIM105 - suppress() costs a context manager per search
                # one C call as well; the item may have been evicted meanwhile
                self._items.move_to_end(k)
            except KeyError:
                pass
        return item

    def put(self, key: VersionKey, kind: str, item: Any, replace: bool = False) -> None:
        """Seed the cache with an item built elsewhere (the index tuner's probe);
        ``replace`` drops an entry already there (it no longer describes its rows)."""
        if replace:
            with self._lock:
                old = self._items.pop((key, kind), None)
                if old is not None:
                    self._bytes -= int(old.nbytes)
        self.get_or_build(key, kind, lambda: int(item.nbytes), lambda: item)

    def forget(self, uri: str, before: int | None = None) -> None:
        """Drop the entries of one table URI: all of them, or those of versions before
        ``before``."""
        with self._lock:
            for k in [k for k in self._items if _of(k[0], uri, before)]:
                self._bytes -= int(self._items.pop(k).nbytes)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    # -- the kinds of entry --------------------------------------------------------------
    def matrix(self, key: VersionKey, ds: lance.LanceDataset, metric: str) -> np.ndarray | None:
        """Row-aligned float32 matrix of the version, or None if it cannot fit: unit rows
        for ``"cosine"``, the stored vectors for any other metric (``"dot"``, ``"l2"``, or
        ``"raw"`` for readers that want them as stored: asset checks, SQL)."""
        kind = "matrix/unit" if metric == "cosine" else "matrix/raw"
        return self.get_or_build(key, kind, lambda: _vector_bytes(ds),
                                 lambda: load_matrix(ds, metric))

    def probe(self, key: VersionKey, ds: lance.LanceDataset, metric: str,
              centroids: Callable[[], np.ndarray | None], rank: int, candidates: int,
              ) -> IvfProbe | None:
        """The partition-sorted in-memory IVF probe of the version."""

        def build() -> IvfProbe | None:
            cents = centroids()
            if cents is None:
                return None
            # Not through matrix(): the probe keeps its own partition-ordered copy (read in
            # that order), and an indexed table is searched through the probe, so a cached
            # matrix would be idle.
            block, order, bounds = load_partitioned(ds, metric, cents)
            return IvfProbe.from_sorted(block, order, bounds, prepare_centroids(cents, metric),
                                        metric, rank=rank, candidates=candidates)

        return self.get_or_build(key, probe_kind(metric, rank, candidates),
                                 lambda: _vector_bytes(ds), build)

    def key_index(self, key: VersionKey, ds: lance.LanceDataset, column: str) -> KeyIndex | None:
        """Sorted keys and their row offsets (one scan of the key column)."""
        return self.get_or_build(key, "key:" + column, lambda: ds.count_rows() * 16,
                                 lambda: KeyIndex.build(ds, column))

    def scalars(self, key: VersionKey, ds: lance.LanceDataset) -> pa.Table | None:
        """Every column but the vector, in memory (None if it cannot fit), plus
        :data:`OFFSET_COLUMN`, each row's offset in the version."""
        got = self.scalar_columns(key, ds)
        return None if got is None else got.table

    def scalar_columns(self, key: VersionKey, ds: lance.LanceDataset) -> ScalarColumns | None:
        """:meth:`scalars` with its per-column gather views (:func:`take_rows`)."""
        got = self.get(key, "scalars")  # the hit without a closure: every search
        if got is not None:
            return got

        # (the column names only on a miss)
        def names() -> list[str]:
            return [n for n in schema_of(key, ds).names if n != VECTOR_COLUMN]

        def build() -> ScalarColumns:
            t = ds.to_table(columns=names(), filter=SCAN_ALL).combine_chunks()
            return ScalarColumns(t.append_column(
                OFFSET_COLUMN, pa.array(np.arange(t.num_rows, dtype=np.int64))))

        return self.get_or_build(key, "scalars", lambda: ds.count_rows() * 32 * max(1, len(names())),
                                 build)


class ScalarColumns:
    """A version's scalar columns in memory, and for each column how :func:`take_rows`
    gathers it: a zero-copy numpy view (a fixed-width column without nulls, in one chunk)
    or the Arrow column. Worked out once per column, not on every search: the checks and
    the view cost ~3 us per column, a tenth of a graph query at 19k rows."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.nbytes = int(table.nbytes)
        self._gather: dict[str, tuple[np.ndarray | None, pa.ChunkedArray]] = {}

    def gather(self, name: str) -> tuple[np.ndarray | None, pa.ChunkedArray]:
        got = self._gather.get(name)
        if got is None:
            col = self.table.column(name)
            view = col.chunk(0).to_numpy(zero_copy_only=True) \
                if col.num_chunks == 1 and col.null_count == 0 and _fixed_width(col.type) else None
            if view is not None and pa.from_numpy_dtype(view.dtype) != col.type:
                view = None
            got = self._gather[name] = (view, col)
        return got


def probe_kind(metric: str, rank: int, candidates: int) -> str:
    return f"probe/{metric}/{rank}/{candidates}"


def _vector_bytes(ds: lance.LanceDataset) -> int:
    return ds.count_rows() * ds.schema.field(VECTOR_COLUMN).type.list_size * 4


class KeyIndex:
    """Key -> row offset of one immutable version, by binary search over sorted keys.

    A Lance BTREE lookup through the scanner plans a query each time (milliseconds); the
    "fetch these keys now" case wants a take() of known offsets instead.
    """

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, arrow_type: pa.DataType) -> None:
        self.keys = keys
        self.offsets = offsets
        self.arrow_type = arrow_type
        self.nbytes = int(keys.nbytes + offsets.nbytes) if keys.dtype != object else \
            int(offsets.nbytes * 8)

    @classmethod
    def build(cls, ds: lance.LanceDataset, column: str) -> KeyIndex:
        col = ds.to_table(columns=[column]).column(column).combine_chunks()
        arr = col.to_numpy(zero_copy_only=False)
        order = np.argsort(arr, kind="stable")
        return cls(arr[order], order.astype(np.int64), col.type)

    def lookup(self, wanted: Sequence[Any]) -> np.ndarray:
        """Row offsets of the wanted keys that are stored, in the order asked. A value is
        never converted to find a match: 1.5 or "1" do not find the integer key 1."""
        if not len(wanted) or not len(self.keys):
            return np.zeros(0, np.int64)
        w = _exact_keys(list(wanted), self.arrow_type)
        if w is None or not len(w):
            return np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.keys, w), len(self.keys) - 1)
        hit = self.keys[pos] == w
        return self.offsets[pos[hit]]


def _exact_keys(wanted: list[Any], typ: pa.DataType) -> np.ndarray | None:
    """The wanted keys that can equal a stored key of type ``typ``, as an array of the
    stored keys' numpy type; the others are dropped (they cannot be stored)."""
    if pa.types.is_integer(typ):
        info = np.iinfo(typ.to_pandas_dtype())
        keep = [int(v) for v in wanted
                if isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
                and info.min <= int(v) <= info.max]
        return np.asarray(keep, dtype=typ.to_pandas_dtype())
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return np.asarray([v for v in wanted if isinstance(v, str)], dtype=object)
    try:  # other key types: Arrow's own safe cast, which refuses lossy conversions
        arr = pa.array(wanted).cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    return arr.to_numpy(zero_copy_only=False)


def _of(key: VersionKey, uri: str, before: int | None) -> bool:
    return key.uri == uri and (before is None or key.version < before)


class Facts:
    """Small facts of immutable versions, computed once each: a count-bounded LRU of
    ``(VersionKey, kind) -> value``. Each fact costs Lance or JSON work otherwise
    (``LanceDataset.schema`` builds the schema anew on every call, ~30-50 us;
    ``describe_indices`` and ``config()`` ~0.1 ms), several times per search."""

    def __init__(self, max_items: int = 16_384) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple[VersionKey, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: VersionKey, kind: str, build: Callable[[], Any]) -> Any:
        """The fact, else ``build()``'s (then kept)."""
        k = (key, kind)
        with self._lock:
            if k in self._items:
                self._items.move_to_end(k)
                return self._items[k]
        got = build()
        self.put(key, kind, got)
        return got

    def peek(self, key: VersionKey, kind: str) -> Any | None:
        """The fact if known (None otherwise); builds nothing."""
        with self._lock:
            return self._items.get((key, kind))

    def put(self, key: VersionKey, kind: str, value: Any) -> None:
        with self._lock:
            self._items[(key, kind)] = value
            self._items.move_to_end((key, kind))
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def forget(self, uri: str, before: int | None = None, kind_prefix: str = "") -> None:
        """Drop the facts of one table URI (all, or of versions before ``before``), or
        with ``uri=""`` the facts of every table whose kind starts with ``kind_prefix``."""
        with self._lock:
            for k in [k for k in self._items
                      if (not uri or _of(k[0], uri, before)) and k[1].startswith(kind_prefix)]:
                del self._items[k]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class StoreState:
    """Everything embed_assets keeps in memory between calls, in one object (the module
    docstring lists its parts and their bounds). One per process: tables are keyed by
    their URI, so every :class:`~embed_assets.store.Store` opened on one folder, every
    SQL connection and the serving tier share what one of them loaded.

    Parameters
    ----------
    max_bytes : int, optional
        The bound of ``matrices`` (default: ``EMBED_ASSETS_CACHE_BYTES``, half the
        machine's memory).
    max_facts, max_clients : int
        The bounds of ``facts`` and ``clients`` (entries).
    """

    def __init__(self, max_bytes: int | None = None, max_facts: int = 16_384,
                 max_clients: int = 32) -> None:
        self.matrices = MatrixCache(max_bytes)
        self.facts = Facts(max_facts)
        self.max_clients = max_clients
        self._clients: OrderedDict[Any, Any] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        s = self.stats()
        return (f"StoreState(matrices={s['matrices']} items/{s['matrix_bytes']:,} of "
                f"{s['max_bytes']:,} bytes, facts={s['facts']}, clients={s['clients']})")

    def clear(self, table: str | _HasUri | None = None, *, before: int | None = None) -> None:
        """Drop what is held for one table (a table URI, or anything with ``.uri``, such as
        an :class:`~embed_assets.store.EmbeddingTable`): all its versions, or those before
        version ``before``. Without a table: everything but the locks (a fresh process)."""
        if table is None:
            self.matrices.clear()
            self.facts.clear()
            with self._guard:
                self._clients.clear()
            return
        uri = table if isinstance(table, str) else table.uri
        self.matrices.forget(uri, before)
        self.facts.forget(uri, before)

    def stats(self) -> dict[str, int]:
        """What is held now, and the bounds."""
        with self._guard:
            clients = len(self._clients)
        return {"matrices": len(self.matrices), "matrix_bytes": self.matrices.nbytes,
                "max_bytes": self.matrices.max_bytes, "facts": len(self.facts),
                "max_facts": self.facts.max_items, "clients": clients,
                "max_clients": self.max_clients}

    def client(self, key: Any, make: Callable[[], Any]) -> Any:
        """The object-store client for ``key`` (made once; the least recently used out)."""
        with self._guard:
            got = self._clients.get(key)
            if got is not None:
                self._clients.move_to_end(key)
                return got
        made = make()
        with self._guard:
            got = self._clients.setdefault(key, made)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        return got

    def thread_lock(self, path: str) -> Any:
        """The thread lock of one lock file: fcntl locks belong to a process, so threads of
        one process need their own exclusion. Held weakly: while a writer holds the lock
        (and so a reference to it) every other writer gets the same one."""
        with self._guard:
            lock = self._locks.get(path)
            if lock is None:
                lock = self._locks[path] = threading.Lock()
            return lock


class _HasUri(Protocol):
    @property
    def uri(self) -> str: ...


STATE = StoreState()
CACHE = STATE.matrices  # the byte-bounded part, by the name search, SQL and checks read


def version_fact(key: VersionKey, kind: str, build: Callable[[], Any]) -> Any:
    """A small fact of one immutable version, computed once (:class:`Facts`)."""
    return STATE.facts.get(key, kind, build)


def meta_of(key: VersionKey, ds: lance.LanceDataset) -> TableMeta:
    """The version's TableMeta (parsed once: it is JSON in the schema metadata)."""
    return version_fact(key, "meta", lambda: TableMeta.infer(schema_of(key, ds)))


def schema_of(key: VersionKey, ds: lance.LanceDataset) -> pa.Schema:
    return version_fact(key, "schema", lambda: ds.schema)


def take_rows(key: VersionKey, ds: lance.LanceDataset, offsets: np.ndarray,
              columns: Sequence[str] | None,
              extra: Sequence[tuple[pa.Field, pa.Array]] = ()) -> pa.Table:
    """The rows at ``offsets`` of one version, in that order (then the ``extra`` columns).

    A Lance ``take`` of k random rows costs ~0.8 ms (a page read and decode per row); the
    version's scalar columns are kept in memory instead (:meth:`MatrixCache.scalars`), so
    a search that does not ask for the vector column never goes back to Lance. A
    fixed-width column without nulls is indexed as numpy, zero-copy: Arrow's ``take``
    kernel and the table built around it cost ~0.1 ms per search at k = 10, a third of
    an HNSW query.
    """
    names = tuple(columns) if columns else None
    out_schema, small, want_vec = version_fact(
        key, "take:" + repr((names, tuple(f.name for f, _ in extra))),  # str: forget() matches prefixes
        lambda: _take_plan(schema_of(key, ds), names, extra))
    names = out_schema.names[:len(out_schema) - len(extra)]
    mem = CACHE.scalar_columns(key, ds) if small else None
    if small and mem is None:
        got = ds.take(np.asarray(offsets).tolist(), columns=list(names))
        return pa.Table.from_arrays([*got.columns, *(a for _, a in extra)], schema=out_schema)
    offsets = np.asarray(offsets, dtype=np.int64)
    idx: pa.Array | None = None
    vec = ds.take(offsets.tolist(), columns=[VECTOR_COLUMN]) if want_vec else None
    arrays: list[Any] = []
    for c in names:
        if c == VECTOR_COLUMN:
            arrays.append(vec.column(c))  # type: ignore[union-attr]
            continue
        view, col = mem.gather(c)  # type: ignore[union-attr]
        if view is not None:
            # (untyped: the view's dtype is the column's, and a typed pa.array costs
            # twice as much)
            arrays.append(pa.array(view[offsets]))
        else:
            idx = pa.array(offsets) if idx is None else idx
            arrays.append(col.take(idx))
    arrays.extend(a for _, a in extra)
    if any(isinstance(a, pa.ChunkedArray) for a in arrays):
        return pa.Table.from_arrays(arrays, schema=out_schema)
    # through a record batch: Table.from_arrays(schema=) costs ~1 us more per search
    return pa.Table.from_batches([pa.RecordBatch.from_arrays(arrays, schema=out_schema)])


def _fixed_width(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _take_plan(schema: pa.Schema, columns: tuple[str, ...] | None,
               extra: Sequence[tuple[pa.Field, pa.Array]]) -> tuple[pa.Schema, bool, bool]:
    """The result's schema, whether any scalar column is asked for, and whether the
    vector column is."""
    names = columns if columns is not None else tuple(schema.names)
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ValidationError(f"unknown column(s) {', '.join(map(repr, unknown))}; "
                              f"columns: {', '.join(schema.names)}")
    out = pa.schema([*(schema.field(c) for c in names), *(f for f, _ in extra)])
    return out, any(c != VECTOR_COLUMN for c in names), VECTOR_COLUMN in names


def _vector_blocks(ds: lance.LanceDataset, metric: str, rows: int,
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """(offset of its first row, rows) of each batch of the version's vectors, unit rows
    for ``"cosine"``; raises when the version holds another number of rows than ``rows``."""
    dim = ds.schema.field(VECTOR_COLUMN).type.list_size
    pos = 0
    for batch in ds.to_batches(columns=[VECTOR_COLUMN], filter=SCAN_ALL):
        n = batch.num_rows
        if not n:
            continue
        if pos + n > rows:
            raise ValueError(f"version {ds.version} holds more vector rows than its {rows} rows")
        block = batch.column(0).flatten().to_numpy(zero_copy_only=False).reshape(n, dim)
        yield pos, normalize_rows(block) if metric == "cosine" else block
        pos += n
    if pos != rows:
        raise ValueError(f"version {ds.version} holds {pos} vector rows, not {rows}")


def load_matrix(ds: lance.LanceDataset, metric: str) -> np.ndarray:
    """The version's vectors as one float32 matrix (unit rows for ``"cosine"``, as stored
    otherwise)."""
    rows = ds.count_rows()
    # Filled batch by batch into one matrix: reading the whole column, combining its
    # chunks, casting and normalising held up to four copies of the rows at once
    # (build_index at 250k rows peaked at 4.2x the matrix; issue 29 measured a 1M load
    # at 3.9x, floor 1.5x).
    out = np.empty((rows, ds.schema.field(VECTOR_COLUMN).type.list_size), np.float32)
    for pos, block in _vector_blocks(ds, metric, rows):
        out[pos:pos + len(block)] = block
    release_freed_memory()
    return out


def load_partitioned(ds: lance.LanceDataset, metric: str, centroids: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The version's vectors grouped by nearest centroid, for an IVF probe: (``block``,
    ``order``, ``bounds``) as :meth:`IvfProbe.from_sorted` takes them.

    Two reads of the column (one to assign the rows, one to place them) instead of a
    matrix and its partition-ordered copy: one copy of the rows at the peak, not two
    (a probe's load and an index build held both; build_index peaked at 3.9x the matrix
    at 250k rows, issue 29's floor is 2.5x)."""
    rows = ds.count_rows()
    cents = prepare_centroids(centroids, metric)
    assign = np.empty(rows, np.int32)
    for pos, block in _vector_blocks(ds, metric, rows):
        assign[pos:pos + len(block)] = assign_rows(block, cents)
    order = np.argsort(assign, kind="stable").astype(np.int64)
    bounds = partition_bounds(assign, len(cents))
    del assign
    where = np.empty(rows, np.int64)
    where[order] = np.arange(rows)
    out = np.empty((rows, ds.schema.field(VECTOR_COLUMN).type.list_size), np.float32)
    for pos, block in _vector_blocks(ds, metric, rows):
        out[where[pos:pos + len(block)]] = block
    release_freed_memory()
    return out, order, bounds


def _libc() -> Any:
    """glibc, or None (another C library: the calls below are glibc's)."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            lib = ctypes.CDLL("libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _LIBC = False
    return _LIBC or None


_LIBC: Any = None
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def release_freed_memory() -> None:
    """Hand memory freed by Lance's reads and index builds back to the system (glibc's
    ``malloc_trim``; a no-op elsewhere): at 250k rows `create_index` left 0.19 GB
    resident that this returned, which would otherwise sit under the next step's peak."""
    lib = _libc()
    if lib is not None:
        lib.malloc_trim(0)


@contextlib.contextmanager
def large_allocations_unpooled(threshold: int = 4 << 20) -> Iterator[None]:
    """Within the block, allocations from ``threshold`` bytes up get pages of their own
    (glibc's ``M_MMAP_THRESHOLD``), returned to the system when freed.

    Kept for index builds, by measurement: glibc raises its threshold to the size of
    each large block freed (up to 32 MiB), after which Lance's decode buffers, score
    blocks and batches were carved from its heap, interleaved with live data, and held
    after their release: build_index at 250k rows kept 1.05x the rows' size resident
    after Lance's training, untouched by ``malloc_trim``, and peaked at 2.9x them; with
    the threshold held at 4 MiB the same build peaked at 2.0x (benchmarks/RESULTS.md).
    Afterwards the threshold is set to glibc's own ceiling, where a long-running process
    ends up anyway, so searches keep reusing their buffers."""
    lib = _libc()
    if lib is None:
        yield
        return
    lib.mallopt(_M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        lib.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        lib.malloc_trim(0)
