"""One embedding run, prepared once; executors (:mod:`._executors`, :mod:`._ray`) run it.

:meth:`EmbedPlan.prepare` does what every run does before a model is called, in one place:
it checks the job (table name, mode, partition), the source's schema (text column,
reserved names, kept columns) and every row (keys unique and not null, rows inside the
partition, blank texts refused or left out), reads the stored side of the diff (key,
content hash and a 64-bit row signature per stored row: never vectors), and refuses an
embedder other than the table's model. :meth:`EmbedPlan.batch` then diffs any slice of
the source against that stored state: every row stores ``_content_hash`` (a hash of its
source text, or for images of the image's bytes, :mod:`._images`); rows whose key and
hash are unchanged keep their stored vector; rows whose other columns changed are
rewritten with the old vector; only new or changed texts reach the model.
:meth:`EmbedPlan.request` builds the one store write a run (or a group of a streamed
run) commits.

An executor decides only how the batches are cut, where the model runs and when a
version is committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaMismatchError, ValidationError
from ..store import (
    SCAN_ALL,
    VECTOR_COLUMN,
    Store,
    TableMeta,
    WriteResult,
    as_arrow,
    check_partition,
    filter_eq,
    filter_in,
    validate_keys,
    validate_table_name,
)
from ..store._writes import WriteRequest
from ._embedders import Embedder, EmptyTextPolicy, content_hash, is_blank

EmbedMode = Literal["overwrite", "append", "upsert", "sync", "replace_partition"]
EMBED_MODES: tuple[str, ...] = ("overwrite", "append", "upsert", "sync", "replace_partition")
PROVENANCE_COLUMNS = ("_content_hash", "_model", "_embedded_at", "_run_id")


@dataclass
class EmbedResult:
    """What :func:`~embed_assets.embed_table` did: the write, and how many rows reached the model."""

    write: WriteResult
    rows_source: int
    rows_embedded: int
    rows_reused: int
    rows_unchanged: int
    rows_skipped_empty: int
    seconds: float
    model: str

    @property
    def version(self) -> int:
        return self.write.version

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["write"] = self.write.to_dict()
        return d

    def summary(self) -> str:
        w = self.write
        head = (f"{w.table}: embedded {self.rows_embedded} row(s), reused {self.rows_reused}, "
                f"unchanged {self.rows_unchanged}")
        if self.rows_skipped_empty:
            head += f", skipped {self.rows_skipped_empty} empty"
        if w.committed:
            tail = (f"; version {w.version} (inserted {w.rows_inserted}, updated "
                    f"{w.rows_updated}, deleted {w.rows_deleted})")
        else:
            tail = f"; nothing changed, table stays at version {w.version}"
        return head + tail


class Executor(Protocol):
    """Runs a prepared :class:`EmbedPlan`: in process, streamed, on Ray."""

    def check(self, job: EmbedJob) -> None:
        """Refuse, before the source is read, a job this executor cannot run."""

    def scan_rows(self) -> int | None:
        """Rows per batch of the plan's row checks (``None``: the source at once)."""

    def run(self, plan: EmbedPlan) -> EmbedResult: ...


# -- the job and its source -----------------------------------------------------------------
@dataclass
class EmbedJob:
    """What to embed and how to write it: the arguments of ``embed_table``, checked."""

    name: str
    key: str
    text: str
    embedder: Embedder
    mode: str = "upsert"
    columns: Sequence[str] | None = None
    partition: tuple[str, Any] | None = None
    on_empty: EmptyTextPolicy = "error"
    run_id: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_table_name(self.name)
        if self.mode not in EMBED_MODES:
            raise ValidationError(
                f"unknown mode {self.mode!r}; choose one of {', '.join(EMBED_MODES)}")
        if self.mode == "replace_partition" and self.partition is None:
            raise ValidationError("mode 'replace_partition' needs partition=(column, value)")
        if self.on_empty not in ("error", "skip"):
            raise ValidationError(
                f"empty-text policy must be 'error' or 'skip', got {self.on_empty!r}")
        self.run_id = self.run_id or f"manual-{uuid.uuid4().hex[:12]}"
        self.properties = dict(self.properties or {})


