"""The HNSW graph of one exact set of rows: its identity, build, files, load and refresh.

Why a graph: on real MiniLM vectors the in-memory IVF probe answered in 0.67-1.9 ms while
an HNSW graph (hnswlib, M=16) answered in 0.13-0.6 ms at equal recall: a graph visits a
few hundred rows where the probe scans thousands. The index policy
(:func:`embed_assets.build_index`) builds it from a pinned version's vectors and tunes
its ``ef`` (:mod:`embed_assets.index._graph_tuning`); the Lance IVF index stays the
persistent index other tools (LanceDB, DuckDB's lance extension) read.

This module is the one place that knows the graph (issue 22): the index policy builds
and refreshes through it, the planner loads through it.

Identity
--------
A graph's labels are row offsets of the version it was built from, so it may only serve
a version whose rows are exactly those, in the same order. :func:`fingerprint` hashes
what fixes them (:mod:`._identity`): every fragment's id, its data files (Lance names them by UUID) and its
deletion file (its random id and read version: *which* rows were deleted, not how many;
two histories that each delete three different rows get different fingerprints).
Index and config commits keep the fragments, so the graph of version N also serves the
bookkeeping versions after it; any write changes the fingerprint. Lance stable row ids
were considered as labels (no label map): they need tables created with
``enable_stable_row_ids`` (a table's creation is the writes' concern, and existing tables
cannot turn it on), and the planner would still need a row id -> offset lookup per
search, which is what the label map is.

Artefacts
---------
The graph and its label map are written under content-addressed names
(``<fingerprint>-<sha256 prefix>.hnsw``) and recorded in the table's index config with
their sizes and sha256 (``graph_files``). A reader uses a graph only when the recorded
files are there with that size and hash; a missing, partial, planted or rotated file is
never read, and the plan says why. A local store keeps them beside the store
(``<store>/.embed_assets/graphs/<table id>/``); an object store keeps them at the same
place *on the store*, so every reader finds them, and each reader keeps a verified copy in
its cache directory (hnswlib reads a local file).

A refresh (:func:`update_graph`) marks rows deleted or replaced since the build and adds
the new ones under new labels, with a label map (label -> row offset in the new version,
-1 for a deleted row).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lance
import numpy as np

from ._cache import CACHE, STATE, VersionKey, load_matrix
from ._identity import fingerprint as fingerprint  # (where the index policy reads it)
from ._meta import VECTOR_COLUMN, is_local, local_path

GRAPH_DIR = ".embed_assets/graphs"
GRAPH_M = 16
# ef_construction=200 rather than hnswlib's suggested 100: on 120k real MiniLM vectors it
# reaches recall 0.96 at ef 48 where 100 needs ef 64 (benchmarks/RESULTS.md).
EF_CONSTRUCTION = 200
# From this many rows on, 100: the graph is most of a large build's time, and at 250k
# synthetic rows 100 built in 47 CPU s where 200 took 102, for 0.092 ms a query at
# recall 0.95 on fresh queries where 200 gave 0.077 (issue 29: a 1M build within 3x of
# FAISS IVF-PQ's train+add).
LARGE_GRAPH_ROWS = 200_000
EF_CONSTRUCTION_LARGE = 100
# Rows handed to hnswlib per call when a graph is built (25 MB of 384-d vectors).
ADD_BLOCK = 16_384
# Past this share of rows changed (deleted + added) since the graph was built, a refresh
# rebuilds it: marked-deleted nodes still route searches, and recall drifts.
MAX_UPDATE_SHARE = 0.3


def ef_construction(rows: int) -> int:
    """hnswlib's build width for a graph of ``rows`` rows."""
    return EF_CONSTRUCTION_LARGE if rows >= LARGE_GRAPH_ROWS else EF_CONSTRUCTION


def available() -> bool:
    try:
        import hnswlib  # noqa: F401
    except ImportError:
        return False
    return True


def space(metric: str) -> str:
    # hnswlib's "cosine" is its "ip" space (distance 1 - ip, the cosine distance itself on
    # unit rows) with every added row and every query normalised in C++: the same graph
    # file either way, and no Python normalisation per search (~1.5 us of a ~35 us query).
    return {"l2": "l2", "cosine": "cosine"}.get(metric, "ip")


