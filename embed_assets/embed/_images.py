"""Image embeddings: the image embedder protocol, decoding with Pillow, the incremental pipeline.

An image embedder is anything with ``name``, ``revision``, ``dimension`` and
``embed_images(images) -> float32 (n, dimension)``, taking decoded Pillow images (the
same shape of contract as the text :class:`~embed_assets.Embedder`, so the store's
provenance guard, versions and search treat both alike). An optional ``image_mode``
(``"RGB"`` or ``"L"``) says what the model wants; images are converted to it. What an
image column may hold, and how bad images are refused, is :mod:`._decode`'s.

Incremental work
----------------
Each row is keyed on :func:`image_hash`, a hash of the image's bytes (the file's bytes
for a path, the encoded bytes, or the array's dtype, shape and data). The text pipeline
(:func:`~embed_assets.embed_table`) does the rest unchanged: the hash goes in as the
row's "text" (a hidden ``_image_hash`` column, not stored), so ``_content_hash`` is the
hash of the image hash, unchanged images keep their stored vectors, and only new or
changed images reach the model.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..store import VECTOR_COLUMN, as_arrow, validate_keys
from ._cnn_arch import ARTEFACT_FORMAT, build_encoder, weights_hash
from ._decode import IMAGE_MODES, BadImagePolicy, decode_image, load_images, pil
from ._embedders import Model, SentenceTransformerEmbedder
from ._image_guard import DEFAULT_LIMITS, ImageLimits
from ._plan import EmbedResult

if TYPE_CHECKING:  # Pillow is imported when images are decoded, not with the package
    from PIL.Image import Image

# The hidden "text" column embed_table keys rows on; '_'-prefixed, so never stored.
IMAGE_HASH_COLUMN = "_image_hash"
# Above this many images a progress bar is shown (as for texts).
PROGRESS_THRESHOLD = 2000


@runtime_checkable
class ImageEmbedder(Model, Protocol):
    """Turns a batch of decoded images into an ``(n, dimension)`` float32 matrix."""

    def embed_images(self, images: Sequence[Image]) -> np.ndarray: ...


@dataclass
class ImageEmbedResult(EmbedResult):
    """What :func:`embed_images` did: an :class:`EmbedResult` whose ``rows_skipped_empty``
    counts the bad images left out, with ``bad_images`` listing ``(key, reason)``."""

    bad_images: list[tuple[Any, str]] = field(default_factory=list)

    def summary(self) -> str:
        # the text pipeline says "empty"; for images the skipped rows are bad images
        return super().summary().replace(f"skipped {self.rows_skipped_empty} empty",
                                         f"skipped {self.rows_skipped_empty} bad image(s)")


@dataclass
class _HashedImages:
    """The plan's view of an image embedder: it is handed image hashes (the hidden "text"
    column) and embeds the images behind them, decoded here (only the rows that reach the
    model). ``name``, ``revision`` and ``dimension`` are the image embedder's, read when
    asked (a revision may load the model: an unchanged run never asks)."""

    model: Any
    by_hash: dict[str, Any]
    mode: str
    limits: ImageLimits = DEFAULT_LIMITS

    def __getattr__(self, attr: str) -> Any:
        if attr in ("name", "revision", "dimension"):
            return getattr(self.model, attr)
        raise AttributeError(attr)

    def embed(self, hashes: Sequence[str]) -> np.ndarray:
        images = [decode_image(self.by_hash[h], self.mode, self.limits) for h in hashes]
        return np.asarray(self.model.embed_images(images), np.float32)


def _split_source(data: Any, image: str) -> tuple[pa.Table, list[Any], bool]:
    """The source as Arrow, the image column's values, and whether that column can be
    stored. A dict's column of Pillow images or numpy arrays is taken as given (Arrow
    cannot hold those objects) and not stored; any Arrow-typed column is stored."""
    if isinstance(data, Mapping) and image in data:
        vals = data[image]
        if isinstance(vals, np.ndarray) and vals.ndim >= 3:  # a stack of images
            vals = list(vals)
        vals = list(vals)
        if any(isinstance(v, np.ndarray) or (hasattr(v, "mode") and hasattr(v, "size"))
               for v in vals):
            rest = {k: v for k, v in data.items() if k != image}
            tbl = as_arrow(rest) if rest else pa.table({})
            return tbl, vals, False
    tbl = as_arrow(data)
    if image not in tbl.column_names:
        raise ValidationError(
            f"image column {image!r} not found; columns are {', '.join(tbl.column_names)}")
    typ = tbl.schema.field(image).type
    if not (pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_string(typ)
            or pa.types.is_large_string(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ)
            or pa.types.is_fixed_size_list(typ) or pa.types.is_null(typ)):
        raise ValidationError(
            f"image column {image!r} holds {typ} values; an image column holds bytes (encoded "
            "images), strings (file paths) or nested lists of pixels")
    return tbl, tbl.column(image).to_pylist(), True


@dataclass
class ImageSource:
    """An image column made ready for the embedding plan: the source with bad rows left
    out and the hidden ``_image_hash`` column the plan keys rows on, the embedder the plan
    hands those hashes to, the columns to keep, and the ``(key, reason)`` of bad rows."""

    table: pa.Table
    embedder: _HashedImages
    columns: list[str]
    bad: list[tuple[Any, str]]

    def result(self, res: EmbedResult) -> ImageEmbedResult:
        """The plan's result, counting the bad images as skipped rows."""
        fields = {f: getattr(res, f) for f in EmbedResult.__dataclass_fields__}
        fields.update(rows_source=res.rows_source + len(self.bad), rows_skipped_empty=len(self.bad))
        return ImageEmbedResult(**fields, bad_images=self.bad)