@dataclass
class Source:
    """A re-readable source: a Parquet file (read in batches) or an Arrow table (sliced)."""

    schema: pa.Schema
    num_rows: int
    path: str | None = None
    table: pa.Table | None = None

    @classmethod
    def of(cls, data: Any) -> Source:
        if isinstance(data, Source):
            return data
        if isinstance(data, str | os.PathLike):
            import pyarrow.parquet as pq

            path = os.fspath(data)
            if not os.path.exists(path):
                raise ValidationError(f"input file {path!r} does not exist")
            try:
                meta = pq.ParquetFile(path)
            except Exception as exc:
                raise ValidationError(f"cannot read {path!r} as Parquet: {exc}") from None
            return cls(meta.schema_arrow, meta.metadata.num_rows, path=path)
        tbl = as_arrow(data)
        return cls(tbl.schema, tbl.num_rows, table=tbl)

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The whole source (those columns)."""
        cols = list(dict.fromkeys(columns))
        if self.table is not None:
            return self.table.select(cols)
        import pyarrow.parquet as pq

        return pq.read_table(self.path, columns=cols)

    def batches(self, columns: Sequence[str], rows: int | None) -> Iterator[pa.Table]:
        """The source in slices of ``rows`` (``None``: at once); one empty slice if empty."""
        cols = list(dict.fromkeys(columns))
        if rows is None:
            yield self.read(cols)
            return
        if self.table is not None:
            for i in range(0, max(self.num_rows, 1), rows):
                yield self.table.select(cols).slice(i, rows)
            return
        import pyarrow.parquet as pq

        empty = True
        for b in pq.ParquetFile(self.path).iter_batches(batch_size=rows, columns=cols):
            empty = False
            yield pa.Table.from_batches([b])
        if empty:
            yield self.schema.empty_table().select(cols)


def is_stream_source(data: Any) -> bool:
    """Whether ``data`` is a path to read in batches (rather than an in-memory table)."""
    return isinstance(data, str | os.PathLike)


def _kept_columns(schema: pa.Schema, job: EmbedJob) -> list[str]:
    """The schema checked; the columns kept beside key and vector."""
    names = schema.names
    if job.text not in names:
        raise ValidationError(f"text column {job.text!r} not found; columns are {', '.join(names)}")
    _check_text_type(schema.field(job.text).type, job.text)
    if job.key not in names:
        raise ValidationError(f"key column {job.key!r} not found; columns are {', '.join(names)}")
    reserved = [c for c in names if c == VECTOR_COLUMN or c.startswith("_")]
    if job.columns is None:
        keep = [c for c in names if c != job.key and c not in reserved]
    else:
        missing = [c for c in job.columns if c not in names]
        if missing:
            raise ValidationError(f"columns not in source: {', '.join(missing)}")
        bad = [c for c in job.columns if c in reserved]
        if bad:
            raise ValidationError(f"columns {', '.join(bad)} are reserved (vector, '_' prefix)")
        keep = [c for c in job.columns if c != job.key]
    if job.partition is not None and job.partition[0] not in keep:
        if job.partition[0] not in names:
            raise ValidationError(f"partition column {job.partition[0]!r} not in data")
        keep.append(job.partition[0])
    return keep


def _check_text_type(typ: pa.DataType, text: str) -> None:
    """Refuse a text column that holds numbers, bytes, lists... (not "null or empty")."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_null(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ) \
            or pa.types.is_string_view(typ):
        return
    raise ValidationError(
        f"text column {text!r} holds {typ} values, not text; cast it to strings first")


