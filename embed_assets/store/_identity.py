"""The identity of a version's rows and their order: :func:`fingerprint`.

Two readers need it, neither of them about graphs alone: a rollback compares the rows of
two versions (a rollback to what is already current makes no version), and a graph may
only serve a version whose rows are exactly the ones it was built on (:mod:`.graph`).
It hashes what fixes the rows: every fragment's id, its data files (Lance names them by
UUID) and its deletion file (its random id and read version: *which* rows were deleted,
not how many; two histories that each delete three different rows get different
fingerprints). Index and config commits keep the fragments, so they keep the
fingerprint; any write changes it.
"""

from __future__ import annotations

import hashlib

import lance


def fingerprint(ds: lance.LanceDataset) -> str:
    """The identity of a version's rows and their order (see the module docstring)."""
    h = hashlib.sha256(b"rows/2;")
    for frag in ds.get_fragments():
        md = frag.metadata
        files = ",".join(f.path for f in md.files)
        d = md.deletion_file
        dele = "-" if d is None else f"{d.read_version}:{d.id}:{d.num_deleted_rows}"
        h.update(f"{frag.fragment_id}|{md.physical_rows}|{files}|{dele};".encode())
    return h.hexdigest()[:32]