@dataclass(frozen=True)
class GraphHome:
    """Where one table's graphs live (see the module docstring)."""

    table_uri: str
    table_id: str
    storage_options: dict[str, str] | None = field(default=None, hash=False, compare=False)

    @property
    def local(self) -> bool:
        return is_local(self.table_uri)

    @property
    def store_uri(self) -> str:
        return self.table_uri.rstrip("/").rsplit("/", 1)[0]

    @property
    def prefix(self) -> str:
        """The graphs' folder, relative to the store."""
        return f"{GRAPH_DIR}/{self.table_id}"

    @property
    def dir(self) -> Path:
        """The local folder: beside a local store, the reader's cache for an object store."""
        if self.local:
            return Path(local_path(self.table_uri)).parent / self.prefix
        return _cache_root() / hashlib.sha256(self.table_uri.encode()).hexdigest()[:16]

    def drop(self) -> None:
        """Delete every graph of the table (it is dropped)."""
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
        if not self.local:
            from ._objstore import delete_objects, list_objects

            found = list_objects(self.store_uri, self.storage_options, self.prefix)
            delete_objects(self.store_uri, self.storage_options, [m["path"] for m in found])


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embed_assets" / "graphs"


# -- building -------------------------------------------------------------------------
def build_graph(mat: np.ndarray, metric: str, rows: np.ndarray, m: int = GRAPH_M,
                seed: int = 0, capacity: int | None = None,
                where: np.ndarray | None = None) -> Any:
    """A graph over rows ``rows`` (labels: the row offsets), with room for ``capacity``
    (default every row of ``mat``); row ``r`` is ``mat[r]``, or ``mat[where[r]]`` where
    ``mat`` holds the rows in another order (an index build reads them in partition order)."""
    import hnswlib

    index = hnswlib.Index(space=space(metric), dim=mat.shape[1])
    index.init_index(max_elements=capacity or len(mat), M=m,
                     ef_construction=ef_construction(capacity or len(mat)), random_seed=seed)
    # Rows go in blocks, in offset order whatever order ``mat`` holds them in: ``mat[rows]``
    # in one call was a copy of the whole matrix at the build's peak (0.38 GB at 250k rows;
    # build_index peaked at 4.2x the matrix there).
    for s in range(0, len(rows), ADD_BLOCK):
        block = rows[s:s + ADD_BLOCK]
        add_items(index, mat[block if where is None else where[block]], block)
    return index


def add_items(index: Any, vecs: np.ndarray, labels: np.ndarray) -> None:
    index.set_num_threads(os.cpu_count() or 1)
    index.add_items(vecs, labels)
    index.set_num_threads(1)  # one query at a time: threads only add overhead


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_graph(index: Any, home: GraphHome, fp: str, labels: np.ndarray | None = None,
               keep: Iterable[str] = (),
               ) -> dict[str, Any]:
    """Write the graph (and its label map) under content-addressed names; the record of
    both (name, bytes, sha256) to keep in the index config. Each file is written
    atomically and never rewritten: a name always holds the bytes its hash says. The
    graph goes from hnswlib's file to its place (hashed as a stream, uploaded from the
    file): reading it back as bytes held a second copy of the graph at the build's
    peak (1.6 GB at 1M rows). Other graphs are deleted, except the files named in
    ``keep`` (:func:`tagged_files`)."""
    home.dir.mkdir(parents=True, exist_ok=True)
    tmp = home.dir / f".tmp-{os.getpid()}-{threading.get_ident()}.hnsw"
    try:
        index.save_index(str(tmp))
        with open(tmp, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        rec: dict[str, Any] = {"name": f"{fp}-{sha[:16]}.hnsw", "bytes": tmp.stat().st_size,
                               "sha256": sha}
        os.replace(tmp, home.dir / rec["name"])
    finally:
        tmp.unlink(missing_ok=True)
    if not home.local:
        _upload(home, rec["name"], home.dir / rec["name"])
    files: dict[str, Any] = {"graph": rec}
    if labels is not None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(labels, dtype=np.int64))
        files["map"] = _put(home, fp, ".map.npy", buf.getvalue())
    _forget_others(home, {rec["name"] for rec in files.values()} | set(keep))
    return files


