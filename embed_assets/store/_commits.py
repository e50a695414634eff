"""How writers commit: planned on one version, fenced by Lance against every later commit.

Lance's optimistic commits rebase compatible transactions silently: two appends of the
same new keys both commit, and so do two upserts that both insert a key (an ``Update``
with only new fragments is compatible with anything that does not touch its fragments;
measured with pylance 14.0.2: 10 of 10 concurrent rounds left duplicate keys). A
key-unique store needs each write to commit only on top of the version it was planned
on. Lance provides the pieces:

* every commit names the version it was planned on (``Transaction(read_version=v)``);
* two ``Update`` operations that touch the same fragment conflict: the later one raises
  a retryable ``CommitConflictError`` instead of being rebased. So every write of ours
  (each mode, the Ray commit of fragments) commits an ``Update`` that also lists the
  table's *fence fragment* (its lowest fragment id, unchanged) among the fragments it
  updates (:func:`fence`). Any two writes planned on the same version then conflict,
  and the later commit's plan is remade on the new latest version: ``append`` is
  refused with the usual "already exist" error, ``upsert`` becomes an update. A writer
  that stalled for minutes after planning conflicts with whatever committed meanwhile.
  A table with no fragment at all commits a ``Merge`` instead, which conflicts with
  every later data change (not with index builds or tags);
* overwrites and rollbacks (``Overwrite``, ``Restore``) do not depend on the version they
  replace, and every later write planned before them conflicts with them.

This is the same on local disk and on object stores (Lance writes the next manifest
with a conditional ``PUT``): no lease, no lock service. Index builds commit
``CreateIndex``, which no write conflicts with.

A conflict is retried: the write is planned again on the latest version, after a
backoff with jitter, up to :data:`MAX_ATTEMPTS` times; the number of retries is in the
result and in the version's provenance. Writers of one table on one machine also take
an advisory ``fcntl`` lock (:func:`table_lock`; for an object store a file in the
machine's temporary folder), only so that they do not waste plans under contention:
correctness never depends on it (``EMBED_ASSETS_WRITER_LOCK=0`` turns it off; the
concurrency tests run without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import lance
from lance import LanceOperation
from lance.commit import CommitConflictError

from ..errors import StorageError
from ._cache import STATE
from ._meta import StoreLocation

T = TypeVar("T")

# Plans a write may make before it gives up (ConflictError). Eight writers of one table
# with the lock off: the unluckiest lost 11 times in a row over 20 rounds (tests/test_faults).
MAX_ATTEMPTS = 40
_BACKOFF_S = 0.01
_BACKOFF_MAX_S = 0.5
LOCK_DIR = ".embed_assets/locks"
LOCK_ENV = "EMBED_ASSETS_WRITER_LOCK"

def lock_enabled() -> bool:
    return os.environ.get(LOCK_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def table_lock(store: StoreLocation, name: str) -> Iterator[None]:
    """Writers of one table on this machine take turns (a throughput optimisation only:
    see the module docstring). For an object store the lock file is in the machine's
    temporary folder: writers on other machines are fenced by Lance alone."""
    if not lock_enabled():
        yield
        return
    import fcntl

    store_path = store.lock_path
    if store_path is not None:
        folder = os.path.join(store_path, LOCK_DIR)
    else:  # an object store: writers on this machine still take turns, through a local file
        digest = hashlib.sha1(store.uri.encode()).hexdigest()[:16]
        folder = os.path.join(tempfile.gettempdir(), "embed_assets-locks", digest)
    path = os.path.join(folder, f"{name}.lock")
    with STATE.thread_lock(path):
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if store_path is None:  # only an optimisation: go on without it
                yield
                return
            raise StorageError(f"cannot take the writer lock of {name!r} at {path}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def with_retries(attempt: Callable[[int], T], on_retry: Callable[[int, BaseException], None] | None = None
                 ) -> tuple[T, int]:
    """Run ``attempt(retries_so_far)`` (plan on the latest version and commit against it)
    until it does not hit a commit conflict; returns its result and the number of retries.

    Every conflict is retried, even one Lance calls not retryable (an overwrite or a
    rollback committed after the plan): the plan is remade from the new latest version,
    so nothing of the stale plan survives."""
    for n in range(MAX_ATTEMPTS):
        try:
            return attempt(n), n
        except CommitConflictError as exc:
            if n == MAX_ATTEMPTS - 1:
                raise
            if on_retry is not None:
                on_retry(n + 1, exc)
            delay = min(_BACKOFF_MAX_S, _BACKOFF_S * 2 ** min(n, 10))
            time.sleep(delay * (0.5 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def fence(base: lance.LanceDataset, removed: list[int], updated: list[lance.FragmentMetadata],
          new: list[lance.FragmentMetadata]) -> LanceOperation.BaseOperation:
    """The operation of one write planned on ``base``: it conflicts with every write
    committed after ``base`` (see the module docstring)."""
    frags = base.get_fragments()
    if not frags:
        return LanceOperation.Merge(list(new), base.schema)
    sentinel = min(f.fragment_id for f in frags)
    touched = {f.id for f in updated}
    if sentinel not in touched and sentinel not in removed:
        frag = base.get_fragment(sentinel)
        assert frag is not None  # one of base's own fragments
        updated = [*updated, frag.metadata]
    return LanceOperation.Update(removed_fragment_ids=list(removed), updated_fragments=list(updated),
                                 new_fragments=list(new))


def commit(base: lance.LanceDataset | str, op: LanceOperation.BaseOperation, read_version: int,
           props: dict[str, str], storage_options: dict[str, str] | None) -> lance.LanceDataset:
    """Commit ``op`` as planned on ``read_version``.

    A commit whose answer was lost (a dropped connection on an object store: the
    manifest ``PUT`` reached the store, the client retried it and got 412) is reported
    by Lance as a conflict or an I/O error although it landed. So a failed commit looks
    for its own transaction (by uuid) among the versions after ``read_version`` and,
    found, is a success: the write is not planned again on top of itself."""
    txn = lance.Transaction(read_version, op, transaction_properties=props)
    try:
        return lance.LanceDataset.commit(base, txn, storage_options=storage_options)
    except BaseException:
        landed = _landed(base, read_version, txn.uuid, storage_options)
        if landed is None:
            raise
        return landed


def _landed(base: lance.LanceDataset | str, read_version: int, txn_uuid: str,
            storage_options: dict[str, str] | None) -> lance.LanceDataset | None:
    uri = base.uri if isinstance(base, lance.LanceDataset) else base
    try:
        latest = lance.dataset(uri, storage_options=storage_options)
        for v in range(read_version + 1, latest.version + 1):
            t = latest.read_transaction(v)
            if t is not None and t.uuid == txn_uuid:
                return lance.dataset(uri, version=v, storage_options=storage_options)
    except Exception:  # cannot tell: the commit's own error is the one to report
        return None
    return None


def is_conflict(exc: BaseException) -> bool:
    """Whether a failed create lost to a concurrent creator of the same table."""
    return "already exists" in str(exc).lower()
