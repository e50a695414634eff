"""Where the SQL parts live: the macro files, and the DuckDB extensions' files from their wheels."""

from __future__ import annotations

import glob
import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import duckdb

from .._extras import missing
from ..errors import ValidationError

# connect()'s default: DuckDB's lance extension where its wheel is installed (the
# duckdb-lance extra: lance_scan, SQL writes with read_only_views=False). The store's views
# do not need it, and vss (the benchmark's vss_join baseline) is loaded only when named:
# each LOAD costs time on every connect() of a process.
EXTENSIONS = ("lance",)
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


def default_extensions() -> tuple[str, ...]:
    """The extensions :func:`connect` loads when not told: those of :data:`EXTENSIONS`
    whose wheel is installed (a core install has none, and needs none)."""
    return tuple(n for n in EXTENSIONS if importlib.util.find_spec(f"duckdb_extension_{n}") is not None)


def load_macros(con: duckdb.DuckDBPyConnection, files: Sequence[str] = MACRO_FILES) -> None:
    """Execute macro files (plain SQL) on a DuckDB connection."""
    for f in files:
        con.execute(macro_file(f).read_text())


def extension_path(name: str) -> str:
    """File of a DuckDB extension shipped by the ``duckdb-extension-<name>`` wheel.

    ``INSTALL`` needs DuckDB's extension server, which offline and locked-down hosts
    cannot reach; the wheels carry ``extensions/v<duckdb version>/<name>.duckdb_extension``.
    """
    module = f"duckdb_extension_{name}"
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        if module == "duckdb_extension_vss":
            raise missing(module, "DuckDB's vss extension", "bench") from None
        if module == "duckdb_extension_lance":
            raise missing(module, "DuckDB's lance extension", "duckdb-lance") from None
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
