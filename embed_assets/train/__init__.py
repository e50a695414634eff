"""Training: snapshots of a table version for training loops (a local memory-mapped cache,
read for many epochs as numpy batches or a PyTorch dataset; torch is imported only by the
PyTorch methods), and the digits CNN trained here, saved as a model artefact and
evaluated by k-NN label accuracy on a stored table."""

from ._digits_cnn import (
    DIGITS_MODEL,
    KnnReport,
    TrainedCNN,
    knn_label_accuracy,
    model_provenance,
    save_model,
)
from ._snapshot import (
    Snapshot,
    SnapshotInfo,
    cleanup_snapshots,
    default_cache_dir,
    list_snapshots,
    open_snapshot,
    snapshot,
    snapshot_id,
)

__all__ = [
    "DIGITS_MODEL",
    "KnnReport",
    "Snapshot",
    "SnapshotInfo",
    "TrainedCNN",
    "cleanup_snapshots",
    "default_cache_dir",
    "knn_label_accuracy",
    "list_snapshots",
    "model_provenance",
    "open_snapshot",
    "save_model",
    "snapshot",
    "snapshot_id",
]


def __getattr__(name: str) -> object:
    # The digits data and the CNN trained on them make the image demo's model (issue 22:
    # demo generators are not library API); the README imported them from here, so the
    # old names resolve, with a warning.
    if name in ("digits_dataset", "train_digits_cnn"):
        import warnings

        from . import _digits_cnn

        warnings.warn(f"embed_assets.train.{name} is the image demo's, not library API: it moved "
                      "to embed_assets._demo", DeprecationWarning, stacklevel=2)
        return getattr(_digits_cnn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
