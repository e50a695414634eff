"""Embed a source table into the store, re-embedding only what changed.

Every row stores ``_content_hash`` (a hash of its source text). On the next write, rows
whose key and hash are unchanged reuse their stored vector; rows whose other columns
changed are rewritten with the old vector; only new or changed texts reach the model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from ..errors import SchemaMismatchError, ValidationError
from ..store import (
    SCAN_ALL,
    VECTOR_COLUMN,
    Store,
    WriteResult,
    as_arrow,
    check_partition,
    filter_eq,
    filter_in,
    validate_keys,
    validate_table_name,
)
from ._embedders import Embedder, EmptyTextPolicy, content_hash, prepare_texts
from ._stream import DEFAULT_COMMIT_EVERY, embed_stream, is_stream_source

EmbedMode = Literal["overwrite", "append", "upsert", "sync", "replace_partition"]
EMBED_MODES: tuple[str, ...] = ("overwrite", "append", "upsert", "sync", "replace_partition")
PROVENANCE_COLUMNS = ("_content_hash", "_model", "_embedded_at", "_run_id")


@dataclass
class EmbedResult:
    """What :func:`embed_table` did: the write, and how many rows reached the model."""

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


def embed_table(
    store: Store,
    name: str,
    data: Any,
    *,
    key: str,
    text: str,
    embedder: Embedder,
    mode: EmbedMode = "upsert",
    columns: Sequence[str] | None = None,
    partition: tuple[str, Any] | None = None,
    on_empty: EmptyTextPolicy = "error",
    run_id: str | None = None,
    properties: dict[str, Any] | None = None,
    commit_every: int | None = None,
    progress: bool | None = None,
) -> EmbedResult:
    """Embed ``data[text]`` keyed by ``data[key]`` into table ``name``.

    Parameters
    ----------
    data : table-like or path
        An Arrow/polars/pandas table, a dict of columns, or the path of a Parquet file.
        A path is streamed: read in groups of ``commit_every`` rows, each group embedded
        and committed in turn, in memory bounded by one group (see
        :mod:`embed_assets.embed._stream`); a rerun after an interruption resumes.
    mode : {"upsert", "sync", "overwrite", "append", "replace_partition"}
        ``upsert`` inserts new keys and updates changed ones; ``sync`` also deletes keys
        missing from ``data`` (the table mirrors the source); ``replace_partition`` does
        the same within the rows where ``partition[0] == partition[1]`` (or, when
        ``partition[1]`` is a list, where ``partition[0]`` is one of its values); ``overwrite``
        re-embeds everything; ``append`` requires new keys.
    columns : sequence of str, optional
        Source columns to keep beside key and vector (default: all source columns).
    on_empty : {"error", "skip"}
        What to do with null or blank texts (see :mod:`embed_assets._embedders`).
    commit_every : int, optional
        Commit every this many source rows (each group one version), so an interrupted
        run resumes without re-embedding committed rows. Default: one commit for an
        in-memory table, 50,000 rows for a Parquet path. Not with ``replace_partition``.
    progress : bool, optional
        A progress bar (rows/s, ETA) on stderr when streaming; ``None``: when stderr is a
        terminal.

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store, HashEmbedder
    >>> store = Store(tempfile.mkdtemp())
    >>> src = {"id": [1, 2], "text": ["a text editor", "a web browser"]}
    >>> embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder()).rows_embedded
    2
    >>> embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder()).rows_embedded
    0
    """
    t0 = time.perf_counter()
    validate_table_name(name)
    if mode not in EMBED_MODES:
        raise ValidationError(f"unknown mode {mode!r}; choose one of {', '.join(EMBED_MODES)}")
    if mode == "replace_partition" and partition is None:
        raise ValidationError("mode 'replace_partition' needs partition=(column, value)")
    if commit_every is not None and commit_every < 1:
        raise ValidationError(f"commit_every must be >= 1, got {commit_every}")
    if is_stream_source(data) or commit_every is not None:
        if partition is not None:
            raise ValidationError(
                "a partitioned write is one commit: pass an in-memory table and no commit_every")
        return embed_stream(store, name, data, key=key, text=text, embedder=embedder, mode=mode,
                            columns=columns, on_empty=on_empty, run_id=run_id,
                            properties=properties, progress=progress,
                            commit_every=commit_every or DEFAULT_COMMIT_EVERY)
    src, keep = _source(as_arrow(data), key, text, columns, partition)
    src, texts, skipped = _drop_blank(src, key, text, on_empty)
    base = src.select([key, *keep]).append_column(
        "_content_hash", pa.array([content_hash(t) for t in texts], pa.string()))
    existing = None if mode in ("overwrite", "append") else \
        _existing_state(store, name, key, keep, partition)
    if existing is not None and existing.model not in (None, embedder.name):
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from model {existing.model!r}; the embedder is "
            f"{embedder.name!r}; re-embed everything with mode 'overwrite' or use a new table")
    plan = _diff(store, name, base, existing, key, keep)
    vectors = _embed_changed(plan, base, texts, embedder, name, key)
    run_id = run_id or f"manual-{uuid.uuid4().hex[:12]}"
    out = _rows_to_write(base, plan, vectors, embedder.name, run_id, key, keep)
    props = {"rows_embedded": plan.n_embed, "rows_reused": plan.n_reused, "rows_source": base.num_rows,
             "text_column": text, **(properties or {}), "embed_mode": mode}
    write = _commit(store, name, out, key, mode, plan, base, partition, existing, embedder, text,
                    run_id, props)
    return EmbedResult(
        write=write, rows_source=base.num_rows + skipped, rows_embedded=plan.n_embed,
        rows_reused=plan.n_reused, rows_unchanged=base.num_rows - plan.n_write,
        rows_skipped_empty=skipped, seconds=time.perf_counter() - t0, model=embedder.name)


def _source(src: pa.Table, key: str, text: str, columns: Sequence[str] | None,
            partition: tuple[str, Any] | None) -> tuple[pa.Table, list[str]]:
    """The source checked, and the columns kept beside key and vector."""
    if text not in src.column_names:
        raise ValidationError(
            f"text column {text!r} not found; columns are {', '.join(src.column_names)}")
    _check_text_type(src.schema.field(text).type, text)
    validate_keys(src, key)
    reserved = [c for c in src.column_names if c == VECTOR_COLUMN or c.startswith("_")]
    if columns is None:
        keep = [c for c in src.column_names if c != key and c not in reserved]
    else:
        missing = [c for c in columns if c not in src.column_names]
        if missing:
            raise ValidationError(f"columns not in source: {', '.join(missing)}")
        bad = [c for c in columns if c in reserved]
        if bad:
            raise ValidationError(f"columns {', '.join(bad)} are reserved (vector, '_' prefix)")
        keep = [c for c in columns if c != key]
    if partition is not None and partition[0] not in keep:
        keep.append(partition[0])
    if partition is not None:  # refuse before any text reaches the model
        check_partition(src, partition)
    return src, keep


def _check_text_type(typ: pa.DataType, text: str) -> None:
    """Refuse a text column that holds numbers, bytes, lists... (not "null or empty")."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_null(typ) or pa.types.is_string(typ) or pa.types.is_large_string(typ) \
            or pa.types.is_string_view(typ):
        return
    raise ValidationError(
        f"text column {text!r} holds {typ} values, not text; cast it to strings first")


