"""Writes whose rows other processes put in Lance fragment files: one commit by the caller.

A distributed writer (the Ray executor, :mod:`embed_assets.embed._ray`) has its workers
write data files with :func:`write_uncommitted` and hands the returned fragment metadata
to :func:`commit_fragments`, which commits them as **one** version through the same
machinery as :func:`._writes.write`: the same refusals (key, dimension, model, revision),
the same provenance as transaction properties, the same fenced commit planned on the
version it lands on (:mod:`._commits`) and retried on a conflict. Until that commit no manifest references the
files, so a run that dies before it leaves no visible trace: the files are orphans,
which :meth:`~._table.EmbeddingTable.cleanup` deletes once they are older than its grace
period (and :func:`remove_uncommitted` deletes at once the ones the caller knows of).

Per mode, the one operation committed:

* a new table or ``overwrite``: ``Overwrite`` with the fragments (the schema carries the
  table's facts, as ``write_dataset`` would write them);
* ``append``: a fenced ``Update`` adding the fragments, after refusing keys already stored;
* ``upsert`` / ``replace_partition``: a fenced ``Update``: the stored rows whose key is
  written again, plus the rows the mode deletes (``delete_keys``; the partition's rows
  neither written nor kept), get deletion vectors, and the new fragments are added. This
  is what Lance's ``merge_insert`` commits, planned here against the version it lands on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lance
import pyarrow as pa
from lance import LanceOperation
from lance.commit import CommitConflictError
from lance.fragment import FragmentMetadata

from ..errors import ConflictError, ValidationError, first_line
from . import _filters as sqlx
from ._commits import MAX_ATTEMPTS, commit, fence, table_lock, with_retries
from ._meta import (
    MAX_ROWS_PER_FILE,
    META_KEY,
    PROP_PREFIX,
    VECTOR_COLUMN,
    StoreLocation,
)
from ._results import WriteResult
from ._staged import remove_files
from ._validation import validate_column_names
from ._writes import (
    WriteRequest,
    _conform,
    _delete_predicate,
    existing_keys,
    provenance,
    table_meta_for_dimension,
    with_primary_key,
)

# Keys per IN-list filter when finding the stored rows a commit replaces.
_KEYS_PER_FILTER = 5000


@dataclass(frozen=True)
class FragmentTarget:
    """Where and how workers write the fragments of one run (picklable: it travels to them).

    ``schema`` is the existing table's schema, which every fragment is cast to, or
    ``None`` when the run creates or overwrites the table (the fragments then carry the
    schema of their rows, which must agree across workers).
    """

    table: str
    uri: str
    storage_options: dict[str, str] | None
    schema: pa.Schema | None
    data_storage_version: str | None
    base_version: int | None

    @property
    def replaces(self) -> bool:
        return self.schema is None


def fragment_target(store: StoreLocation, name: str, *, replace: bool) -> FragmentTarget:
    """The target of a run on table ``name`` as it is now: ``replace`` for an overwrite
    (or a table that does not exist yet), else fragments in the table's own schema."""
    existing = store.open_dataset(name)
    return FragmentTarget(
        table=name,
        uri=store.table_uri(name),
        storage_options=store.storage_options,
        schema=None if replace or existing is None else existing.schema,
        # a fragment's file format must be the table's (an overwrite keeps it too)
        data_storage_version=existing.data_storage_version if existing is not None else None,
        base_version=existing.version if existing is not None else None,
    )


def write_uncommitted(target: FragmentTarget, rows: pa.Table) -> list[FragmentMetadata]:
    """Write ``rows`` (key, columns, ``vector``, provenance) as data files of the table,
    referenced by no version until :func:`commit_fragments` commits them."""
    if target.schema is None:
        validate_column_names(rows.column_names)
        mode = "overwrite"  # new field ids, assigned in column order: equal for equal schemas
    else:
        rows = _conform(target.table, rows, target.schema)
        mode = "append"
    return lance.fragment.write_fragments(
        rows,
        target.uri,
        schema=rows.schema,
        mode=mode,
        max_rows_per_file=MAX_ROWS_PER_FILE,
        data_storage_version=target.data_storage_version,
        storage_options=target.storage_options,
    )


