"""Settings read from the environment, in one place, when they are needed (never at import).

=============================  =========================================================
``EMBED_ASSETS_STORE``         default store URI (else ``./.embed_store``)
``EMBED_ASSETS_CACHE_BYTES``   memory for decoded vectors, probes and graphs of immutable
                               versions (half the machine's memory; 4 GiB where unknown)
``EMBED_ASSETS_EXACT_THRESHOLD``  rows below which build_index keeps exact search (15000)
``EMBED_ASSETS_NATIVE``        ``0`` keeps the Python SQL aggregates instead of ea_vec
``EMBED_ASSETS_DEBUG``         the CLI shows tracebacks for unexpected errors
``EMBED_ASSETS_SNAPSHOT_DIR``  training snapshots (~/.cache/embed_assets/snapshots)
``EMBED_ASSETS_MODEL_CACHE``   exported ONNX models (else ~/.cache/embed_assets/onnx; read
                               by :func:`embed_assets.embed.model_cache_dir`)
=============================  =========================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_STORE = "./.embed_store"


@dataclass(frozen=True)
class Settings:
    store_uri: str = DEFAULT_STORE
    cache_bytes: int = 4 << 30
    exact_threshold_rows: int = 15_000
    native: bool = True
    debug: bool = False
    snapshot_dir: str = "~/.cache/embed_assets/snapshots"


def default_cache_bytes() -> int:
    """Half the machine's physical memory (4 GiB where it cannot be read). A fixed 4 GiB
    dropped a 2.5M-row table's graph (issue 29) on a 24 GB machine, whose searches then
    fell to Lance's IVF-PQ, 10-13x slower; half leaves room for an index build beside the
    cache (its peak is 2.2x the rows, benchmarks/RESULTS.md)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {raw!r}") from None


def settings() -> Settings:
    """The current settings (the environment is read on every call: cheap, and tests and
    long-lived processes see changes)."""
    env = os.environ
    return Settings(
        store_uri=env.get("EMBED_ASSETS_STORE") or DEFAULT_STORE,
        cache_bytes=_int("EMBED_ASSETS_CACHE_BYTES", default_cache_bytes()),
        exact_threshold_rows=_int("EMBED_ASSETS_EXACT_THRESHOLD", 15_000),
        native=env.get("EMBED_ASSETS_NATIVE", "1") != "0",
        debug=bool(env.get("EMBED_ASSETS_DEBUG")),
        snapshot_dir=os.path.expanduser(env.get("EMBED_ASSETS_SNAPSHOT_DIR")
                                        or "~/.cache/embed_assets/snapshots"),
    )
