"""Batched kNN: the unfiltered kNN requests that are ready on the event loop together,
answered by one search per snapshot (shared by the HTTP app and the RESP listener)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._metrics import Metrics
    from ._snapshot import Snapshot

log = logging.getLogger("embed_assets.serve")


Answered = Callable[[Any, BaseException | None], None]


class Batcher:
    """Unfiltered kNN requests that are ready on the event loop together (over HTTP and
    RESP alike) are answered by one call per snapshot: the HNSW graph's ``knn_query`` of
    all their queries, or one batched probe scan (:meth:`Snapshot.knn_batch`).

    Why: one request at a time, each of 16 concurrent clients waits behind the Python
    around 15 queries queued before its own; in one call the per-query cost is the C++
    search alone (the probe's scan of every row is memory-bound, so 16 queries cost little
    more than one). A request submits its query; the flush runs on the next turn of the
    loop, after every request that was ready in this one. A lone request is answered
    alone, one loop turn later (microseconds)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._pending: list[tuple[Snapshot, np.ndarray, int, Answered]] = []
        self._scheduled = False
        self._metrics = metrics

    def submit(self, snap: Snapshot, q: np.ndarray, k: int, done: Answered) -> None:
        """``done((rows, distances), None)`` or ``done(None, error)`` from the flush."""
        self._pending.append((snap, q, k, done))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def future(self, snap: Snapshot, q: np.ndarray, k: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(got: Any, exc: BaseException | None) -> None:
            if fut.done():  # a client that went away cancelled its future
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(got)

        self.submit(snap, q, k, done)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        items, self._pending = self._pending, []
        groups: dict[int, list[tuple[Snapshot, np.ndarray, int, Answered]]] = {}
        for it in items:  # one call per snapshot (a swap can split a batch in two)
            groups.setdefault(id(it[0]), []).append(it)
        for group in groups.values():
            snap = group[0][0]
            kmax = max(k for _, _, k, _ in group)
            if self._metrics is not None:
                self._metrics.knn_batches += 1
                self._metrics.knn_batched += len(group)
            try:
                got = snap.knn_batch(np.stack([q for _, q, _, _ in group]), kmax)
            except Exception as exc:  # every waiting request answers it (500)
                for *_, done in group:
                    done(None, exc)
                continue
            for (_, _, k, done), (idx, dist) in zip(group, got, strict=True):
                try:
                    done((idx[:k], dist[:k]), None)
                except Exception:  # one answer's failure is not the others'
                    log.exception("answering a batched kNN request")
