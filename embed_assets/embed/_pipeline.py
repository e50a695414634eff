"""Embed a source table into the store, re-embedding only what changed.

Every row stores ``_content_hash`` (a hash of its source text). On the next write, rows
whose key and hash are unchanged reuse their stored vector; rows whose other columns
changed are rewritten with the old vector; only new or changed texts reach the model.
"""

from __future__ import annotations

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
) -> EmbedResult:
    """Embed ``data[text]`` keyed by ``data[key]`` into table ``name``.

    Parameters
    ----------
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
    plan = _diff(base, existing, key, keep)
    vectors = _embed_changed(plan, texts, embedder, name)
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
    """Which source rows reach the model, which are written, what the stored rows give."""

    embed_mask: np.ndarray
    write_mask: np.ndarray
    reused: np.ndarray | None  # (n, dim) stored vectors, valid where ~embed_mask
    old_prov: dict[str, list[Any]]
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


def _diff(base: pa.Table, existing: _Existing | None, key: str, keep: list[str]) -> _Diff:
    """Compare the source with the stored rows by key: a changed text is re-embedded, a
    changed column rewritten with the stored vector, an unchanged row not written."""
    n = base.num_rows
    if existing is None or not existing.frame.height:
        return _Diff(np.ones(n, bool), np.ones(n, bool), None, {},
                     existing.dimension if existing is not None else None)
    joined = pl.from_arrow(base).with_row_index("_i").join(
        existing.frame, on=key, how="left", suffix="__old", coalesce=True).sort("_i")
    same_text = (joined["_content_hash"] == joined["_content_hash__old"]).fill_null(False)
    same_row = same_text
    for c in keep:
        if f"{c}__old" in joined.columns:
            same_row = same_row & joined[c].eq_missing(joined[f"{c}__old"])
    embed_mask = ~same_text.to_numpy()
    reused = np.zeros((n, existing.dimension), dtype=np.float32)
    reuse_idx = np.flatnonzero(~embed_mask)
    if reuse_idx.size:
        reused[reuse_idx] = np.stack(joined["vector__old"].gather(reuse_idx).to_list()).astype(np.float32)
    old_prov = {c: (joined[c].to_list() if c in joined.columns else [None] * n)
                for c in ("_model", "_embedded_at", "_run_id")}
    return _Diff(embed_mask, ~same_row.to_numpy(), reused, old_prov, existing.dimension)


def _embed_changed(plan: _Diff, texts: list[str], embedder: Embedder, name: str) -> np.ndarray:
    """Every row's vector: the model's for new or changed texts, the stored one otherwise."""
    n = len(texts)
    vectors = plan.reused
    to_embed = np.flatnonzero(plan.embed_mask)
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
        if vectors is None:
            vectors = np.zeros((n, new.shape[1]), dtype=np.float32)
        elif new.shape[1] != vectors.shape[1]:
            raise SchemaMismatchError(
                f"table {name!r} has dimension {vectors.shape[1]}; embedder {embedder.name!r} "
                f"produced {new.shape[1]}; use mode 'overwrite' or a new table")
        vectors[to_embed] = new
    if vectors is None:  # nothing to embed and nothing stored
        vectors = np.zeros((n, embedder.dimension if n else (plan.dimension or 1)), dtype=np.float32)
    return vectors


def _rows_to_write(base: pa.Table, plan: _Diff, vectors: np.ndarray, model: str, run_id: str,
                   key: str, keep: list[str]) -> pa.Table:
    """The written rows: key, user columns, vector, provenance (re-embedded rows get this
    run's provenance, the others keep theirs)."""
    n = base.num_rows
    now = dt.datetime.now(dt.UTC)

    def prov(column: str, fresh: Any) -> list[Any]:
        old = plan.old_prov.get(column) or [None] * n
        return [fresh if plan.embed_mask[i] else old[i] for i in range(n)]

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


@dataclass
class _Existing:
    frame: pl.DataFrame
    model: str | None
    dimension: int


def _existing_state(store: Store, name: str, key: str, keep: list[str],
                    partition: tuple[str, Any] | None) -> _Existing | None:
    if not store.exists(name):
        return None
    t = store.table(name)
    meta = t.meta
    if meta.key != key:
        raise SchemaMismatchError(f"table {name!r} is keyed on {meta.key!r}, not {key!r}")
    schema_names = set(t.dataset().schema.names)
    if "_content_hash" not in schema_names:
        raise SchemaMismatchError(
            f"table {name!r} was not written by the embedding pipeline (no _content_hash); "
            "use mode 'overwrite' or a new table"
        )
    cols = [key, "_content_hash", VECTOR_COLUMN,
            *[c for c in ("_model", "_embedded_at", "_run_id") if c in schema_names],
            *[c for c in keep if c in schema_names]]
    where = None
    if partition is not None:
        # A list of values scopes the write to several partitions at once (a Dagster
        # partition range materialised in one run), still as one commit.
        col, val = partition
        where = filter_in(col, val) if isinstance(val, list | tuple) else filter_eq(col, val)
    tbl = t.read(columns=list(dict.fromkeys(cols)), where=where)
    frame = pl.from_arrow(tbl)
    assert isinstance(frame, pl.DataFrame)
    rename = {c: f"{c}__old" for c in frame.columns if c != key}
    return _Existing(frame.rename(rename).rename({"_model__old": "_model",
                                                  "_embedded_at__old": "_embedded_at",
                                                  "_run_id__old": "_run_id"}, strict=False),
                     meta.model, meta.dimension)
