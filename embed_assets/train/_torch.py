"""PyTorch datasets over a :class:`~._snapshot.Snapshot` (this module imports torch; the
package imports it only when one of these is asked for). Module-level classes, so a
DataLoader started with ``spawn``/``forkserver`` can pickle them: what travels is the
snapshot's path, and each worker maps the same file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info


class Snapshot(Protocol):
    """What these datasets read of a :class:`~._snapshot.Snapshot` (named here, not
    imported: the snapshot module imports this one, on demand)."""

    @property
    def rows(self) -> int: ...

    def batch(self, indices: np.ndarray, columns: Sequence[str] | None = None) -> dict[str, Any]: ...

    def batches(self, batch_size: int = 1024, *, shuffle: bool = False, seed: int | None = None,
                drop_last: bool = False, columns: Sequence[str] | None = None,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict[str, Any]]: ...


class SnapshotDataset(Dataset):
    """Map-style: item ``i`` is ``{"vector": float32 tensor (dim,), key: value, ...}``."""

    def __init__(self, snap: Snapshot, columns: Sequence[str] | None) -> None:
        self.snap, self.columns = snap, columns

    def __len__(self) -> int:
        return self.snap.rows

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.snap.batch(np.asarray([i]), self.columns)
        out = {k: v[0] for k, v in b.items()}
        out["vector"] = torch.from_numpy(np.array(b["vector"][0]))
        return out


class SnapshotBatches(IterableDataset):
    """Whole batches; each DataLoader worker yields its own share, so one epoch covers
    every row exactly once; a new permutation per epoch (seed + epoch), the same in every
    worker of that epoch. Iterating in the main process advances the epoch itself; with
    DataLoader workers (which iterate copies) call :meth:`set_epoch` before each epoch,
    as with ``DistributedSampler``."""

    def __init__(self, snap: Snapshot, batch_size: int, shuffle: bool, seed: int | None,
                 drop_last: bool, columns: Sequence[str] | None) -> None:
        self.snap, self.batch_size, self.shuffle = snap, batch_size, shuffle
        self.seed, self.drop_last, self.columns = seed, drop_last, columns
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        shard = (0, 1) if info is None else (info.id, info.num_workers)
        seed = None if self.seed is None else self.seed + self.epoch
        self.epoch += 1
        for b in self.snap.batches(self.batch_size, shuffle=self.shuffle, seed=seed,
                                   drop_last=self.drop_last, columns=self.columns, shard=shard):
            b["vector"] = torch.from_numpy(np.ascontiguousarray(b["vector"]))
            yield b
