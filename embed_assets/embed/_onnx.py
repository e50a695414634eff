"""CPU backends for sentence-transformers models: ONNX Runtime in fp32 or dynamic int8.

Why not ``SentenceTransformer(backend="onnx")``: that path needs ``optimum-onnx``, whose
releases pin ``transformers<4.58``; this project runs transformers 5. So the backend is
built here from parts that install from PyPI next to it: the model's own PyTorch module
is exported with ``torch.onnx.export`` (from the weights on disk: nothing is
downloaded), quantised with ``onnxruntime.quantization.quantize_dynamic`` and run with
an ``onnxruntime.InferenceSession``; tokenisation (the model's own fast tokenizer, saved
beside the export), pooling and normalisation follow the model's sentence-transformers
modules.

Exports are cached under ``$EMBED_ASSETS_MODEL_CACHE`` (default
``~/.cache/embed_assets/onnx``), one directory per model revision, written atomically
(temp file + rename) so two processes exporting at once never read half a file. Beside
the graph the export saves ``tokenizer.json`` (the fast tokenizer's own Rust state) and
``meta.json`` (pooling, normalisation, maximum length, dimension, input names), written
last: once it exists, loading the backend imports neither torch nor
sentence-transformers (``tokenizers`` + the runtime only: a process reaches its first
vector in ~0.9 s instead of ~6 s).
The exported graph gets ONNX Runtime's transformer fusions (LayerNorm + residual,
bias + GELU) before it is run or quantised. The OpenVINO backends
(:mod:`._openvino`) read the same export.

Quantisation: int8 weights per output channel (``per_channel=True``), activations
quantised dynamically, except the feed-forward down-projections (weights wider in than
out, 1536 -> 384 in MiniLM), which stay fp32. Measured on all-MiniLM-L6-v2 against fp32
(PyPI summaries / Debian descriptions): one scale per tensor fell to a mean cosine of
0.96; per channel 0.993 with 0.88-0.89 of each query's top-10 neighbours kept; keeping
the down-projections in fp32 0.996 with 0.91-0.93 kept, for a few percent of the speed.
"""

from __future__ import annotations

import hashlib
import json
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
# Bump when meta.json / tokenizer.json change shape (not the vectors: the revision stays).
_META_VERSION = 1


def model_cache_dir() -> Path:
    """Where exported models live (``$EMBED_ASSETS_MODEL_CACHE`` or ~/.cache/embed_assets/onnx)."""
    raw = os.environ.get("EMBED_ASSETS_MODEL_CACHE", "").strip()
    return Path(raw) if raw else Path.home() / ".cache" / "embed_assets" / "onnx"


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ValidationError(
            "backends 'onnx' and 'onnx-int8' need onnxruntime and onnx: pip install 'embed_assets[onnx]'"
        ) from exc
    return onnxruntime


def _quiet_root_logger() -> Any:
    """ONNX Runtime's fuser and quantiser log hints on the root logger: a one-off export
    step the user did not ask to hear about."""
    import contextlib

    @contextlib.contextmanager
    def quiet() -> Any:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(level)

    return quiet()


