"""Retention: which versions a cleanup removes; Lance's ``cleanup_old_versions`` removes them.

1. The versions to remove are chosen (:func:`choose`): never the latest, never a tagged
   one, never one that stopped being the latest less than the grace period ago (a reader
   may have resolved it just before); of the others, those beyond the last ``keep_last``
   user versions (index bookkeeping does not count) **or** older than ``older_than``.
2. Lance's ``cleanup_old_versions(versions=...)`` deletes them and every file no other
   version references, locally and on object stores. Lance itself re-reads the tags and
   keeps every version newer than the one it was opened at, so a tag created or a
   rollback committed between step 1 and step 2 is honoured.
3. Files no version ever referenced (orphans of writes killed before their commit) go
   when Lance calls them safe: older than 7 days, or at once with ``grace=0`` (Lance's
   ``delete_unverified``: the caller promises that no write is in flight).

What Lance's cleanup does not cover is its own run: it reads the tags and lists the
manifests once, then deletes (pylance 14's ``CleanupTask::run``). A rollback committed,
or a tag created, after that reading could lose the files of its version, as the sweep
this module replaced did (its choice made once, then deleted: the latest version
unreadable after a rollback, a tag on a removed version, forced in 2 of 2 runs against
it). So a cleanup announces itself with a **cleanup marker** (a Lance
tag ``_ea-cleanup-...`` on the latest version, removed when it is done), and a rollback
or a new tag first protects its version with a tag, then waits for the cleanups that were
already running (:func:`wait_for_cleanups`), then checks that its version is still whole:
a cleanup that started after the protecting tag sees it; one that started before is
waited for. A marker left by a killed cleanup stops counting after :data:`MARKER_MAX_AGE`
(at once when its process is known dead on this machine).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lance

from ..errors import StorageError, ValidationError, describe
from ._meta import is_local, local_path
from ._results import CleanupReport
from ._validation import as_duration

U64_MAX = 2**64 - 1
# A version superseded less than this long ago is never removed: a reader that resolved a
# version a moment ago is safe. Lance keeps unreferenced files 7 days; an hour covers any
# single query or write here, and a longer job should pin its version with a tag.
DEFAULT_GRACE = dt.timedelta(hours=1)
# Internal tags (hidden from tags(), refused as user tags).
INTERNAL_TAG = "_ea-"
MARKER = INTERNAL_TAG + "cleanup-"
GUARD = INTERNAL_TAG + "guard-"
MARKER_MAX_AGE = dt.timedelta(minutes=15)
_HOST = "".join(c for c in socket.gethostname() if c.isalnum())[:32] or "host"
# Test hook: runs between choosing the versions and deleting them (a slow listing).
before_delete: Callable[[list[int]], None] | None = None


def choose(versions: list[tuple[int, dt.datetime]], latest: int, tagged: set[int], *,
           keep_last: int | None, older_than: dt.timedelta | None, grace: dt.timedelta,
           now: dt.datetime, maintenance: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """The versions to remove (see the module docstring), oldest first.

    ``keep_last`` counts the user's versions: ``maintenance`` versions (index and config
    bookkeeping, hidden by ``versions()``) do not count, and those that follow a kept
    user version are kept with it.
    """
    ordered = sorted(versions)
    user = [v for v, _ in ordered if v not in maintenance]
    recent: set[int] = set()
    if keep_last and user:
        first_kept = user[-keep_last:][0]
        recent = {v for v, _ in ordered if v >= first_kept}
    # When each version stopped being the latest: a reader may have resolved it up to then.
    superseded = {v: ordered[i + 1][1] for i, (v, _) in enumerate(ordered[:-1])}
    out = []
    for v, ts in ordered:
        if v == latest or v in tagged or v not in superseded or now - superseded[v] < grace:
            continue
        beyond_last = keep_last is not None and v not in recent
        too_old = older_than is not None and now - ts >= older_than
        if beyond_last or too_old:
            out.append(v)
    return out


def manifest_path(table_path: str, version: int) -> str | None:
    """The manifest file of a version (Lance's V2 naming, else V1), or None if gone."""
    folder = os.path.join(table_path, "_versions")
    for name in (f"{U64_MAX - version}.manifest", f"{version}.manifest"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def referenced_files(ds: lance.LanceDataset) -> tuple[set[str], set[str]]:
    """(data and deletion files relative to the table folder, index uuids) of one version."""
    files: set[str] = set()
    for frag in ds.get_fragments():
        md = frag.metadata
        files.update(os.path.join("data", f.path) for f in md.files)
        if md.deletion_file is not None:
            files.add(md.deletion_file.path(frag.fragment_id))
    uuids = {str(seg.uuid) for i in ds.describe_indices() for seg in i.segments}
    return files, uuids


def missing_files(table_path: str, ds: lance.LanceDataset) -> list[str]:
    """Files a version references that are not on disk (an interrupted cleanup: Lance
    deletes a version's files before its manifest)."""
    files, uuids = referenced_files(ds)
    gone = [f for f in sorted(files) if not os.path.exists(os.path.join(table_path, f))]
    gone += [f"_indices/{u}" for u in sorted(uuids)
             if not os.path.isdir(os.path.join(table_path, "_indices", u))]
    return gone


# -- cleanup markers and guards -------------------------------------------------------------
def _tag_vanished(exc: BaseException) -> bool:
    low = str(exc)
    return "_refs/tags" in low and ("not found" in low.lower() or "no such file" in low.lower())


def list_tags(ds: lance.LanceDataset) -> dict[str, Any]:
    """``ds.tags.list()``, retried when a tag was deleted between Lance's listing of the
    tag files and its reading of one (pylance 14 fails the whole listing with "Not
    found: .../_refs/tags/<tag>.json"; the guard and marker tags here come and go, seen
    in the 8-writer test of tests/test_concurrency.py)."""
    for attempt in range(50):
        try:
            return ds.tags.list()
        except (OSError, ValueError) as exc:
            if not _tag_vanished(exc) or attempt == 49:
                raise
            time.sleep(0.002 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _stamp() -> str:
    return f"{int(time.time() * 1000)}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _marker_alive(name: str, now_ms: int) -> bool:
    try:
        ms, host, pid, _ = name[len(MARKER):].split("-")
        born, pid_n = int(ms), int(pid)
    except ValueError:
        return False
    if now_ms - born > MARKER_MAX_AGE.total_seconds() * 1000:
        return False
    if host == _HOST:
        try:
            os.kill(pid_n, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def wait_for_cleanups(ds: lance.LanceDataset) -> None:
    """Return once no cleanup that may have read the tags before now is still running."""
    delay = 0.02
    while True:
        now_ms = int(time.time() * 1000)
        live = [t for t in list_tags(ds) if t.startswith(MARKER) and _marker_alive(t, now_ms)]
        if not live:
            return
        time.sleep(delay)
        delay = min(0.5, delay * 2)


@contextlib.contextmanager
def guarded(ds: lance.LanceDataset, version: int, what: str) -> Any:
    """Hold a protecting tag on ``version`` while the caller makes it referenced again
    (a rollback's Restore): see the module docstring."""
    name = GUARD + _stamp()
    try:
        ds.tags.create(name, version)
    except (ValueError, OSError) as exc:
        if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise _removed(what, version) from None
        raise StorageError(f"cannot protect version {version} of {what}: {describe(exc)}") from None
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            ds.tags.delete(name)


def _removed(what: str, version: int) -> Exception:
    from ..errors import VersionNotFoundError

    return VersionNotFoundError(f"version {version} of {what} was removed by a cleanup")


def version_whole(uri: str, version: int, storage_options: dict[str, str] | None) -> bool:
    """Whether a version can still be opened (and, locally, all its files are there)."""
    try:
        ds = lance.dataset(uri, version=version, storage_options=storage_options)
    except Exception:
        return False
    if not is_local(uri):
        return True
    try:
        return not missing_files(local_path(uri), ds)
    except Exception:
        return False


def _list_files(uri: str, storage_options: dict[str, str] | None) -> set[str]:
    """Data and deletion files of a table (for the report: which went, which were orphans)."""
    if is_local(uri):
        out = set()
        for sub in ("data", "_deletions"):
            folder = os.path.join(local_path(uri), sub)
            if os.path.isdir(folder):
                out |= {f"{sub}/{n}" for n in os.listdir(folder)}
        return out
    from ._objstore import list_objects

    return {m["path"] for sub in ("data", "_deletions") for m in list_objects(uri, storage_options, sub)}


class RetentionMixin:
    """``cleanup`` of :class:`~._table.EmbeddingTable` (see the module docstring)."""

    if TYPE_CHECKING:  # what the mixin reads of the table it is part of
        store: Any
        name: str
        _versions_open: dict[int, lance.LanceDataset]
        _readable_cache: set[int]

        @property
        def uri(self) -> str: ...

        def refresh(self) -> Any: ...

        def versions(self, *, with_properties: bool = True,
                     include_maintenance: bool = False) -> list[Any]: ...

        def _open_raw(self, version: int) -> lance.LanceDataset: ...

        def _purge_discarded(self, grace: dt.timedelta) -> list[str]: ...

    def cleanup(self, *, keep_last: int | None = None,
                older_than: dt.timedelta | float | str | None = None,
                grace: dt.timedelta | float | str = DEFAULT_GRACE) -> CleanupReport:
        """Delete old versions: those beyond the last ``keep_last``, and/or those older
        than ``older_than`` (either criterion alone removes a version), with Lance's
        ``cleanup_old_versions``.

        Never removed: the latest version, a tagged version (also one tagged while the
        cleanup runs), a version a rollback running meanwhile restores, a version that
        stopped being the latest less than ``grace`` ago (default one hour). Files no
        version ever referenced (writes killed before their commit) are removed after
        Lance's 7 days, or at once with ``grace=0``, which promises that no write is in
        flight. Rerunning after a crash finishes the job.
        """
        if keep_last is None and older_than is None:
            raise ValidationError("cleanup needs keep_last and/or older_than")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                      or keep_last < 1):
            raise ValidationError(f"keep_last must be >= 1, got {keep_last}")
        # durations as a timedelta, seconds (grace=0) or text ("7d"), as the CLI takes them
        grace = as_duration(grace, "grace")
        older_than = None if older_than is None else as_duration(older_than, "older_than")
        self._versions_open.clear()  # handles on removed versions would point at deleted files
        ds = self.refresh()._ds
        marker = MARKER + _stamp()
        ds.tags.create(marker, ds.version)
        try:
            return self._cleanup(keep_last, older_than, grace)
        finally:
            with contextlib.suppress(Exception):
                ds.tags.delete(marker)

    def _cleanup(self, keep_last: int | None, older_than: dt.timedelta | None,
                 grace: dt.timedelta) -> CleanupReport:
        ds = self.refresh()._ds
        listed = [(int(v["version"]), v["timestamp"].astimezone(dt.UTC)) for v in ds.versions()]
        now = dt.datetime.now(dt.UTC)
        maintenance = {v.version for v in self.versions(with_properties=False,
                                                        include_maintenance=True)
                       if v.maintenance} if keep_last is not None else set()
        tagged = {int(d["version"]) for d in list_tags(ds).values()}
        # Experiments (Lance branches) discarded more than `grace` ago go with their files.
        # What a live branch references needs nothing of ours: Lance's cleanup keeps the
        # version a branch was created from and the files it references (pylance 14.0.2;
        # tests/test_experiments.py::test_cleanup_keeps_what_a_branch_references).
        self._purge_discarded(grace)
        remove = choose(listed, ds.version, tagged, keep_last=keep_last, older_than=older_than,
                        grace=grace, now=now, maintenance=maintenance)
        of_removed: set[str] = set()
        for v in remove:  # what the removed versions held, to tell their files from orphans
            with contextlib.suppress(Exception):  # already unreadable (an interrupted cleanup)
                of_removed |= referenced_files(self._open_raw(v))[0]
        opts = self.store.storage_options
        before = _list_files(self.uri, opts)
        if before_delete is not None:
            before_delete(remove)
        latest = self.store.open_dataset(self.name, required=True)  # newest: Lance keeps what is newer
        for attempt in range(50):
            try:
                # (Lance refuses an empty list; the latest version, never removed, stands
                # for "no version", and the orphan files are still swept)
                stats = latest.cleanup_old_versions(
                    versions=remove or [latest.version], error_if_tagged_old_versions=False,
                    delete_unverified=grace == dt.timedelta(0))
                break
            except Exception as exc:
                # Lance reads the tags before it deletes anything: a tag deleted meanwhile
                # (see list_tags) fails that reading, and trying again is safe
                if not _tag_vanished(exc) or attempt == 49:
                    raise StorageError(f"cleanup of {self.name!r} failed: {describe(exc)}") from None
                time.sleep(0.002 * (attempt + 1))
        freed, manifests = int(stats.bytes_removed), int(stats.old_versions)
        gone = before - _list_files(self.uri, opts)
        self._versions_open.clear()
        self._readable_cache.clear()
        after = {int(v["version"]) for v in self.refresh()._ds.versions()}
        return CleanupReport(table=self.name, removed_versions=[v for v in remove if v not in after],
                             kept_versions=sorted(after), bytes_freed=freed,
                             files_removed=manifests + len(gone),
                             orphan_files=len(gone - of_removed), grace_seconds=grace.total_seconds())
