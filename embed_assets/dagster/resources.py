"""Dagster resources: the store (where tables live) and the embedder (which model).

Both are ``ConfigurableResource`` so the UI's Launchpad and the Deployment view show
their settings, and tests swap them (a temp store, the fast ``hash-bow`` embedder).
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from ..embed import DEFAULT_MODEL, Embedder, SentenceTransformerEmbedder, default_embedder
from ..errors import ValidationError
from ..index import rebuild_after_rollback
from ..store import Store, default_store_uri

# torch = sentence-transformers = PyTorch fp32; onnx / onnx-int8 run ONNX Runtime on the
# CPU (embed_assets.OnnxEmbedder), openvino / openvino-bf16 the OpenVINO runtime
# (OpenVinoEmbedder; bf16 on AMX CPUs); hash is the weightless test embedder.
BACKENDS = ("sentence-transformers", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16",
            "torch-fp16", "hash")


class EmbedStoreResource(ConfigurableResource):
    """Where embedding tables live: a local directory or an object-store prefix.

    ``uri`` left empty means ``$EMBED_ASSETS_STORE``, else ``./.embed_store``, resolved
    when a run starts (so one definition serves every environment). ``LanceDBIOManager``
    takes this resource as its nested ``store``, so one instance configures both the
    assets that open the store and the IO manager.
    """

    uri: str | None = Field(
        default=None,
        description="Store URI (path or s3://bucket/prefix); empty: $EMBED_ASSETS_STORE or ./.embed_store",
    )
    storage_options: dict[str, str] | None = Field(
        default=None, description="Object-store options passed to Lance (endpoint, region, ...)"
    )

    @property
    def resolved_uri(self) -> str:
        return self.uri or default_store_uri()

    def get_store(self) -> Store:
        """A :class:`~embed_assets.Store` on the configured URI.

        The one place the Dagster integration makes a store: assets, checks, jobs and
        the IO manager all get theirs here.
        """
        return Store(self.resolved_uri, storage_options=self.storage_options,
                     index_keeper=rebuild_after_rollback)


class EmbedderResource(ConfigurableResource):
    """Which model turns texts into vectors, and how it runs.

    ``backend="hash"`` (or ``model="hash-bow[:DIM]"``) gives the deterministic
    feature-hashing embedder, for tests and quick demos with no weights.
    """

    model: str | None = Field(
        default=None,
        description=f"sentence-transformers name or path; empty: {DEFAULT_MODEL} (shipped offline)",
    )
    backend: str = Field(default="sentence-transformers",
                         description="sentence-transformers (= torch, PyTorch fp32) | onnx | "
                                     "onnx-int8 (dynamic int8, ~2x on a CPU) | openvino | "
                                     "openvino-bf16 (bf16 on AMX CPUs) | torch-fp16 "
                                     "(CUDA, batch-pipelined) | hash")
    device: str | None = Field(default=None, description="cpu, cuda, mps...; empty: automatic")
    batch_size: int = Field(default=64, description="texts per forward pass")
    dimension: int = Field(default=64, description="vector size of the hash backend only")
    ray_address: str | None = Field(
        default=None,
        description="embed on a Ray cluster: auto, HOST:PORT, ray://HOST:PORT or local:N (a "
                    "local cluster of N CPUs per run); workers write fragments that the run "
                    "commits as one version. Empty: embed in the Dagster process",
    )

    # The model is loaded once per process, not once per asset that asks for it.
    _embedder: Any = PrivateAttr(default=None)

    def get_embedder(self) -> Embedder:
        """The configured embedder (cached for the life of the resource)."""
        if self._embedder is None:
            self._embedder = self._build()
        return self._embedder

    def _build(self) -> Embedder:
        if self.backend not in BACKENDS:
            raise ValidationError(
                f"unknown embedder backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.backend == "hash" or (self.model or "").startswith("hash-bow"):
            model = self.model or ""
            # one parser for the hashing embedder's name: default_embedder refuses a bad DIM
            return default_embedder(model if ":" in model else f"hash-bow:{self.dimension}")
        if self.backend in ("onnx", "onnx-int8", "openvino", "openvino-bf16"):
            return default_embedder(self.model, backend=self.backend, batch_size=self.batch_size)
        if self.backend == "torch-fp16":  # the batch-pipelined CUDA embedder
            return default_embedder(self.model, backend=self.backend, device=self.device,
                                    batch_size=max(self.batch_size, 256))
        return SentenceTransformerEmbedder(model=self.model, device=self.device,
                                           batch_size=self.batch_size)
