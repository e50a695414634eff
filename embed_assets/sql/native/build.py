#!/usr/bin/env python3
"""Build the ``ea_vec`` DuckDB C-API extension (stdlib only).

    python native/build.py --out DIR [--platform linux_amd64] [--cc gcc] [--extension-version v0.1.0]

Compiles ``vec_agg.c`` with ``gcc -O3 -march=x86-64-v2 -shared -fPIC`` into a shared library,
appends DuckDB's 512-byte extension metadata footer (same layout as extension-ci-tools'
``append_extension_metadata.py``, ABI type ``C_STRUCT``) and writes
``DIR/ea_vec.duckdb_extension``.  Prints that path on stdout; exits non-zero with a message on
stderr if the compiler is missing or the compilation fails.

The platform defaults to what the installed ``duckdb`` Python package reports
(``PRAGMA platform``) when it is importable, else to a guess from the host
(``linux_amd64`` on x86-64 Linux).  The file is unsigned: load it with
``duckdb.connect(config={"allow_unsigned_extensions": "true"})`` and ``LOAD '<path>'``.
"""

from __future__ import annotations

import argparse
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
CFLAGS = [
    "-O3",
    "-march=x86-64-v2",
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
        import duckdb  # type: ignore[import-not-found]

        con = duckdb.connect()
        try:
            return str(con.execute("SELECT platform FROM pragma_platform()").fetchone()[0])
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


def build(
    out_dir: str,
    *,
    cc: str = "gcc",
    platform: str | None = None,
    extension_version: str = "v0.1.0",
    extra_cflags: list[str] | None = None,
) -> str:
    """Compile + append metadata; returns the path of ``ea_vec.duckdb_extension``."""
    compiler = shutil.which(cc) if not os.path.isabs(cc) else (cc if os.access(cc, os.X_OK) else None)
    if not compiler:
        _fail(f"C compiler {cc!r} not found on PATH (install gcc, e.g. `apt-get install gcc`)")
    if not os.path.exists(SOURCE):
        _fail(f"source file not found: {SOURCE}")
    plat = platform or detect_platform()
    os.makedirs(out_dir, exist_ok=True)
    out_path = os.path.join(os.path.abspath(out_dir), f"{EXTENSION_NAME}.duckdb_extension")
    major, minor, patch = C_API_VERSION
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
        os.replace(tmp_out, out_path)
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
