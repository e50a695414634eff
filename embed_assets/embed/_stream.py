"""Embedding a corpus larger than memory: from Parquet (or a table) in groups of rows,
each group committed as it is done, so a killed run resumes where it stopped.

Memory is bounded by one group (its rows, texts and vectors) plus the stored side of the
diff, which is key + content hash + a 64-bit row signature per stored row: never vectors.

Two passes over the source:

1. keys and texts only: duplicate or null keys, non-text values and (with
   ``on_empty="error"``) blank texts are refused before anything is written, exactly as
   the in-memory path refuses them;
2. each group of ``commit_every`` source rows: hashes, the diff against the stored state
   as it was when the run started, the model on new or changed texts; the rows to write
   are committed once ``commit_every`` of them have gathered (and at the end), so
   unchanged groups cost no version and a small change spread over the corpus is one
   commit.

Resuming: with ``upsert`` or ``sync`` a rerun after an interruption finds the committed
groups' rows stored with the same content hash and embeds none of them again; the final
table holds the same keys and vectors as an uninterrupted run. ``sync`` deletes the keys
gone from the source in the last group's commit. ``overwrite`` streams too (the first
group replaces the table, the others are upserted into it) but a rerun starts over: use
``upsert`` to resume. Each commit is one Lance version; it records the group number and
the source rows done (``stream_group``, ``stream_rows_done``).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaMismatchError, ValidationError
from ..store import Store, WriteResult, as_arrow, validate_keys
from ._embedders import Embedder, EmptyTextPolicy, content_hash, is_blank

#: Rows per committed group when streaming (one Lance version each).
DEFAULT_COMMIT_EVERY = 50_000
# Texts per model call inside a group: the progress bar moves this often, and each call
# is length-sorted by the embedder.
_EMBED_CHUNK = 4096


@dataclass
class _Source:
    """A re-readable source: a Parquet file (read in batches) or an Arrow table (sliced)."""

    schema: pa.Schema
    num_rows: int
    path: str | None = None
    table: pa.Table | None = None

    @classmethod
    def of(cls, data: Any) -> _Source:
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

    def batches(self, columns: Sequence[str], rows: int) -> Iterator[pa.Table]:
        cols = list(dict.fromkeys(columns))
        if self.table is not None:
            for i in range(0, max(self.num_rows, 1), rows):
                yield self.table.select(cols).slice(i, rows)
            return
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)  # type: ignore[arg-type]
        empty = True
        for b in f.iter_batches(batch_size=rows, columns=cols):
            empty = False
            yield pa.Table.from_batches([b])
        if empty:
            yield self.schema.empty_table().select(cols)


def is_stream_source(data: Any) -> bool:
    """Whether ``data`` is a path to read in batches (rather than an in-memory table)."""
    return isinstance(data, str | os.PathLike)


@contextmanager
def _quiet(embedder: Embedder) -> Iterator[None]:
    """The stream has its own progress bar: silence the embedder's (if it has one)."""
    had = getattr(embedder, "show_progress", "absent")
    if had is None:
        embedder.show_progress = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if had is None:
            embedder.show_progress = None  # type: ignore[attr-defined]


def _progress(total: int, name: str, show: bool | None) -> Any:
    from tqdm.auto import tqdm

    # tqdm shows rows/s and the ETA; disable=None hides it when stderr is not a terminal.
    return tqdm(total=total, unit=" rows", unit_scale=True, desc=f"embed {name}",
                file=sys.stderr, disable=None if show is None else not show, smoothing=0.1)