def prepare_images(data: Any, *, key: str, image: str, embedder: ImageEmbedder | None,
                   columns: Sequence[str] | None, on_bad: BadImagePolicy,
                   limits: ImageLimits = DEFAULT_LIMITS) -> ImageSource:
    """Decode and hash every image of ``data[image]`` (bad ones refused or left out, as
    ``on_bad`` says) for :func:`~embed_assets.embed_table` with ``image=``.

    The kept columns default to all, the image column too when Arrow can store it
    (bytes, paths, pixel lists). No embedder: EfficientNet-Lite0 (ImageNet), the default."""
    tbl, values, storable = _split_source(data, image)
    if tbl.num_columns == 0 or key not in tbl.column_names:
        raise ValidationError(f"key column {key!r} not found; columns are "
                              f"{', '.join(tbl.column_names) or 'none'}")
    validate_keys(tbl, key)
    if embedder is None:
        from ._efficientnet import default_image_embedder

        embedder = default_image_embedder()
    image_mode = getattr(embedder, "image_mode", "RGB")
    loaded = load_images(tbl.column(key).to_pylist(), values, mode=image_mode, on_bad=on_bad,
                         keep_decoded=False, limits=limits)
    if loaded.bad:
        tbl = tbl.take(pa.array(loaded.indices, pa.int64()))
    src = tbl.append_column(IMAGE_HASH_COLUMN, pa.array(loaded.hashes, pa.string()))
    if columns is None:
        columns = [c for c in src.column_names if c != key and c != VECTOR_COLUMN
                   and not c.startswith("_") and (storable or c != image)]
    hashed = _HashedImages(embedder, dict(zip(loaded.hashes, loaded.images, strict=True)),
                           image_mode, limits)
    return ImageSource(src, hashed, list(columns), loaded.bad)


# -- embedders ----------------------------------------------------------------------------


def _batches(n: int, size: int, show: bool, desc: str) -> Any:
    starts = range(0, n, size)
    if not show:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc=desc, unit="batch")


def _normalise_rows(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(n > 0, n, 1.0)).astype(np.float32)


