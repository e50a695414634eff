"""Running the app under uvicorn (the ``serve`` extra): imported only when a server starts,
so ``import embed_assets`` never loads a server library."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import sys
from typing import Any

from ..errors import ValidationError
from ._app import App, ServeConfig
from ._state import TableSpec

CONFIG_ENV = "EMBED_ASSETS_SERVE_CONFIG"


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8765,
        graceful_timeout: float = 10.0, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, let in-flight requests finish
    (at most ``graceful_timeout`` seconds), stop the tag poller and exit.

    ``workers`` > 1 runs that many processes on one listening socket (uvicorn's
    supervisor), each with its own snapshot and poller: one Python process answers on one
    core at a time. Each answer still names the version it was read from; during a swap two
    workers may briefly answer from different versions."""
    try:
        import uvicorn
    except ImportError:  # the extra is not installed
        raise ValidationError("serving needs uvicorn: pip install 'embed_assets[serve]'") from None
    config = dataclasses.replace(config, graceful_timeout=graceful_timeout,
                                 resp_reuse_port=workers > 1)
    common: dict[str, Any] = dict(
        host=host, port=port, lifespan="on", log_level="warning",
        access_log=False,  # ours is structured, and never holds a header
        timeout_graceful_shutdown=graceful_timeout, loop=_loop(), http=_http(),
        server_header=False, date_header=False)
    if workers > 1:
        # the workers are spawned and rebuild the app from the environment (the token
        # travels there as it came: from the environment or a file, never argv)
        os.environ[CONFIG_ENV] = json.dumps(dataclasses.asdict(config), default=_spec)
        # a worker answers the supervisor's ping only once it has imported the library:
        # seconds on a busy machine, where uvicorn's default 5 s kills and respawns it forever
        uvicorn.run("embed_assets.serve._server:app_from_env", factory=True, workers=workers,
                    timeout_worker_healthcheck=120, **common)
        return
    uvicorn.Server(uvicorn.Config(_build(config), **common)).run()


def _build(config: ServeConfig) -> App:
    _logging(config.access_log)
    # A version loading in the poller thread holds the GIL in slices of the switch interval
    # (5 ms by default), each one a stall for every request on the event loop; 1 ms slices
    # bound that stall at the cost of more switches while (only while) a load runs.
    sys.setswitchinterval(0.001)
    _one_blas_thread()
    return App(config)


def _one_blas_thread() -> None:
    """Single-threaded BLAS, OpenMP and torch kernels in a server process (parallelism is
    ``--workers``), called on the thread that answers requests.

    Warming a new version builds its in-memory IVF probe (an SVD of the whole matrix);
    with a BLAS thread per core that build took every core from the event loop: measured
    with 2 workers at load 30, a swap's warm-up ran for minutes and throughput fell 5x.
    The probe's int8 pre-scan runs in torch, whose intra-op pool spins a thread per core:
    measured at load 10 on 2 cores, a kNN of the bench's version took 7.5 ms p50 / 95 ms
    p99 with torch's 2 threads and 0.37 / 26 ms with one (a single query's scan gains
    nothing from a second core that 16 clients are already using)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for libraries loaded after this
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn, a dependency
    except ImportError:  # then the default threading stays
        pass
    else:
        threadpool_limits(limits=1, user_api="blas")
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


def _spec(o: Any) -> Any:
    if isinstance(o, TableSpec):
        return {"name": o.name, "ref": o.ref}
    raise TypeError(type(o).__name__)


def app_from_env() -> App:
    """The app of one worker process (``workers`` > 1)."""
    d = json.loads(os.environ[CONFIG_ENV])
    d["tables"] = [TableSpec(t["name"], t["ref"]) for t in d["tables"]]
    return _build(ServeConfig(**d))


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _http() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _logging(access: bool) -> None:
    """One JSON object per access-log line on stdout; operational messages on stderr."""
    root = logging.getLogger("embed_assets.serve")
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(h)
        root.setLevel(logging.INFO)
    acc = logging.getLogger("embed_assets.serve.access")
    acc.propagate = False
    if access and not acc.handlers:
        h = logging.StreamHandler(sys.stdout)
        h.setFormatter(logging.Formatter("%(message)s"))
        acc.addHandler(h)
        acc.setLevel(logging.INFO)