def _scan_keys(src: _Source, key: str, text: str, on_empty: EmptyTextPolicy,
               rows: int) -> pa.Array:
    """Pass 1: every key checked (unique, not null), every text checked (text, not blank
    unless skipped); returns the keys of the rows that will be embedded."""
    if on_empty not in ("error", "skip"):
        raise ValidationError(f"empty-text policy must be 'error' or 'skip', got {on_empty!r}")
    kept: list[pa.Array] = []
    all_keys: list[pa.ChunkedArray] = []
    blank_n, blank_shown = 0, []
    # The text column's type was checked on the schema (strings or nulls only), so the
    # checks here are vectorised; only blank rows' keys reach Python.
    for b in src.batches([key, text], rows):
        all_keys.append(b.column(key))
        blank = blank_mask(b.column(text))
        n = int(blank.sum())
        if n:
            blank_n += n
            idx = np.flatnonzero(blank)[:max(0, 5 - len(blank_shown))]
            blank_shown.extend(b.column(key).take(pa.array(idx, pa.int64())).to_pylist())
        kept.append(b.column(key).filter(pa.array(~blank)).combine_chunks())
    validate_keys(pa.table({key: pa.chunked_array(all_keys)}), key)
    if blank_n and on_empty == "error":
        shown = ", ".join(repr(k) for k in blank_shown)
        more = f" (and {blank_n - len(blank_shown)} more)" if blank_n > len(blank_shown) else ""
        raise ValidationError(
            f"{blank_n} row(s) have null or empty text (keys {shown}{more}); "
            "fix the source or pass on_empty='skip' (CLI: --skip-empty)")
    return pa.concat_arrays(kept) if kept else pa.array([], src.schema.field(key).type)


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


def _lookahead(it: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, bool]]:
    """Each item with whether it is the last (the last group carries sync's deletes)."""
    prev = next(it, None)
    while prev is not None:
        nxt = next(it, None)
        yield prev, nxt is None
        prev = nxt