@dataclass
class PixelEmbedder:
    """Raw pixels as the vector: images resized to ``size``, flattened, scaled to 0-1,
    optionally projected by a fitted PCA (``components``, ``mean``). With a PCA this is
    the baseline a trained model has to beat (:func:`fit_pixel_pca`).

    Examples
    --------
    >>> from PIL import Image
    >>> PixelEmbedder(size=(2, 2)).embed_images([Image.new("L", (8, 8), 255)]).round(2)
    array([[0.5, 0.5, 0.5, 0.5]], dtype=float32)
    """

    size: tuple[int, int] = (8, 8)
    image_mode: str = "L"
    components: np.ndarray | None = field(default=None, repr=False)
    mean: np.ndarray | None = field(default=None, repr=False)
    normalize: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if self.image_mode not in IMAGE_MODES:
            raise ValidationError(f"image_mode must be one of {', '.join(IMAGE_MODES)}")
        w, h = self.size
        self._pixels = w * h * (3 if self.image_mode == "RGB" else 1)
        if self.components is not None:
            self.components = np.asarray(self.components, np.float32)
            self.mean = np.zeros(self._pixels, np.float32) if self.mean is None \
                else np.asarray(self.mean, np.float32)
            if self.components.ndim != 2 or self.components.shape[1] != self._pixels:
                raise ValidationError(f"components must be (k, {self._pixels}) for size {self.size}")
        kind = f"pca{self.components.shape[0]}" if self.components is not None else "raw"
        self.name = self.name or f"pixels-{kind}:{w}x{h}:{self.image_mode}"

    @property
    def dimension(self) -> int:
        return self._pixels if self.components is None else int(self.components.shape[0])

    @property
    def revision(self) -> str:
        """A hash of the projection (or ``raw``): two fits are two revisions."""
        if self.components is None:
            return "raw"
        h = hashlib.blake2b(digest_size=8)
        h.update(np.ascontiguousarray(self.components).tobytes())
        h.update(np.ascontiguousarray(self.mean).tobytes())
        return h.hexdigest()

    def pixels(self, images: Sequence[Image]) -> np.ndarray:
        """The images as an ``(n, pixels)`` float32 matrix in 0-1 (resized, converted)."""
        PILImage = pil()
        out = np.empty((len(images), self._pixels), np.float32)
        for i, im in enumerate(images):
            im = im.convert(self.image_mode)
            w, h = self.size
            if im.size != (w, h):
                im = im.resize((w, h), PILImage.Resampling.BILINEAR)
            out[i] = np.asarray(im, np.float32).reshape(-1) / 255.0
        return out

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        x = self.pixels(images)
        if self.components is not None:
            x = (x - self.mean) @ self.components.T
        return _normalise_rows(x) if self.normalize else x.astype(np.float32)


def fit_pixel_pca(images: Sequence[Image], k: int, *, size: tuple[int, int] = (8, 8),
                  image_mode: str = "L") -> PixelEmbedder:
    """PCA on raw pixels (an exact SVD, deterministic): the baseline image embedder.

    Examples
    --------
    >>> from PIL import Image
    >>> ims = [Image.new("L", (8, 8), v) for v in (0, 100, 200)]
    >>> fit_pixel_pca(ims, 2).dimension
    2
    """
    base = PixelEmbedder(size=size, image_mode=image_mode)
    x = base.pixels(images)
    if k < 1 or k > min(x.shape):
        raise ValidationError(f"k must be between 1 and {min(x.shape)} for {x.shape[0]} images "
                              f"of {x.shape[1]} pixels, got {k}")
    mean = x.mean(axis=0)
    _u, _s, vt = np.linalg.svd(x - mean, full_matrices=False)
    # sign convention (largest |loading| positive) so the same data gives the same revision
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(signs == 0, 1, signs)[:, None]
    return PixelEmbedder(size=size, image_mode=image_mode, components=vt[:k], mean=mean)


