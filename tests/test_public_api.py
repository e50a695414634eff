import inspect
import re
from pathlib import Path

import pytest

import embed_assets

ROOT = Path(__file__).resolve().parents[1]

# The public names, pinned (as httpx pins its own): a change to embed_assets.__all__ is a
# change to this list, made on purpose. Everything else lives in its subpackage.
PUBLIC = {
    "__version__",
    # the store
    "Store", "EmbeddingTable", "Fusion",
    # SQL
    "connect", "SQLConnection",
    # embedding
    "embed_table", "Streamed", "OnRay", "EmbedResult", "default_embedder", "search_by_image",
    "Embedder", "HashEmbedder", "SentenceTransformerEmbedder",
    "ImageEmbedder", "SentenceTransformerImageEmbedder", "TorchImageEmbedder", "EfficientNetEmbedder",
    # serving
    "Client",
    # indexes
    "build_index", "build_text_index", "refresh_index", "freshness",
    # training snapshots
    "snapshot", "open_snapshot", "cleanup_snapshots", "Snapshot",
    # errors: the whole tree
    "EmbedAssetsError", "ValidationError", "SchemaMismatchError", "TableNotFoundError",
    "VersionNotFoundError", "KeyNotFoundError", "StorageError", "ConflictError", "MissingExtraError",
    "QueryError", "ProductionMovedError",
    "UnknownColumnError", "RayEmbedError", "ServeError",
}
# Reserved for modules being written beside this one: allowed in __all__ once they land,
# counted in the budget now (none left: the serving Client landed).
RESERVED: set[str] = set()
# Old top-level names that still resolve, with a DeprecationWarning naming their new home.
MOVED = {"DEFAULT_MODEL", "EMBED_BACKENDS", "content_hash", "RayEmbedResult", "IndexReport", "run_sql",
         "CleanupReport", "Plan", "TableMeta", "default_store_uri", "embed_images", "embed_table_ray",
         "VersionInfo", "WriteResult", "OnnxEmbedder", "OpenVinoEmbedder", "InProcess", "ImageLimits"}


def test_public_names_are_pinned() -> None:
    assert set(embed_assets.__all__) - RESERVED == PUBLIC
    assert len(embed_assets.__all__) == len(set(embed_assets.__all__))
    # issue 22: "at most ~40"; issue 25 added ProductionMovedError (a promotion's refusal)
    assert len(PUBLIC | RESERVED) <= 42


def test_internals_are_not_exported() -> None:
    # the old internals no longer leak through the package root (issue 22: 237 exported names)
    for gone in ("set_index_keeper", "rebuild_after_rollback", "CACHE", "take_rows",
                 "debian_pairs", "simulate_history", "train_digits_cnn", "timed_connect"):
        assert gone not in embed_assets.__all__
    assert "timed_connect" not in embed_assets.sql.__all__
    for demo in ("debian_pairs", "simulate_history", "interactions_from_depends"):
        assert demo not in embed_assets.recipes.__all__
    for demo in ("digits_dataset", "train_digits_cnn"):
        assert demo not in embed_assets.embed.__all__ and demo not in embed_assets.train.__all__


@pytest.mark.parametrize("name", sorted(MOVED))
def test_moved_names_resolve_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=name):
        getattr(embed_assets, name)


@pytest.mark.parametrize("module,name", [("recipes", "simulate_history"), ("recipes", "debian_pairs"),
                                         ("recipes", "interactions_from_depends"),
                                         ("train", "train_digits_cnn"), ("train", "digits_dataset")])
def test_demo_helpers_moved_with_an_alias(module: str, name: str) -> None:
    import importlib

    from embed_assets import _demo

    mod = importlib.import_module(f"embed_assets.{module}")
    with pytest.warns(DeprecationWarning, match="embed_assets._demo"):
        assert getattr(mod, name) is getattr(_demo, name)


