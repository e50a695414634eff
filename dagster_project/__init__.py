"""The demo code location ``embed_assets_demo``: the dg project of the repository root
(dg.toml), and the first location of workspace.yaml (``make ui``, ``dagster dev``).

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

from .demo import build_demo_definitions
from .images import with_image_assets  # the image group (digits CNN, PCA baseline) beside the text one

# The demo location tags the embeddings version it left as ``prod`` (the README's
# ``"debian_embeddings@prod"`` SQL example reads it).
defs = with_image_assets(build_demo_definitions("debian", tag_prod=True))