def blank_mask(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Which texts are null or blank, as :func:`is_blank` decides, vectorised: Arrow trims
    Unicode whitespace; the few short survivors are checked by Python's ``str.strip``
    (which also counts a handful of control characters as whitespace)."""
    if pa.types.is_null(col.type):
        return np.ones(len(col), bool)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    trimmed = pc.utf8_length(pc.utf8_trim_whitespace(col))
    lengths = pc.fill_null(trimmed, 0).to_numpy(zero_copy_only=False)
    out = lengths == 0
    short = np.flatnonzero((lengths > 0) & (lengths <= 16))
    if short.size:
        vals = col.take(pa.array(short, pa.int64())).to_pylist()
        out[short] = [is_blank(v) for v in vals]
    return out


def _scan_rows(source: Source, job: EmbedJob, rows: int | None) -> pa.Array:
    """Every key checked (unique, not null), every row inside the partition, every text
    checked (not blank unless skipped), before anything is embedded or written; returns
    the keys of the rows that will be embedded."""
    kept: list[pa.Array] = []
    all_keys: list[pa.ChunkedArray] = []
    blank_n, blank_shown = 0, list[Any]()
    cols = [job.key, job.text] + ([job.partition[0]] if job.partition is not None else [])
    for b in source.batches(cols, rows):
        if job.partition is not None:
            check_partition(b, job.partition)
        all_keys.append(b.column(job.key))
        blank = blank_mask(b.column(job.text))
        n = int(blank.sum())
        if n:
            blank_n += n
            idx = np.flatnonzero(blank)[:max(0, 5 - len(blank_shown))]
            blank_shown.extend(b.column(job.key).take(pa.array(idx, pa.int64())).to_pylist())
        kept.append(b.column(job.key).filter(pa.array(~blank)).combine_chunks())
    validate_keys(pa.table({job.key: pa.chunked_array(all_keys)}), job.key)
    if blank_n and job.on_empty == "error":
        shown = ", ".join(repr(k) for k in blank_shown)
        more = f" (and {blank_n - len(blank_shown)} more)" if blank_n > len(blank_shown) else ""
        raise ValidationError(
            f"{blank_n} row(s) have null or empty text (keys {shown}{more}); "
            "fix the source or pass on_empty='skip' (CLI: --skip-empty)")
    return pa.concat_arrays(kept) if kept else pa.array([], source.schema.field(job.key).type)


# -- the stored side ------------------------------------------------------------------------
@dataclass
class _Stored:
    """The stored side of the diff: key, content hash and row signature per row (never
    vectors), the table's model and dimension, and its schema (to cast the source like)."""

    frame: pl.DataFrame  # key, _content_hash__old, _sig__old
    model: str | None
    dimension: int
    schema: pa.Schema
    sig_columns: list[str]
    version: int


def _row_signature(tbl: pa.Table, keep: Sequence[str]) -> pl.Series:
    """One 64-bit hash per row of the kept columns: the diff compares these, not the
    columns themselves, so the stored state it holds is key + content hash + 8 bytes."""
    if not keep:
        return pl.Series("_sig", np.zeros(tbl.num_rows, np.uint64))
    frame = pl.from_arrow(tbl.select(list(keep)))
    assert isinstance(frame, pl.DataFrame)
    return frame.hash_rows(seed=0).alias("_sig")


def _stored_state(store: Store, job: EmbedJob, keep: list[str]) -> _Stored | None:
    if not store.exists(job.name):
        return None
    key, name = job.key, job.name
    t = store.table(name)
    meta = t.meta
    if meta.key != key:
        raise SchemaMismatchError(f"table {name!r} is keyed on {meta.key!r}, not {key!r}")
    ds = t.dataset()
    schema_names = set(ds.schema.names)
    if "_content_hash" not in schema_names:
        raise SchemaMismatchError(
            f"table {name!r} was not written by the embedding pipeline (no _content_hash); "
            "use mode 'overwrite' or a new table")
    # A Lance blob column (pictures kept in the table) scans as descriptions, never equal
    # to the source's bytes: every row would look changed and every picture be rewritten.
    # An image column's bytes are in _content_hash already (the image hash is the "text").
    blobs = {f.name for f in ds.schema if "blob" in str(getattr(f.type, "extension_name", ""))}
    sig_columns = [c for c in keep if c in schema_names and c != key and c not in blobs]
    where = SCAN_ALL
    if job.partition is not None:
        # A list of values scopes the write to several partitions at once (a Dagster
        # partition range materialised in one run), still as one commit.
        col, val = job.partition
        where = filter_in(col, val) if isinstance(val, list | tuple) else filter_eq(col, val)
    # Batch by batch: the kept columns are reduced to a 64-bit signature as they are read,
    # so the state held is key + hash + signature, whatever the columns hold.
    parts: list[pl.DataFrame] = []
    for batch in ds.to_batches(columns=list(dict.fromkeys([key, "_content_hash", *sig_columns])),
                               filter=where, batch_size=65_536):
        tbl = pa.Table.from_batches([batch])
        parts.append(pl.DataFrame({
            key: pl.from_arrow(tbl.column(key)),
            "_content_hash__old": pl.from_arrow(tbl.column("_content_hash")),
            "_sig__old": _row_signature(tbl, sig_columns)}))
    frame = pl.concat(parts) if parts else pl.DataFrame(
        {key: pl.Series(key, pa.array([], ds.schema.field(key).type)),
         "_content_hash__old": pl.Series([], dtype=pl.String),
         "_sig__old": pl.Series([], dtype=pl.UInt64)})
    return _Stored(frame, meta.model, meta.dimension, ds.schema, sig_columns, ds.version)


def model_change(store: Store, name: str, embedder: Embedder) -> TableMeta | None:
    """The stored table's facts when it holds vectors of another model than ``embedder``'s
    (``None``: no table, or the same model): a table never mixes models."""
    if not store.exists(name):
        return None
    meta = store.table(name).meta
    return meta if meta.model not in (None, embedder.name) else None


def _refuse_model_change(name: str, stored_model: str | None, embedder: Embedder) -> None:
    if stored_model not in (None, embedder.name):
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from model {stored_model!r}; the embedder is "
            f"{embedder.name!r}; re-embed everything with mode 'overwrite' or use a new table")


