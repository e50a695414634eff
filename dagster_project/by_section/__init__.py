"""The demo with embeddings partitioned by Debian section (12 static partitions).

The embeddings are an EmbeddingsComponent declared in ``embeddings.yaml`` beside this
file; the rest is the demo's Python pipeline. Each partition run embeds that section's
packages and replaces exactly those rows of the table in one Lance commit. From the CLI,
one run for all sections::

    dg launch -m dagster_project.by_section --assets '*' --partition-range admin...web
"""

from ..demo import build_demo_definitions

defs = build_demo_definitions("debian_by_section", partitioned=True)