def remove_uncommitted(target: FragmentTarget, fragments: Sequence[FragmentMetadata]) -> int:
    """Delete the data files of fragments that will never be committed (a failed run);
    returns how many were asked to go. Best effort: whatever is left (and the files of
    attempts that died mid-write) is an orphan that ``cleanup`` removes."""
    return remove_files(target.uri, target.storage_options, fragments)


def commit_fragments(
    store: StoreLocation,
    req: WriteRequest,
    target: FragmentTarget,
    fragments: Sequence[FragmentMetadata],
    *,
    schema: pa.Schema,
    keys: pa.Array | pa.ChunkedArray,
) -> WriteResult:
    """Commit the fragments of one run as exactly one version (see the module docstring).

    Parameters
    ----------
    req : WriteRequest
        The write as :meth:`Store.write` would take it (mode, provenance, partition,
        ``delete_keys``, ``keep_keys``); its rows are the fragments.
    schema : pyarrow.Schema
        The fragments' schema (for a new table: the one every worker reported).
    keys : pyarrow.Array
        The keys the fragments hold, in any order.
    """
    req.check()
    if not fragments:
        raise ValidationError("commit_fragments needs at least one fragment")
    if VECTOR_COLUMN not in schema.names:
        raise ValidationError(f"the fragments have no {VECTOR_COLUMN!r} column")
    with table_lock(store, req.name):
        try:
            result, retries = with_retries(
                lambda n: _plan_and_commit(store, req, target, list(fragments), schema, keys, n)
            )
        except CommitConflictError as exc:
            raise ConflictError(
                f"commit of {len(fragments)} fragment(s) to {req.name!r} kept conflicting with "
                f"concurrent commits ({MAX_ATTEMPTS} attempts); nothing was committed: "
                f"{first_line(exc)}"
            ) from None
    result.retries = retries
    return result


