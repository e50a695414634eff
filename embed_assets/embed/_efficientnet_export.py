"""EfficientNet-Lite0 on ONNX Runtime or OpenVINO: the same export path as the text models.

The feature head (pooled 1,280-d, no classifier) is exported once per weights revision
with ``torch.onnx.export`` (the TorchScript exporter, dynamic batch) into
``model_cache_dir()/efficientnet-lite0-<revision>/``, written atomically; OpenVINO reads
that ONNX file. Both run fp32, so the vectors match torch's to about 1e-5 (checked in
tests/test_efficientnet.py) and keep its name and revision.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._onnx import _require_onnxruntime, model_cache_dir
from ._openvino import _require_openvino

_RECIPE = "e1"


def _wrap(net: Any) -> Any:
    import torch.nn as nn

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net.features(x)

    return Features().eval()


def export_onnx(net: Any, revision: str, size: int) -> Path:
    """The ONNX file of the network's features, exported on first use."""
    import torch

    dest = model_cache_dir() / f"efficientnet-lite0-{revision}-{_RECIPE}" / "features.onnx"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".features.", suffix=".onnx", dir=dest.parent)
    os.close(fd)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape arithmetic in the SAME pads
            torch.onnx.export(_wrap(net), (torch.zeros(2, 3, size, size),), tmp,
                              input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, dest)  # a concurrent exporter's identical file may win: either is whole
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def export_runner(net: Any, revision: str, backend: str, threads: int | None, size: int) -> Any:
    """A callable ``(n, 3, size, size) float32 -> (n, 1280)`` on the named backend."""
    path = export_onnx(net, revision, size)
    if backend == "onnx":
        ort = _require_onnxruntime()
        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"pixels": np.ascontiguousarray(x)})[0]
    ov = _require_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    out = compiled.output(0)
    req = compiled.create_infer_request()
    return lambda x: req.infer({0: np.ascontiguousarray(x)})[out]
