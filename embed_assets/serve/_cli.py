"""The ``embed-assets serve`` verb's options and command (kept here so cli.py only
registers it)."""

from __future__ import annotations

import argparse
import os

from ..errors import ValidationError
from ..store import default_store_uri
from ._app import ServeConfig
from ._state import TableSpec

TOKEN_ENV = "EMBED_ASSETS_SERVE_TOKEN"
EXAMPLE = ("embed-assets serve pkgs@prod --port 8765 --poll 1\n"
           "  EMBED_ASSETS_SERVE_TOKEN=... embed-assets serve pkgs@prod docs@7 --host 0.0.0.0")


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("tables", nargs="+", metavar="NAME[@TAG|@N]",
                    help="tables to serve, each pinned to a tag (default prod, followed) or a version")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sp.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                    help="how often pinned tags are read; a moved tag is served within this "
                         "plus the new version's load time (default 1; 0: never)")
    sp.add_argument("--token-file", default=None, metavar="FILE",
                    help=f"require this bearer token (the file's first line); also ${TOKEN_ENV}. "
                         "Never on the command line, where other users' ps shows it")
    sp.add_argument("--text", action="store_true",
                    help="load each table's model so search accepts text (needs the model here)")
    sp.add_argument("--max-k", type=int, default=1000, help="largest k a search may ask (default 1000)")
    sp.add_argument("--max-keys", type=int, default=10_000,
                    help="most keys one lookup may ask (default 10000)")
    sp.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                    help="largest request body (default 1 MiB)")
    sp.add_argument("--keep-versions", type=int, default=2, metavar="N",
                    help="loaded versions kept per table, so rolling back is instant (default 2)")
    sp.add_argument("--workers", type=int, default=1, metavar="N",
                    help="server processes sharing the port, each holding its own copy of the "
                         "pinned versions (default 1; about one per core)")
    sp.add_argument("--resp-port", type=int, default=None, metavar="PORT",
                    help="also answer key lookups over the Redis protocol on this port "
                         "(EA.GET table key...; AUTH with the token when one is set)")
    sp.add_argument("--no-access-log", action="store_true",
                    help="no JSON access-log line per request on stdout")


def config_from(args: argparse.Namespace) -> ServeConfig:
    token = os.environ.get(TOKEN_ENV) or None
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.readline().strip() or None
        except OSError as exc:
            raise ValidationError(f"cannot read --token-file: {exc.strerror}") from None
        if token is None:
            raise ValidationError("--token-file is empty")
    for n, v in (("--max-k", args.max_k), ("--max-keys", args.max_keys), ("--max-body", args.max_body),
                 ("--keep-versions", args.keep_versions), ("--workers", args.workers)):
        if v < 1:
            raise ValidationError(f"{n} must be at least 1")
    if args.resp_port is not None and not 0 < args.resp_port < 65536:
        raise ValidationError("--resp-port must be a port number from 1 to 65535")
    if args.resp_port is not None and args.resp_port == args.port:
        raise ValidationError("--resp-port must differ from --port")
    if args.poll < 0:
        raise ValidationError("--poll must be 0 or more seconds")
    if not 0 <= args.port <= 65535:  # else the server kept running, listening nowhere
        raise ValidationError(f"--port must be 0-65535, got {args.port}")
    return ServeConfig(store=args.store or default_store_uri(),
                       tables=[TableSpec.parse(t) for t in args.tables], poll_interval=args.poll,
                       token=token, max_body_bytes=args.max_body, max_k=args.max_k,
                       max_keys=args.max_keys, text=args.text, access_log=not args.no_access_log,
                       keep_versions=args.keep_versions, resp_port=args.resp_port,
                       resp_host=args.host)


def command(args: argparse.Namespace) -> int:
    from . import serve

    serve(config_from(args), host=args.host, port=args.port, workers=args.workers)
    return 0
