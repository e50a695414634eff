"""A real local image model: a small CNN trained on scikit-learn's bundled digits.

No pretrained image weights can be downloaded where this project runs, so it trains its
own: ``load_digits`` ships 1,797 real scanned 8 x 8 handwritten digits inside the
scikit-learn wheel. :func:`train_digits_cnn` trains a classifier (three 3 x 3 convolutions,
then a linear layer whose output is the embedding, then the class head) on the training
split with fixed seeds; the encoder (everything before the head) embeds images.

The model artefact is one file, ``<revision>.pt``, under
``<store>/.embed_assets/models/<name>/`` (beside the tables, outside any table) with a
JSON of its provenance next to it. ``revision`` is a hash of the architecture and the
encoder's weights, so retraining with other settings gives a new revision and the store
refuses to mix the two models' vectors in one table unless the write overwrites.
:class:`~embed_assets.embed.TorchImageEmbedder` loads it (checking the hash) with
``torch.load(weights_only=True)``: no pickled code. The architecture and the artefact
format are :mod:`embed_assets.embed._cnn_arch`'s, shared with that loader; the images are
decoded by :mod:`embed_assets.embed._decode`, as the embedder decodes them.

The evaluation (:func:`knn_label_accuracy`) is the one a retrieval user cares about:
held-out images are classified by the majority label of their k nearest training images
in the stored table, and the share of neighbours sharing the query's label is reported.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..embed._cnn_arch import ARTEFACT_FORMAT, build_encoder, weights_hash
from ..embed._decode import decode_image
from ..errors import ValidationError
from ..kernels import batch_distances, top_k_rows
from ..store import VECTOR_COLUMN, EmbeddingTable, Store, VersionRef, is_local, local_path

DIGITS_MODEL = "embed-assets/digits-cnn"
DIGITS_SIZE = (8, 8)
MODELS_DIR = ".embed_assets/models"


# -- data ---------------------------------------------------------------------------------


def digits_dataset(*, test_size: float = 0.25, seed: int = 0) -> pa.Table:
    """scikit-learn's 1,797 bundled 8 x 8 digits as PNG images, with a stratified split.

    Returns
    -------
    pyarrow.Table
        ``digit_id`` (int64, the row of ``load_digits``), ``label`` (int64, 0-9),
        ``split`` (``"train"`` / ``"test"``) and ``png`` (binary: an 8 x 8 grayscale PNG,
        the 0-16 ink levels scaled to 0-255), as a user's image table would hold them.

    Examples
    --------
    >>> t = digits_dataset()
    >>> t.num_rows, t.column_names
    (1797, ['digit_id', 'label', 'split', 'png'])
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    idx = np.arange(len(d.target))
    _train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=d.target)
    split = np.full(len(idx), "train", dtype=object)
    split[test] = "test"
    pngs = []
    for img in d.images:
        buf = io.BytesIO()
        Image.fromarray(np.rint(img * (255 / 16)).astype(np.uint8), "L").save(buf, "PNG")
        pngs.append(buf.getvalue())
    return pa.table({"digit_id": pa.array(idx, pa.int64()), "label": pa.array(d.target, pa.int64()),
                     "split": pa.array(split.tolist(), pa.string()),
                     "png": pa.array(pngs, pa.binary())})


# -- the network --------------------------------------------------------------------------


def _build_head(config: Mapping[str, Any]) -> Any:
    from torch import nn

    return nn.Sequential(nn.ReLU(), nn.Dropout(float(config.get("dropout", 0.2))),
                         nn.Linear(int(config["dimension"]), int(config["classes"])))


@dataclass(eq=False)
class TrainedCNN:
    """A trained digits CNN: the encoder, its revision, what it was trained on and how it did.

    Attributes
    ----------
    revision : str
        Hash of the architecture and encoder weights (the artefact's file name).
    test_accuracy : float
        The classifier head's accuracy on the held-out split (for reference; the
        embedding is evaluated by :func:`knn_label_accuracy`).
    path : str or None
        The artefact file, once saved (:func:`save_model`).
    """

    name: str
    config: dict[str, Any]
    encoder: Any = field(repr=False)
    head: Any = field(repr=False)
    revision: str
    train_accuracy: float
    test_accuracy: float
    epochs: int
    seed: int
    seconds: float
    losses: list[float] = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict, repr=False)
    path: str | None = None

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.encoder.parameters()) +
                   sum(p.numel() for p in self.head.parameters()))


def _pixels(pngs: Sequence[Any], size: tuple[int, int]) -> np.ndarray:
    """(n, 1, H, W) float32 in 0-1, decoded exactly as the embedder decodes them."""
    from PIL import Image

    out = np.empty((len(pngs), 1, size[1], size[0]), np.float32)
    for i, v in enumerate(pngs):
        im = decode_image(v, "L")
        if im.size != (size[0], size[1]):
            im = im.resize((size[0], size[1]), Image.Resampling.BILINEAR)
        out[i, 0] = np.asarray(im, np.float32) / 255.0
    return out


