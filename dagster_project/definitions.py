"""The demo code location ``embed_assets_demo``: a dg project of components (dg.toml), and
the first location of workspace.yaml (``make ui``, ``dagster dev``).

Its definitions are the defs folder ``dagster_project/defs``: the text embeddings are an
``EmbeddingsComponent`` declared in ``defs/debian_embeddings/defs.yaml``; ``defs/pipeline.py``
holds what a component cannot express (the source asset, centroids, searches, the prod
tag, the recipes, the image group).

The store is ``$EMBED_ASSETS_STORE`` (default ``./.embed_store``); the model is
all-MiniLM-L6-v2, shipped offline (``EMBED_ASSETS_MODEL=hash-bow`` for a weightless run).

Every asset of this code location is unpartitioned, so ``dg launch --assets '*'`` in the
repository root (``make demo``) runs the whole demo in one command: Dagster's CLI refuses
a selection that holds any partitioned asset unless ``--partition`` is given. The same
pipeline with one Dagster partition per Debian section is the
``dagster_project.by_section`` location (also in workspace.yaml).

``$DAGSTER_HOME`` must exist before the command runs: Dagster opens its instance before
it imports this module, so nothing here can create it (the README's command does).
"""

from pathlib import Path

import dagster as dg

defs = dg.load_from_defs_folder(project_root=Path(__file__).resolve().parent.parent)