def tagged_files(ds: lance.LanceDataset) -> set[str]:
    """The graph files recorded for the versions a tag names: kept when a newer graph is
    saved. Why: a server pinned to ``prod`` serves a tagged version, and moving the tag
    back (a rollback) to a version whose graph was deleted by the next build served it
    through the IVF probe instead (at 63k rows under 16 clients the probe's batched scans
    took the kNN p99 to ~28 ms against ~1 ms on the graph). An untagged version's graph
    goes as before; a tagged version's goes once no tag names it."""
    from ._index_facts import index_config
    from ._retention import list_tags

    out: set[str] = set()
    for v in sorted({int(d["version"]) for d in list_tags(ds).values()}):
        try:
            cfg = index_config(ds.checkout_version(v)) or {}
        except (OSError, ValueError):  # a version cleaned up under its tag: nothing to keep
            continue
        files = (cfg.get("params") or {}).get("graph_files")
        if isinstance(files, dict):
            out.update(str(r["name"]) for r in files.values() if isinstance(r, dict) and "name" in r)
    return out


def _upload(home: GraphHome, name: str, data: bytes | Path) -> None:
    import obstore as obs

    from ._objstore import object_store

    obs.put(object_store(home.store_uri, home.storage_options), f"{home.prefix}/{name}", data)


def _put(home: GraphHome, fp: str, suffix: str, data: bytes) -> dict[str, Any]:
    sha = _sha256(data)
    rec: dict[str, Any] = {"name": f"{fp}-{sha[:16]}{suffix}", "bytes": len(data), "sha256": sha}
    _write_atomic(home.dir / rec["name"], data)
    if not home.local:
        _upload(home, rec["name"], data)
    return rec


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _forget_others(home: GraphHome, keep: set[str]) -> None:
    """Graphs of earlier row sets are never read by the latest version again; a time
    travel to such a version, or a reader of an older config, finds its file gone and
    takes the probe or an exact scan (the files are checked before use)."""
    for old in [*home.dir.glob("*.hnsw"), *home.dir.glob("*.map.npy")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)
    if not home.local:
        from ._objstore import delete_objects, list_objects

        found = list_objects(home.store_uri, home.storage_options, home.prefix)
        delete_objects(home.store_uri, home.storage_options,
                       [m["path"] for m in found if m["path"].rsplit("/", 1)[-1] not in keep])


# -- reading --------------------------------------------------------------------------
class Unusable(Exception):
    """A graph that must not be used; the message says why (the plan reports it)."""


def _fetch(home: GraphHome, rec: dict[str, Any], want_bytes: bool = True,
           ) -> tuple[Path, bytes | None]:
    """A recorded artefact's verified local file (and its bytes when ``want_bytes``);
    raises :class:`Unusable` when it is missing, partial or not the bytes recorded.

    A local file is hashed as a stream: the graph is read once more by hnswlib, and
    holding its bytes as well doubled the memory of a load (1.6 GB more at 1M rows)."""
    if not isinstance(rec, dict) or not {"name", "bytes", "sha256"} <= set(rec):
        raise Unusable("its file record is malformed")
    path = home.dir / str(rec["name"])
    data: bytes | None = None
    verified = False
    if path.exists() and path.stat().st_size == int(rec["bytes"]):
        with open(path, "rb") as f:
            verified = hashlib.file_digest(f, "sha256").hexdigest() == rec["sha256"]
        if not verified and home.local:
            raise Unusable(f"{rec['name']} is not the file the build recorded (sha256 differs)")
    elif home.local:
        raise Unusable(f"{rec['name']} is missing" if not path.exists() else
                       f"{rec['name']} is partial ({path.stat().st_size} of {rec['bytes']} bytes)")
    if not verified:  # an object store: the copy on the store
        import obstore as obs

        from ._objstore import object_store

        try:
            data = bytes(obs.get(object_store(home.store_uri, home.storage_options),
                                 f"{home.prefix}/{rec['name']}").bytes())
        except Exception as exc:
            raise Unusable(f"{rec['name']} cannot be read from the store ({type(exc).__name__})") \
                from None
        if len(data) != int(rec["bytes"]) or _sha256(data) != rec["sha256"]:
            raise Unusable(f"{rec['name']} on the store is not the file the build recorded")
        _write_atomic(path, data)
    if want_bytes and data is None:
        data = path.read_bytes()
        if _sha256(data) != rec["sha256"]:  # replaced between the check and the read
            raise Unusable(f"{rec['name']} changed while it was read")
    return path, data