def train_digits_cnn(data: pa.Table | None = None, *, epochs: int = 40, seed: int = 0,
                     dimension: int = 32, channels: int = 16, lr: float = 1e-2,
                     batch_size: int = 64, threads: int = 1, name: str = DIGITS_MODEL,
                     image: str = "png", label: str = "label", split: str = "split") -> TrainedCNN:
    """Train the digits CNN on the ``train`` rows of ``data`` (default :func:`digits_dataset`).

    Deterministic for a given seed, torch build and thread count: seeds fix the
    initialisation, the batch order and the augmentation (random 1-pixel shifts, which
    the small images need to generalise). ``threads`` caps torch's CPU threads during
    training (restored afterwards); 40 epochs take about 5 s on one core.

    Examples
    --------
    >>> m = train_digits_cnn(epochs=1)
    >>> len(m.revision), m.config["dimension"]
    (16, 32)
    """
    import torch
    from torch import nn

    data = digits_dataset() if data is None else data
    for c in (image, label, split):
        if c not in data.column_names:
            raise ValidationError(f"column {c!r} not in the training data ({', '.join(data.column_names)})")
    if epochs < 1 or dimension < 1 or channels < 1:
        raise ValidationError("epochs, dimension and channels must be >= 1")
    labels = np.asarray(data.column(label).to_pylist(), np.int64)
    is_train = np.asarray([s == "train" for s in data.column(split).to_pylist()])
    if not is_train.any():
        raise ValidationError(f"no rows with {split} == 'train'")
    classes = int(labels.max()) + 1
    x = _pixels(data.column(image).to_pylist(), DIGITS_SIZE)
    config = {"arch": "digits-cnn-3conv", "channels": channels, "dimension": dimension,
              "classes": classes, "size": list(DIGITS_SIZE), "image_mode": "L",
              "mean": [0.0], "std": [1.0], "dropout": 0.2}
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        encoder, head = build_encoder(config), _build_head(config)
        model = nn.Sequential(encoder, head)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        xt = torch.from_numpy(x[is_train])
        yt = torch.from_numpy(labels[is_train])
        losses = []
        for _ in range(epochs):
            losses.append(_epoch(model, opt, xt, yt, batch_size, gen))
            sched.step()
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(x)).argmax(1).numpy()
    finally:
        torch.set_num_threads(old_threads)
    acc_train = float((pred[is_train] == labels[is_train]).mean())
    acc_test = float((pred[~is_train] == labels[~is_train]).mean()) if (~is_train).any() else float("nan")
    seconds = time.perf_counter() - t0
    import sklearn

    provenance = {
        "data": "sklearn.datasets.load_digits", "sklearn": sklearn.__version__,
        "torch": torch.__version__, "train_rows": int(is_train.sum()),
        "test_rows": int((~is_train).sum()), "epochs": epochs, "seed": seed, "lr": lr,
        "batch_size": batch_size, "threads": threads,
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "train_accuracy": round(acc_train, 6), "test_accuracy": round(acc_test, 6),
        "seconds": round(seconds, 3),
    }
    return TrainedCNN(name=name, config=config, encoder=encoder.eval(), head=head.eval(),
                      revision=weights_hash(config, encoder.state_dict()),
                      train_accuracy=acc_train, test_accuracy=acc_test, epochs=epochs, seed=seed,
                      seconds=seconds, losses=losses, provenance=provenance)


