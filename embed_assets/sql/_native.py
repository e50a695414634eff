"""The ``ea_vec`` DuckDB extension: element-wise vector aggregates written in C.

Why: DuckDB has no Python aggregate API, so ``vec_mean(v)`` in plain SQL is
``list_vec_mean(list(v))``, and collecting 30k FLOAT[384] vectors with ``list()`` costs
~20x a numpy mean (benchmarks/RESULTS.md, "SQL layer"). DuckDB's C extension API has
aggregates, so ``native/vec_agg.c`` is one.

Where the file comes from: the package build compiles it (``setup.py`` runs
``native/build.py``): a wheel carries ``embed_assets/sql/native/ea_vec.duckdb_extension``
for its platform, an editable install writes it into the source tree. The build also writes
``ea_vec.sha256``, the file's sha256 followed by those of the sources it was built from.
Nothing is compiled at run time, and no other location is looked at: :func:`extension_file`
returns the package's own file only when its sha256 matches that record (and the sources
beside it are the ones it was built from), else None, and connect() keeps the Python-backed
macros of ``macros/store.sql``, with the same results. :func:`status` says which is in use.

The file is not signed by DuckDB, so it loads only on a database opened with
``allow_unsigned_extensions``; :func:`prepare` / :meth:`Plan.load` turn that on for
connect() only when this file will be loaded and off again right after the ``LOAD``.
The checksum catches a file that is not what the build wrote (a partial write, a stale
in-place build, a replaced binary); it is not a signature: whoever can write the package
directory can also change its Python code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from .._config import settings

NATIVE_DIR = Path(__file__).resolve().parent / "native"
FILE_NAME = "ea_vec.duckdb_extension"  # DuckDB derives the entry point from this name
RECORD_NAME = "ea_vec.sha256"  # written by native/build.py beside the extension
# The package's own build; its record and the sources it names are looked up beside it.
EXTENSION_FILE = NATIVE_DIR / FILE_NAME
SETTING = "allow_unsigned_extensions"

_last: dict[str, str] = {}  # "status" of the latest check, "load" of a failed LOAD


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check(path: Path) -> str | None:
    """Why ``path`` must not be loaded, or None when it matches its record."""
    record = path.with_name(RECORD_NAME)
    if not path.is_file():
        return (f"no ea_vec build at {path} (the package was built without a C compiler, or "
                "the build was skipped; reinstall with gcc on PATH)")
    recorded: dict[str, str] = {}  # name -> sha256, from "<sha256>  <name>" lines
    try:
        for line in record.read_text(encoding="ascii").splitlines():
            digest, _, name = line.strip().partition(" ")
            if name.strip():
                recorded[name.strip().lstrip("*")] = digest.lower()
    except (OSError, UnicodeDecodeError) as exc:
        return f"no readable checksum record {record} ({exc}); reinstall embed_assets"
    want = recorded.pop(FILE_NAME, None)
    if want is None:
        return f"checksum record {record} does not list {FILE_NAME}; reinstall embed_assets"
    got = _sha256(path)
    if got != want:
        return (f"{path} does not match its checksum record (sha256 {got[:16]}..., recorded "
                f"{want[:16]}...); reinstall embed_assets")
    for name, digest in recorded.items():
        src = path.with_name(name)
        if src.is_file() and _sha256(src) != digest:
            return (f"{path} was built from another {name} than the one beside it (edited "
                    "since the build): rebuild it with `pip install -e .` (or `make install`)")
    return None


def extension_file() -> str | None:
    """Path of the package's own ea_vec build when its checksum checks out, else None
    (no build, a mismatch, ``EMBED_ASSETS_NATIVE=0``): see :func:`status`. Checked on
    every call (hashing ~0.4 MB); never compiles anything."""
    if not settings().native:
        _last["status"] = "disabled by EMBED_ASSETS_NATIVE=0"
        return None
    path = Path(EXTENSION_FILE)
    reason = _check(path)
    if reason is not None:
        _last["status"] = reason
        return None
    _last.pop("status", None)
    return str(path)


def status() -> str:
    """One line: ``native: <path> (sha256 ok)``, or ``python fallback: <reason>``."""
    path = extension_file()
    if path is None:
        return f"python fallback: {_last.get('status', 'unavailable')}"
    if _last.get("load_path") == path:
        return f"python fallback: DuckDB refused {path}: {_last['load']}"
    return f"native: {path} (sha256 ok)"


@dataclass
class Plan:
    """What connect() does about ea_vec for one connection (see :func:`prepare`)."""

    file: str | None  # the verified file to LOAD, or None
    switch_off: bool  # turn allow_unsigned_extensions off after the LOAD (prepare turned it on)

    def load(self, con: duckdb.DuckDBPyConnection) -> bool:
        """LOAD the file into ``con`` (right after it opened); True when its functions are there.

        Afterwards ``allow_unsigned_extensions`` is off again where :func:`prepare` turned it on
        (DuckDB allows turning it off on an open database, never on), so no other unsigned
        file can be loaded on this connection.
        """
        if self.file is None:
            return False
        try:
            row = con.execute(f"SELECT current_setting('{SETTING}')").fetchone()
            on = row is not None and str(row[0]).lower() == "true"
            if not on:  # the caller's config keeps it off: their choice, Python macros
                return False
            try:
                con.execute("LOAD '{}'".format(self.file.replace("'", "''")))
            except duckdb.Error as exc:  # e.g. a build for another platform: Python macros
                _last.update(load=str(exc).strip().splitlines()[0], load_path=self.file)
                return False
            if _last.get("load_path") == self.file:  # loads now (e.g. after a reinstall)
                _last.pop("load_path", None)
            return True
        finally:
            if self.switch_off:
                con.execute(f"SET {SETTING} = false")


def prepare(config: dict[str, Any], native: bool = True) -> Plan:
    """Decide for connect(): sets ``allow_unsigned_extensions`` in ``config`` (in place) only
    when ea_vec will be loaded and the caller did not set it; returns the :class:`Plan`.

    A caller's ``allow_unsigned_extensions`` is kept as given (``false``: the Python macros).
    With ``lock_configuration`` set the setting could not be turned off after the LOAD, so
    ea_vec is then loaded only if the caller turned unsigned extensions on themselves.
    """
    path = extension_file() if native else None
    if path is None:
        return Plan(None, False)
    locked = str(config.get("lock_configuration", "false")).lower() in ("true", "1")
    if SETTING in config or locked:
        return Plan(path, False)
    config[SETTING] = "true"
    return Plan(path, True)
