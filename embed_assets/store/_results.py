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
