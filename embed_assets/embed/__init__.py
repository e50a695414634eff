"""Embedding: the embedder protocols, the text and image embedders, and the incremental
run: :func:`embed_table` prepares one plan (:mod:`._plan`) and an executor runs it in
process, streamed with resumable commits, or on Ray."""

from ._backends import EMBED_BACKENDS, default_embedder
from ._decode import BadImage, BadImagePolicy, decode_image, image_hash
from ._efficientnet import EfficientNetEmbedder, default_image_embedder
from ._embedders import (
    DEFAULT_MODEL,
    Embedder,
    EmptyTextPolicy,
    HashEmbedder,
    SentenceTransformerEmbedder,
    content_hash,
)
from ._executors import DEFAULT_COMMIT_EVERY, InProcess, Streamed
from ._gpu import FastTorchEmbedder
from ._image_guard import ImageLimits
from ._image_io import image_source, neighbours_png, search_by_image, stored_images
from ._images import (
    ImageEmbedder,
    ImageEmbedResult,
    PixelEmbedder,
    SentenceTransformerImageEmbedder,
    TorchImageEmbedder,
    fit_pixel_pca,
    image_grid_png,
)
from ._onnx import OnnxEmbedder, model_cache_dir
from ._openvino import OpenVinoEmbedder
from ._pipeline import embed_images, embed_table, embed_table_ray
from ._plan import (
    EMBED_MODES,
    PROVENANCE_COLUMNS,
    EmbedMode,
    EmbedResult,
    Executor,
    model_change,
)
from ._ray import OnRay, RayEmbedError, RayEmbedResult

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "DEFAULT_MODEL",
    "EMBED_BACKENDS",
    "EMBED_MODES",
    "PROVENANCE_COLUMNS",
    "BadImage",
    "BadImagePolicy",
    "EfficientNetEmbedder",
    "EmbedMode",
    "EmbedResult",
    "Embedder",
    "EmptyTextPolicy",
    "Executor",
    "FastTorchEmbedder",
    "HashEmbedder",
    "ImageEmbedResult",
    "ImageEmbedder",
    "ImageLimits",
    "InProcess",
    "OnRay",
    "OnnxEmbedder",
    "OpenVinoEmbedder",
    "PixelEmbedder",
    "RayEmbedError",
    "RayEmbedResult",
    "SentenceTransformerEmbedder",
    "SentenceTransformerImageEmbedder",
    "Streamed",
    "TorchImageEmbedder",
    "content_hash",
    "decode_image",
    "default_embedder",
    "default_image_embedder",
    "embed_images",
    "embed_table",
    "embed_table_ray",
    "fit_pixel_pca",
    "image_grid_png",
    "image_hash",
    "image_source",
    "model_cache_dir",
    "model_change",
    "neighbours_png",
    "search_by_image",
    "stored_images",
]