def _drop_blank(src: pa.Table, key: str, text: str,
                on_empty: EmptyTextPolicy) -> tuple[pa.Table, list[str], int]:
    """Rows with null or blank text refused or left out (``on_empty``)."""
    texts = src.column(text).to_pylist()
    rows_idx = prepare_texts(src.column(key).to_pylist(), texts, on_empty)
    skipped = src.num_rows - len(rows_idx)
    if skipped:
        src = src.take(pa.array(rows_idx, pa.int64()))
        texts = [texts[i] for i in rows_idx]
    return src, texts, skipped


@dataclass
class _Diff:
    """Which source rows reach the model, which are written, and the stored vectors and
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


def _row_signature(tbl: pa.Table, keep: Sequence[str]) -> pl.Series:
    """One 64-bit hash per row of the kept columns: the diff compares these, not the
    columns themselves, so the stored state it holds is key + content hash + 8 bytes."""
    if not keep:
        return pl.Series("_sig", np.zeros(tbl.num_rows, np.uint64))
    frame = pl.from_arrow(tbl.select(list(keep)))
    assert isinstance(frame, pl.DataFrame)
    return frame.hash_rows(seed=0).alias("_sig")


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


def _diff(store: Store, name: str, base: pa.Table, existing: _Existing | None, key: str,
          keep: list[str]) -> _Diff:
    """Compare the source with the stored rows by key and hashes: a changed text is
    re-embedded, a changed column rewritten with the stored vector (fetched for those
    rows alone), an unchanged row not written."""
    n = base.num_rows
    if existing is None or not existing.frame.height:
        return _Diff(np.ones(n, bool), np.ones(n, bool), {},
                     existing.dimension if existing is not None else None)
    cast = _cast_like(base, existing.schema)
    src = pl.DataFrame({key: pl.from_arrow(cast.column(key)),
                        "_content_hash": pl.from_arrow(cast.column("_content_hash")),
                        "_sig": _row_signature(cast, [c for c in keep if c in existing.sig_columns])})
    joined = src.with_row_index("_i").join(existing.frame, on=key, how="left",
                                           suffix="__old", coalesce=True).sort("_i")
    same_text = (joined["_content_hash"] == joined["_content_hash__old"]).fill_null(False)
    same_row = same_text & (joined["_sig"] == joined["_sig__old"]).fill_null(False)
    embed_mask = ~same_text.to_numpy()
    write_mask = ~same_row.to_numpy()
    reuse_keys = joined[key].filter(pl.Series(write_mask & ~embed_mask)).to_list()
    return _Diff(embed_mask, write_mask, _stored_rows(store, name, key, reuse_keys),
                 existing.dimension)


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


def _embed_changed(plan: _Diff, base: pa.Table, texts: list[str], embedder: Embedder, name: str,
                   key: str) -> np.ndarray:
    """The vectors of the written rows, in source order: the model's for new or changed
    texts, the stored one for rows that keep theirs."""
    n = len(texts)
    dim = plan.dimension
    to_embed = np.flatnonzero(plan.embed_mask)
    new = None
    if to_embed.size:
        new = np.asarray(embedder.embed([texts[i] for i in to_embed]), dtype=np.float32)
        if new.ndim != 2 or new.shape[0] != to_embed.size:
            raise ValidationError(
                f"embedder {embedder.name!r} returned shape {new.shape} for {to_embed.size} texts")
        declared = getattr(embedder, "dimension", None)
        if isinstance(declared, int) and declared > 0 and new.shape[1] != declared:
            raise ValidationError(
                f"embedder {embedder.name!r} declares dimension {declared} but returned "
                f"{new.shape[1]}-dimensional vectors; fix the embedder's dimension")
        if dim is not None and plan.reused and new.shape[1] != dim:
            raise SchemaMismatchError(
                f"table {name!r} has dimension {dim}; embedder {embedder.name!r} "
                f"produced {new.shape[1]}; use mode 'overwrite' or a new table")
        dim = new.shape[1]
    if dim is None:
        dim = embedder.dimension if n else 1
    vectors = np.zeros((n, dim), dtype=np.float32)
    if new is not None:
        vectors[to_embed] = new
    if plan.reused:
        reuse_idx = np.flatnonzero(plan.write_mask & ~plan.embed_mask)
        keys = base.column(key).take(pa.array(reuse_idx, pa.int64())).to_pylist()
        for i, k in zip(reuse_idx, keys, strict=True):
            vectors[i] = plan.reused[k][0]
    return vectors


def _rows_to_write(base: pa.Table, plan: _Diff, vectors: np.ndarray, model: str, run_id: str,
                   key: str, keep: list[str]) -> pa.Table:
    """The written rows: key, user columns, vector, provenance (re-embedded rows get this
    run's provenance, the others keep theirs)."""
    n = base.num_rows
    now = dt.datetime.now(dt.UTC)

    slot = {"_model": 1, "_embedded_at": 2, "_run_id": 3}
    keys = base.column(key).to_pylist() if plan.reused else None

    def prov(column: str, fresh: Any) -> list[Any]:
        if not plan.reused:
            return [fresh] * n  # every written row was embedded by this run
        assert keys is not None
        return [fresh if plan.embed_mask[i] or keys[i] not in plan.reused
                else plan.reused[keys[i]][slot[column]] for i in range(n)]

    out = base.append_column(VECTOR_COLUMN, pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]))
    out = out.append_column("_model", pa.array(prov("_model", model), pa.string()))
    out = out.append_column("_embedded_at", pa.array(prov("_embedded_at", now),
                                                     pa.timestamp("us", tz="UTC")))
    out = out.append_column("_run_id", pa.array(prov("_run_id", run_id), pa.string()))
    out = out.select([key, *keep, VECTOR_COLUMN, *PROVENANCE_COLUMNS])
    if plan.n_write < n:
        out = out.take(pa.array(np.flatnonzero(plan.write_mask), pa.int64()))
    return out


