"""Prometheus text-format metrics, kept by hand: four families do not justify a dependency,
and a counter bump here is a dict update (the request path counts every request)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.hist: dict[str, list[int]] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.swaps: dict[str, int] = defaultdict(int)
        self.knn_batches = 0  # batched probe scans, and the queries they answered
        self.knn_batched = 0
        self._lock = threading.Lock()  # swaps come from the poller thread

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        h = self.hist.get(endpoint)
        if h is None:
            h = self.hist[endpoint] = [0] * (len(BUCKETS) + 1)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[endpoint] += seconds

    def swapped(self, table: str) -> None:
        with self._lock:
            self.swaps[table] += 1

    def render(self, versions: dict[str, tuple[str, int | None, int]], poll_errors: int) -> str:
        """``versions``: table -> (pinned ref, version served or None, rows)."""
        out = ["# HELP embed_assets_requests_total Requests answered, by endpoint and status.",
               "# TYPE embed_assets_requests_total counter"]
        for (ep, st), n in sorted(self.requests.items()):
            out.append(f'embed_assets_requests_total{{endpoint="{ep}",status="{st}"}} {n}')
        out += ["# HELP embed_assets_request_seconds Time to answer a request, by endpoint.",
                "# TYPE embed_assets_request_seconds histogram"]
        for ep, h in sorted(self.hist.items()):
            acc = 0
            for le, n in zip([*map(str, BUCKETS), "+Inf"], h, strict=True):
                acc += n
                out.append(f'embed_assets_request_seconds_bucket{{endpoint="{ep}",le="{le}"}} {acc}')
            out.append(f'embed_assets_request_seconds_sum{{endpoint="{ep}"}} {self.sums[ep]:.6f}')
            out.append(f'embed_assets_request_seconds_count{{endpoint="{ep}"}} {acc}')
        out += ["# HELP embed_assets_served_version The table version answers are read from.",
                "# TYPE embed_assets_served_version gauge"]
        for t, (ref, v, _) in sorted(versions.items()):
            out.append(f'embed_assets_served_version{{table="{t}",pinned="{ref}"}} '
                       f'{v if v is not None else "NaN"}')
        out += ["# HELP embed_assets_served_rows Rows of the version served.",
                "# TYPE embed_assets_served_rows gauge"]
        for t, (_, _, rows) in sorted(versions.items()):
            out.append(f'embed_assets_served_rows{{table="{t}"}} {rows}')
        out += ["# HELP embed_assets_swaps_total Switches to another version (tag moves, rollbacks).",
                "# TYPE embed_assets_swaps_total counter"]
        with self._lock:
            swaps = dict(self.swaps)
        for t in sorted(versions):
            out.append(f'embed_assets_swaps_total{{table="{t}"}} {swaps.get(t, 0)}')
        out += ["# HELP embed_assets_knn_batches_total Batched probe scans answering unfiltered kNN.",
                "# TYPE embed_assets_knn_batches_total counter",
                f"embed_assets_knn_batches_total {self.knn_batches}",
                "# HELP embed_assets_knn_batched_queries_total Queries those scans answered.",
                "# TYPE embed_assets_knn_batched_queries_total counter",
                f"embed_assets_knn_batched_queries_total {self.knn_batched}"]
        out += ["# HELP embed_assets_tag_poll_errors_total Tag polls that failed (serving went on).",
                "# TYPE embed_assets_tag_poll_errors_total counter",
                f"embed_assets_tag_poll_errors_total {poll_errors}"]
        return "\n".join(out) + "\n"
