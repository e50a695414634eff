"""The versioned embedding store: one Lance dataset per table, one Lance version per write.

The layout is LanceDB's (``<store>/<name>.lance``), so ``lancedb.connect(store)`` opens
the same tables. Writes go through pylance directly because it lets every commit carry
*transaction properties*: the run id, model and row counts of the write that made each
version travel with the version itself, atomically, with no side table to keep in sync.

Nothing here imports Dagster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lance import LanceOperation

from ..errors import (
    SchemaMismatchError,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
)
from . import _filters as sqlx
from ._arrow import as_arrow
from ._validation import to_vector_array, validate_keys, validate_table_name, validate_tag

WriteMode = Literal["overwrite", "append", "upsert", "replace_partition"]
WRITE_MODES: tuple[str, ...] = ("overwrite", "append", "upsert", "replace_partition")
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")
VECTOR_COLUMN = "vector"
# The filter full scans pass to Lance. Measured here (pylance 14, 100k x 384 in 32k-row
# files): an unfiltered scan of fragments without deletions took 170-220 ms, the same scan
# with a filter that is always true 73-90 ms, with identical results. Fragments that carry
# deletion vectors already take the fast path, which is why old versions (clean files)
# read ~1.6-2x slower than the latest (files with deletions) before this.
SCAN_ALL = "true"


META_KEY = b"embed_assets"
ENV_STORE = "EMBED_ASSETS_STORE"
DEFAULT_STORE = "./.embed_store"
# Keys of the per-version provenance stored as Lance transaction properties.
PROP_PREFIX = "embed_assets."
# Rows per data file. Lance decodes fragments in parallel: 100k x 384 read back in 185 ms
# as one file and 74 ms as four (benchmarks/RESULTS.md), and old versions keep whatever
# layout their first write had, so the first write decides how fast time travel reads.
MAX_ROWS_PER_FILE = 32_768

VersionRef = int | str | None


def default_store_uri() -> str:
    """``$EMBED_ASSETS_STORE`` if set, else ``./.embed_store``."""
    return os.environ.get(ENV_STORE) or DEFAULT_STORE


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _utc(ts: dt.datetime) -> dt.datetime:
    # Lance reports naive local timestamps; make them explicit.
    return ts.astimezone(dt.UTC)


@dataclass(frozen=True)
class TableMeta:
    """What a table holds, fixed when it is created (or overwritten)."""

    key: str
    dimension: int
    metric: str = "cosine"
    model: str | None = None
    model_revision: str | None = None
    text_column: str | None = None
    partition_column: str | None = None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> TableMeta | None:
        raw = (schema.metadata or {}).get(META_KEY)
        if raw is None:
            return None
        d = json.loads(raw)
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})


@dataclass
class VersionInfo:
    """One version of a table, as listed by :meth:`EmbeddingTable.versions`."""

    version: int
    timestamp: dt.datetime
    rows: int
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timestamp"] = self.timestamp.isoformat()
        return d


@dataclass
class WriteResult:
    """What a write did. ``version == previous_version`` when there was nothing to write."""

    table: str
    version: int
    previous_version: int | None
    mode: str
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def committed(self) -> bool:
        return self.version != self.previous_version

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["committed"] = self.committed
        return d


@dataclass
class CleanupReport:
    """What :meth:`EmbeddingTable.cleanup` removed."""

    table: str
    removed_versions: list[int]
    kept_versions: list[int]
    bytes_freed: int
    files_removed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """A directory (or object-store prefix) of versioned embedding tables.

    Parameters
    ----------
    uri : str, optional
        Local path or ``s3://bucket/prefix``; defaults to ``$EMBED_ASSETS_STORE`` or
        ``./.embed_store``.
    storage_options : dict, optional
        Passed to Lance for object stores (credentials, endpoint, region...).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> store = Store(tempfile.mkdtemp())
    >>> r = store.write("docs", {"id": [1, 2], "vector": np.eye(2, 3).tolist()}, key="id")
    >>> store.table("docs").versions()[0].rows
    2
    """

    def __init__(self, uri: str | os.PathLike[str] | None = None, *,
                 storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri) if uri is not None else default_store_uri()
        self.uri = self.uri.rstrip("/") or "/"
        self.storage_options = storage_options
        if _is_local(self.uri):
            path = _local_path(self.uri)
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValidationError(f"store path {path!r} exists and is not a directory")

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- tables -------------------------------------------------------------------------
    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{validate_table_name(name)}.lance"

    def table_names(self) -> list[str]:
        if _is_local(self.uri):
            path = _local_path(self.uri)
            if not os.path.isdir(path):
                return []
            return sorted(
                e[: -len(".lance")]
                for e in os.listdir(path)
                if e.endswith(".lance") and os.path.isdir(os.path.join(path, e, "_versions"))
            )
        import lancedb

        db = lancedb.connect(self.uri, storage_options=self.storage_options)
        return sorted(db.table_names())

    def exists(self, name: str) -> bool:
        return self._open_or_none(name) is not None

    def table(self, name: str) -> EmbeddingTable:
        """Open a table; raises :class:`TableNotFoundError` listing the tables that exist."""
        uri = self.table_uri(name)
        try:
            ds = lance.dataset(uri, storage_options=self.storage_options)
        except Exception:
            names = self.table_names()
            listing = ", ".join(names) if names else "none"
            raise TableNotFoundError(
                f"table {name!r} not found in store {self.uri}; tables: {listing}"
            ) from None
        return EmbeddingTable(self, name, ds)

    def drop(self, name: str) -> None:
        """Delete a table and all its versions."""
        from ..index._build import forget_facts
        from ._cache import CACHE

        t = self.table(name)
        CACHE.forget(t.uri)
        forget_facts(t.uri)
        if _is_local(self.uri):
            import shutil

            shutil.rmtree(_local_path(t.uri))
        else:  # pragma: no cover - object stores
            import lancedb

            lancedb.connect(self.uri, storage_options=self.storage_options).drop_table(name)

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        name: str,
        data: Any,
        *,
        key: str,
        mode: WriteMode = "upsert",
        partition: tuple[str, Any] | None = None,
        delete_keys: Sequence[Any] | None = None,
        model: str | None = None,
        model_revision: str | None = None,
        metric: str | None = None,
        text_column: str | None = None,
        run_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> WriteResult:
        """Write rows of ``(key, vector, other columns)`` as exactly one new version.

        Parameters
        ----------
        mode : {"overwrite", "append", "upsert", "replace_partition"}
            ``overwrite`` replaces the table (and may change model or dimension);
            ``append`` adds rows whose keys must be new; ``upsert`` inserts or updates by
            key (Lance ``merge_insert``); ``replace_partition`` makes the rows whose
            ``partition[0]`` column equals ``partition[1]`` exactly ``data``, in one commit.
        delete_keys : sequence, optional
            With ``upsert``: keys to delete in the same commit (rows gone upstream).
        model, model_revision, metric, text_column
            Provenance. A table refuses vectors from another model or dimension unless
            ``mode="overwrite"``.
        run_id : str, optional
            Who wrote this version (a Dagster run id, a CLI invocation...); generated if
            omitted, and stored with the version.

        Returns
        -------
        WriteResult
            ``committed`` is False when there was nothing to change (no version written).
        """
        validate_table_name(name)
        if mode not in WRITE_MODES:
            raise ValidationError(
                f"unknown write mode {mode!r}; choose one of {', '.join(WRITE_MODES)}"
            )
        if metric is not None and metric not in METRICS:
            raise ValidationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if mode == "replace_partition" and partition is None:
            raise ValidationError("mode 'replace_partition' needs partition=(column, value)")
        if delete_keys and mode != "upsert":
            raise ValidationError("delete_keys is only valid with mode 'upsert'")

        tbl = as_arrow(data)
        validate_keys(tbl, key)
        if VECTOR_COLUMN not in tbl.column_names:
            raise ValidationError(
                f"data has no {VECTOR_COLUMN!r} column; columns are {', '.join(tbl.column_names)}"
            )
        vec = to_vector_array(tbl.column(VECTOR_COLUMN)) if tbl.num_rows else None
        if partition is not None:
            pcol, pval = partition
            if pcol not in tbl.column_names:
                raise ValidationError(f"partition column {pcol!r} not in data")
            if tbl.num_rows:
                col = tbl.column(pcol)
                mismatch = tbl.num_rows - pc.sum(pc.equal(col, pa.scalar(pval, col.type))).as_py() \
                    if col.null_count == 0 else tbl.num_rows
                if mismatch:
                    raise ValidationError(
                        f"{mismatch} row(s) have {pcol} != {pval!r}; a partition write may "
                        "only hold rows of that partition"
                    )

        existing = self._open_or_none(name)
        old_meta = TableMeta.from_schema(existing.schema) if existing is not None else None
        dim = vec.type.list_size if vec is not None else (old_meta.dimension if old_meta else None)
        if dim is None:
            raise ValidationError(f"cannot create table {name!r} from zero rows")

        if existing is not None and mode != "overwrite":
            self._check_compatible(name, existing, old_meta, key, dim, model, model_revision)
            meta = old_meta or TableMeta(key=key, dimension=dim)
        else:
            meta = TableMeta(
                key=key,
                dimension=dim,
                metric=metric or (old_meta.metric if old_meta else "cosine"),
                model=model,
                model_revision=model_revision,
                text_column=text_column,
                partition_column=partition[0] if partition else None,
            )

        if vec is not None:
            tbl = tbl.set_column(
                tbl.column_names.index(VECTOR_COLUMN), pa.field(VECTOR_COLUMN, vec.type), vec
            )
        run_id = run_id or f"manual-{uuid.uuid4().hex[:12]}"
        props = {
            f"{PROP_PREFIX}run_id": run_id,
            f"{PROP_PREFIX}mode": mode,
            f"{PROP_PREFIX}model": (model or meta.model or ""),
            f"{PROP_PREFIX}model_revision": (model_revision or meta.model_revision or ""),
            f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        if partition is not None:
            props[f"{PROP_PREFIX}partition"] = f"{partition[0]}={partition[1]}"
        for k, v in (properties or {}).items():
            props[f"{PROP_PREFIX}{k}"] = str(v)

        uri = self.table_uri(name)
        prev = existing.version if existing is not None else None

        if existing is None or mode == "overwrite":
            schema = tbl.schema.with_metadata({**(tbl.schema.metadata or {}), META_KEY: meta.to_bytes()})
            tbl = tbl.replace_schema_metadata(schema.metadata)
            ds = lance.write_dataset(
                tbl, uri, mode="create" if existing is None else "overwrite",
                storage_options=self.storage_options, max_rows_per_file=MAX_ROWS_PER_FILE,
                transaction_properties={**props, f"{PROP_PREFIX}rows_written": str(tbl.num_rows)},
            )
            return WriteResult(name, ds.version, prev, mode, rows_inserted=tbl.num_rows,
                               rows_deleted=existing.count_rows() if existing is not None else 0,
                               properties=props)

        tbl = self._conform(name, tbl, existing.schema)
        if mode == "append":
            if tbl.num_rows == 0:
                return WriteResult(name, prev, prev, mode, properties=props)
            clash = _existing_keys(existing, key, tbl.column(key).to_pylist())
            if clash:
                raise ValidationError(
                    f"{len(clash)} key(s) already exist in table {name!r} "
                    f"(e.g. {', '.join(repr(k) for k in clash[:5])}); use mode 'upsert'"
                )
            ds = lance.write_dataset(
                tbl, uri, mode="append", storage_options=self.storage_options,
                max_rows_per_file=MAX_ROWS_PER_FILE,
                transaction_properties={**props, f"{PROP_PREFIX}rows_written": str(tbl.num_rows)},
            )
            return WriteResult(name, ds.version, prev, mode, rows_inserted=tbl.num_rows,
                               properties=props)

        # upsert / replace_partition: one merge_insert, committed with our properties.
        if mode == "replace_partition":
            assert partition is not None
            delete_pred = sqlx.eq(partition[0], partition[1])
        elif delete_keys:
            delete_pred = sqlx.in_list(key, delete_keys)
        else:
            delete_pred = None
        if tbl.num_rows == 0 and delete_pred is None:
            return WriteResult(name, prev, prev, mode, properties=props)
        builder = existing.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
        if delete_pred is not None:
            builder = builder.when_not_matched_by_source_delete(delete_pred)
        txn, stats = builder.execute_uncommitted(tbl)
        inserted = int(stats.get("num_inserted_rows", 0))
        updated = int(stats.get("num_updated_rows", 0))
        deleted = int(stats.get("num_deleted_rows", 0))
        if inserted == updated == deleted == 0:
            return WriteResult(name, prev, prev, mode, properties=props)
        txn.transaction_properties = {
            **props,
            f"{PROP_PREFIX}rows_written": str(inserted + updated),
            f"{PROP_PREFIX}rows_deleted": str(deleted),
        }
        ds = lance.LanceDataset.commit(existing, txn)
        return WriteResult(name, ds.version, prev, mode, rows_inserted=inserted,
                           rows_updated=updated, rows_deleted=deleted, properties=props)

    # -- helpers ------------------------------------------------------------------------
    def _open_or_none(self, name: str) -> lance.LanceDataset | None:
        uri = self.table_uri(name)
        if _is_local(uri) and not os.path.isdir(os.path.join(_local_path(uri), "_versions")):
            return None
        try:
            return lance.dataset(uri, storage_options=self.storage_options)
        except ValueError as exc:
            if "not found" in str(exc).lower():
                return None
            raise

    @staticmethod
    def _check_compatible(name: str, ds: lance.LanceDataset, meta: TableMeta | None, key: str,
                          dim: int, model: str | None, model_revision: str | None) -> None:
        if meta is None:
            return
        hint = "write with mode='overwrite' or to a new table"
        if meta.key != key:
            raise SchemaMismatchError(
                f"table {name!r} is keyed on {meta.key!r}, not {key!r}"
            )
        if meta.dimension != dim:
            raise SchemaMismatchError(
                f"table {name!r} holds {meta.dimension}-dimensional vectors; "
                f"this write has dimension {dim}; {hint}"
            )
        if model is not None and meta.model is not None and model != meta.model:
            raise SchemaMismatchError(
                f"table {name!r} holds vectors from model {meta.model!r}; "
                f"this write is from {model!r}; {hint}"
            )
        if (model_revision and meta.model_revision and model_revision != meta.model_revision
                and (model is None or model == meta.model)):
            raise SchemaMismatchError(
                f"table {name!r} holds vectors from revision {meta.model_revision!r} of "
                f"{meta.model!r}; this write is from revision {model_revision!r}; {hint}"
            )

    @staticmethod
    def _conform(name: str, tbl: pa.Table, schema: pa.Schema) -> pa.Table:
        want = set(schema.names)
        have = set(tbl.column_names)
        if want != have:
            missing = sorted(want - have)
            extra = sorted(have - want)
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise SchemaMismatchError(
                f"columns do not match table {name!r}: {'; '.join(parts)}"
            )
        cols = []
        for f in schema:
            col = tbl.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaMismatchError(
                        f"column {f.name!r} has type {col.type}, table {name!r} expects {f.type}: {exc}"
                    ) from None
            cols.append(col)
        return pa.Table.from_arrays(cols, schema=schema)


def _existing_keys(ds: lance.LanceDataset, key: str, keys: list[Any]) -> list[Any]:
    found: list[Any] = []
    for i in range(0, len(keys), 5000):
        chunk = keys[i : i + 5000]
        t = ds.to_table(columns=[key], filter=sqlx.in_list(key, chunk))
        found.extend(t.column(key).to_pylist())
    return found


class EmbeddingTable:
    """A handle on one table; every read can pin a version number or a tag."""

    def __init__(self, store: Store, name: str, ds: lance.LanceDataset) -> None:
        self.store = store
        self.name = name
        self._ds = ds
        self._versions_open: dict[int, lance.LanceDataset] = {}

    def __repr__(self) -> str:
        return f"EmbeddingTable({self.name!r}, version={self.version})"

    @property
    def uri(self) -> str:
        return self.store.table_uri(self.name)

    def refresh(self) -> EmbeddingTable:
        """Point at the latest version. An unchanged table keeps its open handle: asking
        for the latest version number is ~0.01 ms, reopening ~0.3 ms, and a reopened
        handle's first reads are slower too (its file metadata caches start cold)."""
        try:
            if self._ds.latest_version == self._ds.version:
                return self
        except Exception:  # e.g. the table was dropped: reopening says so
            pass
        self._ds = lance.dataset(self.uri, storage_options=self.store.storage_options)
        return self

    @property
    def version(self) -> int:
        """The latest version number."""
        return self.refresh()._ds.version

    @property
    def meta(self) -> TableMeta:
        m = TableMeta.from_schema(self._ds.schema)
        if m is None:  # a Lance table not written by embed_assets: infer what we can
            f = self._ds.schema.field(VECTOR_COLUMN) if VECTOR_COLUMN in self._ds.schema.names else None
            dim = f.type.list_size if f is not None and pa.types.is_fixed_size_list(f.type) else 0
            return TableMeta(key=self._ds.schema.names[0], dimension=dim)
        return m

    # -- versions and tags ----------------------------------------------------------------
    def tags(self) -> dict[str, int]:
        """Tag name -> version."""
        return {t: int(d["version"]) for t, d in self._ds.tags.list().items()}

    def versions(self, *, with_properties: bool = True) -> list[VersionInfo]:
        """All readable versions, oldest first, with row counts, tags and provenance."""
        self.refresh()
        by_version: dict[int, list[str]] = {}
        for t, v in self.tags().items():
            by_version.setdefault(v, []).append(t)
        out = []
        for v in self._ds.versions():
            num = int(v["version"])
            props: dict[str, str] = {}
            if with_properties:
                props = self._properties(num)
            out.append(VersionInfo(
                version=num,
                timestamp=_utc(v["timestamp"]),
                rows=int(v.get("metadata", {}).get("total_rows", -1)),
                tags=sorted(by_version.get(num, [])),
                properties=props,
            ))
        return out

    def properties(self, version: VersionRef = None) -> dict[str, str]:
        """Provenance of one version: run id, mode, model, row counts (transaction properties)."""
        return self._properties(self.resolve(version))

    def _properties(self, version: int) -> dict[str, str]:
        try:
            txn = self._ds.read_transaction(version)
        except Exception:
            return {}
        raw = getattr(txn, "transaction_properties", None) or {}
        props = {k[len(PROP_PREFIX):]: v for k, v in sorted(raw.items()) if k.startswith(PROP_PREFIX)}
        if txn is not None and "operation" not in props:
            props["operation"] = type(txn.operation).__name__
        return props

    def resolve(self, ref: VersionRef) -> int:
        """Turn ``None`` (latest), a version number or a tag into a version number."""
        if ref is None:
            return self.version
        return self._at(ref).version

    def _at(self, ref: int | str) -> lance.LanceDataset:
        """The dataset at a version number or tag. Versions are immutable, so handles are
        kept; listing every version (one manifest read each) happens only for the error."""
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise ValidationError(f"a version must be an int or a tag name, got {type(ref).__name__}")
        if isinstance(ref, str) and not ref.isdigit():
            tags = self.tags()
            if ref not in tags:
                numbers = [int(v["version"]) for v in self._ds.versions()]
                raise VersionNotFoundError(
                    f"table {self.name!r} has no tag {ref!r}; "
                    + (f"tags: {', '.join(sorted(tags))}" if tags else "it has no tags")
                    + f"; versions: {_ranges(numbers)}"
                )
            n = tags[ref]
        else:
            n = int(ref)
        ds = self._versions_open.get(n)
        if ds is None:
            try:
                ds = lance.dataset(self.uri, version=n, storage_options=self.store.storage_options)
            except Exception:
                numbers = [int(v["version"]) for v in self.refresh()._ds.versions()]
                raise VersionNotFoundError(
                    f"table {self.name!r} has no version {n}; versions: {_ranges(numbers)}"
                    + self._tags_hint()
                ) from None
            if len(self._versions_open) > 64:
                self._versions_open.clear()
            self._versions_open[n] = ds
        return ds

    def _tags_hint(self) -> str:
        tags = self.tags()
        return f"; tags: {', '.join(f'{t}={v}' for t, v in sorted(tags.items()))}" if tags else ""

    def dataset(self, version: VersionRef = None) -> lance.LanceDataset:
        """The Lance dataset at a version or tag (latest by default)."""
        if version is None:
            return self.refresh()._ds
        return self._at(version)

    def tag(self, tag: str, version: VersionRef = None) -> int:
        """Tag a version (latest by default); moving an existing tag is explicit via ``retag``."""
        validate_tag(tag)
        v = self.resolve(version)
        tags = self.tags()
        if tag in tags:
            raise ValidationError(
                f"tag {tag!r} already points at version {tags[tag]} of {self.name!r}; "
                "untag it first"
            )
        self._ds.tags.create(tag, v)
        return v

    def retag(self, tag: str, version: VersionRef = None) -> int:
        validate_tag(tag)
        v = self.resolve(version)
        if tag in self.tags():
            self._ds.tags.update(tag, v)
        else:
            self._ds.tags.create(tag, v)
        return v

    def untag(self, tag: str) -> int:
        tags = self.tags()
        if tag not in tags:
            raise VersionNotFoundError(
                f"table {self.name!r} has no tag {tag!r}; "
                + (f"tags: {', '.join(sorted(tags))}" if tags else "it has no tags")
            )
        self._ds.tags.delete(tag)
        return tags[tag]

    # -- reading ------------------------------------------------------------------------
    def count_rows(self, version: VersionRef = None) -> int:
        return self.dataset(version).count_rows()

    def read(self, version: VersionRef = None, *, columns: Sequence[str] | None = None,
             where: str | None = None) -> pa.Table:
        """Read the table at a version (or tag) as Arrow."""
        ds = self.dataset(version)
        try:
            return ds.to_table(columns=list(columns) if columns else None,
                               filter=where if where is not None else SCAN_ALL)
        except (ValueError, OSError) as exc:
            raise ValidationError(f"cannot read {self.name!r}: {_first_line(exc)}") from None

    def to_polars(self, version: VersionRef = None, **kwargs: Any) -> Any:
        import polars as pl

        return pl.from_arrow(self.read(version, **kwargs))

    def get(self, keys: Iterable[Any], version: VersionRef = None, *,
            columns: Sequence[str] | None = None) -> pa.Table:
        """Fetch rows by key at any version, in the order asked; missing keys are skipped.

        Served by an in-memory key index of the (immutable) version, built from one scan
        of the key column on first use; the rows come from the version's cached scalar
        columns and, if asked for, a Lance ``take`` of the vectors.
        """
        from ._cache import CACHE, take_rows

        keys = list(keys)
        ds = self.dataset(version)
        idx = CACHE.key_index(self.uri, ds, self.meta.key)
        cols = list(columns) if columns else None
        if idx is not None:
            return take_rows(self.uri, ds, idx.lookup(keys), cols)
        parts = [ds.to_table(columns=cols, filter=sqlx.in_list(self.meta.key, keys[i:i + 5000]))
                 for i in range(0, max(len(keys), 1), 5000)]
        return pa.concat_tables(parts)

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        query: Any,
        k: int = 10,
        *,
        where: str | None = None,
        version: VersionRef = None,
        columns: Sequence[str] | None = None,
        embedder: Any = None,
        use_index: bool | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        metric: str | None = None,
    ) -> pa.Table:
        """Nearest neighbours of a vector (or a text, embedded with the table's model).

        Parameters
        ----------
        use_index : bool, optional
            ``None`` (default) follows the table's index policy: the tuned ANN index and its
            stored ``nprobes``/``refine_factor`` when :func:`build_index` chose one, exact
            search otherwise. ``False`` forces exact search; ``True`` forces the index.
        nprobes, refine_factor : int, optional
            Override the stored search parameters.
        where : str, optional
            A SQL filter, applied before the search (prefilter); scalar indexes on the key
            and partition columns make it a true sub-index query.

        Returns
        -------
        pyarrow.Table
            The table's columns plus ``distance`` (the table's metric: cosine ``1 - cos``,
            dot ``1 - dot``, l2 Euclidean, as in the SQL macros) and ``rank`` (1 = nearest).
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValidationError(f"k must be a positive integer, got {k!r}")
        meta = self.meta
        metric = metric or meta.metric
        if metric not in METRICS:
            raise ValidationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        q = self._query_vector(query, embedder)
        ds = self.dataset(version)
        from ..index._build import has_vector_index, search_defaults

        defaults = search_defaults(ds) if use_index is not False else None
        ann = use_index is True or (use_index is None and bool(defaults))
        if ann and not has_vector_index(ds):
            if use_index is True:
                raise ValidationError(
                    f"table {self.name!r} has no vector index at this version; "
                    "build one with build_index() or `embed-assets index`")
            ann = False
        cols = list(columns) if columns else None
        defaults = defaults or {}
        plain = where is None and metric == meta.metric
        if ann and plain and nprobes is None and refine_factor is None and "probe_nprobes" in defaults:
            res = self._probe(ds, q, k, metric, defaults, cols)
            if res is not None:
                return res
        lance_params = {key: v for key, v in defaults.items() if not key.startswith("probe_")}
        if ann and use_index is None and not lance_params and nprobes is None:
            ann = False  # the tuner found no Lance setting meeting the target: stay exact
        if not ann and plain:
            res = self._exact_cached(ds, q, k, metric, cols)
            if res is not None:
                return res
        nearest: dict[str, Any] = {"column": VECTOR_COLUMN, "q": q, "k": k, "metric": metric,
                                   "use_index": ann}
        if ann:
            nearest.update(lance_params)
            if nprobes is not None:
                nearest["nprobes"] = nprobes
            if refine_factor is not None:
                nearest["refine_factor"] = refine_factor
        try:
            # prefilter=True costs ~5 ms per query even with no filter (measured with
            # IVF_HNSW_SQ at 120k rows), so ask for it only when there is a filter.
            res = ds.to_table(nearest=nearest, filter=where, prefilter=where is not None,
                              columns=cols)
        except (ValueError, OSError) as exc:
            raise ValidationError(f"search on {self.name!r} failed: {_first_line(exc)}") from None
        res = res.rename_columns([("distance" if c == "_distance" else c) for c in res.column_names])
        res = res.sort_by([("distance", "ascending")])
        if metric == "l2":  # Lance reports squared L2; the product speaks Euclidean everywhere
            i = res.column_names.index("distance")
            d = np.sqrt(np.maximum(res.column(i).to_numpy(zero_copy_only=False), 0))
            res = res.set_column(i, "distance", pa.array(d, pa.float32()))
        return res.append_column("rank", pa.array(np.arange(1, res.num_rows + 1), pa.int32()))

    def _query_vector(self, query: Any, embedder: Any) -> np.ndarray:
        meta = self.meta
        if isinstance(query, str):
            if not query.strip():
                raise ValidationError("search text is empty")
            if embedder is None:
                from ..embed._embedders import default_embedder

                embedder = default_embedder(meta.model)
            if meta.model and embedder.name != meta.model:
                raise SchemaMismatchError(
                    f"table {self.name!r} was embedded with {meta.model!r}; "
                    f"the query embedder is {embedder.name!r}"
                )
            q = embedder.embed([query])[0]
        else:
            try:
                q = np.asarray(query, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise ValidationError("query must be a text or a numeric vector") from None
        if q.shape[0] != meta.dimension:
            raise ValidationError(
                f"query vector has dimension {q.shape[0]}; table {self.name!r} has {meta.dimension}"
            )
        if not np.isfinite(q).all():
            raise ValidationError("query vector has NaN or infinite values")
        return q

    def _exact_cached(self, ds: lance.LanceDataset, q: np.ndarray, k: int, metric: str,
                      cols: list[str] | None) -> pa.Table | None:
        from ._cache import CACHE, exact_topk

        mat = CACHE.matrix(self.uri, ds, metric)
        if mat is None:
            return None
        idx, dist = exact_topk(mat, q, k, metric)
        return self._rows_at(ds, idx, dist, cols, metric)

    def _probe(self, ds: lance.LanceDataset, q: np.ndarray, k: int, metric: str,
               defaults: dict[str, Any], cols: list[str] | None) -> pa.Table | None:
        from ..index._build import _centroids
        from ..kernels._ivf import default_rank
        from ._cache import CACHE

        if "probe_rank" in defaults:
            rank = int(defaults["probe_rank"])
        else:  # recorded before per-table projections: the fixed d/3 pre-scan, or none
            rank = default_rank(len(q)) if defaults.get("probe_two_stage", True) else 0
        probe = CACHE.probe(self.uri, ds, metric, lambda: _centroids(ds), rank,
                            int(defaults.get("probe_candidates", 0)))
        if probe is None:
            return None
        idx, dist = probe.search(q, k, int(defaults["probe_nprobes"]))
        return self._rows_at(ds, idx, dist, cols, metric)

    def _rows_at(self, ds: lance.LanceDataset, idx: np.ndarray, dist: np.ndarray,
                 cols: list[str] | None, metric: str) -> pa.Table:
        from ._cache import take_rows

        rows = take_rows(self.uri, ds, idx, cols)
        if metric == "l2":
            dist = np.sqrt(np.maximum(dist, 0))
        rows = rows.append_column("distance", pa.array(dist, pa.float32()))
        return rows.append_column("rank", pa.array(np.arange(1, len(idx) + 1), pa.int32()))

    # -- rollback and retention ----------------------------------------------------------
    def rollback(self, to: VersionRef, *, run_id: str | None = None) -> int:
        """Make a new latest version equal to version/tag ``to``; history stays readable.

        If the table had a vector index and the target version predates it, the index is
        rebuilt so the table stays searchable with an index.
        Returns the new version number.
        """
        target = self.resolve(to)
        latest = self.refresh()._ds
        had_index = _vector_index_type(latest)
        had_scalar = any("Vector" not in i.type_url for i in latest.describe_indices())
        txn = lance.Transaction(read_version=latest.version,
                                operation=LanceOperation.Restore(target))
        txn.transaction_properties = {
            f"{PROP_PREFIX}run_id": run_id or f"manual-{uuid.uuid4().hex[:12]}",
            f"{PROP_PREFIX}mode": "rollback",
            f"{PROP_PREFIX}rollback_to": str(target),
            f"{PROP_PREFIX}rollback_from": str(latest.version),
            f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        ds = lance.LanceDataset.commit(latest, txn)
        if had_index and not _vector_index_type(ds):
            from ..index._build import build_index, index_config

            cfg = index_config(latest) or {}
            build_index(self.refresh(), recall=cfg.get("target_recall", 0.95),
                        index_type=cfg.get("index_type") or had_index, k=cfg.get("k", 10),
                        force_ann=True)
        elif had_scalar:
            from ..index._build import ensure_scalar_indexes

            ensure_scalar_indexes(self.refresh())
        return self.version

    def cleanup(self, *, keep_last: int | None = None,
                older_than: dt.timedelta | None = None) -> CleanupReport:
        """Delete old versions: beyond the last ``keep_last`` and/or older than ``older_than``.

        Tagged versions and the latest version are never removed.
        """
        if keep_last is None and older_than is None:
            raise ValidationError("cleanup needs keep_last and/or older_than")
        if keep_last is not None and keep_last < 1:
            raise ValidationError(f"keep_last must be >= 1, got {keep_last}")
        self._versions_open.clear()  # handles on removed versions would point at deleted files
        before = [int(v["version"]) for v in self.refresh()._ds.versions()]
        stats = self._ds.cleanup_old_versions(
            older_than=older_than if older_than is not None else dt.timedelta(0),
            retain_versions=keep_last,
            error_if_tagged_old_versions=False,
        )
        after = [int(v["version"]) for v in self.refresh()._ds.versions()]
        files = sum(int(getattr(stats, a, 0)) for a in (
            "data_files_removed", "transaction_files_removed", "index_files_removed",
            "deletion_files_removed"))
        return CleanupReport(
            table=self.name,
            removed_versions=sorted(set(before) - set(after)),
            kept_versions=after,
            bytes_freed=int(stats.bytes_removed),
            files_removed=files,
        )


def _vector_index_type(ds: lance.LanceDataset) -> str | None:
    """The type of the vector column's ANN index (``"IVF_PQ"``...), or None."""
    for idx in ds.describe_indices():
        if VECTOR_COLUMN in idx.field_names and "Vector" in idx.type_url:
            return str(idx.index_type)
    return None


def _ranges(nums: Sequence[int]) -> str:
    """Compact '1-4, 7, 9-12' rendering of version numbers."""
    if not nums:
        return "none"
    nums = sorted(nums)
    out, start, prev = [], nums[0], nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