def _epoch(model: Any, opt: Any, xt: Any, yt: Any, batch_size: int, gen: Any) -> float:
    """One pass over the training rows in a seeded order; the mean loss."""
    import torch

    model.train()
    order = torch.randperm(len(xt), generator=gen)
    total = 0.0
    for s in range(0, len(xt), batch_size):
        b = order[s:s + batch_size]
        loss = torch.nn.functional.cross_entropy(model(_shift(xt[b], gen)), yt[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(b)
    return total / len(xt)


def _shift(xb: Any, gen: Any) -> Any:
    """Each image shifted by -1, 0 or 1 pixel in x and y (zero fill): cheap augmentation."""
    import torch

    padded = torch.nn.functional.pad(xb, (1, 1, 1, 1))
    h, w = xb.shape[2], xb.shape[3]
    off = torch.randint(0, 3, (xb.shape[0], 2), generator=gen)
    return torch.stack([padded[i, :, oy:oy + h, ox:ox + w]
                        for i, (oy, ox) in enumerate(off.tolist())])


# -- the artefact -------------------------------------------------------------------------


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def models_dir(store: Store | str) -> str:
    """Where model artefacts live: ``<store>/.embed_assets/models`` (local stores)."""
    uri = store.uri if isinstance(store, Store) else str(store)
    if not is_local(uri):
        raise ValidationError(f"model artefacts are kept beside local stores only; {uri!r} is "
                              "not local: save_model(trained, directory) to a local folder")
    return os.path.join(local_path(uri), MODELS_DIR)


def save_model(trained: TrainedCNN, where: Store | str, *, run_id: str | None = None) -> str:
    """Write the artefact (encoder, head, config, provenance) as ``<revision>.pt`` plus a
    ``<revision>.json`` of its provenance; returns the path. ``where`` is a store (its
    models folder) or a directory. Writing the same revision twice keeps the first file.
    """
    import torch

    folder = models_dir(where) if isinstance(where, Store) else os.fspath(where)
    folder = os.path.join(folder, _slug(trained.name))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{trained.revision}.pt")
    prov = {**trained.provenance, "name": trained.name, "revision": trained.revision,
            "config": trained.config, "run_id": run_id, "parameters": trained.parameters}
    if not os.path.exists(path):
        # written to a temporary name and renamed: a killed save leaves no half artefact
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save({"format": ARTEFACT_FORMAT, "name": trained.name, "revision": trained.revision,
                    "config": trained.config, "encoder": trained.encoder.state_dict(),
                    "head": trained.head.state_dict(),
                    "provenance": json.dumps(prov, sort_keys=True)}, tmp)
        os.replace(tmp, path)
        with open(os.path.join(folder, f"{trained.revision}.json"), "w") as fh:
            json.dump(prov, fh, indent=2, sort_keys=True)
    trained.path = path
    return path


def model_provenance(path: str) -> dict[str, Any]:
    """The provenance recorded with an artefact (without loading the weights into a model)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != ARTEFACT_FORMAT:
        raise ValidationError(f"{path!r} is not an embed_assets model artefact")
    return json.loads(obj["provenance"])


# -- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KnnReport:
    """k-NN label accuracy of one stored version on a held-out split.

    Attributes
    ----------
    accuracy : float
        Share of held-out rows whose majority label among their ``k`` nearest training
        rows is their own (ties: the label of the nearest of the tied).
    agreement : float
        Mean share of those ``k`` neighbours sharing the held-out row's label.
    """

    table: str
    version: int
    k: int
    accuracy: float
    agreement: float
    n_train: int
    n_test: int
    neighbours: np.ndarray = field(repr=False, compare=False)  # (n_test, k) train keys
    queries: np.ndarray = field(repr=False, compare=False)  # (n_test,) test keys

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "version": self.version, "k": self.k,
                "accuracy": round(self.accuracy, 6), "agreement": round(self.agreement, 6),
                "n_train": self.n_train, "n_test": self.n_test}


def knn_label_accuracy(table: EmbeddingTable, *, label: str = "label", split: str = "split",
                       k: int = 5, version: VersionRef = None, train: str = "train",
                       test: str = "test") -> KnnReport:
    """k-NN classification of the ``test`` rows by the ``train`` rows of one version, in
    the table's own metric (what a search of the table returns)."""
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")
    v = table.resolve(version)
    meta = table.meta_at(v)
    tbl = table.read(v, columns=[meta.key, label, split, VECTOR_COLUMN])
    vec = np.asarray(tbl.column(VECTOR_COLUMN).combine_chunks().flatten()
                     .to_numpy(zero_copy_only=False), np.float32).reshape(tbl.num_rows, -1)
    labs = np.asarray(tbl.column(label).to_pylist())
    sp = np.asarray(tbl.column(split).to_pylist(), dtype=object)
    keys = np.asarray(tbl.column(meta.key).to_pylist())
    tr, te = np.flatnonzero(sp == train), np.flatnonzero(sp == test)
    if not tr.size or not te.size:
        raise ValidationError(f"table {table.name!r} v{v} needs rows with {split} = {train!r} and {test!r}")
    nn_idx = top_k_rows(batch_distances(vec[te], vec[tr], meta.metric), k)
    nn_labels = labs[tr][nn_idx]
    correct = 0
    for want, row in zip(labs[te], nn_labels, strict=True):
        vals, counts = np.unique(row, return_counts=True)
        tied = set(vals[counts == counts.max()].tolist())
        vote = next(x for x in row if x in tied)  # the nearest of the tied labels
        correct += int(vote == want)
    return KnnReport(table=table.name, version=v, k=k, accuracy=correct / te.size,
                     agreement=float((nn_labels == labs[te][:, None]).mean()),
                     n_train=int(tr.size), n_test=int(te.size), neighbours=keys[tr][nn_idx],
                     queries=keys[te])
