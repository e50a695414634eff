"""What a table is: its fixed facts (key, dimension, metric, model), its identity, and the
names the rest of the store agrees on."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

import lance
import pyarrow as pa

WriteMode = Literal["overwrite", "append", "upsert", "replace_partition"]
WRITE_MODES: tuple[str, ...] = ("overwrite", "append", "upsert", "replace_partition")
METRICS: tuple[str, ...] = ("cosine", "dot", "l2")
VECTOR_COLUMN = "vector"
# A version number, a tag name, an experiment's version ((name, number), "name:number", or
# its name for its latest), or None for the latest version.
VersionRef = int | str | tuple[str, int | None] | None
# Schema metadata key holding the table's facts (JSON of TableMeta).
META_KEY = b"embed_assets"
# Field metadata declaring a column as Lance's unenforced primary key.
PK_METADATA = b"lance-schema:unenforced-primary-key"
# Keys of the per-version provenance stored as Lance transaction properties.
PROP_PREFIX = "embed_assets."
# The filter full scans pass to Lance. Measured with pylance 14 on 100k x 384 in 32k-row
# files: an unfiltered scan of fragments without deletions took 170-220 ms, the same scan
# with an always-true filter 73-90 ms, with identical results (fragments with deletion
# vectors already take the fast path).
SCAN_ALL = "true"
# Rows per data file. Lance decodes fragments in parallel: 100k x 384 read back in 185 ms
# as one file and 74 ms as four (benchmarks/RESULTS.md), and old versions keep whatever
# layout their first write had, so the first write decides how fast time travel reads.
MAX_ROWS_PER_FILE = 32_768


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


_VERSION_NUMBER = re.compile(r"0|[1-9][0-9]*", re.ASCII)


def version_number(ref: str) -> int | None:
    """The version a reference written as text names, or None if it is a tag: only
    canonical ASCII digits are a number ('7'; not '07', not '٧')."""
    return int(ref) if _VERSION_NUMBER.fullmatch(ref) else None


def new_table_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TableMeta:
    """What a table holds, fixed when it is created (or overwritten).

    ``table_id`` is written once, when the table is created, and kept by overwrites: a
    table dropped and created again under the same name gets a new one, so anything
    cached about "table t, version 1" can tell the two apart.
    """

    key: str
    dimension: int
    metric: str = "cosine"
    model: str | None = None
    model_revision: str | None = None
    text_column: str | None = None
    partition_column: str | None = None
    table_id: str = field(default="", compare=False)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    def with_id(self, table_id: str) -> TableMeta:
        return replace(self, table_id=table_id)

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> TableMeta | None:
        raw = (schema.metadata or {}).get(META_KEY)
        if raw is None:
            return None
        d: dict[str, Any] = json.loads(raw)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def infer(cls, schema: pa.Schema) -> TableMeta:
        """The facts of a Lance table not written by embed_assets: the first column as
        key, the ``vector`` column's size as dimension."""
        meta = cls.from_schema(schema)
        if meta is not None:
            return meta
        f = schema.field(VECTOR_COLUMN) if VECTOR_COLUMN in schema.names else None
        dim = f.type.list_size if f is not None and pa.types.is_fixed_size_list(f.type) else 0
        return cls(key=schema.names[0], dimension=dim)


class StoreLocation(Protocol):
    """Where tables live, as the table handle and the writers see a :class:`Store` (a
    protocol, so those modules need not import the Store that creates them)."""

    uri: str
    storage_options: dict[str, str] | None

    @property
    def lock_path(self) -> str | None: ...

    def table_uri(self, name: str) -> str: ...

    def open_dataset(self, name: str, *, required: bool = False) -> lance.LanceDataset | None: ...
