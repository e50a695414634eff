"""CPU backends for sentence-transformers models: ONNX Runtime in fp32 or dynamic int8.

Why not ``SentenceTransformer(backend="onnx")``: that path needs ``optimum-onnx``, whose
releases pin ``transformers<4.58``; this project runs transformers 5. So the backend is
built here from parts that install from PyPI next to it: the model's own PyTorch module
is exported with ``torch.onnx.export`` (from the weights on disk: nothing is
downloaded), quantised with ``onnxruntime.quantization.quantize_dynamic`` and run with
an ``onnxruntime.InferenceSession``; tokenisation (the fast tokenizer's batch call),
pooling and normalisation follow the model's own sentence-transformers modules.

Exports are cached under ``$EMBED_ASSETS_MODEL_CACHE`` (default
``~/.cache/embed_assets/onnx``), one directory per model revision, written atomically
(temp file + rename) so two processes exporting at once never read half a file. The
exported graph then gets ONNX Runtime's transformer fusions (LayerNorm + residual,
bias + GELU) before it is run or quantised.

Quantisation: int8 weights per output channel (``per_channel=True``), activations
quantised dynamically, except the feed-forward down-projections (weights wider in than
out, 1536 -> 384 in MiniLM), which stay fp32. Measured on all-MiniLM-L6-v2 against fp32
(PyPI summaries / Debian descriptions): one scale per tensor fell to a mean cosine of
0.96; per channel 0.993 with 0.88-0.89 of each query's top-10 neighbours kept; keeping
the down-projections in fp32 0.996 with 0.91-0.93 kept, for a few percent of the speed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError

#: The CPU backends of a sentence-transformers model (``torch`` is plain PyTorch fp32).
ONNX_BACKENDS: tuple[str, ...] = ("onnx", "onnx-int8")
#: What the quantised export is, recorded in the model revision (and so in every table).
INT8_SCHEME = "dyn-qint8-perchannel-fp32down"
# Bump when the export or quantisation recipe changes: the cache key and the revision
# move with it, so old vectors are never mixed with a new recipe's.
_RECIPE = "r2"


def model_cache_dir() -> Path:
    """Where exported models live (``$EMBED_ASSETS_MODEL_CACHE`` or ~/.cache/embed_assets/onnx)."""
    raw = os.environ.get("EMBED_ASSETS_MODEL_CACHE", "").strip()
    return Path(raw) if raw else Path.home() / ".cache" / "embed_assets" / "onnx"


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ValidationError(
            "backends 'onnx' and 'onnx-int8' need onnxruntime and onnx: "
            "pip install 'embed_assets[onnx]'") from exc
    return onnxruntime


def _fuse(src: Path, dest: Path, config: Any) -> None:
    """ONNX Runtime's transformer fusions (LayerNorm + residual, bias + GELU, attention
    where it matches): measured here 1.3-2x on top of int8. A model the fuser does not
    know is copied unfused."""
    import shutil

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    kind = getattr(config, "model_type", "")
    try:
        if kind not in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"):
            raise ValueError(f"no fusions for model type {kind!r}")
        from onnxruntime.transformers import optimizer

        root_level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            opt = optimizer.optimize_model(
                str(src), model_type="bert" if kind in ("mpnet", "electra") else kind,
                num_heads=int(config.num_attention_heads), hidden_size=int(config.hidden_size),
                opt_level=0)
            opt.save_model_to_file(str(tmp))
        finally:
            logging.getLogger().setLevel(root_level)
    except Exception:  # any fuser failure: the unfused graph is correct, only slower
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _down_projections(path: Path) -> list[str]:
    """MatMul nodes whose weight maps more inputs to fewer outputs (the FFN's second
    layer): the activations entering them (post-GELU, 4x wide) quantise worst."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) == 2
            and len(shapes.get(n.input[1], [])) == 2
            and shapes[n.input[1]][0] > shapes[n.input[1]][1]]