# -- one batch of the source, diffed --------------------------------------------------------
@dataclass
class Diff:
    """Which rows of a batch reach the model, which are written, and the stored vectors and
    provenance of the written rows that keep their vector (read for those rows only)."""

    embed_mask: np.ndarray
    write_mask: np.ndarray
    reused: dict[Any, tuple[Any, ...]]  # key -> (vector, _model, _embedded_at, _run_id)
    dimension: int | None

    @property
    def n_embed(self) -> int:
        return int(self.embed_mask.sum())

    @property
    def n_write(self) -> int:
        return int(self.write_mask.sum())

    @property
    def n_reused(self) -> int:
        return int((self.write_mask & ~self.embed_mask).sum())


@dataclass
class Batch:
    """A slice of the source with blank rows left out, hashed and diffed."""

    base: pa.Table  # key, kept columns, _content_hash
    texts: list[str]
    skipped: int
    diff: Diff

    @property
    def tally(self) -> Tally:
        d = self.diff
        return Tally(self.base.num_rows + self.skipped, d.n_embed, d.n_reused,
                     self.base.num_rows - d.n_write, self.skipped)


@dataclass
class Tally:
    """Rows of a run (or a group of it): source, embedded, reused, unchanged, skipped."""

    source: int = 0
    embedded: int = 0
    reused: int = 0
    unchanged: int = 0
    skipped: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(),
                                             strict=True)))


def _cast_like(tbl: pa.Table, schema: pa.Schema | None) -> pa.Table:
    """Source columns cast to the stored types where they differ (int32 -> int64, ...),
    so equal values hash equally; a column that does not cast is left for the write's
    schema check to refuse."""
    if schema is None:
        return tbl
    for i, f in enumerate(tbl.schema):
        idx = schema.get_field_index(f.name)
        if idx >= 0 and schema.field(idx).type != f.type:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                tbl = tbl.set_column(i, pa.field(f.name, schema.field(idx).type),
                                     tbl.column(i).cast(schema.field(idx).type))
    return tbl


