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

    code = ("import sys, embed_assets, embed_assets.cli, embed_assets.embed._pipeline; "
            "print('dagster' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