def _write_atomic(dest: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(data)
    os.replace(tmp, dest)


def _fuse(src: Path, dest: Path, meta: dict[str, Any]) -> None:
    """ONNX Runtime's transformer fusions (LayerNorm + residual, bias + GELU, attention
    where it matches): measured here 1.3-2x on top of int8. A model the fuser does not
    know is copied unfused."""
    import shutil

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    kind = meta.get("model_type", "")
    try:
        if kind not in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra"):
            raise ValueError(f"no fusions for model type {kind!r}")
        from onnxruntime.transformers import optimizer

        with _quiet_root_logger():
            opt = optimizer.optimize_model(
                str(src),
                model_type="bert" if kind in ("mpnet", "electra") else kind,
                num_heads=int(meta["num_heads"]),
                hidden_size=int(meta["hidden_size"]),
                opt_level=0,
            )
            opt.save_model_to_file(str(tmp))
    except Exception:  # any fuser failure: the unfused graph is correct, only slower
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _down_projections(path: Path) -> list[str]:
    """MatMul nodes whose weight maps more inputs to fewer outputs (the FFN's second
    layer): the activations entering them (post-GELU, 4x wide) quantise worst."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    return [
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and len(n.input) == 2
        and len(shapes.get(n.input[1], [])) == 2
        and shapes[n.input[1]][0] > shapes[n.input[1]][1]
    ]


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


def _pooling_of(st: Any, name: str, backend: str) -> tuple[str, bool]:
    """Only Transformer -> Pooling (mean/cls/max) [-> Normalize] pipelines are
    reproduced here; anything else is refused rather than embedded differently."""
    kinds = [type(m).__name__ for m in st]
    ok = (
        len(kinds) in (2, 3)
        and kinds[0] == "Transformer"
        and kinds[1] == "Pooling"
        and (len(kinds) == 2 or kinds[2] == "Normalize")
    )
    mode = getattr(st[1], "pooling_mode", None) if len(kinds) > 1 else None
    if mode is None and len(kinds) > 1:
        cfg = st[1].get_config_dict() if hasattr(st[1], "get_config_dict") else {}
        mode = cfg.get("pooling_mode") or next(
            (
                k[len("pooling_mode_") :].removesuffix("_tokens")
                for k, v in cfg.items()
                if k.startswith("pooling_mode_") and v is True
            ),
            None,
        )
    mode = {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(str(mode), mode)
    if not ok or mode not in ("mean", "cls", "max"):
        raise ValidationError(
            f"backend {backend!r} supports Transformer + Pooling(mean|cls|max) "
            f"[+ Normalize] models; {name!r} is {' -> '.join(kinds)} "
            f"(pooling {mode!r}); use backend 'torch'"
        )
    return str(mode), len(kinds) == 3


@dataclass
class Export:
    """A model exported to ONNX once, with what running it needs without torch.

    ``root`` holds ``model.onnx`` (the plain export), ``tokenizer.json`` and
    ``meta.json``; the backends derive their own files (fused, quantised, OpenVINO IR)
    from ``model.onnx`` into the same directory.
    """

    name: str
    base_revision: str
    root: Path
    meta: dict[str, Any]

    @property
    def onnx(self) -> Path:
        return self.root / "model.onnx"

    def tokenizer(self) -> Any:
        """The model's fast tokenizer (the Rust ``tokenizers`` object transformers wraps),
        truncating to the model's maximum length and padding each batch to its longest."""
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.root / "tokenizer.json"))
        tok.enable_truncation(max_length=int(self.meta["max_length"]))
        tok.enable_padding(
            pad_id=int(self.meta["pad_id"]),
            pad_token=str(self.meta["pad_token"]),
            pad_type_id=int(self.meta.get("pad_type_id", 0)),
        )
        return tok


def export_model(model: str | None, backend: str) -> Export:
    """The cached export of ``model`` (exported on first use, from the weights on disk).

    A cache hit hashes the model's config files (its revision) and reads two small JSON
    files: no torch, no sentence-transformers."""
    from ._embedders import SentenceTransformerEmbedder, _default_model_path, _model_revision

    ste = SentenceTransformerEmbedder(model=model, device="cpu")
    path = _default_model_path() if ste._path is None else ste._path
    base_revision = _model_revision(None, path)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ste.name)[-60:]
    key = hashlib.blake2b(f"{ste.name}|{base_revision}|{_RECIPE}".encode(), digest_size=6).hexdigest()
    root = model_cache_dir() / f"{slug}-{key}"
    meta_path = root / "meta.json"
    if meta_path.exists() and (root / "model.onnx").exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("meta_version") == _META_VERSION:
            return Export(ste.name, base_revision, root, meta)
    # A miss: load the PyTorch model (the only time torch is imported) and export.
    st = ste._load()
    pooling, normalizes = _pooling_of(st, ste.name, backend)
    tokenizer = st.tokenizer
    cfg = st[0].auto_model.config
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "model.onnx").exists():
        _export_fp32(st, root / "model.onnx")
    _write_atomic(root / "tokenizer.json", tokenizer.backend_tokenizer.to_str())
    sample = tokenizer(["an example"], return_tensors="np")
    meta = {
        "meta_version": _META_VERSION,
        "pooling": pooling,
        "normalizes": normalizes,
        "max_length": int(st.max_seq_length or 512),
        "dimension": int(ste.dimension),
        "input_names": [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample],
        "pad_id": int(tokenizer.pad_token_id or 0),
        "pad_token": str(tokenizer.pad_token or "[PAD]"),
        "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        "model_type": str(getattr(cfg, "model_type", "")),
        "num_heads": int(getattr(cfg, "num_attention_heads", 0) or 0),
        "hidden_size": int(getattr(cfg, "hidden_size", 0) or 0),
    }
    _write_atomic(meta_path, json.dumps(meta, indent=1))  # last: the cache entry is complete
    ste._model = None
    return Export(ste.name, base_revision, root, meta)