def _load_index(home: GraphHome, files: dict[str, Any], dim: int, metric: str, rows: int,
                capacity: int | None = None) -> tuple[Any, np.ndarray | None]:
    """The verified graph and label map of a record; raises :class:`Unusable`."""
    import hnswlib

    if not isinstance(files, dict) or "graph" not in files:
        raise Unusable("the index config records no graph files")
    labels = None
    if files.get("map") is not None:
        _, raw = _fetch(home, files["map"])
        try:
            labels = np.load(io.BytesIO(raw or b""), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise Unusable(f"its label map cannot be read ({exc})") from None
        if labels.dtype != np.int64 or labels.shape != (rows,):
            raise Unusable(f"its label map holds {labels.shape} {labels.dtype}, not {rows} labels")
    path, _ = _fetch(home, files["graph"], want_bytes=False)
    try:
        index = hnswlib.Index(space=space(metric), dim=dim)
        index.load_index(str(path), max_elements=capacity or rows)
    except (RuntimeError, OSError, ValueError) as exc:
        raise Unusable(f"hnswlib cannot read it ({exc})") from None
    if index.get_current_count() != rows:
        raise Unusable(f"it holds {index.get_current_count()} labels, the config {rows}")
    return index, labels


@dataclass
class Graph:
    index: Any  # hnswlib.Index
    rows: int
    ef: int
    labels: np.ndarray | None = None  # label -> row offset (None: the labels are offsets)
    live: int = field(init=False)  # labels not marked deleted (hnswlib refuses a larger k)

    def __post_init__(self) -> None:
        self.live = self.rows if self.labels is None else int((self.labels >= 0).sum())

    @property
    def nbytes(self) -> int:
        return int(self.index.index_file_size()) if hasattr(self.index, "index_file_size") \
            else self.rows * 200

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and distances (Lance conventions: cosine 1 - cos, l2 squared)."""
        k = min(k, self.live)
        if k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        labels, dist = self.index.knn_query(q, k=k)
        # hnswlib returns uint64 labels (< 2**63: row offsets) and float32 distances: a
        # view, not a copy
        got = labels[0].view(np.int64)
        return (got if self.labels is None else self.labels[got]), dist[0]

    def search_batch(self, qs: np.ndarray, k: int, threads: int = 1,
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and distances of many queries at once, (n, k) each."""
        k = min(k, self.live)
        if k < 1 or not len(qs):
            return np.zeros((len(qs), 0), np.int64), np.zeros((len(qs), 0), np.float32)
        labels, dist = self.index.knn_query(qs, k=k, num_threads=threads)
        got = labels.view(np.int64)
        return (got if self.labels is None else self.labels[got]), dist


_UNUSABLE = "unusable:"  # the kind prefix, in STATE.facts, of a graph found unusable


def load(key: VersionKey, home: GraphHome, dim: int, metric: str, params: dict[str, Any],
         version_rows: int) -> tuple[Graph | None, str]:
    """The graph recorded in ``params`` for this version, loaded and verified once per
    version; (None, why) when it must not be used. The caller has checked that the
    version's rows are the ones the graph indexes (:func:`fingerprint`)."""
    files = params.get("graph_files")
    if not files:
        return None, "the index config records no graph files (built before they were recorded)"
    try:
        rows, ef = int(params["graph_rows"]), int(params["graph_ef"])
    except (KeyError, TypeError, ValueError):
        return None, "the index config records no graph size or ef"
    kind = f"graph/{metric}/{ef}/{files['graph'].get('sha256') if isinstance(files, dict) else ''}"
    got = CACHE.get(key, kind)  # the hit, before any closure is made: every search
    if got is not None:
        return got, ""
    why = STATE.facts.peek(key, _UNUSABLE + kind)
    if why is not None:
        return None, why

    def build() -> Graph:
        index, labels = _load_index(home, files, dim, metric, rows)
        if labels is None and rows != version_rows:
            raise Unusable(f"it holds {rows} rows, the version {version_rows}")
        if labels is not None:
            live = labels[labels >= 0]
            if len(live) != version_rows or live.max(initial=-1) >= version_rows \
                    or len(np.unique(live)) != version_rows:
                raise Unusable("its label map is not a map onto this version's rows")
        index.set_ef(max(ef, 1))
        index.set_num_threads(1)
        return Graph(index, rows, ef, labels)

    try:
        got = CACHE.get_or_build(key, kind, lambda: int(files["graph"].get("bytes", 0)), build)
    except Unusable as exc:
        why = f"graph unusable: {exc}"
        STATE.facts.put(key, _UNUSABLE + kind, why)
        return None, why
    if got is None:
        return None, "the graph does not fit in the cache"
    return got, ""


def forget_unusable() -> None:
    """Forget the graphs found unusable, in every table (tests that repair a file)."""
    STATE.facts.forget("", kind_prefix=_UNUSABLE)


# -- refreshing -----------------------------------------------------------------------
def update_graph(old_ds: lance.LanceDataset, new_ds: lance.LanceDataset, old_key: VersionKey,
                 new_key: VersionKey, home: GraphHome, params: dict[str, Any], metric: str,
                 row_addresses: Callable[[VersionKey, lance.LanceDataset], Any],
                 keep: Iterable[str] = (),
                 ) -> tuple[dict[str, Any], int, int, int] | str:
    """Bring the graph recorded in ``params`` (of ``old_ds``'s rows) up to ``new_ds``:
    rows gone or rewritten since are marked deleted, new rows are added. Returns (files
    record, labels, deleted, added), or why it must be rebuilt instead (its files fail
    their check, rows rewritten by a compaction, more than :data:`MAX_UPDATE_SHARE` of
    the rows changed)."""
    rows = int(params["graph_rows"])
    old_addr, new_addr = row_addresses(old_key, old_ds), row_addresses(new_key, new_ds)
    if old_addr is None or new_addr is None:
        return "the row addresses do not fit in the cache"
    dim = new_ds.schema.field(VECTOR_COLUMN).type.list_size
    try:
        files = params.get("graph_files")
        index, labels = _load_index(home, files or {}, dim, metric, rows)
    except Unusable as exc:
        return f"its files cannot be used ({exc})"
    if labels is None:
        labels = np.arange(rows, dtype=np.int64)
    # old offset -> new offset, through the row address (stable unless a fragment is rewritten)
    addr_of_old = np.empty(old_addr.rows, np.uint64)
    addr_of_old[old_addr.order] = old_addr.sorted
    pos = np.minimum(np.searchsorted(new_addr.sorted, addr_of_old), max(new_addr.rows - 1, 0))
    kept = new_addr.sorted[pos] == addr_of_old if new_addr.rows else np.zeros(old_addr.rows, bool)
    new_of_old = np.where(kept, new_addr.order[pos] if new_addr.rows else -1, -1)
    live = labels >= 0
    new_labels = np.full(rows, -1, np.int64)
    new_labels[live] = new_of_old[labels[live]]
    gone = np.flatnonzero(live & (new_labels < 0))
    seen = np.zeros(new_addr.rows, bool)
    seen[new_labels[new_labels >= 0]] = True
    added = np.flatnonzero(~seen)
    if (len(gone) + len(added)) > MAX_UPDATE_SHARE * max(new_addr.rows, 1):
        return "too many rows changed since the graph was built"
    index.resize_index(rows + len(added))
    for label in gone:
        index.mark_deleted(int(label))
    if len(added):
        # a take of scattered rows costs a page read each; many rows are cheaper as a scan
        vecs = load_matrix(new_ds, metric)[added] if len(added) > 0.05 * new_addr.rows \
            else _vectors_at(new_ds, added, metric)
        add_items(index, vecs, np.arange(rows, rows + len(added)))
    out = np.concatenate([new_labels, added]).astype(np.int64)
    return save_graph(index, home, fingerprint(new_ds), out, keep), rows + len(added), len(gone), \
        len(added)


def _vectors_at(ds: lance.LanceDataset, offsets: np.ndarray, metric: str) -> np.ndarray:
    from ..kernels import normalize_rows

    t = ds.take(offsets.tolist(), columns=[VECTOR_COLUMN])
    dim = ds.schema.field(VECTOR_COLUMN).type.list_size
    m = t.column(VECTOR_COLUMN).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    m = m.reshape(len(offsets), dim).astype(np.float32)
    return normalize_rows(m) if metric == "cosine" else np.ascontiguousarray(m)
