"""What an index build decided and measured, and the build parameters it starts from."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

INDEX_TYPES = ("IVF_PQ", "IVF_HNSW_SQ")


@dataclass
class IndexReport:
    """What :func:`build_index` decided and measured."""

    table: str
    kind: str  # "ann" or "exact"
    target_recall: float
    recall: float
    k: int
    rows: int
    index_type: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    tune_seconds: float = 0.0
    index_bytes: int = 0
    queries: int = 0
    p50_ms: float | None = None
    lance_recall: float | None = None
    lance_p50_ms: float | None = None
    reason: str = ""
    version: int | None = None
    trained_rows: int = 0
    centroid_distance: float | None = None
    built_at: str = ""
    # The version the build read and tuned on, and, when a write landed during the build,
    # the version its report was recorded at (whose rows are other ones).
    built_from: int | None = None
    moved_to: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.kind == "exact":
            return f"{self.table}: exact search ({self.reason}); recall 1.0"
        lance = (f"; Lance path (filters) recall {self.lance_recall:.3f} p50 "
                 f"{self.lance_p50_ms:.2f} ms" if self.lance_recall is not None else "")
        path = (f"HNSW graph (ef {self.params['graph_ef']}) over {self.index_type}"
                if "graph_ef" in self.params else
                f"{self.index_type} probe" if "probe_nprobes" in self.params else self.index_type)
        return (f"{self.table}: {path} recall@{self.k} {self.recall:.3f} "
                f"(target {self.target_recall}) p50 {self.p50_ms or 0:.2f} ms{lance}, built in "
                f"{self.build_seconds:.1f}s + tuned in {self.tune_seconds:.1f}s, "
                f"{self.index_bytes / 1e6:.1f} MB, params {self.params}")


def default_params(rows: int, dim: int, index_type: str = "IVF_PQ") -> dict[str, Any]:
    """Index-build parameters from row count and dimension (search params are tuned later)."""
    if index_type == "IVF_HNSW_SQ":
        # Each IVF partition holds an HNSW graph; fewer, larger partitions keep graphs useful.
        return {"num_partitions": max(1, min(256, rows // 50_000))}
    partitions = max(1, min(4096, round(math.sqrt(rows))))
    sub = next((dim // d for d in (4, 8, 2, 16) if dim % d == 0 and dim // d >= 1), 1)
    # Lance trains IVF and PQ k-means on 256 samples per centroid for up to 50 iterations:
    # at 20k real MiniLM rows that was 22 of 35 CPU s of a whole build_index, to codes that
    # serve only Lance's own (filtered) path; the graph and the probe read exact vectors.
    # 64 samples and 10 iterations: the tuned paths still met 0.95 (Lance path 0.968-0.982
    # against 0.986), and the build took half the CPU (benchmarks/RESULTS.md, issue 29).
    # The tuner measures recall on held-out queries either way: a coarser codebook costs
    # probes, never the promise. The same at 1M rows (it was 128 samples and 20 iterations
    # from 500k, 66 s of Lance training at 1M x 384), where a build has to stay within 3x
    # of FAISS IVF-PQ's train+add (issue 29).
    return {"num_partitions": partitions, "num_sub_vectors": sub, "num_bits": 8,
            "sample_rate": 64, "max_iters": 10}
