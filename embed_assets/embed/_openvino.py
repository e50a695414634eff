"""OpenVINO backends for sentence-transformers models on the CPU: fp32 and bf16.

The model is the same local ONNX export as the ONNX Runtime backends' (``model.onnx``
under :func:`model_cache_dir`, exported once from the shipped weights: nothing is
downloaded), converted once to OpenVINO IR (``openvino-<recipe>/model.xml`` + ``.bin``,
weights kept fp32 on disk) and compiled by the ``openvino`` runtime from PyPI (not
``optimum-intel``, which pins an older transformers). No torch at run time.

``openvino-bf16`` asks the CPU plugin for bf16 inference precision: on a CPU with AMX
(or AVX-512 BF16) the matrix products run as bf16 tiles with fp32 accumulation. Measured
on this project's 2-core Xeon (AMX) against PyTorch fp32 ``encode`` on 1,000-2,000 PyPI
summaries: mean cosine 0.99999 (min 0.9999), the identical top-10 neighbour set for
92-93% of queries, at several times the speed (benchmarks/RESULTS.md). On a CPU without
native bf16 the backend refuses to run rather than silently running something else:
bf16 vectors are only written where bf16 is what ran. ``openvino`` is fp32 throughout
(agreement with PyTorch to ~1e-6, about ONNX Runtime's speed).

The precision is part of the model identity (``MODEL#openvino-bf16``, revision
``...+openvino-bf16-o1``), so the store never mixes these vectors with fp32 or int8 ones
without an overwrite.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._extras import require
from ..errors import ValidationError
from ._onnx import Export, ExportedEmbedder

#: The OpenVINO backends: fp32, and bf16 inference precision (AMX / AVX-512 BF16 CPUs).
OPENVINO_BACKENDS: tuple[str, ...] = ("openvino", "openvino-bf16")
# Bump when the conversion or the compile settings change what the vectors are.
_OV_RECIPE = "o1"


def _require_openvino() -> Any:
    return require("openvino", "the backends 'openvino' and 'openvino-bf16'", "openvino")


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AMX or AVX-512 BF16)."""
    try:
        ov = _require_openvino()
        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:
        return False


def _ir(ov: Any, export: Export) -> Path:
    """The OpenVINO IR of the export, converted once (atomically: a temp directory
    renamed into place; a concurrent converter that lost the race discards its copy)."""
    dest = export.root / f"openvino-{_OV_RECIPE}"
    xml = dest / "model.xml"
    if xml.exists():
        return xml
    tmp = Path(tempfile.mkdtemp(prefix=f".openvino.{os.getpid()}.", dir=export.root))
    try:
        model = ov.Core().read_model(str(export.onnx))
        # fp32 weights on disk (save_model's default would compress them to fp16)
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        try:
            os.rename(tmp, dest)
        except OSError:  # another process put it there first
            if not xml.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


@dataclass
class OpenVinoEmbedder(ExportedEmbedder):
    """A sentence-transformers model run by the OpenVINO runtime on the CPU, bf16 or fp32
    (exported to ONNX first, as :class:`OnnxEmbedder` does, then converted once).

    Parameters
    ----------
    model : str, optional
        The shipped all-MiniLM-L6-v2 by default; else a model name or local path, as for
        :class:`SentenceTransformerEmbedder`.
    precision : {"bf16", "fp32"}
        Inference precision: ``bf16`` (backend ``openvino-bf16``; needs a CPU with AMX or
        AVX-512 BF16, else :class:`ValidationError`) or ``fp32`` (backend ``openvino``).
    batch_size : int
        Texts per forward pass, length-sorted so a batch pads to its own longest text.
    normalize : bool
        L2-normalise (the model's own ``Normalize`` module is honoured either way).
    threads : int, optional
        Inference threads (``None``: OpenVINO's default, one per core).

    Examples
    --------
    >>> OpenVinoEmbedder(precision="bf16").name
    'sentence-transformers/all-MiniLM-L6-v2#openvino-bf16'
    """

    precision: str = "bf16"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision not in ("bf16", "fp32"):
            raise ValidationError(f"precision must be 'bf16' or 'fp32', got {self.precision!r}")

    @property
    def backend(self) -> str:  # type: ignore[override]
        return "openvino-bf16" if self.precision == "bf16" else "openvino"

    def _scheme(self) -> str:
        return f"openvino-{self.precision}-{_OV_RECIPE}"

    def _runtime(self, export: Export) -> Any:
        ov = _require_openvino()
        core = ov.Core()
        hint = "bf16" if self.precision == "bf16" else "f32"
        if hint == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValidationError(
                "backend 'openvino-bf16' needs a CPU with native bf16 (AMX or AVX-512 BF16); "
                "this one has none: use 'openvino' (fp32) or 'onnx'"
            )
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        compiled = core.compile_model(core.read_model(str(_ir(ov, export))), "CPU", config)
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
        if ran != (ov.Type.bf16 if hint == "bf16" else ov.Type.f32):  # the identity says what ran
            raise ValidationError(f"OpenVINO compiled the model at {ran}, not {hint}")
        self._output = compiled.output(0)
        return compiled.create_infer_request()

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._runner.infer(feed)[self._output]
