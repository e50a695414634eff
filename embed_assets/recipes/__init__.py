"""The jobs an embedding store exists for, on top of the store: recommender embeddings
(truncated SVD), users as the mean of their last N items, named direction vectors, PCA.

Sits above the SQL layer and below the Dagster integration (``dagster_project`` turns
each into an asset). Imported on its own (``from embed_assets.recipes import ...``):
``import embed_assets`` does not load scikit-learn.
"""

__all__: list[str] = []
