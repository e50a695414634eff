"""Writes: every mode commits exactly one Lance version, or none when nothing changes.

A write runs in named steps: check the arguments, check and normalise the rows
(:class:`_Rows`), decide the table's facts (a new table, an overwrite, or the existing
table's, refusing another model or dimension), then one commit per mode:

* ``overwrite`` and the first write: ``lance.write_dataset`` (create / overwrite); the
  key column is declared as Lance's unenforced primary key (:func:`with_primary_key`);
* ``append``: the rows are written as fragment files once; each plan refuses stored
  keys and commits the fragments;
* ``upsert``: one ``merge_insert`` plan (update matched, insert new), ``delete_keys`` in
  the same commit;
* ``replace_partition``: the same ``merge_insert``, whose "not matched by source" clause
  deletes the partition's rows that the new data no longer holds. ``keep_keys`` lists
  rows of the partition that stay as stored although absent from ``data`` (the
  incremental pipeline sends only changed rows). This is the one replace-partition path:
  the embedding pipeline and the Dagster IO manager both call it.

Every commit carries the write's provenance as Lance transaction properties, and every
commit but an overwrite is fenced: it commits only on top of the version it was planned
on, else it is planned again (:mod:`._commits`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa
import pyarrow.compute as pc
from lance.commit import CommitConflictError

from ..errors import ConflictError, SchemaMismatchError, ValidationError, describe
from . import _filters as sqlx
from ._arrow import as_arrow
from ._cache import STATE
from ._commits import MAX_ATTEMPTS, commit, fence, is_conflict, table_lock, with_retries
from ._meta import (
    MAX_ROWS_PER_FILE,
    META_KEY,
    METRICS,
    PK_METADATA,
    PROP_PREFIX,
    VECTOR_COLUMN,
    WRITE_MODES,
    StoreLocation,
    TableMeta,
    WriteMode,
    is_local,
    new_table_id,
)
from ._results import WriteResult
from ._staged import remove_files
from ._validation import to_vector_array, validate_column_names, validate_keys, validate_table_name

Partition = tuple[str, Any]


@dataclass
class WriteRequest:
    """The arguments of one :meth:`Store.write`, checked."""

    name: str
    key: str
    mode: str
    partition: Partition | None = None
    partition_where: str | None = None
    delete_keys: Sequence[Any] | None = None
    keep_keys: Sequence[Any] | None = None
    model: str | None = None
    model_revision: str | None = None
    metric: str | None = None
    text_column: str | None = None
    run_id: str | None = None
    properties: Mapping[str, Any] | None = None

    def check(self) -> WriteRequest:
        validate_table_name(self.name)
        if self.partition is not None and (not isinstance(self.partition, tuple | list)
                                           or len(self.partition) != 2):
            raise ValidationError(f"partition must be (column, value), got {self.partition!r}")
        if self.properties is not None and not isinstance(self.properties, Mapping):
            raise ValidationError("properties must be a mapping of names to values, got "
                                  f"{type(self.properties).__name__}")
        if self.mode not in WRITE_MODES:
            raise ValidationError(
                f"unknown write mode {self.mode!r}; choose one of {', '.join(WRITE_MODES)}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValidationError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.mode == "replace_partition" and self.partition is None and not self.partition_where:
            raise ValidationError("mode 'replace_partition' needs partition=(column, value)")
        if self.delete_keys and self.mode != "upsert":
            raise ValidationError("delete_keys is only valid with mode 'upsert'")
        if self.keep_keys is not None and self.mode != "replace_partition":
            raise ValidationError("keep_keys is only valid with mode 'replace_partition'")
        return self

    def partition_predicate(self) -> str | None:
        if self.partition_where:
            return self.partition_where
        if self.partition is None:
            return None
        col, val = self.partition
        return sqlx.in_list(col, val) if isinstance(val, list | tuple) else sqlx.eq(col, val)


def prepare_rows(req: WriteRequest, data: Any) -> pa.Table:
    """The rows as one Arrow table with a ``FixedSizeList<float32>`` vector column; keys,
    vectors and partition membership checked."""
    tbl = as_arrow(data)
    validate_keys(tbl, req.key)
    if VECTOR_COLUMN not in tbl.column_names:
        raise ValidationError(
            f"data has no {VECTOR_COLUMN!r} column; columns are {', '.join(tbl.column_names)}")
    if req.partition is not None:
        check_partition(tbl, req.partition)
    if tbl.num_rows:
        vec = to_vector_array(tbl.column(VECTOR_COLUMN))
        tbl = tbl.set_column(tbl.column_names.index(VECTOR_COLUMN),
                             pa.field(VECTOR_COLUMN, vec.type), vec)
    return tbl


def check_partition(tbl: pa.Table, partition: Partition) -> None:
    pcol, pval = partition
    if pcol not in tbl.column_names:
        raise ValidationError(f"partition column {pcol!r} not in data")
    if not tbl.num_rows:
        return
    col = tbl.column(pcol)
    values = list(pval) if isinstance(pval, list | tuple) else [pval]
    inside = pc.is_in(col, value_set=pa.array(values).cast(col.type))
    outside = tbl.num_rows - pc.sum(pc.fill_null(inside, False)).as_py()
    if outside:
        shown = pval if not isinstance(pval, list | tuple) else ", ".join(map(str, pval))
        raise ValidationError(f"{outside} row(s) have {pcol} outside {shown!r}; a partition "
                              "write may only hold rows of that partition")


def table_meta_for(req: WriteRequest, tbl: pa.Table, existing: lance.LanceDataset | None) -> TableMeta:
    """The facts the table has after this write (and the refusals that protect them)."""
    dim = tbl.schema.field(VECTOR_COLUMN).type.list_size if tbl.num_rows else None
    return table_meta_for_dimension(req, dim, existing)


def table_meta_for_dimension(req: WriteRequest, dim: int | None,
                             existing: lance.LanceDataset | None) -> TableMeta:
    """:func:`table_meta_for` given the written vectors' dimension (``None``: no rows),
    for a writer whose rows are already in fragment files (:mod:`._fragments`)."""
    old = TableMeta.from_schema(existing.schema) if existing is not None else None
    dim = dim if dim is not None else (old.dimension if old else None)
    if dim is None:
        raise ValidationError(f"cannot create table {req.name!r} from zero rows")
    if existing is not None and req.mode != "overwrite":
        _check_compatible(req, old, dim)
        return old or TableMeta(key=req.key, dimension=dim)
    return TableMeta(
        key=req.key, dimension=dim,
        metric=req.metric or (old.metric if old else "cosine"),
        model=req.model, model_revision=req.model_revision, text_column=req.text_column,
        partition_column=req.partition[0] if req.partition else None,
        # An overwrite is a new version of the same table: it keeps the identity.
        table_id=(old.table_id if old and old.table_id else new_table_id()),
    )


def _check_compatible(req: WriteRequest, meta: TableMeta | None, dim: int) -> None:
    if meta is None:
        return
    name, hint = req.name, "write with mode='overwrite' or to a new table"
    if meta.key != req.key:
        raise SchemaMismatchError(f"table {name!r} is keyed on {meta.key!r}, not {req.key!r}")
    if meta.dimension != dim:
        raise SchemaMismatchError(
            f"table {name!r} holds {meta.dimension}-dimensional vectors; "
            f"this write has dimension {dim}; {hint}")
    if req.metric is not None and req.metric != meta.metric:  # else silently ignored
        raise SchemaMismatchError(
            f"table {name!r} ranks by metric {meta.metric!r}; this write asks for "
            f"{req.metric!r}; {hint}")
    if req.model is not None and meta.model is not None and req.model != meta.model:
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from model {meta.model!r}; "
            f"this write is from {req.model!r}; {hint}")
    if (req.model_revision and meta.model_revision and req.model_revision != meta.model_revision
            and (req.model is None or req.model == meta.model)):
        raise SchemaMismatchError(
            f"table {name!r} holds vectors from revision {meta.model_revision!r} of "
            f"{meta.model!r}; this write is from revision {req.model_revision!r}; {hint}")


def provenance(req: WriteRequest, meta: TableMeta) -> dict[str, str]:
    """The transaction properties every commit of this write carries."""
    props = {
        f"{PROP_PREFIX}run_id": req.run_id or f"manual-{uuid.uuid4().hex[:12]}",
        f"{PROP_PREFIX}mode": req.mode,
        f"{PROP_PREFIX}model": req.model or meta.model or "",
        f"{PROP_PREFIX}model_revision": req.model_revision or meta.model_revision or "",
        f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if req.partition is not None:
        props[f"{PROP_PREFIX}partition"] = f"{req.partition[0]}={req.partition[1]}"
    elif req.partition_where:
        props[f"{PROP_PREFIX}partition"] = req.partition_where
    for k, v in (req.properties or {}).items():
        props[f"{PROP_PREFIX}{k}"] = str(v)
    return props


def write(store: StoreLocation, req: WriteRequest, data: Any) -> WriteResult:
    """Check, then commit one version (see the module docstring). The plan (which keys
    exist, what to delete) is made against the version the commit lands on: a commit
    that finds the table moved since its plan conflicts, and the write is planned again
    on the newer version (:mod:`._commits`)."""
    req.check()
    rows = prepare_rows(req, data)
    staged: list[lance.FragmentMetadata] = []  # an append's rows, written once for every plan
    try:
        with table_lock(store, req.name):
            try:
                result, retries = with_retries(
                    lambda n: _plan_and_commit(store, req, rows, n, staged))
            except CommitConflictError as exc:
                raise ConflictError(
                    f"write to {req.name!r} kept conflicting with concurrent commits "
                    f"({MAX_ATTEMPTS} attempts); nothing was written: {describe(exc)}") from None
    except BaseException:
        if staged and is_local(store.uri):  # (see _merge: on an object store they stay)
            remove_files(store.table_uri(req.name), store.storage_options, staged)
        raise
    result.retries = retries
    return result


def _plan_and_commit(store: StoreLocation, req: WriteRequest, tbl: pa.Table, retries: int,
                     staged: list[lance.FragmentMetadata]) -> WriteResult:
    existing = store.open_dataset(req.name)
    meta = table_meta_for(req, tbl, existing)
    props = provenance(req, meta)
    if retries:
        props[f"{PROP_PREFIX}retries"] = str(retries)
    uri = store.table_uri(req.name)
    if existing is None or req.mode == "overwrite":
        return _create_or_overwrite(store, req, uri, tbl, meta, props, existing)
    tbl = _conform(req.name, tbl, existing.schema)
    if req.mode == "append":
        return _append(store, req, uri, tbl, props, existing, staged)
    return _merge(store, req, tbl, props, existing)


def _unchanged(req: WriteRequest, existing: lance.LanceDataset, props: dict[str, str]) -> WriteResult:
    return WriteResult(req.name, existing.version, existing.version, req.mode, properties=props)


# Key types Lance accepts as a primary key and that compare exactly (no float keys).
def _pk_type(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_date(t))


def with_primary_key(schema: pa.Schema, key: str) -> pa.Schema:
    """``schema`` with ``key`` declared as Lance's unenforced primary key (a non-null
    column with the ``lance-schema:unenforced-primary-key`` field metadata). Lance's own
    ``merge_insert`` then detects two concurrent inserts of one key (lance PR 5633), so
    writers that bypass embed_assets keep keys unique too."""
    f = schema.field(key)
    if not _pk_type(f.type):
        return schema
    md = {**(f.metadata or {}), PK_METADATA: b"true"}
    return schema.set(schema.get_field_index(key), f.with_nullable(False).with_metadata(md))


def has_primary_key(schema: pa.Schema, key: str) -> bool:
    f = schema.field(key) if key in schema.names else None
    return f is not None and (f.metadata or {}).get(PK_METADATA) == b"true"


def _create_or_overwrite(store: StoreLocation, req: WriteRequest, uri: str, tbl: pa.Table, meta: TableMeta,
                         props: dict[str, str], existing: lance.LanceDataset | None) -> WriteResult:
    validate_column_names(tbl.column_names)
    schema = with_primary_key(tbl.schema, req.key)
    schema = schema.with_metadata({**(schema.metadata or {}), META_KEY: meta.to_bytes()})
    tbl = tbl.cast(schema)
    if existing is not None and _holds_exactly(existing, tbl, req.key):
        return _unchanged(req, existing, props)  # a rerun that changes nothing: no version
    try:
        ds = lance.write_dataset(
            tbl, uri, mode="create" if existing is None else "overwrite",
            storage_options=store.storage_options, max_rows_per_file=MAX_ROWS_PER_FILE,
            transaction_properties={**props, f"{PROP_PREFIX}rows_written": str(tbl.num_rows)},
        )
    except (OSError, ValueError) as exc:
        if existing is None and is_conflict(exc):  # created meanwhile: plan again on it
            raise CommitConflictError(f"table {req.name!r} was created concurrently",
                                      retryable=True) from None
        raise
    if existing is not None:  # what the replaced versions cached is not read again soon
        STATE.clear(uri, before=int(ds.version))
    return WriteResult(req.name, ds.version, existing.version if existing is not None else None,
                       req.mode, rows_inserted=tbl.num_rows,
                       rows_deleted=existing.count_rows() if existing is not None else 0,
                       properties=props)


def _holds_exactly(existing: lance.LanceDataset, tbl: pa.Table, key: str) -> bool:
    """Whether the latest version already holds exactly these rows (in any order) under the
    same schema and table facts. Costs one read of the table, only when the row counts and
    schemas already match: at most what the overwrite itself would have written."""
    if existing.count_rows() != tbl.num_rows or not existing.schema.equals(tbl.schema, check_metadata=True):
        return False
    old = existing.to_table(columns=tbl.column_names)
    return bool(old.sort_by(key).equals(tbl.sort_by(key)))


def _append(store: StoreLocation, req: WriteRequest, uri: str, tbl: pa.Table, props: dict[str, str],
            existing: lance.LanceDataset, staged: list[lance.FragmentMetadata]) -> WriteResult:
    if tbl.num_rows == 0:
        return _unchanged(req, existing, props)
    clash = existing_keys(existing, req.key, tbl.column(req.key).to_pylist())
    if clash:
        raise ValidationError(
            f"{len(clash)} key(s) already exist in table {req.name!r} "
            f"(e.g. {', '.join(repr(k) for k in clash[:5])}); use mode 'upsert'")
    if not staged:
        staged.extend(lance.fragment.write_fragments(
            tbl, uri, schema=existing.schema, mode="append", max_rows_per_file=MAX_ROWS_PER_FILE,
            data_storage_version=existing.data_storage_version,
            storage_options=store.storage_options))
    props = {**props, f"{PROP_PREFIX}rows_written": str(tbl.num_rows)}
    ds = commit(existing, fence(existing, [], [], staged), existing.version, props,
                store.storage_options)
    staged.clear()  # committed: the files are the table's now
    return WriteResult(req.name, ds.version, existing.version, req.mode,
                       rows_inserted=tbl.num_rows, properties=_public(props))


def _public(props: dict[str, str]) -> dict[str, str]:
    """The provenance a result reports (the row counts are its own fields)."""
    return {k: v for k, v in props.items()
            if k not in (f"{PROP_PREFIX}rows_written", f"{PROP_PREFIX}rows_deleted")}


def typed_keys(req: WriteRequest, keys: Sequence[Any], schema: pa.Schema, what: str) -> list[Any]:
    """``keys`` checked against the key column's type: a key that is not a value of that
    type (the text ``"1 OR 1=1"`` for an integer key) is bad input, never a filter."""
    typ = schema.field(req.key).type
    try:
        pa.array(list(keys), type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} must be values of the key column {req.key!r} ({typ}): "
                              f"{describe(exc)}") from None
    return list(keys)


def _delete_predicate(req: WriteRequest, tbl: pa.Table, existing: lance.LanceDataset) -> str | None:
    """Which rows of the base version that the data does not match are deleted."""
    if req.mode == "upsert":
        if not req.delete_keys:
            return None
        return sqlx.in_list(req.key, typed_keys(req, req.delete_keys, existing.schema, "delete_keys"))
    where = req.partition_predicate()
    if req.keep_keys is None:
        return where  # the whole partition becomes the data
    # Only changed rows were sent: delete the partition's keys that are neither in the
    # data nor kept, as read from the version this commit is based on.
    stored = existing.to_table(columns=[req.key], filter=where).column(req.key).to_pylist()
    keep = set(typed_keys(req, req.keep_keys, existing.schema, "keep_keys")) \
        | set(tbl.column(req.key).to_pylist())
    stale = [k for k in stored if k not in keep]
    return sqlx.in_list(req.key, stale) if stale else None


def _merge(store: StoreLocation, req: WriteRequest, tbl: pa.Table, props: dict[str, str],
           existing: lance.LanceDataset) -> WriteResult:
    delete_pred = _delete_predicate(req, tbl, existing)
    if tbl.num_rows == 0 and delete_pred is None:
        return _unchanged(req, existing, props)
    builder = existing.merge_insert(req.key).when_matched_update_all().when_not_matched_insert_all()
    if delete_pred is not None:
        builder = builder.when_not_matched_by_source_delete(delete_pred)
    txn, stats = builder.execute_uncommitted(tbl)
    inserted = int(stats.get("num_inserted_rows", 0))
    updated = int(stats.get("num_updated_rows", 0))
    deleted = int(stats.get("num_deleted_rows", 0))
    op: Any = txn.operation  # an Update (its fragment lists), typed as the base operation
    if inserted == updated == deleted == 0:
        return _unchanged(req, existing, props)
    props = {**props, f"{PROP_PREFIX}rows_written": str(inserted + updated),
             f"{PROP_PREFIX}rows_deleted": str(deleted)}
    try:
        ds = commit(existing, fence(existing, list(op.removed_fragment_ids), list(op.updated_fragments),
                                    list(op.new_fragments)),
                    existing.version, props, store.storage_options)
    except BaseException:  # this plan's files will never be committed
        # (on an object store a lost answer leaves doubt: they stay for cleanup, as orphans)
        if is_local(existing.uri):
            remove_files(existing.uri, store.storage_options, list(op.new_fragments))
        raise
    return WriteResult(req.name, ds.version, existing.version, req.mode, rows_inserted=inserted,
                       rows_updated=updated, rows_deleted=deleted, properties=_public(props))


def _conform(name: str, tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows cast to the table's schema; refused when the columns differ."""
    want, have = set(schema.names), set(tbl.column_names)
    if want != have:
        parts = []
        if want - have:
            parts.append(f"missing {', '.join(sorted(want - have))}")
        if have - want:
            parts.append(f"unexpected {', '.join(sorted(have - want))}")
        raise SchemaMismatchError(f"columns do not match table {name!r}: {'; '.join(parts)}")
    cols, fields = [], []
    for f in schema:
        col = tbl.column(f.name)
        if "blob" in str(getattr(f.type, "extension_name", "")) and (
                pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            # A Lance blob column is read back as its extension type but written as bytes
            # marked for the blob encoding (as when the table was created); Arrow has no
            # cast from bytes to the extension's struct.
            cols.append(col.cast(pa.large_binary()))
            fields.append(pa.field(f.name, pa.large_binary(), f.nullable,
                                   metadata={b"lance-encoding:blob": b"true"}))
            continue
        if col.type != f.type:
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"column {f.name!r} has type {col.type}, table {name!r} expects {f.type}: {exc}"
                ) from None
        cols.append(col)
        fields.append(f)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=schema.metadata))


def existing_keys(ds: lance.LanceDataset, key: str, keys: list[Any]) -> list[Any]:
    """The ``keys`` already stored in ``ds``."""
    found: list[Any] = []
    for i in range(0, len(keys), 5000):
        t = ds.to_table(columns=[key], filter=sqlx.in_list(key, keys[i:i + 5000]))
        found.extend(t.column(key).to_pylist())
    return found


__all__ = ["Partition", "WriteMode", "WriteRequest", "check_partition", "existing_keys", "has_primary_key",
           "with_primary_key", "write"]
