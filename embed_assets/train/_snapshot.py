"""Training snapshots: one table version exported once to a local, memory-mapped cache.

A training job reads the same version for many epochs, often from several processes
(DataLoader workers, ranks on one node). Reading it from the store each epoch decodes
Lance pages again, and over object storage fetches them again; a key-value cache does
not help either (it is filled per request, not per version). A snapshot is a folder:

    <cache>/<table>-v<version>-<id>/
        vectors.f32      the float32 matrix, row-major, rows x dimension (np.memmap)
        rows.arrow       the key and the chosen columns, an Arrow IPC file (memory-mapped)
        manifest.json    what it holds: store URI, table identity, version, shape,
                         columns, and the sha256 and size of both files; written last

``<id>`` is a hash of (table URI, table identity, version, columns), so a snapshot is
reused only for exactly that version of that incarnation of that table in that store
(a table dropped and recreated under the same name has another identity).

It is written into ``<cache>/.tmp-<random>/`` and renamed into place in one
``rename``: a crash leaves a ``.tmp-*`` folder that is never read (and that
:func:`cleanup_snapshots` removes), never a half snapshot under a real name. Two
processes exporting the same version at once both build it; the first rename wins and
the other's copy is discarded. Opening checks sizes always and checksums once per
process (``verify="full"``, default) or never (``"size"``); a snapshot that fails is
rebuilt by :func:`snapshot` and refused by :func:`open_snapshot`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from .._config import settings
from ..errors import StorageError, ValidationError
from ..store import SCAN_ALL, VECTOR_COLUMN, EmbeddingTable, VersionRef

FORMAT = 1
VECTORS = "vectors.f32"
ROWS = "rows.arrow"
MANIFEST = "manifest.json"
LAST_USED = ".last_used"
TMP_PREFIX = ".tmp-"
_CHUNK = 8 << 20
# Checksums verified in this process, by (path, manifest mtime); the oldest forgotten past
# _VERIFIED_MAX (forgetting one costs a checksum of that snapshot when it is opened again).
_verified: dict[tuple[str, float], None] = {}
_verified_guard = threading.Lock()
_VERIFIED_MAX = 4096


def _remember(stamp: tuple[str, float]) -> None:
    with _verified_guard:
        _verified[stamp] = None
        while len(_verified) > _VERIFIED_MAX:
            del _verified[next(iter(_verified))]

Verify = Literal["full", "size"]


def default_cache_dir() -> str:
    """``$EMBED_ASSETS_SNAPSHOT_DIR``, else ``~/.cache/embed_assets/snapshots``."""
    return settings().snapshot_dir


def snapshot_id(uri: str, table_id: str, version: int, columns: Sequence[str]) -> str:
    """The cache identity of a snapshot (16 hex digits)."""
    raw = json.dumps([uri, table_id, int(version), list(columns)]).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class Snapshot:
    """A verified snapshot on local disk: ``vectors`` (a read-only float32 memmap,
    rows x dimension) and ``rows`` (the key and chosen columns, memory-mapped Arrow)."""

    path: str
    manifest: dict[str, Any]
    reused: bool = False
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _rows: pa.Table | None = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # sent to DataLoader workers (spawn/forkserver): the path, not the mapped data;
        # each worker maps the same file, so the pages are shared, not copied
        return {"path": self.path, "manifest": self.manifest, "reused": self.reused,
                "_vectors": None, "_rows": None}

    # -- facts -----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    def __len__(self) -> int:
        return self.rows

    @property
    def dimension(self) -> int:
        return int(self.manifest["dimension"])

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def columns(self) -> list[str]:
        return list(self.manifest["columns"])

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "table": self.manifest["table"], "version": self.version,
                "rows": self.rows, "dimension": self.dimension, "columns": self.columns,
                "reused": self.reused, "store": self.manifest["store"]}

    # -- data ------------------------------------------------------------------------------
    @property
    def vectors(self) -> np.ndarray:
        """The matrix, memory-mapped read-only (pages load on first touch, shared by every
        process that maps the same file)."""
        if self._vectors is None:
            if self.rows == 0:
                self._vectors = np.zeros((0, self.dimension), np.float32)
            else:
                self._vectors = np.memmap(os.path.join(self.path, VECTORS), dtype=np.float32, mode="r",
                                          shape=(self.rows, self.dimension))
        return self._vectors

    @property
    def table(self) -> pa.Table:
        """The key and chosen columns, row-aligned with :attr:`vectors` (memory-mapped)."""
        if self._rows is None:
            with pa.memory_map(os.path.join(self.path, ROWS), "r") as src:
                self._rows = pa.ipc.open_file(src).read_all()
        return self._rows

    def keys(self) -> np.ndarray:
        return self.table.column(self.key).to_numpy(zero_copy_only=False)

    def batch(self, indices: np.ndarray, columns: Sequence[str] | None = None) -> dict[str, Any]:
        """Rows at ``indices``: ``{"vector": (n, dim) float32, key: (n,), column: (n,)...}``."""
        idx = np.asarray(indices, dtype=np.int64)
        out: dict[str, Any] = {"vector": np.asarray(self.vectors[idx])}
        names = [self.key, *(self.columns if columns is None else columns)]
        sub = self.table.select(list(dict.fromkeys(names))).take(pa.array(idx))
        for name in sub.column_names:
            out[name] = sub.column(name).to_numpy(zero_copy_only=False)
        return out

    def batches(self, batch_size: int = 1024, *, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False, columns: Sequence[str] | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, Any]]:
        """One epoch as numpy batches (see :meth:`batch`).

        Parameters
        ----------
        shuffle, seed
            A fresh permutation of the rows (seeded: the same seed gives the same epoch).
            Unshuffled batches are contiguous slices of the memmap (no copy of the index).
        shard : (index, count)
            Only every ``count``-th batch starting at ``index`` (data-parallel workers).
        columns : sequence of str, optional
            Which of the snapshot's columns to include (default all); ``[]`` for none.
        """
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
        n = self.rows
        order = np.random.default_rng(seed).permutation(n) if shuffle else None
        starts = range(0, n - batch_size + 1 if drop_last else n, batch_size)
        i, count = shard
        for b, start in enumerate(starts):
            if b % count != i:
                continue
            stop = min(start + batch_size, n)
            if order is None:
                out: dict[str, Any] = {"vector": np.asarray(self.vectors[start:stop])}
                names = [self.key, *(self.columns if columns is None else columns)]
                sub = self.table.select(list(dict.fromkeys(names))).slice(start, stop - start)
                for name in sub.column_names:
                    out[name] = sub.column(name).to_numpy(zero_copy_only=False)
                yield out
            else:
                yield self.batch(order[start:stop], columns)

    def torch_dataset(self, columns: Sequence[str] | None = None) -> Any:
        """A map-style ``torch.utils.data.Dataset``: item ``i`` is ``{"vector": tensor,
        key: value, column: value...}``. torch is imported here, not with the package."""
        return _torch_classes()[0](self, columns)

    def torch_iterable(self, batch_size: int = 1024, *, shuffle: bool = False, seed: int | None = None,
                       drop_last: bool = False, columns: Sequence[str] | None = None) -> Any:
        """A ``torch.utils.data.IterableDataset`` of whole batches (use
        ``DataLoader(ds, batch_size=None)``); each DataLoader worker reads its own share of
        the batches, so an epoch covers every row exactly once however many workers."""
        return _torch_classes()[1](self, batch_size, shuffle, seed, drop_last, columns)


def _torch_classes() -> tuple[type, type]:
    from . import _torch  # imports torch: only when a PyTorch dataset is asked for

    return _torch.SnapshotDataset, _torch.SnapshotBatches


# -- building and opening ---------------------------------------------------------------------
def _check(path: str, verify: Verify) -> dict[str, Any]:
    """The manifest of a complete, intact snapshot folder; raises StorageError otherwise."""
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            man = json.load(f)
    except (OSError, ValueError) as exc:
        raise StorageError(f"snapshot {path} has no readable manifest: {exc}") from None
    if man.get("format") != FORMAT:
        raise StorageError(f"snapshot {path} has format {man.get('format')!r}, expected {FORMAT}")
    for name in (VECTORS, ROWS):
        p = os.path.join(path, name)
        size = os.path.getsize(p) if os.path.exists(p) else -1
        if size != man["files"][name]["bytes"]:
            raise StorageError(f"snapshot {path}: {name} has {size} bytes, the manifest says "
                               f"{man['files'][name]['bytes']}")
    if verify == "full":
        stamp = (path, os.path.getmtime(os.path.join(path, MANIFEST)))
        with _verified_guard:
            done = stamp in _verified
        if not done:
            for name in (VECTORS, ROWS):
                if _sha256(os.path.join(path, name)) != man["files"][name]["sha256"]:
                    raise StorageError(f"snapshot {path}: {name} does not match its checksum")
            _remember(stamp)
    return man


def _check_verify(verify: Any) -> None:
    if verify not in ("full", "size"):
        raise ValidationError(f"verify must be 'full' or 'size', got {verify!r}")


def open_snapshot(path: str | os.PathLike[str], *, verify: Verify = "full") -> Snapshot:
    """Open a snapshot folder (another process's export, a copy on a training node),
    checking it first; :class:`StorageError` if it is incomplete or corrupt."""
    path = os.path.abspath(os.fspath(path))
    _check_verify(verify)
    man = _check(path, verify)
    with contextlib.suppress(OSError), open(os.path.join(path, LAST_USED), "w") as f:
        f.write(dt.datetime.now(dt.UTC).isoformat())
    return Snapshot(path=path, manifest=man, reused=True)


def snapshot(table: EmbeddingTable, version: VersionRef = None, *, columns: Sequence[str] | None = None,
             cache_dir: str | os.PathLike[str] | None = None, verify: Verify = "full",
             batch_rows: int = 65_536) -> Snapshot:
    """Export one version (number or tag; default the latest) of a table to the local
    snapshot cache, or reuse the export already there.

    Parameters
    ----------
    table : EmbeddingTable
        ``store.table(name)``; any store, local or object storage.
    version : int or str, optional
        A version number or tag, resolved once: the snapshot is of that number (moving the
        tag later does not change it).
    columns : sequence of str, optional
        Columns to keep beside the key and the vector (default none).
    cache_dir : path, optional
        Default ``$EMBED_ASSETS_SNAPSHOT_DIR`` or ``~/.cache/embed_assets/snapshots``.
    verify : {"full", "size"}
        Check an existing snapshot's checksums (once per process) or only its file sizes.

    Returns
    -------
    Snapshot
        ``reused`` says whether an existing export was used.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from embed_assets import Store
    >>> s = Store(tempfile.mkdtemp())
    >>> _ = s.write("docs", {"id": [1, 2, 3], "vector": np.eye(3, 4)}, key="id")
    >>> snap = snapshot(s.table("docs"), cache_dir=tempfile.mkdtemp())
    >>> snap.vectors.shape, [b["id"].tolist() for b in snap.batches(2)]
    ((3, 4), [[1, 2], [3]])
    """
    _check_verify(verify)
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValidationError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    cols = list(dict.fromkeys(columns or []))
    ds = table.dataset(version)  # VersionNotFoundError for an unknown version or tag
    meta = table.meta_at(ds.version)
    unknown = [c for c in cols if c not in ds.schema.names or c == VECTOR_COLUMN]
    if unknown:
        raise ValidationError(f"snapshot: unknown column(s) {', '.join(map(repr, unknown))}; columns: "
                              f"{', '.join(n for n in ds.schema.names if n != VECTOR_COLUMN)}")
    if VECTOR_COLUMN not in ds.schema.names:
        raise ValidationError(f"table {table.name!r} has no {VECTOR_COLUMN!r} column")
    cols = [c for c in cols if c != meta.key]
    root = os.path.abspath(os.fspath(cache_dir) if cache_dir is not None else default_cache_dir())
    sid = snapshot_id(table.uri, table.identity, ds.version, cols)
    final = os.path.join(root, f"{table.name}-v{ds.version}-{sid}")
    if os.path.isdir(final):
        try:
            return open_snapshot(final, verify=verify)
        except StorageError:  # torn or corrupted by something else: set it aside, rebuild
            shutil.rmtree(final, ignore_errors=True)
    _make_cache_dir(root)
    tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root)
    try:
        man = _export(table, ds, meta.key, cols, tmp, batch_rows)
        try:
            os.rename(tmp, final)
        except OSError:  # another process renamed its copy first: use that one
            if not os.path.isdir(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return open_snapshot(final, verify=verify)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remember((final, os.path.getmtime(os.path.join(final, MANIFEST))))
    return Snapshot(path=final, manifest=man, reused=False)


def _export(table: EmbeddingTable, ds: Any, key: str, cols: list[str], tmp: str,
            batch_rows: int) -> dict[str, Any]:
    """One scan of the version: vectors to ``vectors.f32``, the rest to ``rows.arrow``,
    both hashed as they are written; the manifest last."""
    dim = ds.schema.field(VECTOR_COLUMN).type.list_size
    small = [key, *cols]
    schema = pa.schema([ds.schema.field(c) for c in small])
    h_vec = hashlib.sha256()
    rows = 0
    t0 = time.perf_counter()
    vec_path, rows_path = os.path.join(tmp, VECTORS), os.path.join(tmp, ROWS)
    with open(vec_path, "wb") as vf, pa.OSFile(rows_path, "wb") as rf, \
            pa.ipc.new_file(rf, schema) as writer:
        for batch in ds.to_batches(columns=[*small, VECTOR_COLUMN], filter=SCAN_ALL,
                                   batch_size=batch_rows):
            vec = batch.column(VECTOR_COLUMN)
            mat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            buf = np.ascontiguousarray(mat.reshape(len(vec), dim)).tobytes()
            vf.write(buf)
            h_vec.update(buf)
            writer.write_batch(pa.record_batch([batch.column(c) for c in small], schema=schema))
            rows += batch.num_rows
        vf.flush()
        os.fsync(vf.fileno())
    with open(rows_path, "rb+") as f:
        os.fsync(f.fileno())
    man = {
        "format": FORMAT, "store": table.store.uri, "table": table.name, "table_uri": table.uri,
        "table_id": table.identity, "version": int(ds.version), "rows": rows, "dimension": dim,
        "dtype": "float32", "key": key, "columns": cols,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "export_seconds": round(time.perf_counter() - t0, 3),
        "files": {VECTORS: {"bytes": os.path.getsize(vec_path), "sha256": h_vec.hexdigest()},
                  ROWS: {"bytes": os.path.getsize(rows_path), "sha256": _sha256(rows_path)}},
    }
    part = os.path.join(tmp, MANIFEST + ".part")
    with open(part, "w") as f:
        json.dump(man, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(part, os.path.join(tmp, MANIFEST))
    _fsync_dir(tmp)
    return man


# -- listing and cleanup ----------------------------------------------------------------------
@dataclass(frozen=True)
class SnapshotInfo:
    path: str
    table: str
    version: int
    rows: int
    bytes: int
    last_used: dt.datetime
    store: str


def _last_used(path: str) -> dt.datetime:
    for name in (LAST_USED, MANIFEST):
        with contextlib.suppress(OSError):
            return dt.datetime.fromtimestamp(os.path.getmtime(os.path.join(path, name)), dt.UTC)
    return dt.datetime.fromtimestamp(os.path.getmtime(path), dt.UTC)


def _make_cache_dir(root: str) -> None:
    # A file where the cache should be (a slip of --dir) is bad input, not a crash.
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValidationError(f"snapshot cache {root!r} is a file, not a directory")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise ValidationError(f"cannot create the snapshot cache {root!r}: {exc.strerror or exc}") from None


def list_snapshots(cache_dir: str | os.PathLike[str] | None = None) -> list[SnapshotInfo]:
    """Complete snapshots in the cache, most recently used first (sizes only are checked)."""
    root = os.path.abspath(os.fspath(cache_dir) if cache_dir is not None else default_cache_dir())
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        try:
            man = _check(path, "size")
        except (StorageError, KeyError):
            continue
        size = sum(man["files"][f]["bytes"] for f in (VECTORS, ROWS))
        out.append(SnapshotInfo(path=path, table=man["table"], version=int(man["version"]),
                                rows=int(man["rows"]), bytes=size, last_used=_last_used(path),
                                store=man["store"]))
    return sorted(out, key=lambda s: s.last_used, reverse=True)


def cleanup_snapshots(cache_dir: str | os.PathLike[str] | None = None, *, keep_last: int | None = None,
                      older_than: dt.timedelta | None = None, table: str | None = None,
                      tmp_grace: dt.timedelta = dt.timedelta(hours=1)) -> list[str]:
    """Delete snapshots not used recently: beyond the ``keep_last`` most recently used
    and/or unused for ``older_than`` (of one ``table``, or all); also the leftovers of
    exports that crashed (``.tmp-*`` folders older than ``tmp_grace``, so an export in
    progress is never touched) and folders that fail their size check. Returns the paths
    removed. Deleting a snapshot another process has mapped is safe on POSIX: its pages
    stay valid until it unmaps them."""
    if keep_last is None and older_than is None:
        raise ValidationError("cleanup_snapshots needs keep_last and/or older_than")
    if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 0):
        raise ValidationError(f"keep_last must be >= 0, got {keep_last}")
    root = os.path.abspath(os.fspath(cache_dir) if cache_dir is not None else default_cache_dir())
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValidationError(f"snapshot cache {root!r} exists and is not a directory")
    if not os.path.isdir(root):
        return []
    now = dt.datetime.now(dt.UTC)
    removed: list[str] = []
    good = {s.path for s in list_snapshots(root)}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not os.path.isdir(path) or path in good:
            continue
        age = now - dt.datetime.fromtimestamp(os.path.getmtime(path), dt.UTC)
        if name.startswith(TMP_PREFIX) and age < tmp_grace:
            continue  # an export still running
        if table is None or name.startswith(f"{table}-v") or name.startswith(TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    snaps = [s for s in list_snapshots(root) if table is None or s.table == table]
    for i, s in enumerate(snaps):
        beyond = keep_last is not None and i >= keep_last
        old = older_than is not None and now - s.last_used >= older_than
        if beyond or old:
            shutil.rmtree(s.path, ignore_errors=True)
            removed.append(s.path)
    return removed
