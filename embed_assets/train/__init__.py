"""Training: snapshots of a table version for training loops (a local memory-mapped cache,
read for many epochs as numpy batches or a PyTorch dataset; torch is imported only by the
PyTorch methods), and the digits CNN trained here, saved as a model artefact and
evaluated by k-NN label accuracy on a stored table."""

from ._digits_cnn import (
    DIGITS_MODEL,
    KnnReport,
    TrainedCNN,
    digits_dataset,
    knn_label_accuracy,
    model_provenance,
    save_model,
    train_digits_cnn,
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
    "digits_dataset",
    "knn_label_accuracy",
    "list_snapshots",
    "model_provenance",
    "open_snapshot",
    "save_model",
    "snapshot",
    "snapshot_id",
    "train_digits_cnn",
]
