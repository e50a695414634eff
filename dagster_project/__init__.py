"""The demo: two code locations on the shipped Debian slice (workspace.yaml).

- ``dagster_project.definitions``: the location ``embed_assets_demo``, a dg project of
  components (dg.toml, the defs folder ``dagster_project/defs``);
- ``dagster_project.by_section``: the same pipeline, one partition per Debian section.

Importing this package builds neither: each location loads only its own module
(``dagster_project.defs`` is the defs folder, not a Definitions object).
"""