def test_every_exception_is_exported() -> None:
    # every error class of the tree, wherever it is defined, is a public name
    # load every subpackage that may define one
    import embed_assets.dagster
    import embed_assets.recipes
    import embed_assets.train

    def subclasses(c: type) -> set[type]:
        return {c} | {s for k in c.__subclasses__() for s in subclasses(k)}

    ours = {c for c in subclasses(embed_assets.EmbedAssetsError) if c.__module__.startswith("embed_assets")}
    assert {c.__name__ for c in ours} <= set(embed_assets.__all__)
    for c in ours:
        # a QueryError raised through connect() is also DuckDB's own class: a subclass
        # made at run time under the exported name (embed_assets.sql._errors)
        assert issubclass(c, getattr(embed_assets, c.__name__))
    errors_tree = {n for n, c in vars(embed_assets.errors).items()
                   if isinstance(c, type) and issubclass(c, BaseException)}
    assert errors_tree <= set(embed_assets.errors.__all__)


def test_one_name_per_thing() -> None:
    from embed_assets import errors

    assert "first_line" not in errors.__all__
    with pytest.warns(DeprecationWarning, match="describe"):
        assert errors.first_line is errors.describe


def test_public_names_are_documented() -> None:
    # each has a docstring of its own and appears in the docs (README or docs/, the API
    # reference included)
    text = (ROOT / "README.md").read_text() + "".join(
        p.read_text() for p in sorted((ROOT / "docs").rglob("*.md")))
    undocumented, unused = [], []
    for name in sorted(PUBLIC - {"__version__"}):
        obj = getattr(embed_assets, name)
        if not (inspect.getdoc(obj) or "").strip():
            undocumented.append(name)
        if not re.search(rf"\b{re.escape(name)}\b", text):
            unused.append(name)
    assert not undocumented, undocumented
    assert not unused, unused


def test_all_names_are_exported_and_exist():
    for name in embed_assets.__all__:
        assert hasattr(embed_assets, name), name
    assert {"Store", "embed_table", "Embedder", "SentenceTransformerEmbedder",
            "HashEmbedder", "ValidationError"} <= set(embed_assets.__all__)


def test_private_modules_are_not_in_all():
    assert not [n for n in embed_assets.__all__ if n.startswith("_") and n != "__version__"]


def test_store_layer_does_not_import_dagster():
    import subprocess
    import sys

    # Importing the library (and the CLI module) must not pull in the heavy or global-state
    # packages: Dagster, torch (seconds to import), matplotlib (picks a backend).
    code = ("import sys, embed_assets, embed_assets.cli, embed_assets.store, embed_assets.index, "
            "embed_assets.embed, embed_assets.sql; "
            "print(sorted(m for m in ('dagster', 'torch', 'matplotlib', 'sentence_transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_has_one_source():
    from importlib.metadata import version

    from embed_assets._version import __version__

    assert embed_assets.__version__ == __version__ == version("embed_assets")


def test_demo_code_location_is_not_installed_as_a_package(tmp_path):
    # Outside the checkout, the demo code location is not importable: installing the
    # library must not claim the top-level name ``dagster_project``.
    import subprocess
    import sys

    code = ("import importlib.util as u; "
            "print(u.find_spec('dagster_project'), u.find_spec('embed_assets') is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.split() == ["None", "True"]


def test_store_layer_public_names_are_pinned() -> None:
    """``embed_assets.store.__all__`` is the store layer's user-facing API (issue 22: it
    exported 55 names, CACHE, take_rows and set_index_keeper among them); what the layers
    above need stays importable without being public."""
    import embed_assets.store as store

    assert set(store.__all__) == {
        "Store", "EmbeddingTable", "TableInfo", "TableMeta", "VersionInfo", "WriteResult",
        "CleanupReport", "Plan", "Fusion", "VersionRef", "WriteMode", "IndexKeeper",
        "STATE", "StoreState", "default_store_uri", "index_config",
        "Comparison", "ExperimentInfo", "ExperimentResult", "PromotionResult",  # issue 25
        "DEFAULT_GRACE", "METRICS", "SEARCH_MODES", "VECTOR_COLUMN", "WRITE_MODES"}
    for internal in ("CACHE", "take_rows", "set_index_keeper", "KeyIndex", "probe_kind"):
        assert internal not in store.__all__
    assert not hasattr(store, "set_index_keeper")  # rollback's rebuild is wired per store
    assert store.take_rows and store.CACHE is store.STATE.matrices  # still importable
