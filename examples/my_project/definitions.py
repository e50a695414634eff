"""A minimal Dagster project of your own on embed_assets (docs/getting-started.md).

Copy this folder anywhere, then:

    pip install 'embed_assets[text,dagster]' dagster-dg-cli
    export DAGSTER_HOME="$PWD/.dagster_home" && mkdir -p "$DAGSTER_HOME"
    dg launch --assets '*' -f definitions.py

The embeddings land in ``$EMBED_ASSETS_STORE`` (default ``./.embed_store``) as the LanceDB
table ``doc_vectors``; each materialisation is one Lance version.
"""

import polars as pl
from dagster import Definitions, asset, in_process_executor

from embed_assets.dagster import (
    EmbedderResource,
    EmbedStoreResource,
    LanceDBIOManager,
    build_embedding_asset,
    build_embedding_checks,
)


@asset
def docs() -> pl.DataFrame:
    """Your source: any asset returning a table with a key column and a text column."""
    return pl.DataFrame({
        "id": [1, 2, 3, 4],
        "body": ["a text editor for programmers", "a web browser", "an email client",
                 "a spreadsheet for accounting"],
    })


# Embeds docs.body keyed by docs.id; reruns embed only new or changed texts.
doc_vectors = build_embedding_asset("doc_vectors", source="docs", key_column="id", text_column="body")

store = EmbedStoreResource()  # uri: $EMBED_ASSETS_STORE, else ./.embed_store (or s3://...)

defs = Definitions(
    assets=[docs, doc_vectors],
    asset_checks=[build_embedding_checks(doc_vectors.key)],
    # the resource keys the embedding asset and its checks look up
    resources={
        "embed_store": store,
        "embedder": EmbedderResource(),  # all-MiniLM-L6-v2, shipped with the [text] extra
        "lance_io_manager": LanceDBIOManager(store=store),
    },
    executor=in_process_executor,  # a small project: every step in one process, one model load
)
