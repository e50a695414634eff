"""Training snapshots: a table version exported once to a local memory-mapped cache, read
for many epochs as numpy batches or a PyTorch dataset (torch is imported only by the
PyTorch methods)."""

from ._snapshot import (
    Snapshot,
    SnapshotInfo,
    cleanup_snapshots,
    default_cache_dir,
    list_snapshots,
    open_snapshot,
    snapshot,
    snapshot_id,
)

__all__ = [
    "Snapshot",
    "SnapshotInfo",
    "cleanup_snapshots",
    "default_cache_dir",
    "list_snapshots",
    "open_snapshot",
    "snapshot",
    "snapshot_id",
]
