#!/usr/bin/env python3
"""Build the ``ea_vec`` DuckDB C-API extension (stdlib only).

    python embed_assets/sql/native/build.py --out DIR [--platform linux_amd64] [--cc gcc]
                                            [--extension-version v0.1.0]

Compiles ``vec_agg.c`` with ``gcc -O3 -shared -fPIC`` into a shared library, appends DuckDB's
512-byte extension metadata footer (same layout as extension-ci-tools'
``append_extension_metadata.py``, ABI type ``C_STRUCT``) and writes
``DIR/ea_vec.duckdb_extension`` plus its checksum record ``DIR/ea_vec.sha256``.  Prints the
extension's path on stdout; exits non-zero with a message on stderr if the compiler is missing
or the compilation fails.

The package build runs this (``setup.py``: ``pip install``/``pip wheel`` build it into the
wheel, an editable install into this directory); at run time ``embed_assets.sql._native``
loads only that file, after checking it against the record.  No ``-march``: the file has to
run on any x86-64 (baseline SSE2; gcc -O3 auto-vectorises the loops with it, and
``-march=x86-64-v2`` measured no faster, see ``CFLAGS``).

The record is in ``sha256sum`` format (``sha256sum -c ea_vec.sha256`` in the package
directory checks it): the extension's sha256 on the first line, then those of the sources it
was built from (``SOURCES``), so that a build older than the sources beside it is noticed.

The platform defaults to what the installed ``duckdb`` Python package reports
(``PRAGMA platform``) when it is importable, else to a guess from the host
(``linux_amd64`` on x86-64 Linux).  The file is unsigned: load it with
``duckdb.connect(config={"allow_unsigned_extensions": "true"})`` and ``LOAD '<path>'``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform as _platform
import shutil
import subprocess
import sys
import tempfile
from typing import NoReturn

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "vec_agg.c")
EXTENSION_NAME = "ea_vec"
# The C API version the extension targets (duckdb_extension.h defaults to the stable v1.2.0 API
# when DUCKDB_EXTENSION_API_VERSION_* are not defined). For ABI type C_STRUCT the footer's
# "duckdb_version" field carries this C API version, not the DuckDB release.
C_API_VERSION = (1, 2, 0)
RECORD_NAME = f"{EXTENSION_NAME}.sha256"
# What the built file depends on (all shipped beside it as package data).
SOURCES = ("vec_agg.c", "duckdb_extension.h", "duckdb.h", "build.py")
# Portable: a wheel must run on any x86-64, so no -march. Measured (30k x FLOAT[384], 55 groups,
# 1 thread, best of 15): GROUP BY mean 12.0/12.1 ms baseline vs 11.8/12.7 ms with
# -march=x86-64-v2, sum 9.1/9.4 vs 9.2/9.9 ms, pack 21.5/21.4 vs 20.8/22.0 ms: noise. gcc -O3
# vectorises the accumulate/convert loops with baseline SSE2 already (9 loops vs 11 with v2).
CFLAGS = [
    "-O3",
    "-shared",
    "-fPIC",
    "-std=gnu11",
    "-fvisibility=hidden",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
]


def _fail(msg: str) -> NoReturn:
    print(f"build.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def detect_platform() -> str:
    """DuckDB's platform string (must equal ``SELECT platform FROM pragma_platform()``)."""
    try:
        import duckdb

        con = duckdb.connect()
        try:
            row = con.execute("SELECT platform FROM pragma_platform()").fetchone()
            return str(row[0]) if row is not None else ""
        finally:
            con.close()
    except Exception:
        print(
            "build.py: note: duckdb not importable, guessing the platform from the host "
            "(pass --platform to override)",
            file=sys.stderr,
        )
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    system = sys.platform
    if system.startswith("linux"):
        return f"linux_{arch}"
    if system == "darwin":
        return f"osx_{arch}"
    if system in ("win32", "cygwin"):
        return f"windows_{arch}"
    return f"{system}_{arch}"


def _wasm_custom_section_header() -> bytes:
    # Identical to append_extension_metadata.py::start_signature() (keeps Wasm binaries valid;
    # ignored by the native loader, which only reads the last 512 bytes).
    return bytes([0, 147, 4, 16]) + b"duckdb_signature" + bytes([128, 4])


def _field(value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) > 32:
        _fail(f"metadata field too long (max 32 bytes): {value!r}")
    return raw + b"\x00" * (32 - len(raw))


