"""The ea_vec C extension behind vec_mean/vec_sum.

It is built with the package (setup.py; an editable install writes it in place), passes its
numpy checks, is loaded only when its sha256 matches the build's record, leaves
``allow_unsigned_extensions`` off on the connection connect() returns, and a connect()ed
session gives the same answers with and without it. The e2e test builds a wheel, installs
it elsewhere and runs vec_mean natively with no compiler on PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from embed_assets.sql import _native, connect

ROOT = Path(__file__).resolve().parents[1]
HAVE_CC = shutil.which("gcc") is not None
needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler: the extension cannot be built "
                              "and connect() uses the Python macros")
SETTING = "SELECT current_setting('allow_unsigned_extensions')"
EA_FUNCTIONS = ("SELECT function_name FROM duckdb_functions() WHERE function_type = 'aggregate' "
                "AND starts_with(function_name, '__ea_vec_')")


@pytest.fixture
def native_file() -> str:
    """The package's verified in-place build; with gcc here, its absence is a failure."""
    path = _native.extension_file()
    if path is None:
        if not HAVE_CC:
            pytest.skip(f"no C compiler, no build: {_native.status()}")
        pytest.fail(f"gcc is on PATH but there is no usable build ({_native.status()}); "
                    "re-run `pip install -e .` (or `make install`)")
    return path


def _ea_functions(con) -> set[str]:
    return {r[0] for r in con.execute(EA_FUNCTIONS).fetchall()}


def _copy_build(native_file: str, dest: Path) -> Path:
    """The extension and its record, copied into ``dest`` (sources not copied)."""
    dest.mkdir(exist_ok=True)
    src = Path(native_file)
    shutil.copy2(src, dest / src.name)
    shutil.copy2(src.with_name(_native.RECORD_NAME), dest / _native.RECORD_NAME)
    return dest / src.name


@needs_cc
def test_extension_builds_and_passes_its_numpy_checks() -> None:
    script = Path(__file__).parent / "native_checks.py"
    proc = subprocess.run([sys.executable, str(script), "--n", "3000", "--groups", "7",
                           "--repeat", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all checks passed" in proc.stdout


def test_connect_loads_it(native_file: str) -> None:
    assert Path(native_file) == _native.NATIVE_DIR / "ea_vec.duckdb_extension"
    assert _native.status() == f"native: {native_file} (sha256 ok)"
    con = connect(extensions=())
    assert _ea_functions(con) == {"__ea_vec_mean", "__ea_vec_sum", "__ea_vec_pack"}


QUERIES = [
    "SELECT g, vec_mean(v) AS m, vec_sum(v) AS s FROM t GROUP BY g ORDER BY g",
    "SELECT vec_mean(v) FROM t WHERE g = 99",  # no rows: NULL
    "SELECT g, list_vec_mean(list(v) OVER (PARTITION BY g ORDER BY i ROWS BETWEEN 4 PRECEDING "
    "AND CURRENT ROW)) FROM t QUALIFY i % 97 = 0 ORDER BY i",
    "SELECT list_vec_sum([[1, 2], NULL, [3, NULL]]), list_vec_mean([]::FLOAT[][])",
]


def _run(sql: str, **kwargs) -> list[tuple]:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(2000, 16)).astype(np.float32)
    rows = [(i, int(i % 9), None if i % 113 == 0 else v[i].tolist()) for i in range(2000)]
    con = connect(extensions=(), **kwargs)
    try:
        con.execute("CREATE TABLE t (i INTEGER, g INTEGER, v FLOAT[16])")
        con.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if isinstance(x, list):
                np.testing.assert_allclose(np.array(x, dtype=float), np.array(y, dtype=float),
                                           rtol=1e-9, atol=1e-12)
            else:
                assert x == y


@pytest.mark.parametrize("sql", QUERIES)
def test_same_results_with_and_without_it(sql: str) -> None:
    _same(_run(sql, native=True), _run(sql, native=False))


# -- the checksum check ----------------------------------------------------------------------
def test_a_verified_copy_is_accepted(native_file: str, tmp_path, monkeypatch) -> None:
    copy = _copy_build(native_file, tmp_path / "ok")
    monkeypatch.setattr(_native, "EXTENSION_FILE", copy)
    assert _native.extension_file() == str(copy)
    assert _native.status() == f"native: {copy} (sha256 ok)"


def test_a_tampered_copy_is_refused_and_connect_falls_back(native_file: str, tmp_path,
                                                           monkeypatch) -> None:
    want = _run(QUERIES[0])  # with the real build
    copy = _copy_build(native_file, tmp_path / "bad")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(_native, "EXTENSION_FILE", copy)
    assert _native.extension_file() is None
    st = _native.status()
    assert st.startswith("python fallback:") and "does not match its checksum record" in st, st
    con = connect(extensions=())
    assert _ea_functions(con) == set()  # nothing loaded: the Python macros
    assert con.execute(SETTING).fetchone()[0] is False
    con.close()
    _same(_run(QUERIES[0]), want)


def test_a_build_older_than_its_sources_is_refused(native_file: str, tmp_path, monkeypatch) -> None:
    copy = _copy_build(native_file, tmp_path / "stale")
    src = (_native.NATIVE_DIR / "vec_agg.c").read_text()
    (tmp_path / "stale" / "vec_agg.c").write_text(src + "\n/* edited after the build */\n")
    monkeypatch.setattr(_native, "EXTENSION_FILE", copy)
    assert _native.extension_file() is None
    assert "built from another vec_agg.c" in _native.status()


def test_a_build_duckdb_refuses_falls_back(native_file: str, tmp_path, monkeypatch) -> None:
    # A verified file DuckDB will not LOAD (its footer names another platform).
    copy = _copy_build(native_file, tmp_path / "plat")
    data = bytearray(copy.read_bytes())
    off = len(data) - 512 + 6 * 32  # FIELD2, the platform (native/build.py::metadata_footer)
    assert data[off:off + 32].rstrip(b"\0") == _platform().encode()
    other = b"osx_arm64" if _platform() != "osx_arm64" else b"linux_amd64"
    data[off:off + 32] = other.ljust(32, b"\0")
    copy.write_bytes(bytes(data))
    record = copy.with_name(_native.RECORD_NAME)
    lines = record.read_text().splitlines()
    lines[0] = f"{hashlib.sha256(bytes(data)).hexdigest()}  {copy.name}"
    record.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(_native, "EXTENSION_FILE", copy)
    assert _native.extension_file() == str(copy)  # the checksum is fine...
    con = connect(extensions=())
    assert _ea_functions(con) == set()  # ...DuckDB refuses it: the Python macros
    assert con.execute(SETTING).fetchone()[0] is False  # off again after the failed LOAD too
    assert con.execute("SELECT vec_sum(v) FROM (VALUES ([1.0, 3.0]), ([2.0, 2.0])) t(v)").fetchall() == \
        [([3.0, 5.0],)]
    assert _native.status().startswith(f"python fallback: DuckDB refused {copy}"), _native.status()


def _platform() -> str:
    import duckdb

    return duckdb.connect().execute("SELECT platform FROM pragma_platform()").fetchone()[0]


def test_no_build_or_no_record_falls_back(native_file: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_native, "EXTENSION_FILE", tmp_path / "none" / "ea_vec.duckdb_extension")
    assert _native.extension_file() is None and "no ea_vec build at" in _native.status()
    copy = _copy_build(native_file, tmp_path / "norecord")
    copy.with_name(_native.RECORD_NAME).unlink()
    monkeypatch.setattr(_native, "EXTENSION_FILE", copy)
    assert _native.extension_file() is None and "no readable checksum record" in _native.status()
    con = connect(extensions=())
    assert con.execute("SELECT vec_mean(v) FROM (VALUES ([1.0, 3.0])) t(v)").fetchall() == [([1.0, 3.0],)]


def test_disabled_build_falls_back(monkeypatch) -> None:
    monkeypatch.setenv("EMBED_ASSETS_NATIVE", "0")
    assert _native.extension_file() is None and "disabled" in _native.status()
    con = connect(extensions=())
    assert _ea_functions(con) == set()
    assert con.execute("SELECT vec_mean(v) FROM (VALUES ([1.0, 3.0])) t(v)").fetchall() == \
        [([1.0, 3.0],)]


# -- allow_unsigned_extensions -----------------------------------------------------------------
def test_unsigned_extensions_stay_off_without_the_extension(tmp_path, monkeypatch) -> None:
    con = connect(extensions=(), native=False)
    assert con.execute(SETTING).fetchone()[0] is False
    monkeypatch.setattr(_native, "EXTENSION_FILE", tmp_path / "ea_vec.duckdb_extension")  # no build
    con = connect(extensions=())
    assert con.execute(SETTING).fetchone()[0] is False
    assert _ea_functions(con) == set()


def test_unsigned_extensions_are_off_again_after_loading_it(native_file: str, tmp_path) -> None:
    con = connect(extensions=())
    assert _ea_functions(con) == {"__ea_vec_mean", "__ea_vec_sum", "__ea_vec_pack"}
    assert con.execute(SETTING).fetchone()[0] is False
    # so no other unsigned file loads on it (a copy under another name is another extension)
    other = tmp_path / "other.duckdb_extension"
    shutil.copy2(native_file, other)
    with pytest.raises(Exception, match="allow_unsigned_extensions"):
        con.execute(f"LOAD '{other}'")
    with pytest.raises(Exception, match="allow_unsigned_extensions"):
        con.execute("SET allow_unsigned_extensions = true")


def test_a_config_that_sets_it_is_respected(native_file: str) -> None:
    con = connect(extensions=(), config={"allow_unsigned_extensions": "false"})
    assert con.execute(SETTING).fetchone()[0] is False
    assert _ea_functions(con) == set()  # Python fallback
    assert con.execute("SELECT vec_mean(v) FROM (VALUES ([1.0, 3.0]), ([3.0, 5.0])) t(v)").fetchall() == \
        [([2.0, 4.0],)]
    con = connect(extensions=(), config={"allow_unsigned_extensions": "true"})
    assert con.execute(SETTING).fetchone()[0] is True  # the caller's choice, left as given
    assert "__ea_vec_mean" in _ea_functions(con)


# -- the wheel ---------------------------------------------------------------------------------
CHILD = r"""
import json, shutil, sys
compilers = {c: shutil.which(c) for c in ("gcc", "cc", "clang", "tcc")}
import embed_assets
from embed_assets.sql import _native
con = embed_assets.connect(extensions=())
(mean,), = con.execute("SELECT vec_mean(v) FROM (VALUES ([1.0,2.0]::FLOAT[2]), ([3.0,4.0]::FLOAT[2])) t(v)"
                       ).fetchall()
print(json.dumps({
    "compilers": compilers, "file": embed_assets.__file__, "status": _native.status(), "mean": mean,
    "functions": sorted(r[0] for r in con.execute("SELECT function_name FROM duckdb_functions() "
                        "WHERE starts_with(function_name, '__ea_vec_')").fetchall()),
    "unsigned": con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone()[0],
    "finders": [repr(f) for f in sys.meta_path],
}))
"""


@pytest.mark.e2e
@needs_cc
def test_wheel_carries_the_extension_and_runs_it_without_a_compiler(tmp_path) -> None:
    t0 = time.perf_counter()
    # A copy of the sources without the in-place build, so the wheel's file is built by it
    # (and the checkout gets no build/ or egg-info from this test).
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "ea_vec.duckdb_extension",
                                  "ea_vec.sha256", "*.tmp")
    shutil.copytree(ROOT / "embed_assets", src / "embed_assets", ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    wheels = tmp_path / "wheels"
    proc = subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(wheels)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = wheels.glob("*.whl")
    assert not whl.name.endswith("-none-any.whl"), whl.name
    plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")  # linux_x86_64 here
    assert whl.name.endswith(f"-py3-none-{plat}.whl"), whl.name
    ext, rec = "embed_assets/sql/native/ea_vec.duckdb_extension", "embed_assets/sql/native/ea_vec.sha256"
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
        assert {ext, rec} <= names, sorted(n for n in names if "native" in n)
        first = zf.read(rec).decode().splitlines()[0]
        assert first == f"{hashlib.sha256(zf.read(ext)).hexdigest()}  ea_vec.duckdb_extension"
    t_wheel = time.perf_counter() - t0

    site = tmp_path / "site"
    proc = subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(whl)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # The child: no site (-S), so the venv's .pth files, among them the editable install's
    # finder, are not processed; the wheel's copy first on sys.path, then the venv's
    # site-packages for the dependencies. PATH has only a `python` link: no compiler.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    home = tmp_path / "home"
    home.mkdir()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = {"PATH": str(bindir), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "PYTHONPATH": os.pathsep.join([str(site), *deps]), "HF_HUB_OFFLINE": "1",
           "LANCE_LOG": "error", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", CHILD], capture_output=True, text=True,
                          timeout=300, cwd=bindir, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["compilers"] == {"gcc": None, "cc": None, "clang": None, "tcc": None}
    assert Path(out["file"]).is_relative_to(site), out["file"]
    assert not any("editable" in f.lower() for f in out["finders"]), out["finders"]
    want = site / "embed_assets" / "sql" / "native" / "ea_vec.duckdb_extension"
    assert out["status"] == f"native: {want} (sha256 ok)", out["status"]
    assert "__ea_vec_mean" in out["functions"]
    assert out["mean"] == [2.0, 3.0]
    assert out["unsigned"] is False
    assert not (home / ".cache").exists()  # no cache directory: nothing compiled or written
    print(f"wheel {whl.name} built in {t_wheel:.1f}s; whole test {time.perf_counter() - t0:.1f}s")
