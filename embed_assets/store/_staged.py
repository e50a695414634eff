"""Files a write staged and did not commit.

Its own module so that both writers that stage fragments (``_writes`` and ``_fragments``)
reach it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from lance.fragment import FragmentMetadata

from ._meta import is_local, local_path


def remove_files(uri: str, storage_options: dict[str, str] | None,
                 fragments: Sequence[FragmentMetadata]) -> int:
    """Delete the data files of uncommitted fragments of the table at ``uri`` (best
    effort: the caller's own error is the one to report). Lance's cleanup would only
    reclaim them after 7 days (unreferenced files may belong to a write in flight), so
    a writer that knows they are its own deletes them at once."""
    paths = [f"data/{f.path}" for frag in fragments for f in frag.files]
    if not paths:
        return 0
    if is_local(uri):
        gone = 0
        for rel in paths:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(local_path(uri), rel))
                gone += 1
        return gone
    from ._objstore import delete_objects

    with contextlib.suppress(Exception):
        delete_objects(uri, storage_options, paths)
        return len(paths)
    return 0