def metadata_footer(
    platform: str, duckdb_version: str, extension_version: str, abi_type: str = "C_STRUCT"
) -> bytes:
    """The 512-byte footer: 8 x 32-byte fields (FIELD8..FIELD1) + 256-byte empty signature."""
    fields = [
        _field(""),  # FIELD8 (unused)
        _field(""),  # FIELD7 (unused)
        _field(""),  # FIELD6 (unused)
        _field(abi_type),  # FIELD5 abi_type
        _field(extension_version),  # FIELD4 extension_version
        _field(duckdb_version),  # FIELD3 duckdb_version (C API version for C_STRUCT)
        _field(platform),  # FIELD2 platform
        _field("4"),  # FIELD1 magic ("4")
    ]
    footer = b"".join(fields) + b"\x00" * 256
    assert len(footer) == 512
    return footer


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_checksums() -> list[str]:
    """``<sha256>  <name>`` of each of ``SOURCES`` (this directory)."""
    return [f"{sha256_file(os.path.join(HERE, src))}  {src}" for src in SOURCES]


def checksum_record(
    extension_path: str, name: str = f"{EXTENSION_NAME}.duckdb_extension", sources: list[str] | None = None
) -> str:
    """The text of ``ea_vec.sha256`` for a built file: ``<sha256>  <name>`` lines (sha256sum
    format), the extension first, then the sources it was built from (``sources``, as
    :func:`source_checksums` gives them; taken now when not given)."""
    lines = [f"{sha256_file(extension_path)}  {name}", *(source_checksums() if sources is None else sources)]
    return "\n".join(lines) + "\n"


def build(
    out_dir: str,
    *,
    cc: str = "gcc",
    platform: str | None = None,
    extension_version: str = "v0.1.0",
    extra_cflags: list[str] | None = None,
) -> str:
    """Compile + append metadata; returns the path of ``ea_vec.duckdb_extension``.

    Also writes its checksum record ``ea_vec.sha256`` beside it (both via temp file + rename).
    """
    compiler = shutil.which(cc) if not os.path.isabs(cc) else (cc if os.access(cc, os.X_OK) else None)
    if not compiler:
        _fail(f"C compiler {cc!r} not found on PATH (install gcc, e.g. `apt-get install gcc`)")
    if not os.path.exists(SOURCE):
        _fail(f"source file not found: {SOURCE}")
    plat = platform or detect_platform()
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(os.path.abspath(out_dir), f"{EXTENSION_NAME}.duckdb_extension")
    major, minor, patch = C_API_VERSION
    sources = source_checksums()  # before compiling: the record names what was compiled
    with tempfile.TemporaryDirectory(prefix="ea_vec_build_") as tmp:
        lib = os.path.join(tmp, f"{EXTENSION_NAME}.so")
        cmd = [
            compiler,
            *CFLAGS,
            *(extra_cflags or []),
            f"-I{HERE}",
            f"-DDUCKDB_EXTENSION_API_VERSION_MAJOR={major}",
            f"-DDUCKDB_EXTENSION_API_VERSION_MINOR={minor}",
            f"-DDUCKDB_EXTENSION_API_VERSION_PATCH={patch}",
            SOURCE,
            "-o",
            lib,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            _fail(f"could not run {compiler}: {exc}")
        if proc.returncode != 0:
            _fail("compilation failed:\n  $ " + " ".join(cmd) + "\n" + proc.stderr.strip())
        if proc.stderr.strip():
            print(proc.stderr.strip(), file=sys.stderr)  # warnings
        with open(lib, "rb") as fh:
            payload = fh.read()
        tmp_out = out_path + ".tmp"
        with open(tmp_out, "wb") as fh:
            fh.write(payload)
            fh.write(_wasm_custom_section_header())
            fh.write(metadata_footer(plat, f"v{major}.{minor}.{patch}", extension_version))
        record_path = os.path.join(os.path.dirname(out_path), RECORD_NAME)
        with open(record_path + ".tmp", "w", encoding="ascii") as fh:
            fh.write(checksum_record(tmp_out, os.path.basename(out_path), sources))
        os.replace(tmp_out, out_path)
        os.replace(record_path + ".tmp", record_path)
    return out_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the ea_vec DuckDB extension (vec_agg.c).")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"), help="C compiler (default: $CC or gcc)")
    ap.add_argument(
        "--platform", default=None, help="DuckDB platform string (default: what the installed duckdb reports)"
    )
    ap.add_argument("--extension-version", default="v0.1.0")
    args = ap.parse_args(argv)
    print(build(args.out, cc=args.cc, platform=args.platform, extension_version=args.extension_version))
    return 0


if __name__ == "__main__":
    sys.exit(main())