def _columns(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _plan_and_commit(
    store: StoreLocation,
    req: WriteRequest,
    target: FragmentTarget,
    fragments: list[FragmentMetadata],
    schema: pa.Schema,
    keys: pa.Array | pa.ChunkedArray,
    retries: int,
) -> WriteResult:
    existing = store.open_dataset(req.name)
    rows = sum(f.physical_rows for f in fragments)
    dim = schema.field(VECTOR_COLUMN).type.list_size
    replace = existing is None or req.mode == "overwrite"
    # The table must still be what the workers wrote for: not created, dropped or
    # overwritten with other columns meanwhile (then the fragments' schema is wrong).
    if replace != target.replaces or (
        existing is not None
        and target.schema is not None
        and _columns(existing.schema) != _columns(target.schema)
    ):
        raise ConflictError(
            f"table {req.name!r} was created, dropped or overwritten with other columns while "
            "the fragments were written; nothing was committed: run again"
        )
    meta = table_meta_for_dimension(req, dim, existing)
    props = provenance(req, meta)
    if retries:
        props[f"{PROP_PREFIX}retries"] = str(retries)
    if replace:
        full = with_primary_key(schema, req.key) if _key_has_no_nulls(keys) else schema
        full = full.with_metadata({**(full.metadata or {}), META_KEY: meta.to_bytes()})
        op: LanceOperation.BaseOperation = LanceOperation.Overwrite(full, fragments)
        inserted, updated, deleted = rows, 0, existing.count_rows() if existing is not None else 0
        props[f"{PROP_PREFIX}rows_written"] = str(rows)
    elif req.mode == "append":
        assert existing is not None  # not a replace: the table exists
        clash = existing_keys(existing, req.key, pa.chunked_array([keys]).to_pylist())
        if clash:
            raise ValidationError(
                f"{len(clash)} key(s) already exist in table {req.name!r} "
                f"(e.g. {', '.join(repr(k) for k in clash[:5])}); use mode 'upsert'"
            )
        op = fence(existing, [], [], fragments)
        inserted, updated, deleted = rows, 0, 0
        props[f"{PROP_PREFIX}rows_written"] = str(rows)
    else:
        assert existing is not None  # not a replace: the table exists
        op, updated, deleted = _update(req, existing, fragments, keys)
        inserted = rows - updated
        props[f"{PROP_PREFIX}rows_written"] = str(rows)
        props[f"{PROP_PREFIX}rows_deleted"] = str(deleted)
    ds = commit(existing if existing is not None else target.uri, op,
                existing.version if existing is not None else 0, props, store.storage_options)
    return WriteResult(
        req.name,
        ds.version,
        existing.version if existing is not None else None,
        req.mode,
        rows_inserted=inserted,
        rows_updated=updated,
        rows_deleted=deleted,
        properties={
            k: v
            for k, v in props.items()
            if k != f"{PROP_PREFIX}rows_written" and k != f"{PROP_PREFIX}rows_deleted"
        },
    )


def _update(
    req: WriteRequest,
    existing: lance.LanceDataset,
    fragments: list[FragmentMetadata],
    keys: pa.Array | pa.ChunkedArray,
) -> tuple[LanceOperation.BaseOperation, int, int]:
    """The ``Update`` replacing the stored rows of ``keys`` and deleting what the mode
    deletes, planned on ``existing``; with the rows updated and the rows deleted."""
    written = pa.chunked_array([keys]).to_pylist()
    by_fragment: dict[int, list[Any]] = {}
    updated = _find(
        existing,
        req.key,
        [
            sqlx.in_list(req.key, written[i : i + _KEYS_PER_FILTER])
            for i in range(0, len(written), _KEYS_PER_FILTER)
        ],
        by_fragment,
    )
    extra = _delete_predicate(req, pa.table({req.key: pa.chunked_array([keys])}), existing)
    seen = {k for ks in by_fragment.values() for k in ks}
    before = len(seen)
    deleted = 0
    if extra is not None:
        more: dict[int, list[Any]] = {}
        _find(existing, req.key, [extra], more)
        for fid, ks in more.items():
            fresh = [k for k in ks if k not in seen]
            seen.update(fresh)
            by_fragment.setdefault(fid, []).extend(fresh)
        deleted = len(seen) - before
    removed, changed = [], []
    for fid, ks in sorted(by_fragment.items()):
        # one delete per fragment: it writes the fragment's new deletion file (referenced
        # by nothing until the commit) and returns None when no row is left
        frag = existing.get_fragment(fid)
        assert frag is not None  # a fragment of the version the keys were read from
        new = frag.delete(sqlx.in_list(req.key, ks))
        if new is None:
            removed.append(fid)
        else:
            changed.append(new)
    return fence(existing, removed, changed, fragments), updated, deleted


def _key_has_no_nulls(keys: pa.Array | pa.ChunkedArray) -> bool:
    return keys.null_count == 0


def _find(ds: lance.LanceDataset, key: str, filters: Sequence[str], into: dict[int, list[Any]]) -> int:
    """Add the keys matching each filter to ``into`` by fragment id; returns how many matched."""
    n = 0
    for where in filters:
        tbl = ds.to_table(columns=[key], filter=where, with_row_address=True)
        n += tbl.num_rows
        for k, addr in zip(tbl.column(key).to_pylist(), tbl.column("_rowaddr").to_pylist(), strict=True):
            into.setdefault(addr >> 32, []).append(k)
    return n


__all__ = ["FragmentTarget", "commit_fragments", "fragment_target", "remove_uncommitted", "write_uncommitted"]
