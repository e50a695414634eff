"""The demo's Python definitions beside the embeddings component (debian_embeddings/):
descriptions, section centroids, searches, the prod tag, the recipes and the image group.
They use the resources the component provides (embed_store, embedder, lance_io_manager)."""

import dagster as dg

from embed_assets.dagster.component import shared_store_resource

from ..demo import build_pipeline
from ..images import build_image_definitions


@dg.definitions
def defs() -> dg.Definitions:
    # The image group shares the component's store resource (same settings, same object).
    return dg.Definitions.merge(build_pipeline("debian", tag_prod=True),
                                build_image_definitions("digits", store=shared_store_resource()))