def _stored_rows(store: Store, name: str, key: str, keys: list[Any]) -> dict[Any, tuple[Any, ...]]:
    """Vector and provenance of the stored rows with ``keys`` (those whose text did not
    change but whose other columns did): the only vectors an incremental run reads."""
    if not keys:
        return {}
    t = store.table(name)
    names = set(t.dataset().schema.names)
    prov = [c for c in ("_model", "_embedded_at", "_run_id") if c in names]
    out: dict[Any, tuple[Any, ...]] = {}
    for i in range(0, len(keys), 5000):
        tbl = t.read(columns=[key, VECTOR_COLUMN, *prov], where=filter_in(key, keys[i:i + 5000]))
        vecs = tbl.column(VECTOR_COLUMN).combine_chunks()
        flat = vecs.values.to_numpy(zero_copy_only=False).reshape(len(vecs), -1)
        cols = [tbl.column(c).to_pylist() if c in tbl.column_names else [None] * tbl.num_rows
                for c in ("_model", "_embedded_at", "_run_id")]
        for j, k in enumerate(tbl.column(key).to_pylist()):
            out[k] = (flat[j], cols[0][j], cols[1][j], cols[2][j])
    return out


def check_vectors(vectors: Any, embedder: Any, n: int) -> np.ndarray:
    """The model's output as float32, refused when it is not ``n`` vectors of the
    embedder's declared dimension."""
    new = np.asarray(vectors, dtype=np.float32)
    if new.ndim != 2 or new.shape[0] != n:
        raise ValidationError(f"embedder {embedder.name!r} returned shape {new.shape} for {n} texts")
    declared = getattr(embedder, "dimension", None)
    if isinstance(declared, int) and declared > 0 and new.shape[1] != declared:
        raise ValidationError(
            f"embedder {embedder.name!r} declares dimension {declared} but returned "
            f"{new.shape[1]}-dimensional vectors; fix the embedder's dimension")
    return new


@dataclass(frozen=True)
class RowLayout:
    """How a run's rows are written: key, kept columns, vector, then provenance (this
    run's model and id for the rows it embedded). Small and plain: it travels to Ray workers."""

    key: str
    keep: tuple[str, ...]
    model: str
    run_id: str

    def rows(self, base: pa.Table, diff: Diff | None, vectors: np.ndarray) -> pa.Table:
        """The written rows of ``base`` (``diff`` None: every row, all embedded now); rows
        that keep their stored vector keep its provenance too."""
        n = base.num_rows
        now = dt.datetime.now(dt.UTC)
        reused = diff.reused if diff is not None else {}
        slot = {"_model": 1, "_embedded_at": 2, "_run_id": 3}
        keys = base.column(self.key).to_pylist() if reused else []

        def prov(column: str, fresh: Any) -> list[Any]:
            if not reused:
                return [fresh] * n  # every written row was embedded by this run
            assert diff is not None
            return [fresh if diff.embed_mask[i] or keys[i] not in reused
                    else reused[keys[i]][slot[column]] for i in range(n)]

        out = base.append_column(VECTOR_COLUMN, pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]))
        out = out.append_column("_model", pa.array(prov("_model", self.model), pa.string()))
        out = out.append_column("_embedded_at", pa.array(prov("_embedded_at", now),
                                                         pa.timestamp("us", tz="UTC")))
        out = out.append_column("_run_id", pa.array(prov("_run_id", self.run_id), pa.string()))
        out = out.select([self.key, *self.keep, VECTOR_COLUMN, *PROVENANCE_COLUMNS])
        if diff is not None and diff.n_write < n:
            out = out.take(pa.array(np.flatnonzero(diff.write_mask), pa.int64()))
        return out