@dataclass
class TorchImageEmbedder:
    """A torch image model given by path: the encoder of this package's trained CNN
    (:func:`~embed_assets.train.train_digits_cnn`), a program saved with
    ``torch.export.save`` (export it with a dynamic batch dimension), a TorchScript file,
    or a whole ``nn.Module`` saved with ``torch.save`` (a torchvision model with its
    classifier replaced by ``nn.Identity()``, say). The model's output, flattened, is
    the vector.

    Parameters
    ----------
    path : str
        The model file.
    size : (width, height), optional
        Input size the images are resized to (default: the artefact's, else 224 x 224).
    image_mode : {"RGB", "L"}, optional
        Default: the artefact's, else ``"RGB"``.
    mean, std : sequence of float, optional
        Per-channel normalisation after scaling to 0-1 (default: the artefact's, else
        ImageNet's for RGB and none for L).
    allow_pickle : bool
        A ``torch.save``'d module is a pickle, which runs code when loaded: only with
        ``True`` (for files you trust). Artefacts of this package, exported programs and
        TorchScript files load without it.
    name : str, optional
        The model name stored with the vectors (default: the artefact's, else the file name).

    The revision is the artefact's weight hash, or for other files a hash of the file's
    bytes: a retrained model is a new revision and the store refuses to mix the two in
    one table unless the write overwrites.
    """

    path: str
    size: tuple[int, int] | None = None
    image_mode: str | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    device: str = "cpu"
    batch_size: int = 256
    normalize: bool = True
    allow_pickle: bool = False
    show_progress: bool | None = None
    name: str = ""
    _model: Any = field(default=None, init=False, repr=False)
    _revision: str = field(default="", init=False, repr=False)
    _dimension: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if not os.path.isfile(self.path):
            raise ValidationError(f"model file {self.path!r} not found")
        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {self.batch_size}")
        self._load()

    def _load(self) -> None:
        import torch

        spec: dict[str, Any] = {}
        kind = _torch_file_kind(self.path)
        obj = None
        if kind == "torch":
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception:  # not plain tensors and containers: a pickled module
                obj = None
        if isinstance(obj, dict) and obj.get("format") == ARTEFACT_FORMAT:
            spec = dict(obj["config"])
            model = build_encoder(spec)
            model.load_state_dict(obj["encoder"])
            got = weights_hash(spec, model.state_dict())
            if got != obj["revision"]:
                raise ValidationError(f"model file {self.path!r}: its weights hash to {got}, not "
                                      f"the recorded revision {obj['revision']} (corrupt or edited)")
            self._revision = obj["revision"]
            self.name = self.name or obj["name"]
        elif isinstance(obj, dict):
            raise ValidationError(
                f"model file {self.path!r} holds a state_dict without its architecture; save "
                "the module itself (torch.export.save, TorchScript or torch.save(model))")
        else:
            model = self._load_module(torch, kind)
            with open(self.path, "rb") as fh:
                self._revision = hashlib.blake2b(fh.read(), digest_size=8).hexdigest()
            self.name = self.name or os.path.basename(self.path)
        w, h = self.size or spec.get("size") or (224, 224)
        self.size = (int(w), int(h))
        self.image_mode = self.image_mode or spec.get("image_mode") or "RGB"
        if self.image_mode not in IMAGE_MODES:
            raise ValidationError(f"image_mode must be one of {', '.join(IMAGE_MODES)}")
        channels = 3 if self.image_mode == "RGB" else 1
        imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        default = imagenet if channels == 3 and not spec else ([0.0] * channels, [1.0] * channels)
        self.mean = list(self.mean if self.mean is not None else spec.get("mean", default[0]))
        self.std = list(self.std if self.std is not None else spec.get("std", default[1]))
        self._model = model.to(self.device).eval()
        w, h = self.size
        with torch.no_grad():
            probe = self._model(torch.zeros(1, channels, h, w, device=self.device))
        self._dimension = int(np.prod(probe.shape[1:]))

    def _load_module(self, torch: Any, kind: str) -> Any:
        import warnings

        try:
            if kind == "export":
                return _Exported(torch.export.load(self.path).module())
            if kind == "script":
                with warnings.catch_warnings():  # deprecated in torch 2.13, still what users have
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return torch.jit.load(self.path, map_location="cpu")
        except Exception as exc:
            raise ValidationError(f"cannot load model file {self.path!r}: {exc}") from None
        if not self.allow_pickle:
            raise ValidationError(
                f"model file {self.path!r} is a pickled module (torch.save(model)); loading it "
                "runs code from the file: pass allow_pickle=True if you trust it, or save it "
                "with torch.export.save")
        try:
            model = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ValidationError(f"cannot load model file {self.path!r}: {exc}") from None
        if not isinstance(model, torch.nn.Module):
            raise ValidationError(f"model file {self.path!r} holds a {type(model).__name__}, "
                                  "not a torch.nn.Module")
        return model

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def dimension(self) -> int:
        return self._dimension

    def tensor(self, images: Sequence[Image]) -> Any:
        """The images as the model's input: ``(n, C, H, W)`` float32, resized, normalised."""
        import torch

        PILImage = pil()
        w, h = self.size  # type: ignore[misc]
        arrs = []
        for im in images:
            im = im.convert(self.image_mode)
            if im.size != (w, h):
                im = im.resize((w, h), PILImage.Resampling.BILINEAR)
            a = np.asarray(im, np.float32) / 255.0
            arrs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        x = torch.from_numpy(np.stack(arrs)) if arrs else torch.zeros(0, 1, h, w)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        import torch

        images = list(images)
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        show = self.show_progress if self.show_progress is not None else len(images) > PROGRESS_THRESHOLD
        out = []
        with torch.no_grad():
            for s in _batches(len(images), self.batch_size, show, f"embedding images ({self.name})"):
                x = self.tensor(images[s:s + self.batch_size]).to(self.device)
                out.append(self._model(x).reshape(x.shape[0], -1).float().cpu().numpy())
        m = np.concatenate(out).astype(np.float32)
        return _normalise_rows(m) if self.normalize else m


