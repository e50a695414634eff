"""What store operations report: a write, a version listing entry, a cleanup."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class VersionInfo:
    """One version of a table, as listed by :meth:`EmbeddingTable.versions`."""

    version: int
    timestamp: dt.datetime
    rows: int
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    # Index and config bookkeeping (Lance CreateIndex / UpdateConfig, an ``index`` record):
    # such a version changes no rows and is hidden from ``versions()`` by default.
    maintenance: bool = False
    # The maintenance versions that followed this version (before the next user version).
    indexed_by: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timestamp"] = self.timestamp.isoformat()
        return d


# Lance operations that change no rows: index builds, drops and config updates.
MAINTENANCE_OPERATIONS = frozenset({"CreateIndex", "UpdateConfig"})


def is_maintenance(properties: dict[str, str]) -> bool:
    """Whether a version's provenance (``EmbeddingTable.properties``) says it is index or
    config bookkeeping rather than a user's write: our ``mode`` ``index`` or ``migrate``, or a Lance
    CreateIndex / UpdateConfig commit that no write of ours made."""
    mode = properties.get("mode")
    if mode is not None:
        return mode in ("index", "migrate")
    return properties.get("operation") in MAINTENANCE_OPERATIONS


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
    # How many times the commit met a concurrent one and was planned again on the newer version.
    retries: int = 0

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
    # of those, files no version ever referenced (left by writes killed before commit)
    orphan_files: int = 0
    grace_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
