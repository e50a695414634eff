"""Embedding: the embedder protocol, the text embedders, and the incremental pipeline."""

from ._embedders import (
    DEFAULT_MODEL,
    EMBED_BACKENDS,
    Embedder,
    EmptyTextPolicy,
    HashEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
    default_embedder,
)
from ._gpu import FastTorchEmbedder
from ._onnx import OnnxEmbedder, model_cache_dir
from ._pipeline import EMBED_MODES, PROVENANCE_COLUMNS, EmbedMode, EmbedResult, embed_table
from ._stream import DEFAULT_COMMIT_EVERY

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "DEFAULT_MODEL",
    "EMBED_BACKENDS",
    "EMBED_MODES",
    "PROVENANCE_COLUMNS",
    "EmbedMode",
    "EmbedResult",
    "Embedder",
    "EmptyTextPolicy",
    "FastTorchEmbedder",
    "HashEmbedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "content_hash",
    "default_embedder",
    "embed_table",
    "model_cache_dir",
]
