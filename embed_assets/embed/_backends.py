"""Choosing an embedder by name: the hashing embedder, or a sentence-transformers model on
one of the backends (torch, ONNX Runtime, OpenVINO, fp16 torch on CUDA). The embedders
themselves know nothing of this choice (they sit below it)."""

from __future__ import annotations

from typing import Any

from ..errors import ValidationError
from ._embedders import Embedder, HashEmbedder, SentenceTransformerEmbedder
from ._gpu import FastTorchEmbedder
from ._onnx import OnnxEmbedder
from ._openvino import OpenVinoEmbedder

#: Backends of :func:`default_embedder`: ``torch`` (alias ``sentence-transformers``) is
#: plain PyTorch fp32; ``onnx`` / ``onnx-int8`` run ONNX Runtime (:class:`OnnxEmbedder`);
#: ``openvino`` (fp32) / ``openvino-bf16`` (bf16 on AMX CPUs) run OpenVINO
#: (:class:`OpenVinoEmbedder`). ``torch-fp16`` is the batch-pipelined fp16 embedder for
#: CUDA (:class:`FastTorchEmbedder`).
EMBED_BACKENDS: tuple[str, ...] = (
    "torch",
    "sentence-transformers",
    "onnx",
    "onnx-int8",
    "openvino",
    "openvino-bf16",
    "torch-fp16",
)


def split_backend(model: str | None) -> tuple[str | None, str | None]:
    """``"MODEL#onnx-int8"`` -> ``("MODEL", "onnx-int8")``: the form an ONNX embedder's
    name takes, so a stored table's model name rebuilds the same backend for queries."""
    if model and "#" in model:
        base, _, suffix = model.rpartition("#")
        if suffix in EMBED_BACKENDS:
            return (base or None), suffix
    return model, None


def default_embedder(model: str | None = None, *, backend: str | None = None, **kwargs: Any) -> Embedder:
    """The embedder for a model argument: ``hash-bow[:DIM]`` or a sentence-transformers model.

    Parameters
    ----------
    model : str, optional
        ``hash-bow[:DIM]``, a sentence-transformers name or path, or a stored model name
        with its backend suffix (``MODEL#onnx-int8``).
    backend : str, optional
        One of :data:`EMBED_BACKENDS`: ``torch`` / ``sentence-transformers``, ``onnx``,
        ``onnx-int8``, ``openvino``, ``openvino-bf16``, ``torch-fp16``.
        How a sentence-transformers model runs (default ``torch``, or the suffix of
        ``model``). Ignored by the hashing embedder.
    **kwargs
        device, batch_size, ... for the model's embedder.
    """
    if backend is not None and backend not in EMBED_BACKENDS:
        raise ValidationError(
            f"unknown embedder backend {backend!r}; choose one of {', '.join(EMBED_BACKENDS)}"
        )
    if model and model.startswith("hash-bow"):
        spec = model.split(":", 1)[1] if ":" in model else "64"
        if (
            model[len("hash-bow") : len("hash-bow") + 1] not in ("", ":")
            or not (spec.strip().isascii() and spec.strip().isdigit())
            or int(spec) < 1
        ):
            raise ValidationError(
                f"model {model!r}: the hashing embedder is 'hash-bow' or 'hash-bow:DIM' with "
                "DIM a positive integer"
            )
        return HashEmbedder(dimension=int(spec))
    model, suffix = split_backend(model)
    if backend is not None and backend not in EMBED_BACKENDS:
        raise ValidationError(
            f"unknown embedder backend {backend!r}; choose one of {', '.join(EMBED_BACKENDS)}"
        )
    if backend is not None and suffix is not None and backend != suffix:
        raise ValidationError(f"model {model}#{suffix} names backend {suffix!r}, not {backend!r}")
    backend = backend or suffix or "torch"
    if backend in ("onnx", "onnx-int8"):
        kwargs.pop("device", None)  # ONNX Runtime here is the CPU provider
        kwargs.pop("show_progress", None)
        return OnnxEmbedder(model=model, quantize=backend == "onnx-int8", **kwargs)
    if backend in ("openvino", "openvino-bf16"):
        kwargs.pop("device", None)  # the OpenVINO CPU plugin
        kwargs.pop("show_progress", None)
        return OpenVinoEmbedder(
            model=model, precision="bf16" if backend == "openvino-bf16" else "fp32", **kwargs
        )
    if backend == "torch-fp16":
        kwargs.pop("show_progress", None)
        return FastTorchEmbedder(model=model, half=True, **kwargs)
    return SentenceTransformerEmbedder(model=model, **kwargs)