def _export_fp32(st: Any, dest: Path) -> None:
    import torch

    hf = st[0].auto_model.eval()
    sample = st.tokenizer(
        ["an example text", "a second, somewhat longer example"], padding=True, return_tensors="pt"
    )
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
            torch.onnx.export(
                _Encoder.wrap(hf, names),
                tuple(sample[n] for n in names),
                tmp,
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class ExportedEmbedder:
    """What the ONNX Runtime and OpenVINO embedders share: the cached export, the
    tokenizer, length-sorted batching, pooling and normalisation. Subclasses name the
    backend (``backend``, ``_scheme``), build the runtime (``_runtime``) and run one
    batch (``_forward``)."""

    model: str | None = None
    batch_size: int = 64
    normalize: bool = True
    threads: int | None = None
    _export: Export | None = field(default=None, init=False, repr=False)
    _runner: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from ._embedders import SentenceTransformerEmbedder

        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {self.batch_size}")
        self._name = SentenceTransformerEmbedder(model=self.model).name

    backend = ""  # set by subclasses (a property there)

    def _scheme(self) -> str:
        raise NotImplementedError

    def _runtime(self, export: Export) -> Any:
        raise NotImplementedError

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self._name}#{self.backend}"

    @property
    def revision(self) -> str:
        return f"{self._exported().base_revision}+{self._scheme()}"

    @property
    def dimension(self) -> int:
        return int(self._exported().meta["dimension"])

    def _exported(self) -> Export:
        if self._export is None:
            self._export = export_model(self.model, self.backend)
        return self._export

    def _load(self) -> Any:
        if self._runner is None:
            export = self._exported()
            self._tokenizer = export.tokenizer()
            self._runner = self._runtime(export)
        return self._runner

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        self._load()
        meta = self._exported().meta
        names = meta["input_names"]
        out = np.zeros((len(texts), int(meta["dimension"])), dtype=np.float32)
        # Length-sorted batches: padding is per batch, so similar lengths waste little.
        order = np.argsort(np.fromiter((len(t) for t in texts), np.int64, len(texts)), kind="stable")
        for i in range(0, len(texts), self.batch_size):
            idx = order[i : i + self.batch_size]
            enc = self._tokenizer.encode_batch([texts[j] for j in idx])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            cols = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in names:
                cols["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
            hidden = self._forward({n: cols[n] for n in names})
            out[idx] = self._pool(np.asarray(hidden, dtype=np.float32), mask)
        return out

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        pooling = self._exported().meta["pooling"]
        if pooling == "cls":
            v = hidden[:, 0]
        elif pooling == "max":
            v = np.where(mask[..., None] > 0, hidden, -np.inf).max(axis=1)
        else:
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        v = v.astype(np.float32)
        if self.normalize or self._exported().meta["normalizes"]:
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v


@dataclass
class OnnxEmbedder(ExportedEmbedder):
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

    quantize: bool = True

    @property
    def backend(self) -> str:  # type: ignore[override]
        return "onnx-int8" if self.quantize else "onnx"

    def _scheme(self) -> str:
        return f"onnx-{INT8_SCHEME if self.quantize else 'fp32'}-{_RECIPE}"

    def _runtime(self, export: Export) -> Any:
        ort = _require_onnxruntime()
        path = self._graph(export)
        opts = ort.SessionOptions()
        # No busy-waiting between runs: the embedder shares its cores with Lance, polars,
        # DuckDB or another session in the same process, which spinning threads starve.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _forward(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self._runner.run(None, feed)[0]

    def _graph(self, export: Export) -> Path:
        """The fused (and, for int8, quantised) graph, derived from the export once."""
        fp32 = export.root / "model-fused.onnx"
        int8 = export.root / f"model-fused-{INT8_SCHEME}.onnx"
        if not fp32.exists():
            _fuse(export.onnx, fp32, export.meta)
        if not self.quantize:
            return fp32
        if not int8.exists():
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = int8.with_name(f".{int8.name}.{os.getpid()}.tmp")
            with _quiet_root_logger():
                quantize_dynamic(
                    str(fp32),
                    str(tmp),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=_down_projections(fp32),
                    # fused ops (SkipLayerNormalization...) are outside shape
                    # inference's domain: their outputs are float
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
            os.replace(tmp, int8)
        return int8