class _Encoder:
    """The transformer module wrapped so the export sees plain tensors in and out."""

    @staticmethod
    def wrap(hf_model: Any, input_names: Sequence[str]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = hf_model

            def forward(self, *args: Any) -> Any:
                return self.m(**dict(zip(input_names, args, strict=True))).last_hidden_state

        return Wrapped().eval()


@dataclass
class OnnxEmbedder:
    """A sentence-transformers model run by ONNX Runtime on the CPU, fp32 or int8.

    Parameters
    ----------
    model : str, optional
        A model name or local path, as for :class:`SentenceTransformerEmbedder`
        (``None``: the shipped all-MiniLM-L6-v2).
    quantize : bool
        Dynamic int8 quantisation (backend ``onnx-int8``); ``False`` runs the fp32 export.
    batch_size : int
        Texts per forward pass. Texts are sorted by length first, so a batch pads to
        the length of its own longest text, not of the corpus's.
    normalize : bool
        L2-normalise (the model's own ``Normalize`` module is honoured either way).
    threads : int, optional
        ONNX Runtime intra-op threads (``None``: its default, one per physical core).

    The name is ``MODEL#onnx`` / ``MODEL#onnx-int8`` and the revision appends the backend
    and quantisation scheme to the weights' revision, so a table's provenance tells int8
    vectors from fp32 ones and the store refuses to mix them without an overwrite.

    Examples
    --------
    >>> emb = OnnxEmbedder(quantize=True)
    >>> emb.name
    'sentence-transformers/all-MiniLM-L6-v2#onnx-int8'
    """

    model: str | None = None
    quantize: bool = True
    batch_size: int = 64
    normalize: bool = True
    threads: int | None = None
    _session: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _input_names: list[str] = field(default_factory=list, init=False, repr=False)
    _pooling: str = field(default="mean", init=False, repr=False)
    _model_normalizes: bool = field(default=False, init=False, repr=False)
    _max_length: int = field(default=512, init=False, repr=False)
    _dim: int = field(default=0, init=False, repr=False)
    _base_revision: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        from ._embedders import SentenceTransformerEmbedder

        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {self.batch_size}")
        # The torch embedder resolves the model argument and loads the weights: one
        # place knows how (offline for the shipped model).
        self._st = SentenceTransformerEmbedder(model=self.model, device="cpu",
                                               normalize=self.normalize)

    @property
    def backend(self) -> str:
        return "onnx-int8" if self.quantize else "onnx"

    @property
    def name(self) -> str:
        return f"{self._st.name}#{self.backend}"

    @property
    def revision(self) -> str:
        self._load()
        scheme = INT8_SCHEME if self.quantize else "fp32"
        return f"{self._base_revision}+onnx-{scheme}-{_RECIPE}"

    @property
    def dimension(self) -> int:
        self._load()
        return self._dim

    # -- loading ---------------------------------------------------------------------
    def _load(self) -> Any:
        if self._session is not None:
            return self._session
        ort = _require_onnxruntime()
        st = self._st._load()
        self._base_revision = self._st.revision
        self._check_modules(st)
        self._tokenizer = st.tokenizer
        self._max_length = int(st.max_seq_length or 512)
        self._dim = int(self._st.dimension)
        path = self._export(st)
        opts = ort.SessionOptions()
        # No busy-waiting between runs: the embedder shares its cores with Lance, polars,
        # DuckDB or another session in the same process, which spinning threads starve.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input_names = [i.name for i in self._session.get_inputs()]
        # The torch weights are not needed once the session exists.
        self._st._model = None
        return self._session

    def _check_modules(self, st: Any) -> None:
        """Only Transformer -> Pooling (mean/cls/max) [-> Normalize] pipelines are
        reproduced here; anything else is refused rather than embedded differently."""
        kinds = [type(m).__name__ for m in st]
        ok = len(kinds) in (2, 3) and kinds[0] == "Transformer" and kinds[1] == "Pooling" \
            and (len(kinds) == 2 or kinds[2] == "Normalize")
        mode = getattr(st[1], "pooling_mode", None) if len(kinds) > 1 else None
        if mode is None and len(kinds) > 1:
            cfg = st[1].get_config_dict() if hasattr(st[1], "get_config_dict") else {}
            mode = cfg.get("pooling_mode") or next(
                (k[len("pooling_mode_"):].removesuffix("_tokens") for k, v in cfg.items()
                 if k.startswith("pooling_mode_") and v is True), None)
        mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(mode, mode)
        if not ok or mode not in ("mean", "cls", "max"):
            raise ValidationError(
                f"backend {self.backend!r} supports Transformer + Pooling(mean|cls|max) "
                f"[+ Normalize] models; {self._st.name!r} is {' -> '.join(kinds)} "
                f"(pooling {mode!r}); use backend 'torch'")
        self._pooling = str(mode)
        self._model_normalizes = len(kinds) == 3

    def _export(self, st: Any) -> Path:
        """The ONNX file for this model and backend, exported (and quantised) once."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self._st.name)[-60:]
        key = hashlib.blake2b(f"{self._st.name}|{self._base_revision}|{_RECIPE}".encode(),
                              digest_size=6).hexdigest()
        root = model_cache_dir() / f"{slug}-{key}"
        raw = root / "model.onnx"
        fp32 = root / "model-fused.onnx"
        int8 = root / f"model-fused-{INT8_SCHEME}.onnx"
        root.mkdir(parents=True, exist_ok=True)
        if not raw.exists():
            self._export_fp32(st, raw)
        if not fp32.exists():
            _fuse(raw, fp32, st[0].auto_model.config)
        if not self.quantize:
            return fp32
        if not int8.exists():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = int8.with_name(f".{int8.name}.{os.getpid()}.tmp")
            # quantize_dynamic logs a hint about pre-processing on the root logger; the
            # export is a one-off step the user did not ask to hear about.
            root_level = logging.getLogger().level
            logging.getLogger().setLevel(logging.ERROR)
            try:
                import onnx

                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                 per_channel=True, op_types_to_quantize=["MatMul"],
                                 nodes_to_exclude=_down_projections(fp32),
                                 # fused ops (SkipLayerNormalization...) are outside shape
                                 # inference's domain: their outputs are float
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            finally:
                logging.getLogger().setLevel(root_level)
            os.replace(tmp, int8)
        return int8

    def _export_fp32(self, st: Any, dest: Path) -> None:
        import torch

        hf = st[0].auto_model.eval()
        sample = self._tokenizer(["an example text", "a second, somewhat longer example"],
                                 padding=True, return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
        fd, tmp = tempfile.mkstemp(prefix=".model.", suffix=".onnx", dir=dest.parent)
        os.close(fd)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # Tracer warnings about Python branches on shapes: the exported graph is
                # checked against the PyTorch model in tests/test_backends.py.
                warnings.simplefilter("ignore")
                # The TorchScript exporter: it needs only `onnx`; the dynamo exporter would
                # also need onnxscript and gives the same graph for an encoder.
                torch.onnx.export(_Encoder.wrap(hf, names), tuple(sample[n] for n in names), tmp,
                                  input_names=names, output_names=["last_hidden_state"],
                                  dynamic_axes=axes, opset_version=17, dynamo=False)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- embedding -------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        session = self._load()
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        # Length-sorted batches: padding is per batch, so similar lengths waste little.
        order = np.argsort(np.fromiter((len(t) for t in texts), np.int64, len(texts)),
                           kind="stable")
        for i in range(0, len(texts), self.batch_size):
            idx = order[i:i + self.batch_size]
            enc = self._tokenizer([texts[j] for j in idx], padding=True, truncation=True,
                                  max_length=self._max_length, return_tensors="np")
            feed = {n: np.asarray(enc[n], dtype=np.int64) for n in self._input_names}
            hidden = session.run(None, feed)[0]
            out[idx] = self._pool(hidden, np.asarray(enc["attention_mask"]))
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pooling == "cls":
            v = hidden[:, 0]
        elif self._pooling == "max":
            v = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
        else:
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        v = v.astype(np.float32)
        if self.normalize or self._model_normalizes:
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v
