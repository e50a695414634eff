"""Whether a local table has committed a version since its latest version was looked up.

Why: asking Lance for the latest version (``LanceDataset.latest_version``, a listing of
``_versions/`` through its object store layer) cost 50-330 us per search here, a third
to a half of an unfiltered graph search's whole cost (benchmarks/RESULTS.md, per-call
cost). Every commit, rollback or cleanup adds, replaces or removes a manifest in
``_versions/``, which changes the folder's modification time; one ``stat`` (~2 us)
tells whether the lookup can be skipped.

A modification time is only trusted once the clock has moved well past it
(:data:`SETTLE_NS`): file times come from the kernel's coarse clock, so two commits in
the same tick could leave the time as it was. Once ``now - mtime > SETTLE_NS``, any
later commit stamps a later time. Object stores have no such cheap stamp: their reads
always ask Lance.
"""

from __future__ import annotations

import os
import time

SETTLE_NS = 50_000_000  # 50 ms: several ticks of the coarsest kernel clock (10 ms at HZ=100)


class VersionsWatch:
    """The stamp (inode, mtime) of one table's ``_versions`` folder when its latest version
    was last looked up."""

    def __init__(self, table_path: str) -> None:
        self._dir = os.path.join(table_path, "_versions")
        self._seen: tuple[int, int] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._dir)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def unchanged(self) -> bool:
        """No commit since the last lookup recorded with :meth:`looked_up`."""
        return self._seen is not None and self._stamp() == self._seen

    def before_lookup(self) -> tuple[int, int] | None:
        """The stamp to record after the lookup, taken before it (a commit between the
        two is seen by the lookup and changes the stamp again); None when it is too recent
        to be trusted."""
        stamp = self._stamp()
        if stamp is None or time.time_ns() - stamp[1] < SETTLE_NS:
            return None
        return stamp

    def looked_up(self, stamp: tuple[int, int] | None) -> None:
        self._seen = stamp
