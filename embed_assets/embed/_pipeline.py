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
from ..store._store import VECTOR_COLUMN, Store, WriteResult, as_arrow
from ..store._validation import validate_keys, validate_table_name
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
    src = as_arrow(data)
    if text not in src.column_names:
        raise ValidationError(
            f"text column {text!r} not found; columns are {', '.join(src.column_names)}"
        )
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

    texts = src.column(text).to_pylist()
    keys = src.column(key).to_pylist()
    rows_idx = prepare_texts(keys, texts, on_empty)
    skipped = src.num_rows - len(rows_idx)
    if skipped:
        src = src.take(pa.array(rows_idx, pa.int64()))
        texts = [texts[i] for i in rows_idx]
    hashes = [content_hash(t) for t in texts]
    run_id = run_id or f"manual-{uuid.uuid4().hex[:12]}"

    base = src.select([key, *keep]).append_column("_content_hash", pa.array(hashes, pa.string()))
    existing = _existing_state(store, name, key, keep, partition) if mode not in (
        "overwrite", "append") else None

    if existing is not None and existing.model not in (None, embedder.name):
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from model {existing.model!r}; the embedder is "
            f"{embedder.name!r}; re-embed everything with mode 'overwrite' or use a new table"
        )

    n = base.num_rows
    vectors: np.ndarray | None = None
    embed_mask = np.ones(n, dtype=bool)
    write_mask = np.ones(n, dtype=bool)
    old_prov: dict[str, list[Any]] = {}
    delete_keys: list[Any] = []
    dim = None
    if existing is not None and existing.frame.height:
        cur = pl.from_arrow(base)
        joined = cur.with_row_index("_i").join(
            existing.frame, on=key, how="left", suffix="__old", coalesce=True
        ).sort("_i")
        same_text = (joined["_content_hash"] == joined["_content_hash__old"]).fill_null(False)
        embed_mask = ~same_text.to_numpy()
        same_cols = same_text
        for c in keep:
            if f"{c}__old" in joined.columns:
                eq = joined[c].eq_missing(joined[f"{c}__old"])
                same_cols = same_cols & eq
        write_mask = ~same_cols.to_numpy()
        dim = existing.dimension
        reuse_vecs = joined["vector__old"]
        vectors = np.zeros((n, dim), dtype=np.float32)
        reuse_idx = np.flatnonzero(~embed_mask)
        if reuse_idx.size:
            vectors[reuse_idx] = np.stack(reuse_vecs.gather(reuse_idx).to_list()).astype(np.float32)
        for c in ("_model", "_embedded_at", "_run_id"):
            old_prov[c] = joined[f"{c}"].to_list() if c in joined.columns else [None] * n
        if mode in ("sync", "replace_partition"):
            src_keys = set(keys)
            delete_keys = [k for k in existing.frame[key].to_list() if k not in src_keys]

    to_embed = np.flatnonzero(embed_mask)
    if to_embed.size:
        new_vecs = embedder.embed([texts[i] for i in to_embed])
        new_vecs = np.asarray(new_vecs, dtype=np.float32)
        if new_vecs.ndim != 2 or new_vecs.shape[0] != to_embed.size:
            raise ValidationError(
                f"embedder {embedder.name!r} returned shape {new_vecs.shape} for "
                f"{to_embed.size} texts"
            )
        if vectors is None:
            vectors = np.zeros((n, new_vecs.shape[1]), dtype=np.float32)
        elif new_vecs.shape[1] != vectors.shape[1]:
            raise SchemaMismatchError(
                f"table {name!r} has dimension {vectors.shape[1]}; embedder "
                f"{embedder.name!r} produced {new_vecs.shape[1]}; use mode 'overwrite' or a new table"
            )
        vectors[to_embed] = new_vecs
    if vectors is None:
        vectors = np.zeros((n, embedder.dimension if n else (dim or 1)), dtype=np.float32)

    now = dt.datetime.now(dt.UTC)
    model_col = [embedder.name if embed_mask[i] else (old_prov.get("_model") or [None] * n)[i]
                 for i in range(n)]
    at_col = [now if embed_mask[i] else (old_prov.get("_embedded_at") or [None] * n)[i]
              for i in range(n)]
    run_col = [run_id if embed_mask[i] else (old_prov.get("_run_id") or [None] * n)[i]
               for i in range(n)]
    out = base.append_column(VECTOR_COLUMN, pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]))
    out = out.append_column("_model", pa.array(model_col, pa.string()))
    out = out.append_column("_embedded_at", pa.array(at_col, pa.timestamp("us", tz="UTC")))
    out = out.append_column("_run_id", pa.array(run_col, pa.string()))
    # Column order: key, user columns, vector, provenance.
    out = out.select([key, *keep, VECTOR_COLUMN, *PROVENANCE_COLUMNS])

    write_idx = np.flatnonzero(write_mask)
    if write_idx.size < n:
        out = out.take(pa.array(write_idx, pa.int64()))

    props = {
        "rows_embedded": int(to_embed.size),
        "rows_reused": int(write_idx.size - np.count_nonzero(embed_mask[write_idx])),
        "rows_source": int(n),
        "text_column": text,
        **(properties or {}),
    }
    store_mode = {"sync": "upsert", "replace_partition": "upsert"}.get(mode, mode)
    # An incremental partition write sends only changed rows plus the keys to delete,
    # so it maps to upsert+delete_keys; recording the caller's mode keeps history honest.
    props["embed_mode"] = mode
    write = store.write(
        name, out, key=key, mode=store_mode,  # type: ignore[arg-type]
        delete_keys=delete_keys or None,
        model=embedder.name, model_revision=embedder.revision, text_column=text,
        run_id=run_id, properties=props,
    )
    return EmbedResult(
        write=write,
        rows_source=int(n) + skipped,
        rows_embedded=int(to_embed.size),
        rows_reused=int(props["rows_reused"]),
        rows_unchanged=int(n - write_idx.size),
        rows_skipped_empty=skipped,
        seconds=time.perf_counter() - t0,
        model=embedder.name,
    )


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
        from ..store._filters import eq, in_list

        # A list of values scopes the write to several partitions at once (a Dagster
        # partition range materialised in one run), still as one commit.
        col, val = partition
        where = in_list(col, val) if isinstance(val, list | tuple) else eq(col, val)
    tbl = t.read(columns=list(dict.fromkeys(cols)), where=where)
    frame = pl.from_arrow(tbl)
    assert isinstance(frame, pl.DataFrame)
    rename = {c: f"{c}__old" for c in frame.columns if c != key}
    return _Existing(frame.rename(rename).rename({"_model__old": "_model",
                                                  "_embedded_at__old": "_embedded_at",
                                                  "_run_id__old": "_run_id"}, strict=False),
                     meta.model, meta.dimension)
