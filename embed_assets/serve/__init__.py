"""Serving: the store behind a read-only HTTP API, pinned to a tag, hot-swapped.

``embed-assets serve`` (or :func:`serve`) keeps each served table's pinned version in
memory, follows the tag and swaps to a new version only once it is loaded and warmed;
:class:`Client` reads it from another process. The server library (uvicorn, the ``serve``
extra) is imported only by :func:`serve`, never by ``import embed_assets``. See
docs/serving.md.
"""

from ._app import App, ServeConfig
from ._client import Client, ServeError
from ._state import TableSpec


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8765,
          graceful_timeout: float = 10.0, workers: int = 1) -> None:
    """Run the server until SIGINT/SIGTERM (needs the ``serve`` extra); ``workers``
    processes share the port."""
    from ._server import run

    run(config, host=host, port=port, graceful_timeout=graceful_timeout, workers=workers)


__all__ = ["App", "Client", "ServeConfig", "ServeError", "TableSpec", "serve"]
