import embed_assets


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