# -- the plan -------------------------------------------------------------------------------
@dataclass
class EmbedPlan:
    """One run, prepared: the job, its source, the kept columns, the stored state, and
    the stored keys the source no longer holds (``sync``'s deletes)."""

    store: Store
    job: EmbedJob
    source: Source
    keep: list[str]
    stored: _Stored | None
    gone: list[Any]
    started: float

    @classmethod
    def prepare(cls, store: Store, job: EmbedJob, data: Any, *,
                scan_rows: int | None = None) -> EmbedPlan:
        """Check the source and every row, read the stored state and refuse a model change
        (see the module docstring); nothing reaches the model or the store."""
        started = time.perf_counter()
        source = Source.of(data)
        keep = _kept_columns(source.schema, job)
        keys = _scan_rows(source, job, scan_rows)
        stored = None if job.mode in ("overwrite", "append") else _stored_state(store, job, keep)
        if stored is not None:
            _refuse_model_change(job.name, stored.model, job.embedder)
        gone: list[Any] = []
        if job.mode == "sync" and stored is not None and stored.frame.height:
            seen = pl.DataFrame({job.key: pl.from_arrow(keys)}).cast(
                {job.key: stored.frame[job.key].dtype}, strict=False)
            gone = stored.frame.select(job.key).join(seen, on=job.key, how="anti")[job.key].to_list()
        return cls(store, job, source, keep, stored, gone, started)

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def embedder(self) -> Embedder:
        return self.job.embedder

    def columns(self) -> list[str]:
        """The source columns a batch needs."""
        return list(dict.fromkeys([self.job.key, self.job.text, *self.keep]))

    def batch(self, tbl: pa.Table) -> Batch:
        """``tbl`` (rows of the source) with blank texts left out, hashed and diffed."""
        key, text = self.job.key, self.job.text
        blank = blank_mask(tbl.column(text))
        skipped = int(blank.sum())
        if skipped:
            tbl = tbl.filter(pa.array(~blank))
        texts = tbl.column(text).to_pylist()
        base = tbl.select([key, *self.keep]).append_column(
            "_content_hash", pa.array([content_hash(t) for t in texts], pa.string()))
        return Batch(base, texts, skipped, self._diff(base))

    def _diff(self, base: pa.Table) -> Diff:
        """Compare a batch with the stored rows by key and hashes: a changed text is
        re-embedded, a changed column rewritten with the stored vector (fetched for those
        rows alone), an unchanged row not written."""
        n, stored, key = base.num_rows, self.stored, self.job.key
        if stored is None or not stored.frame.height:
            return Diff(np.ones(n, bool), np.ones(n, bool), {},
                        stored.dimension if stored is not None else None)
        cast = _cast_like(base, stored.schema)
        sig = _row_signature(cast, [c for c in self.keep if c in stored.sig_columns])
        src = pl.DataFrame({key: pl.from_arrow(cast.column(key)),
                            "_content_hash": pl.from_arrow(cast.column("_content_hash")),
                            "_sig": sig})
        joined = src.with_row_index("_i").join(stored.frame, on=key, how="left",
                                               suffix="__old", coalesce=True).sort("_i")
        same_text = (joined["_content_hash"] == joined["_content_hash__old"]).fill_null(False)
        same_row = same_text & (joined["_sig"] == joined["_sig__old"]).fill_null(False)
        embed_mask = ~same_text.to_numpy()
        write_mask = ~same_row.to_numpy()
        reuse_keys = joined[key].filter(pl.Series(write_mask & ~embed_mask)).to_list()
        return Diff(embed_mask, write_mask, _stored_rows(self.store, self.name, key, reuse_keys),
                    stored.dimension)

    def vectors(self, batch: Batch, embedder: Any = None) -> np.ndarray:
        """The vectors of a batch's written rows, in source order: the model's (``embedder``,
        default the job's) for new or changed texts, the stored one for rows that keep theirs."""
        embedder = embedder or self.embedder
        d, n = batch.diff, len(batch.texts)
        dim = d.dimension
        to_embed = np.flatnonzero(d.embed_mask)
        new = None
        if to_embed.size:
            new = check_vectors(embedder.embed([batch.texts[i] for i in to_embed]), embedder,
                                to_embed.size)
            if dim is not None and d.reused and new.shape[1] != dim:
                raise SchemaMismatchError(
                    f"table {self.name!r} has dimension {dim}; embedder {embedder.name!r} "
                    f"produced {new.shape[1]}; use mode 'overwrite' or a new table")
            dim = new.shape[1]
        if dim is None:
            dim = embedder.dimension if n else 1
        vectors = np.zeros((n, dim), dtype=np.float32)
        if new is not None:
            vectors[to_embed] = new
        if d.reused:
            reuse_idx = np.flatnonzero(d.write_mask & ~d.embed_mask)
            keys = batch.base.column(self.job.key).take(pa.array(reuse_idx, pa.int64())).to_pylist()
            for i, k in zip(reuse_idx, keys, strict=True):
                vectors[i] = d.reused[k][0]
        return vectors

    @property
    def layout(self) -> RowLayout:
        return RowLayout(self.job.key, tuple(self.keep), self.embedder.name, self.job.run_id)

    def rows(self, batch: Batch, vectors: np.ndarray) -> pa.Table:
        """The batch's written rows (see :class:`RowLayout`)."""
        return self.layout.rows(batch.base, batch.diff, vectors)

    def keep_keys(self, batch: Batch) -> list[Any] | None:
        """``replace_partition``: the keys of the partition's unchanged rows, which the
        write keeps although the run does not send them."""
        if self.job.mode != "replace_partition":
            return None
        return batch.base.column(self.job.key).filter(pa.array(~batch.diff.write_mask)).to_pylist()

    def properties(self, tally: Tally, **extra: Any) -> dict[str, Any]:
        """The provenance properties of a commit holding ``tally``'s rows."""
        return {"rows_embedded": tally.embedded, "rows_reused": tally.reused,
                "rows_source": tally.source - tally.skipped, "text_column": self.job.text,
                **self.job.properties, "embed_mode": self.job.mode, **extra}

    def request(self, props: Mapping[str, Any], *, revision: str | None, mode: str | None = None,
                keep_keys: Sequence[Any] | None = None,
                delete_keys: Sequence[Any] | None = None) -> WriteRequest:
        """The store write of this run: ``mode`` (default the job's, ``sync`` written as an
        upsert deleting :attr:`gone`), the partition and its unchanged keys, provenance."""
        job = self.job
        mode = mode or job.mode
        partition = None
        if mode == "replace_partition":
            assert job.partition is not None
            col, val = job.partition
            partition = (col, list(val) if isinstance(val, list | tuple) else val)
        if mode == "sync":
            mode, delete_keys = "upsert", self.gone or None
        return WriteRequest(name=job.name, key=job.key, mode=mode, partition=partition,
                            delete_keys=delete_keys, keep_keys=keep_keys, model=self.embedder.name,
                            model_revision=revision, text_column=job.text, run_id=job.run_id,
                            properties=dict(props))

    def unchanged(self, batch: Batch) -> bool:
        """Whether committing ``batch`` (the whole run) would change nothing stored: then no
        store call is made (asking the embedder's revision would load the model)."""
        return (self.stored is not None and batch.diff.n_write == 0
                and self.job.mode in ("upsert", "append", "sync") and not self.gone)

    def commit(self, rows: pa.Table, req: WriteRequest) -> WriteResult:
        """One store write of ``rows`` as ``req`` says."""
        kwargs = {f.name: getattr(req, f.name) for f in fields(req) if f.name != "name"}
        return self.store.write(req.name, rows, **kwargs)

    def commit_batch(self, batch: Batch, rows: pa.Table, props: Mapping[str, Any]) -> WriteResult:
        """The one commit of a run that is one batch (in process, or on Ray with nothing
        for a model): unchanged rows kept in a partition, nothing at all when nothing changed."""
        if self.unchanged(batch):
            return unchanged_result(self.store, self.name, self.job.mode)
        return self.commit(rows, self.request(props, revision=self.embedder.revision,
                                              keep_keys=self.keep_keys(batch)))

    def result(self, write: WriteResult, tally: Tally, cls: type[EmbedResult] = EmbedResult,
               **extra: Any) -> Any:
        return cls(write=write, rows_source=tally.source, rows_embedded=tally.embedded,
                   rows_reused=tally.reused, rows_unchanged=tally.unchanged,
                   rows_skipped_empty=tally.skipped, seconds=time.perf_counter() - self.started,
                   model=self.embedder.name, **extra)


def unchanged_result(store: Store, name: str, mode: str) -> WriteResult:
    """The result of a write with nothing to write, without calling the store: asking for
    the embedder's revision there would load the model (seconds) for nothing."""
    version = store.table(name).version
    return WriteResult(name, version, version, mode)
