"""Where the SQL parts live: the macro files, and the DuckDB extensions' files from their wheels."""

from __future__ import annotations

import glob
import importlib
from collections.abc import Sequence
from pathlib import Path

import duckdb

from ..errors import ValidationError

EXTENSIONS = ("lance", "vss")
MACRO_FILES = ("vectors.sql",)
STORE_MACRO_FILES = ("store.sql",)
NATIVE_MACRO_FILES = ("native.sql",)


# -- files and extensions ------------------------------------------------------------------
def macro_file(name: str = "vectors.sql") -> Path:
    """Path of a macro file shipped with embed_assets (``embed_assets/sql``; the repo's
    top-level ``sql/`` is a link to it, so ``.read sql/vectors.sql`` works from the root)."""
    path = Path(__file__).resolve().parent / "macros" / name
    if not path.is_file():
        raise FileNotFoundError(f"embed_assets macro file {name!r} not found at {path}")
    return path


def load_macros(con: duckdb.DuckDBPyConnection, files: Sequence[str] = MACRO_FILES) -> None:
    """Execute macro files (plain SQL) on a DuckDB connection."""
    for f in files:
        con.execute(macro_file(f).read_text())


def extension_path(name: str) -> str:
    """File of a DuckDB extension shipped by the ``duckdb-extension-<name>`` wheel.

    ``INSTALL`` needs DuckDB's extension server, which offline and locked-down hosts
    cannot reach; the wheels carry ``extensions/v<duckdb version>/<name>.duckdb_extension``.
    """
    try:
        mod = importlib.import_module(f"duckdb_extension_{name}")
    except ImportError:
        raise ValidationError(
            f"DuckDB extension {name!r} is not installed; pip install duckdb-extension-{name}"
        ) from None
    base = Path(mod.__file__ or "").parent / "extensions"
    exact = base / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if exact.is_file():
        return str(exact)
    found = sorted(glob.glob(str(base / "*" / f"{name}.duckdb_extension")))
    if not found:
        raise ValidationError(f"no {name}.duckdb_extension file under {base}")
    # A wheel built for another DuckDB refuses to LOAD with its own clear message.
    return found[-1]
