"""The demo code location: ``dagster dev`` (workspace.yaml) or ``-m dagster_project``.

The store is ``$EMBED_ASSETS_STORE`` (default ``./.embed_store``); the model is
all-MiniLM-L6-v2, shipped offline (``EMBED_ASSETS_MODEL=hash-bow`` for a weightless run).

Every asset of this code location is unpartitioned, so ``dagster asset materialize -m
dagster_project --select '*'`` runs the whole demo in one command: Dagster's CLI refuses
a selection that holds any partitioned asset unless ``--partition`` is given. The same
pipeline with one Dagster partition per Debian section is the
``dagster_project.by_section`` location (also in workspace.yaml).
"""

from .demo import build_demo_definitions

defs = build_demo_definitions("debian")