def _torch_file_kind(path: str) -> str:
    """``export`` (torch.export.save), ``script`` (TorchScript) or ``torch`` (torch.save),
    from the archive's entries: each loader fails noisily on the others' files."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return "torch"  # the legacy non-zip torch.save format
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("/archive_format") for n in names):
        return "export"
    if any("/code/" in n for n in names):
        return "script"
    return "torch"


class _Exported:
    """An exported program's module, which refuses ``.eval()`` / ``.to()`` (it is already
    an inference graph on the device it was exported on)."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def to(self, _device: Any) -> _Exported:
        return self

    def eval(self) -> _Exported:
        return self

    def __call__(self, x: Any) -> Any:
        return self.module(x)


@dataclass
class SentenceTransformerImageEmbedder(SentenceTransformerEmbedder):
    """A sentence-transformers model that embeds images (CLIP and other multimodal
    models), loaded lazily from a name or local path; ``embed(texts)`` embeds texts into
    the same space, so ``table.search("a red car", embedder=emb)`` searches images by
    text. sentence-transformers' ``encode`` takes the Pillow images directly.
    """

    image_mode: str = "RGB"

    def _check_images(self) -> Any:
        m = self._load()
        modalities = getattr(m, "modalities", None)
        if modalities is not None and "image" not in modalities:
            raise ValidationError(f"model {self.name!r} does not embed images "
                                  f"(its modalities: {', '.join(modalities)})")
        return m

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, self.dimension), np.float32)
        m = self._check_images()
        show = self.show_progress if self.show_progress is not None else len(images) > PROGRESS_THRESHOLD
        out = m.encode(images, batch_size=self.batch_size, show_progress_bar=show,
                       convert_to_numpy=True, normalize_embeddings=self.normalize)
        return np.asarray(out, np.float32)


# -- pictures -----------------------------------------------------------------------------


def image_grid_png(rows: Sequence[Sequence[Image]], *, cell: int = 48, gap: int = 4,
                   marks: Sequence[Sequence[bool | None]] | None = None) -> bytes:
    """A PNG grid of images, one list per row (a query and its neighbours, say).

    ``marks[r][c]`` True draws a green frame around a cell, False a red one (a neighbour
    that shares the query's label or not), None none.
    """
    PILImage = pil()
    from PIL import ImageDraw

    ncols = max((len(r) for r in rows), default=0)
    grid = PILImage.new("RGB", (gap + ncols * (cell + gap), gap + len(rows) * (cell + gap)),
                        (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            x, y = gap + c * (cell + gap), gap + r * (cell + gap)
            grid.paste(im.convert("RGB").resize((cell, cell), PILImage.Resampling.NEAREST), (x, y))
            mark = marks[r][c] if marks is not None and c < len(marks[r]) else None
            if mark is not None:
                colour = (0, 160, 0) if mark else (220, 0, 0)
                draw.rectangle([x - 2, y - 2, x + cell + 1, y + cell + 1], outline=colour, width=2)
    buf = io.BytesIO()
    grid.save(buf, "PNG")
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI (for markdown, HTML)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()
