"""Retention: which versions a cleanup removes, in an order a crash cannot tear.

Lance's own ``cleanup_old_versions`` deletes a removed version's data and deletion files
before its manifest; killed midway it leaves "zombie" versions that are still listed but
cannot be read (seen in 3 of 3 kills of a 250-version cleanup). Here, on a local store:

1. the versions to remove are chosen: never the latest, never a tagged one, never one
   that stopped being the latest less than the grace period ago (a reader may have
   resolved it just before); of the others, those beyond the last ``keep_last`` **or**
   older than ``older_than``;
2. their manifests are deleted, oldest first: each deletion removes exactly one whole
   version, so a crash leaves every listed version readable;
3. files no remaining version references (data, deletion and index files: those of the
   removed versions, and orphans of writes killed before their commit) are deleted once
   they are older than the grace period, so a write in flight (whose files are not yet
   referenced by any manifest) is never touched.

Rerunning after a crash finishes the job. Transaction files (a few hundred bytes each,
the provenance of each version) are left in place. On object stores the same steps run
through the object store's own API (:func:`sweep_remote`: a listing of the table's
prefix, one ``DELETE`` per manifest, oldest first, then the unreferenced files whose
``last_modified`` is older than the grace period), so they are crash-ordered too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lance

from ..errors import ValidationError
from ._meta import is_local, local_path
from ._results import CleanupReport

U64_MAX = 2**64 - 1
# A version superseded less than this long ago is never removed, nor a file younger than
# this deleted: a reader that resolved a version a moment ago, or a writer whose files are
# not committed yet, is safe. Lance keeps unreferenced files 7 days; an hour covers any single query or
# write here, and a longer job should pin its version with a tag.
DEFAULT_GRACE = dt.timedelta(hours=1)


@dataclass
class Sweep:
    removed_versions: list[int]
    kept_versions: list[int]
    bytes_freed: int = 0
    files_removed: int = 0
    # files no version ever referenced: left by writes killed before their commit
    orphan_files: int = 0


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
    """Files a version references that are not on disk (an interrupted foreign cleanup)."""
    files, uuids = referenced_files(ds)
    gone = [f for f in sorted(files) if not os.path.exists(os.path.join(table_path, f))]
    gone += [f"_indices/{u}" for u in sorted(uuids)
             if not os.path.isdir(os.path.join(table_path, "_indices", u))]
    return gone


def sweep(uri: str, table_path: str, remove: list[int], remaining: list[int],
          grace: dt.timedelta, now: dt.datetime) -> Sweep:
    """Delete the chosen versions' manifests, then the files nothing references."""
    out = Sweep(removed_versions=[], kept_versions=list(remaining))
    of_removed: set[str] = set()
    for v in remove:  # what the removed versions held, to tell their files from orphans
        with contextlib.suppress(Exception):  # already unreadable (a foreign cleanup's crash)
            of_removed |= referenced_files(lance.dataset(uri, version=v))[0]
    for v in remove:
        path = manifest_path(table_path, v)
        if path is None:
            continue
        size = os.path.getsize(path)
        os.remove(path)
        out.removed_versions.append(v)
        out.bytes_freed += size
        out.files_removed += 1
    keep_files: set[str] = set()
    keep_uuids: set[str] = set()
    for v in remaining:
        files, uuids = referenced_files(lance.dataset(uri, version=v))
        keep_files |= files
        keep_uuids |= uuids
    cutoff = (now - grace).timestamp()
    for sub in ("data", "_deletions"):
        folder = os.path.join(table_path, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            rel = os.path.join(sub, name)
            path = os.path.join(table_path, rel)
            if rel in keep_files or not os.path.isfile(path) or os.path.getmtime(path) >= cutoff:
                continue
            out.bytes_freed += os.path.getsize(path)
            os.remove(path)
            out.files_removed += 1
            out.orphan_files += rel not in of_removed
    folder = os.path.join(table_path, "_indices")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name in keep_uuids or os.path.getmtime(path) >= cutoff:
            continue
        for root, _dirs, names in os.walk(path):
            for f in names:
                out.bytes_freed += os.path.getsize(os.path.join(root, f))
                out.files_removed += 1
        shutil.rmtree(path, ignore_errors=True)
    return out


def _manifest_version(name: str) -> int | None:
    """The version a manifest object is named for (V2 names count down from 2**64 - 1)."""
    stem = name.rsplit("/", 1)[-1]
    if not stem.endswith(".manifest") or not stem[: -len(".manifest")].isdigit():
        return None
    n = int(stem[: -len(".manifest")])
    return U64_MAX - n if n > 2**63 else n


def sweep_remote(uri: str, storage_options: dict[str, str] | None, remove: list[int],
                 remaining: list[int], grace: dt.timedelta, now: dt.datetime) -> Sweep:
    """:func:`sweep` on an object store: the same order, through object listings and deletes."""
    from ._objstore import delete_objects, list_objects

    out = Sweep(removed_versions=[], kept_versions=list(remaining))
    of_removed: set[str] = set()
    for v in remove:
        with contextlib.suppress(Exception):
            of_removed |= referenced_files(lance.dataset(uri, version=v, storage_options=storage_options))[0]
    manifests = {}
    for obj in list_objects(uri, storage_options, "_versions"):
        num = _manifest_version(obj["path"])
        if num is not None:
            manifests[num] = obj
    for v in remove:  # one whole version per DELETE, oldest first
        m = manifests.get(v)
        if m is None:
            continue
        delete_objects(uri, storage_options, [m["path"]])
        out.removed_versions.append(v)
        out.bytes_freed += int(m["size"])
        out.files_removed += 1
    keep_files: set[str] = set()
    keep_uuids: set[str] = set()
    for v in remaining:
        files, uuids = referenced_files(lance.dataset(uri, version=v, storage_options=storage_options))
        keep_files |= files
        keep_uuids |= uuids
    cutoff = now - grace
    doomed: list[str] = []
    for sub in ("data", "_deletions", "_indices"):
        for m in list_objects(uri, storage_options, sub):
            rel = m["path"]
            young = m["last_modified"] >= cutoff
            if sub == "_indices":
                parts = rel.split("/")
                if len(parts) < 3 or parts[1] in keep_uuids or young:
                    continue
            elif rel in keep_files or young:
                continue
            doomed.append(rel)
            out.bytes_freed += int(m["size"])
            out.files_removed += 1
            out.orphan_files += sub != "_indices" and rel not in of_removed
    for i in range(0, len(doomed), 500):
        delete_objects(uri, storage_options, doomed[i:i + 500])
    return out


class RetentionMixin:
    """``cleanup`` of :class:`~._table.EmbeddingTable` (see the module docstring)."""

    if TYPE_CHECKING:  # what the mixin reads of the table it is part of
        store: Any
        name: str
        _versions_open: dict[int, lance.LanceDataset]

        @property
        def uri(self) -> str: ...

        def refresh(self) -> Any: ...

        def versions(self, *, with_properties: bool = True,
                     include_maintenance: bool = False) -> list[Any]: ...

        def tags(self) -> dict[str, int]: ...

    def cleanup(self, *, keep_last: int | None = None, older_than: dt.timedelta | None = None,
                grace: dt.timedelta = DEFAULT_GRACE) -> CleanupReport:
        """Delete old versions: those beyond the last ``keep_last``, and/or those older
        than ``older_than`` (either criterion alone removes a version), and the files no
        remaining version references.

        Never removed: the latest version, a tagged version, a version that stopped being
        the latest less than ``grace`` ago (default one hour), and files younger than
        ``grace``: a reader that just resolved a version, or a writer whose files are not
        committed yet, is never broken by a cleanup. On a local store
        a crash mid-cleanup leaves every listed version readable, and rerunning finishes.
        """
        if keep_last is None and older_than is None:
            raise ValidationError("cleanup needs keep_last and/or older_than")
        if keep_last is not None and (isinstance(keep_last, bool) or keep_last < 1):
            raise ValidationError(f"keep_last must be >= 1, got {keep_last}")
        if grace < dt.timedelta(0) or (older_than is not None and older_than < dt.timedelta(0)):
            raise ValidationError("older_than and grace must not be negative")
        self._versions_open.clear()  # handles on removed versions would point at deleted files
        ds = self.refresh()._ds
        listed = [(int(v["version"]), v["timestamp"].astimezone(dt.UTC)) for v in ds.versions()]
        now = dt.datetime.now(dt.UTC)
        maintenance = {v.version for v in self.versions(with_properties=False,
                                                        include_maintenance=True)
                       if v.maintenance} if keep_last is not None else set()
        remove = choose(listed, ds.version, set(self.tags().values()), keep_last=keep_last,
                        older_than=older_than, grace=grace, now=now, maintenance=maintenance)
        remaining = [v for v, _ in listed if v not in set(remove)]
        if is_local(self.uri):
            got = sweep(self.uri, local_path(self.uri), remove, remaining, grace, now)
        else:
            got = sweep_remote(self.uri, self.store.storage_options, remove, remaining, grace, now)
        self.refresh()
        return CleanupReport(table=self.name, removed_versions=got.removed_versions,
                             kept_versions=got.kept_versions, bytes_freed=got.bytes_freed,
                             files_removed=got.files_removed, orphan_files=got.orphan_files,
                             grace_seconds=grace.total_seconds())