def embed_stream(
    store: Store,
    name: str,
    data: Any,
    *,
    key: str,
    text: str,
    embedder: Embedder,
    mode: str = "upsert",
    columns: Sequence[str] | None = None,
    on_empty: EmptyTextPolicy = "error",
    run_id: str | None = None,
    properties: dict[str, Any] | None = None,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    progress: bool | None = None,
) -> Any:
    """Embed ``data`` (a Parquet path or a table) in groups of ``commit_every`` rows,
    committing each group; see the module docstring. Returns an :class:`EmbedResult`
    whose ``write`` sums the groups' commits (``version`` is the last one)."""
    from ._pipeline import (
        EmbedResult,
        _diff,
        _existing_state,
        _rows_to_write,
        _source,
        unchanged_result,
    )

    t0 = time.perf_counter()
    if mode not in ("upsert", "sync", "overwrite", "append"):
        raise ValidationError(f"mode {mode!r} does not stream; use upsert, sync, overwrite or append")
    if commit_every < 1:
        raise ValidationError(f"commit_every must be >= 1, got {commit_every}")
    src = _Source.of(data)
    # The schema-level checks of the in-memory path (text column, reserved names, keep).
    _, keep = _source(src.schema.empty_table(), key, text, columns, None)
    keys = _scan_keys(src, key, text, on_empty, commit_every)
    existing = None if mode in ("overwrite", "append") else \
        _existing_state(store, name, key, keep, None)
    if existing is not None and existing.model not in (None, embedder.name):
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from model {existing.model!r}; the embedder is "
            f"{embedder.name!r}; re-embed everything with mode 'overwrite' or use a new table")
    gone: list[Any] = []
    if mode == "sync" and existing is not None and existing.frame.height:
        seen = pl.DataFrame({key: pl.from_arrow(keys)}).cast({key: existing.frame[key].dtype},
                                                           strict=False)
        gone = existing.frame.select(key).join(seen, on=key, how="anti")[key].to_list()
    run_id = run_id or f"manual-{uuid.uuid4().hex[:12]}"
    totals = {"embedded": 0, "reused": 0, "unchanged": 0, "skipped": 0, "source": 0}
    writes: list[WriteResult] = []
    bar = _progress(src.num_rows, name, progress)
    first_write = True
    group_no = 0
    pending: list[pa.Table] = []
    since = {"rows_embedded": 0, "rows_reused": 0}
    with _quiet(embedder):
        for group, last in _lookahead(src.batches([key, text, *keep], commit_every)):
            group_no += 1
            src_rows = group.num_rows
            blank = blank_mask(group.column(text))
            totals["source"] += group.num_rows
            totals["skipped"] += int(blank.sum())
            if blank.any():
                group = group.filter(pa.array(~blank))
            texts = group.column(text).to_pylist()
            base = group.select([key, *keep]).append_column(
                "_content_hash", pa.array([content_hash(t) for t in texts], pa.string()))
            plan = _diff(store, name, base, existing, key, keep)
            vectors = _embed_in_chunks(plan, base, texts, embedder, name, key, bar, src_rows)
            out = _rows_to_write(base, plan, vectors, embedder.name, run_id, key, keep)
            totals["embedded"] += plan.n_embed
            totals["reused"] += plan.n_reused
            totals["unchanged"] += base.num_rows - plan.n_write
            if out.num_rows:
                pending.append(out)
                since["rows_embedded"] += plan.n_embed
                since["rows_reused"] += plan.n_reused
            # A commit per commit_every rows *written*: groups with nothing changed cost
            # no version, and a 1% change spread over the corpus is one commit, not one
            # per group (each merge_insert scans the table's keys).
            full = sum(t.num_rows for t in pending) >= commit_every
            deletes = gone if last and gone else None
            if last and not (pending or deletes or writes) and existing is not None:
                # nothing to write at all: no store call (it would load the model for
                # its revision)
                writes.append(unchanged_result(store, name, mode))
            elif full or (last and (pending or deletes or not writes)):
                wmode = "overwrite" if mode == "overwrite" and first_write else \
                    ("append" if mode == "append" else "upsert")
                rows_out = pa.concat_tables(pending) if len(pending) > 1 else \
                    (pending[0] if pending else out)
                props = {**since, "rows_source": totals["source"], "text_column": text,
                         **(properties or {}), "embed_mode": mode, "stream_group": group_no,
                         "stream_rows_done": totals["source"]}
                writes.append(store.write(
                    name, rows_out, key=key, mode=wmode, delete_keys=deletes, model=embedder.name,
                    model_revision=embedder.revision, text_column=text, run_id=run_id,
                    properties=props))
                first_write = False
                pending.clear()
                since = {"rows_embedded": 0, "rows_reused": 0}
            bar.set_postfix(embedded=totals["embedded"], committed=len(writes), refresh=False)
    bar.close()
    committed = [w for w in writes if w.committed]
    last_w = writes[-1]
    write = WriteResult(
        name, last_w.version,
        committed[0].previous_version if committed else last_w.previous_version, mode,
        rows_inserted=sum(w.rows_inserted for w in writes),
        rows_updated=sum(w.rows_updated for w in writes),
        rows_deleted=sum(w.rows_deleted for w in writes),
        properties=last_w.properties, retries=sum(w.retries for w in writes))
    return EmbedResult(
        write=write, rows_source=totals["source"], rows_embedded=totals["embedded"],
        rows_reused=totals["reused"], rows_unchanged=totals["unchanged"],
        rows_skipped_empty=totals["skipped"], seconds=time.perf_counter() - t0,
        model=embedder.name)


def _embed_in_chunks(plan: Any, base: pa.Table, texts: list[str], embedder: Embedder, name: str,
                     key: str, bar: Any, rows: int) -> Any:
    """The group's vectors, the model called on chunks of the texts it must embed so the
    progress bar (rows of the source done) moves while a large group is embedded."""
    from ._pipeline import _embed_changed

    n_embed = plan.n_embed
    if n_embed <= _EMBED_CHUNK:
        out = _embed_changed(plan, base, texts, embedder, name, key)
        bar.update(rows)
        return out

    class _Chunked:
        """The embedder, advancing the bar after each chunk it embeds."""

        def __init__(self) -> None:
            self.name, self.dimension = embedder.name, getattr(embedder, "dimension", None)

        def embed(self, ts: Sequence[str]) -> Any:
            parts = []
            for i in range(0, len(ts), _EMBED_CHUNK):
                parts.append(np.asarray(embedder.embed(ts[i:i + _EMBED_CHUNK]), np.float32))
                bar.update(round(rows * min(i + _EMBED_CHUNK, len(ts)) / len(ts))
                           - round(rows * i / len(ts)))
            return np.concatenate(parts)

    return _embed_changed(plan, base, texts, _Chunked(), name, key)  # type: ignore[arg-type]
