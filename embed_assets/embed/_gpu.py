"""A PyTorch embedder that keeps an accelerator busy: length-sorted large batches,
tokenisation on a worker thread ahead of the forward pass, pinned host memory and
host-to-device copies on their own CUDA stream, optional fp16 weights.

Why: bare ``SentenceTransformer.encode`` on a fast card waits on tokenisation and Python
between batches (MiniLM ran about 6,700 sentences/s on an H100 in fp32 and fp16 alike,
while the bare BERT forward on length-sorted fp16 batches ran about 52,700/s). Here the
next batches are tokenised (the fast tokenizer's Rust batch call, which releases the GIL)
while the current one runs, and their tensors are already on the card when it finishes.

On a CPU the same code runs (no pinned memory, no streams): tests check it against
sentence-transformers there; ``benchmarks/gpu.py`` measures it on a CUDA card.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ValidationError


@dataclass
class FastTorchEmbedder:
    """A sentence-transformers model run batch-pipelined on ``device``.

    Parameters
    ----------
    model : str, optional
        Model name or path (``None``: the shipped all-MiniLM-L6-v2).
    device : str, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; ``None``: CUDA when available, else CPU.
    half : bool
        fp16 weights and activations (CUDA only). The name then ends in ``#torch-fp16``
        so fp16 vectors never mix with fp32 ones in a table.
    batch_size : int
        Texts per forward pass (large: the batches are length-sorted, so padding is small).
    prefetch : int
        Batches tokenised (and copied to the device) ahead of the one running.
    """

    model: str | None = None
    device: str | None = None
    half: bool = False
    batch_size: int = 512
    prefetch: int = 3
    normalize: bool = True
    _st: Any = field(default=None, init=False, repr=False)
    _device: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from ._embedders import SentenceTransformerEmbedder

        if self.batch_size < 1 or self.prefetch < 1:
            raise ValidationError("batch_size and prefetch must be >= 1")
        self._inner = SentenceTransformerEmbedder(model=self.model, device=self.device,
                                                  normalize=self.normalize)

    @property
    def name(self) -> str:
        return f"{self._inner.name}#torch-fp16" if self.half else self._inner.name

    @property
    def revision(self) -> str:
        rev = self._inner.revision
        return f"{rev}+fp16" if self.half else rev

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def _load(self) -> Any:
        if self._st is None:
            st = self._inner._load()
            self._device = st.device
            if self.half:
                if self._device.type != "cuda":
                    raise ValidationError(f"half=True needs a CUDA device, got {self._device}")
                st = st.half()
            self._st = st.eval()
        return self._st

    def _tokenize(self, texts: list[str]) -> dict[str, Any]:
        feats = self._st.tokenize(texts)
        if self._device.type == "cuda":
            # Pinned pages let the copy run asynchronously, overlapping the forward pass.
            feats = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in feats.items()}
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        st = self._load()
        n = len(texts)
        if not n:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # Longest first: the first batch allocates the most memory, later ones reuse it.
        order = np.argsort(-np.fromiter((len(t) for t in texts), np.int64, n), kind="stable")
        batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        cuda = self._device.type == "cuda"
        copy_stream = torch.cuda.Stream(self._device) if cuda else None
        out = torch.empty((n, self.dimension), dtype=torch.float32, device=self._device)
        pending: deque[tuple[np.ndarray, Future[dict[str, Any]]]] = deque()
        # One tokeniser thread: the fast tokenizer is not safe to call from two threads at
        # once, and its batch call is parallel inside Rust already.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool, \
                torch.inference_mode():
            it = iter(batches)

            def submit() -> None:
                idx = next(it, None)
                if idx is not None:
                    pending.append((idx, pool.submit(self._tokenize, [texts[j] for j in idx])))

            for _ in range(self.prefetch):
                submit()
            staged: tuple[np.ndarray, dict[str, Any], Any] | None = None
            while pending or staged is not None:
                if staged is None and pending:
                    staged = self._stage(*pending.popleft(), copy_stream)
                    submit()
                assert staged is not None
                idx, feats, ready = staged
                # Stage the next batch's copy before this forward pass, so they overlap.
                staged = self._stage(*pending.popleft(), copy_stream) if pending else None
                submit()
                if ready is not None:
                    compute = torch.cuda.current_stream(self._device)
                    compute.wait_event(ready)
                    for v in feats.values():  # allocated on the copy stream, used here
                        if hasattr(v, "record_stream"):
                            v.record_stream(compute)
                emb = st.forward(feats)["sentence_embedding"]
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb.float(), p=2, dim=1)
                out[torch.as_tensor(idx, device=self._device)] = emb.float()
        return out.cpu().numpy()

    def _stage(self, idx: np.ndarray, fut: Future[dict[str, Any]],
               copy_stream: Any) -> tuple[np.ndarray, dict[str, Any], Any]:
        """The batch's tensors on the device; on CUDA copied on the side stream, with an
        event the compute stream waits on."""
        import torch

        feats = fut.result()
        if copy_stream is None:
            return idx, feats, None
        with torch.cuda.stream(copy_stream):
            moved = {k: v.to(self._device, non_blocking=True) if hasattr(v, "to") else v
                     for k, v in feats.items()}
            ready = torch.cuda.Event()
            ready.record(copy_stream)
        return idx, moved, ready
