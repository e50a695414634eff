"""How writers commit: one at a time per table, retrying conflicts with foreign commits.

Lance's optimistic commits rebase compatible transactions silently: two appends of the
same new keys both commit, and so do two ``merge_insert`` upserts that both insert a key
(measured: 10 of 10 concurrent rounds left duplicate keys). A key-unique store needs each
write to be planned against the version it commits on top of. So every embed_assets
write of a table (all modes, rollback) runs *plan + commit* under an exclusive lock of that
table: an advisory ``fcntl`` lock on ``<store>/.embed_assets/locks/<table>.lock``, held
by one process (and one thread) at a time and released by the kernel if the process
dies, so a killed writer never leaves a stale lock.

Commits by other parties (Lance or LanceDB directly, an index build running beside a
write) can still conflict; Lance then raises a retryable ``CommitConflictError``, and the
write is planned again on the new latest version and retried, with exponential backoff
and jitter, up to :data:`MAX_ATTEMPTS` times. The number of retries is reported.

Object stores have no ``fcntl``: there the lock is a lease object taken and renewed with
conditional writes (:class:`._objstore.ObjectLock`), and Lance's own commits are
conditional writes too (see the README's "Object storage").
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from lance.commit import CommitConflictError

from ..errors import StorageError
from ._meta import StoreLocation

T = TypeVar("T")

MAX_ATTEMPTS = 8
_BACKOFF_S = 0.02
_BACKOFF_MAX_S = 1.0
LOCK_DIR = ".embed_assets/locks"

# fcntl locks belong to a process: threads of one process need their own exclusion.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(path, threading.Lock())


@contextlib.contextmanager
def table_lock(store: StoreLocation, name: str) -> Iterator[None]:
    """Exclusive writer lock of one table: ``fcntl`` on a local store, a lease object on
    an object store."""
    store_path = store.lock_path
    if store_path is None:
        from ._objstore import ObjectLock

        with _thread_lock(f"{store.uri}/{name}"), ObjectLock(store.uri, store.storage_options, name).held():
            yield
        return
    import fcntl

    folder = os.path.join(store_path, LOCK_DIR)
    path = os.path.join(folder, f"{name}.lock")
    with _thread_lock(path):
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot take the writer lock of {name!r} at {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def with_retries(attempt: Callable[[], T], on_retry: Callable[[int, BaseException], None] | None = None
                 ) -> tuple[T, int]:
    """Run ``attempt`` (plan and commit against the latest version) until it does not hit
    a retryable commit conflict; returns its result and the number of retries."""
    for n in range(MAX_ATTEMPTS):
        try:
            return attempt(), n
        except CommitConflictError as exc:
            if not getattr(exc, "retryable", True) or n == MAX_ATTEMPTS - 1:
                raise
            if on_retry is not None:
                on_retry(n + 1, exc)
            delay = min(_BACKOFF_MAX_S, _BACKOFF_S * 2 ** n)
            time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover
