"""Build hook: compiles the ``ea_vec`` DuckDB extension into the package.

All metadata lives in pyproject.toml; this file only adds the native build:

* ``build_ext`` also runs ``embed_assets/sql/native/build.py`` (stdlib only, loaded by path),
  which writes ``ea_vec.duckdb_extension`` and its checksum record ``ea_vec.sha256`` into
  ``embed_assets/sql/native/`` of the build tree (``pip wheel .`` / ``pip install .``: the
  files land in the wheel) or, for an editable install (``pip install -e .``, build_ext
  in place), of the source tree (git-ignored there);
* the distribution reports binary content, so build_ext runs and the wheel is
  platform-specific; its tag is ``py3-none-<platform>``: the file is loaded by DuckDB
  through DuckDB's C API, it does not depend on the Python ABI.

Without a C compiler the build still succeeds, with a warning and without the file; the
package then uses its Python SQL macros (``embed_assets.sql._native.status()`` says so).
``EMBED_ASSETS_BUILD_NATIVE=0`` skips the native build, ``=require`` makes its failure fatal;
``CC`` picks the compiler (default gcc).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.dist import Distribution

try:  # setuptools >= 70.1 has bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # older setuptools + the wheel package
    from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent
NATIVE = Path("embed_assets", "sql", "native")  # package directory of the source and the build
OUTPUTS = ("ea_vec.duckdb_extension", "ea_vec.sha256")


def _native_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ea_native_build", ROOT / NATIVE / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BinaryDistribution(Distribution):
    """Has binary content (the extension), though no Python extension module."""

    def has_ext_modules(self) -> bool:
        return True


class build_ext(_build_ext):
    """setuptools' build_ext (no Python extension modules here), then the ea_vec extension."""

    def _native_dir(self) -> Path:
        return ROOT / NATIVE if self.inplace else Path(self.build_lib) / NATIVE

    def run(self) -> None:
        super().run()
        mode = os.environ.get("EMBED_ASSETS_BUILD_NATIVE", "1").lower()
        out = self._native_dir()
        for name in OUTPUTS:  # never leave an older build (or a copied in-place one) behind
            (out / name).unlink(missing_ok=True)
        if mode == "0":
            print("embed_assets: EMBED_ASSETS_BUILD_NATIVE=0: ea_vec not built (Python SQL macros)",
                  file=sys.stderr)
            return
        try:
            built = _native_build().build(str(out), cc=os.environ.get("CC", "gcc"))
        except (SystemExit, OSError) as exc:  # build.py exits with its message on stderr
            if mode == "require":
                raise SystemExit(f"embed_assets: EMBED_ASSETS_BUILD_NATIVE=require: ea_vec failed: {exc}"
                                 ) from None
            print("embed_assets: WARNING: the ea_vec DuckDB extension was not built (see above); "
                  "vec_mean/vec_sum will run on the Python fallback", file=sys.stderr)
            return
        print(f"embed_assets: built {built}", file=sys.stderr)

    def _built(self) -> list[str]:
        return [name for name in OUTPUTS if (self._native_dir() / name).is_file()]

    def get_outputs(self) -> list[str]:
        # Like setuptools' build_ext: build-tree paths, mapped to the in-place ones below.
        ours = [str(Path(self.build_lib) / NATIVE / name) for name in self._built()]
        return [*super().get_outputs(), *ours]

    def get_output_mapping(self) -> dict[str, str]:
        mapping = dict(super().get_output_mapping())
        if self.inplace:
            for name in self._built():
                mapping[str(Path(self.build_lib) / NATIVE / name)] = str(ROOT / NATIVE / name)
        return mapping


class bdist_wheel(_bdist_wheel):
    """Platform wheel (``root_is_pure`` False) tagged ``py3-none-<platform>``."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(distclass=BinaryDistribution, cmdclass={"build_ext": build_ext, "bdist_wheel": bdist_wheel})
