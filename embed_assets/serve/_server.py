"""Running the app under uvicorn (the ``serve`` extra): imported only when a server starts,
so ``import embed_assets`` never loads a server library."""

from __future__ import annotations

import logging
import sys

from ..errors import ValidationError
from ._app import App, ServeConfig


def run(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8765,
        graceful_timeout: float = 10.0) -> None:
    """Serve until SIGINT/SIGTERM; then stop accepting, let in-flight requests finish
    (at most ``graceful_timeout`` seconds), stop the tag poller and exit."""
    try:
        import uvicorn
    except ImportError:  # the extra is not installed
        raise ValidationError("serving needs uvicorn: pip install 'embed_assets[serve]'") from None
    _logging(config.access_log)
    # A version loading in the poller thread holds the GIL in slices of the switch interval
    # (5 ms by default), each one a stall for every request on the event loop; 1 ms slices
    # bound that stall at the cost of more switches while (only while) a load runs.
    sys.setswitchinterval(0.001)
    app = App(config)
    uv = uvicorn.Config(app, host=host, port=port, lifespan="on", log_level="warning",
                        access_log=False,  # ours is structured, and never holds a header
                        timeout_graceful_shutdown=graceful_timeout,
                        loop=_loop(), http=_http(), server_header=False, date_header=False)
    uvicorn.Server(uv).run()


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