def _commit(store: Store, name: str, out: pa.Table, key: str, mode: str, plan: _Diff,
            base: pa.Table, partition: tuple[str, Any] | None, existing: _Existing | None,
            embedder: Embedder, text: str, run_id: str, props: dict[str, Any]) -> WriteResult:
    """One store write. Only changed rows are sent, so ``sync`` deletes the stored keys
    missing from the source, and ``replace_partition`` keeps the unchanged rows it did not
    send (``keep_keys``); the store computes what to delete against the version it
    commits on."""
    if out.num_rows == 0 and mode in ("upsert", "append") and existing is not None:
        return unchanged_result(store, name, mode)
    if out.num_rows == 0 and mode == "sync" and existing is not None and \
            existing.frame.height <= base.num_rows:  # every stored key is in the source
        return unchanged_result(store, name, mode)
    common: dict[str, Any] = dict(key=key, model=embedder.name, model_revision=embedder.revision,
                                  text_column=text, run_id=run_id, properties=props)
    if mode == "replace_partition":
        assert partition is not None
        col, val = partition
        unchanged = base.column(key).filter(pa.array(~plan.write_mask)).to_pylist()
        return store.write(name, out, mode="replace_partition",
                           partition=(col, list(val) if isinstance(val, list | tuple) else val),
                           keep_keys=unchanged, **common)
    if mode == "sync":
        stored = existing.frame[key].to_list() if existing is not None else []
        wanted = set(base.column(key).to_pylist())
        gone = [k for k in stored if k not in wanted]
        return store.write(name, out, mode="upsert", delete_keys=gone or None, **common)
    return store.write(name, out, mode=mode, **common)  # type: ignore[arg-type]


