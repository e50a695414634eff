"""Embedding: the embedder protocols, the text and image embedders, the incremental pipeline."""

from ._cnn import (
    DIGITS_MODEL,
    KnnReport,
    TrainedCNN,
    digits_dataset,
    knn_label_accuracy,
    model_provenance,
    save_model,
    train_digits_cnn,
)
from ._efficientnet import EfficientNetEmbedder, default_image_embedder
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
from ._image_guard import ImageLimits
from ._image_io import image_source, neighbours_png, search_by_image, stored_images
from ._images import (
    BadImage,
    BadImagePolicy,
    ImageEmbedder,
    ImageEmbedResult,
    PixelEmbedder,
    SentenceTransformerImageEmbedder,
    TorchImageEmbedder,
    decode_image,
    embed_images,
    fit_pixel_pca,
    image_grid_png,
    image_hash,
)
from ._onnx import OnnxEmbedder, model_cache_dir
from ._openvino import OpenVinoEmbedder
from ._pipeline import EMBED_MODES, PROVENANCE_COLUMNS, EmbedMode, EmbedResult, embed_table
from ._ray import RayEmbedError, RayEmbedResult, embed_table_ray
from ._stream import DEFAULT_COMMIT_EVERY

__all__ = [
    "DEFAULT_COMMIT_EVERY",
    "DEFAULT_MODEL",
    "DIGITS_MODEL",
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
    "FastTorchEmbedder",
    "HashEmbedder",
    "ImageEmbedResult",
    "ImageEmbedder",
    "ImageLimits",
    "KnnReport",
    "OnnxEmbedder",
    "OpenVinoEmbedder",
    "PixelEmbedder",
    "RayEmbedError",
    "RayEmbedResult",
    "SentenceTransformerEmbedder",
    "SentenceTransformerImageEmbedder",
    "TorchImageEmbedder",
    "TrainedCNN",
    "content_hash",
    "decode_image",
    "default_embedder",
    "default_image_embedder",
    "digits_dataset",
    "embed_images",
    "embed_table",
    "embed_table_ray",
    "fit_pixel_pca",
    "image_grid_png",
    "image_hash",
    "image_source",
    "knn_label_accuracy",
    "model_cache_dir",
    "model_provenance",
    "neighbours_png",
    "save_model",
    "search_by_image",
    "stored_images",
    "train_digits_cnn",
]
