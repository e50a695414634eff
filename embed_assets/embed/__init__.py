"""Embedding: the embedder protocol, the text embedders, and the incremental pipeline."""

from ._embedders import (
    DEFAULT_MODEL,
    Embedder,
    EmptyTextPolicy,
    HashEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    default_embedder,
)
from ._pipeline import EMBED_MODES, PROVENANCE_COLUMNS, EmbedMode, EmbedResult, embed_table

__all__ = [
    "DEFAULT_MODEL",
    "EMBED_MODES",
    "PROVENANCE_COLUMNS",
    "EmbedMode",
    "EmbedResult",
    "Embedder",
    "EmptyTextPolicy",
    "HashEmbedder",
    "SentenceTransformerEmbedder",
    "content_hash",
    "default_embedder",
    "embed_table",
]