def unchanged_result(store: Store, name: str, mode: str) -> WriteResult:
    """The result of a write with nothing to write, without calling the store: asking for
    the embedder's revision there would load the model (seconds) for nothing."""
    version = store.table(name).version
    return WriteResult(name, version, version, mode)


@dataclass
class _Existing:
    """The stored side of the diff: key, content hash and row signature per row (never
    vectors), the table's model and dimension, and its schema (to cast the source like)."""

    frame: pl.DataFrame  # key, _content_hash__old, _sig__old
    model: str | None
    dimension: int
    schema: pa.Schema
    sig_columns: list[str]
    version: int


def _existing_state(store: Store, name: str, key: str, keep: list[str],
                    partition: tuple[str, Any] | None) -> _Existing | None:
    if not store.exists(name):
        return None
    t = store.table(name)
    meta = t.meta
    if meta.key != key:
        raise SchemaMismatchError(f"table {name!r} is keyed on {meta.key!r}, not {key!r}")
    ds = t.dataset()
    schema_names = set(ds.schema.names)
    if "_content_hash" not in schema_names:
        raise SchemaMismatchError(
            f"table {name!r} was not written by the embedding pipeline (no _content_hash); "
            "use mode 'overwrite' or a new table"
        )
    sig_columns = [c for c in keep if c in schema_names and c != key]
    where = SCAN_ALL
    if partition is not None:
        # A list of values scopes the write to several partitions at once (a Dagster
        # partition range materialised in one run), still as one commit.
        col, val = partition
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
        {key: pl.Series([], dtype=pl.from_arrow(pa.array([], ds.schema.field(key).type)).dtype),
         "_content_hash__old": pl.Series([], dtype=pl.String),
         "_sig__old": pl.Series([], dtype=pl.UInt64)})
    return _Existing(frame, meta.model, meta.dimension, ds.schema, sig_columns, ds.version)
