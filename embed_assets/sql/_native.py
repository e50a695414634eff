"""The ``ea_vec`` DuckDB extension: element-wise vector aggregates written in C.

Why: DuckDB has no Python aggregate API, so ``vec_mean(v)`` in plain SQL is
``list_vec_mean(list(v))``, and collecting 30k FLOAT[384] vectors with ``list()`` costs
~20x a numpy mean (benchmarks/RESULTS.md, "SQL layer"). DuckDB's C extension API has
aggregates, and its extension server is unreachable here, so the extension is compiled
from ``embed_assets/native/vec_agg.c`` on first use (gcc, ~0.5 s) into a cache directory
and loaded unsigned into connect()ed sessions. Without a C compiler connect() keeps the
Python-backed macros of sql/store.sql, with the same results.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import os
from pathlib import Path

import duckdb

SOURCE_DIR = Path(__file__).resolve().parent / "native"
FILE_NAME = "ea_vec.duckdb_extension"  # DuckDB derives the entry point from this name


def cache_dir() -> Path:
    """``$EMBED_ASSETS_NATIVE_DIR``, else ``$XDG_CACHE_HOME/embed_assets`` (or ~/.cache)."""
    if os.environ.get("EMBED_ASSETS_NATIVE_DIR"):
        return Path(os.environ["EMBED_ASSETS_NATIVE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embed_assets" / "native"


@functools.cache
def extension_file() -> str | None:
    """Path of the built extension for this DuckDB, building it if needed; None where
    it cannot be built (no compiler, ``EMBED_ASSETS_NATIVE=0``): see :func:`status`."""
    if os.environ.get("EMBED_ASSETS_NATIVE", "1") == "0":
        _STATUS.append("disabled by EMBED_ASSETS_NATIVE=0")
        return None
    digest = hashlib.sha256(duckdb.__version__.encode())
    for name in ("vec_agg.c", "duckdb_extension.h", "duckdb.h", "build.py"):
        digest.update((SOURCE_DIR / name).read_bytes())
    out = cache_dir() / digest.hexdigest()[:16]
    path = out / FILE_NAME
    if path.is_file():
        return str(path)
    # build.py is also a stand-alone script (stdlib only), hence loaded from its path.
    spec = importlib.util.spec_from_file_location("_ea_native_build", SOURCE_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    native_build = importlib.util.module_from_spec(spec)
    err = io.StringIO()
    try:
        spec.loader.exec_module(native_build)
        with contextlib.redirect_stderr(err):
            return native_build.build(str(out))  # writes a temp file, then renames
    except (SystemExit, OSError) as exc:  # build.py exits with its message on stderr
        _STATUS.append(f"not built: {err.getvalue().strip() or exc}")
        return None


_STATUS: list[str] = []


def status() -> str:
    """One line: where the extension is, or why connect() uses the Python fallback."""
    path = extension_file()
    return f"loaded from {path}" if path else (_STATUS[-1] if _STATUS else "unavailable")
