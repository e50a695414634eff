"""A process the streaming tests kill: ``python tests/stream_worker.py STORE PARQUET EVERY``.

It embeds PARQUET into table ``t`` of STORE in groups of EVERY rows with a hashing
embedder that pauses after each call (so the parent can SIGKILL it between and during
commits), printing ``READY`` after the imports and ``DONE`` at the end.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault("LANCE_LOG", "error")

import numpy as np

from embed_assets import HashEmbedder, Store, embed_table


class SlowHash(HashEmbedder):
    """The hashing embedder (same name and vectors) taking its time, like a real model."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(0.15)
        return super().embed(texts)


def main() -> None:
    store_path, parquet, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("READY", flush=True)
    embed_table(Store(store_path), "t", parquet, key="id", text="text",
                embedder=SlowHash(dimension=32), commit_every=every, progress=False)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
