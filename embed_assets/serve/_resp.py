"""Key lookups over the Redis protocol (RESP2), beside the HTTP API: the hot path of the
"Redis case" on the wire every language already has a client for.

Why a second transport: measured on loopback (benchmarks/RESULTS.md, serving), a 1-key
lookup through uvicorn costs ~93 us a round trip against Redis's ~16 us, of which the
lookup itself is ~1 us and the ASGI machinery (a task, a scope, message dicts per request)
most of the rest; with 16 clients on one event loop that cost is the queue, and the p99
of a 1-key lookup was 7.4x Redis ``GET``. A command here is parsed and answered inside
the transport's ``data_received`` callback (uvloop): no task, no ASGI, no HTTP parsing.

Commands (``redis-cli -p PORT``, or any client's ``execute_command``)::

    AUTH token                    when the server has a token, before anything else
    PING                          +PONG
    EA.GET table key [key ...]    *n+1: :version, then each key's vector as little-endian
                                  float32 bytes ($-1 where the key is not stored)
    EA.KNN table k vector         unfiltered kNN of a query given as little-endian float32
                                  bytes: *2n+1: :version, then key, distance for each of
                                  the n <= k nearest rows, nearest first (a distance as
                                  decimal text, Redis's way with scores)
    EA.KNNKEY table k key         the same for a stored key's own vector, the key left out
                                  ("more like this")
    QUIT                          +OK, then the connection closes

Every answer starts with the version it was read from, and all of it comes from that one
snapshot. Read-only, like the HTTP API; no other Redis command exists here. Errors are
``-ERR ...`` lines, with the HTTP API's messages for a bad ``k``, dimension or value; a
malformed or oversized command closes the connection.

kNN commands that arrive together, from any connections and over HTTP too, are answered
by one batched search (``_batch.Batcher``: one hnswlib ``knn_query`` of all their queries
where the version has its HNSW graph); a connection's later commands wait for its
answer, so answers keep the order of the commands.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from ..errors import ValidationError
from ._snapshot import check_k

if TYPE_CHECKING:
    from ._batch import Batcher
    from ._metrics import Metrics
    from ._snapshot import Snapshot
    from ._state import PinnedTable


class _Limits(Protocol):
    @property
    def max_keys(self) -> int: ...
    @property
    def max_k(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def access_log(self) -> bool: ...


class App(Protocol):
    """What this listener reads of the HTTP app that starts it (``_app.App``), named here
    so that the two modules do not import each other."""

    @property
    def config(self) -> _Limits: ...
    @property
    def tables(self) -> dict[str, PinnedTable]: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def _token(self) -> bytes | None: ...
    @property
    def _batcher(self) -> Batcher: ...

log = logging.getLogger("embed_assets.serve")
access_log = logging.getLogger("embed_assets.serve.access")

# A table name, a key, or a query vector (EA.KNN: 16,384 float32 at most); longer is
# refused before it is buffered.
MAX_ARG_BYTES = 65_536
_PONG = b"+PONG\r\n"
_OK = b"+OK\r\n"
_NULL = b"$-1\r\n"
_KNN = (b"EA.KNN", b"EA.KNNKEY")


class _Pending:
    """command()'s answer for a kNN handed to the batcher: it is written when answered."""


PENDING = _Pending()


class ProtocolError(Exception):
    pass


def parse(buf: bytes | bytearray, pos: int, max_args: int) -> tuple[list[bytes], int] | None:
    """One command (a RESP array of bulk strings) from ``buf`` at ``pos``: (args, end), or
    None when it is not all here yet. Lengths are checked before anything is buffered for
    them, so a client cannot make the server hold more than one bounded command."""
    if buf[pos:pos + 1] != b"*":
        raise ProtocolError("expected a command array (RESP '*')")
    e = buf.find(b"\r\n", pos)
    if e < 0:
        if len(buf) - pos > 32:
            raise ProtocolError("bad array header")
        return None
    try:
        n = int(buf[pos + 1:e])
    except ValueError:
        raise ProtocolError("bad array length") from None
    if not 1 <= n <= max_args:
        raise ProtocolError(f"a command of {n} arguments; at most {max_args}")
    p = e + 2
    fast = _split(buf, p, n)
    if fast is not None:
        return fast
    args: list[bytes] = []
    for _ in range(n):
        if p >= len(buf):
            return None
        if buf[p:p + 1] != b"$":
            raise ProtocolError("expected a bulk string (RESP '$')")
        e = buf.find(b"\r\n", p)
        if e < 0:
            if len(buf) - p > 32:
                raise ProtocolError("bad bulk header")
            return None
        try:
            size = int(buf[p + 1:e])
        except ValueError:
            raise ProtocolError("bad bulk length") from None
        if not 0 <= size <= MAX_ARG_BYTES:
            raise ProtocolError(f"an argument of {size} bytes; at most {MAX_ARG_BYTES}")
        start = e + 2
        end = start + size
        if end + 2 > len(buf):
            return None
        if buf[end:end + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated")
        args.append(bytes(buf[start:end]))
        p = end + 2
    return args, p


def _split(buf: bytes | bytearray, p: int, n: int) -> tuple[list[bytes], int] | None:
    """The ``n`` bulk strings at ``p`` by one split on CRLF, when that reads them exactly
    (every length as declared and within bounds); None sends the command to the parser
    above (a key holding CRLF, a command not all here, a malformed one). Measured: 100
    keys in ~15 us against ~58 us argument by argument."""
    toks = bytes(buf[p:]).split(b"\r\n", 2 * n)
    if len(toks) != 2 * n + 1:
        return None
    heads, args = toks[0:2 * n:2], toks[1:2 * n:2]
    try:
        if [int(h[1:]) for h in heads] != [len(a) for a in args]:
            return None
    except ValueError:
        return None
    if any(h[:1] != b"$" for h in heads) or max(map(len, args)) > MAX_ARG_BYTES:
        return None
    return args, len(buf) - len(toks[-1])


def _error(msg: str) -> bytes:
    return b"-ERR " + msg.replace("\r", " ").replace("\n", " ").encode()[:300] + b"\r\n"


class RespConnection(asyncio.Protocol):
    def __init__(self, server: RespServer) -> None:
        self.server = server
        self.app = server.app
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.authed = server.app._token is None
        self.peer = ""
        self.waiting = False  # a kNN of this connection is in the batcher

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    # A client that pipelines commands and never reads its answers must not grow the
    # write buffer without bound: stop reading from it until the buffer drains (asyncio's
    # flow control; uvloop's transport calls these at its high/low water marks).
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    @property
    def idle(self) -> bool:
        return not self.buf and not self.waiting

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiting:  # a kNN is in the batcher: later commands wait for its answer
            self._bound([])
            return
        self._serve()

    def _serve(self) -> None:
        """Answer the complete commands in the buffer, in order, until one is handed to
        the batcher (the rest then waits for :meth:`_answered`)."""
        buf = self.buf
        app = self.app
        max_args = app.config.max_keys + 2
        pos = 0
        out: list[bytes] = []
        try:
            while pos < len(buf):
                got = parse(buf, pos, max_args)
                if got is None:
                    break
                args, pos = got
                reply = self.command(args)
                if reply is None:  # QUIT
                    out.append(_OK)
                    self._flush(out)
                    self.transport.close()  # type: ignore[union-attr]
                    return
                if reply is PENDING:
                    self.waiting = True
                    break
                out.append(cast(bytes, reply))
        except ProtocolError as e:
            out.append(_error(f"protocol error: {e}"))
            self._flush(out)
            self.transport.close()  # type: ignore[union-attr]
            return
        del buf[:pos]
        if not self._bound(out):
            return
        self._flush(out)
        if self.server.closing and not buf and not self.waiting:
            self.transport.close()  # type: ignore[union-attr]

    def _bound(self, out: list[bytes]) -> bool:
        """Close a connection whose unanswered bytes exceed the body limit."""
        limit = self.app.config.max_body_bytes
        if len(self.buf) <= limit:
            return True
        out.append(_error(f"command over {limit} bytes"))
        self._flush(out)
        self.transport.close()  # type: ignore[union-attr]
        return False

    def _answered(self, reply: bytes) -> None:
        """A batched kNN's answer: written, then the commands that waited behind it."""
        self.waiting = False
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(reply)
        if self.buf:
            self._serve()
        elif self.server.closing:
            t.close()

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]

    def command(self, args: list[bytes]) -> bytes | _Pending | None:
        t0 = time.perf_counter()
        name = args[0].upper()
        status, table, version = 200, None, None
        reply: bytes | _Pending
        if name == b"EA.GET" and self.authed:
            if len(args) < 3:
                status, reply = 400, _error("EA.GET table key [key ...]")
            else:
                table = args[1].decode("utf-8", "replace")
                status, reply, version = self.server.lookup(table, args[2:])
        elif name in _KNN and self.authed:
            if len(args) != 4:
                status, reply = 400, _error(f"{name.decode()} table k "
                                            f"{'vector' if name == b'EA.KNN' else 'key'}")
            else:
                table = args[1].decode("utf-8", "replace")
                status, reply, version = self.server.knn(self, name == b"EA.KNNKEY", table,
                                                         args[2], args[3], t0)
                if reply is PENDING:
                    return reply
        elif name == b"PING" and self.authed:
            reply = _PONG
        elif name == b"AUTH":
            token = self.app._token
            given = args[-1] if len(args) in (2, 3) else b""
            if token is None:
                status, reply = 400, _error("this server has no token; AUTH is not needed")
            elif hmac.compare_digest(given, token):
                self.authed, reply = True, _OK
            else:
                status, reply = 401, _error("wrong token")  # never echoes what was given
        elif name == b"QUIT":
            return None
        elif not self.authed:
            status, reply = 401, b"-NOAUTH Authentication required.\r\n"
        else:
            status, reply = 400, _error(f"unknown command {name[:20].decode('ascii', 'replace')!r}; "
                                        "this server answers AUTH, PING, EA.GET, EA.KNN, "
                                        "EA.KNNKEY, QUIT")
        assert isinstance(reply, bytes)
        self.record(name, status, t0, table, version, len(args), len(reply))
        return reply

    def record(self, name: bytes, status: int, t0: float, table: str | None, version: int | None,
               nargs: int, nbytes: int) -> None:
        """The command's metrics and access log line (at its answer)."""
        dt = time.perf_counter() - t0
        endpoint = _ENDPOINTS.get(name, "resp")
        self.app.metrics.observe(endpoint, status, dt)
        if self.app.config.access_log:
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "proto": "resp", "command": name[:20].decode("ascii", "replace"),
                "endpoint": endpoint, "status": status, "ms": round(dt * 1e3, 3), "table": table,
                "version": version, "keys": max(0, nargs - 2) if name == b"EA.GET" else None,
                "bytes": nbytes, "client": self.peer}))


_ENDPOINTS = {b"EA.GET": "resp_get", b"EA.KNN": "resp_knn", b"EA.KNNKEY": "resp_knn"}


class RespServer:
    """The listener, started and stopped with the app (one per worker process: with
    several workers each binds the port with SO_REUSEPORT and the kernel spreads
    connections)."""

    def __init__(self, app: App, host: str, port: int, reuse_port: bool = False) -> None:
        self.app = app
        self.host, self.port, self.reuse_port = host, port, reuse_port
        self.connections: set[RespConnection] = set()
        self.closing = False
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: RespConnection(self), self.host, self.port,
                                                reuse_port=self.reuse_port or None)
        log.info("RESP lookups on %s:%s", self.host, self.port)

    def stop_accepting(self) -> None:
        """No new connection; idle ones close now, one with a command half received
        closes once it is answered (see :meth:`drain`)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            if c.idle and c.transport is not None:
                c.transport.close()

    async def drain(self, timeout: float) -> None:
        self.stop_accepting()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.abort()

    def lookup(self, table: str, keys: list[bytes]) -> tuple[int, bytes, int | None]:
        app = self.app
        t = app.tables.get(table)
        if t is None:
            return 404, _error(f"table {table[:60]!r} is not served here; served: "
                               f"{', '.join(app.tables)}"), None
        snap = t.current  # taken once: every vector of the answer comes from this version
        if snap is None:
            return 503, _error(f"table {table!r} is still loading"), None
        if len(keys) > app.config.max_keys:
            return 400, _error(f"{len(keys)} keys asked; at most {app.config.max_keys} per command"), None
        rows_of = snap.rows_of
        framed = snap.resp_rows
        assert framed is not None
        if snap.str_keys:
            rows = [rows_of.get(k.decode("utf-8", "replace")) for k in keys]
        else:
            rows = [rows_of.get(_int(k)) for k in keys]
        head = b"*%d\r\n:%d\r\n" % (len(keys) + 1, snap.version)
        if len(rows) == 1 and rows[0] is not None:  # a row view, not a take (~1 us of ~6)
            return 200, head + framed[rows[0]].tobytes(), snap.version
        if None not in rows:  # every key stored: one take of the framed rows
            return 200, head + framed[cast(list[int], rows)].tobytes(), snap.version
        parts = [head]
        for r in rows:
            parts.append(_NULL if r is None else framed[r].tobytes())
        return 200, b"".join(parts), snap.version

    def knn(self, conn: RespConnection, by_key: bool, table: str, k_arg: bytes, q_arg: bytes,
            t0: float) -> tuple[int, bytes | _Pending, int | None]:
        """EA.KNN / EA.KNNKEY: checked as the HTTP API checks a search, then answered at
        once (an error, or a version without a batched path) or handed to the batcher."""
        app = self.app
        t = app.tables.get(table)
        if t is None:
            return 404, _error(f"table {table[:60]!r} is not served here; served: "
                               f"{', '.join(app.tables)}"), None
        snap = t.current  # taken once: the whole answer comes from this version
        if snap is None:
            return 503, _error(f"table {table!r} is still loading"), None
        exclude = -1
        try:
            k = _int(k_arg)
            k = check_k(k if k is not None else k_arg.decode("utf-8", "replace"), app.config.max_k)
            if by_key:
                key: Any = q_arg.decode("utf-8", "replace") if snap.str_keys else _int(q_arg)
                row = snap.rows_of.get(key)
                if row is None:
                    return 404, _error(f"key {q_arg[:60].decode('utf-8', 'replace')!r} is not in "
                                       f"version {snap.version} of {table!r}"), snap.version
                q, exclude = snap.matrix[row], row
            else:
                q = snap.query_vector(q_arg)
            snap.check_probe_query(q)
            if not snap.batched_knn:  # exact, or Lance: the store's search, inline
                hits = snap.search(q, k + (exclude >= 0), None, [], False)
                rows = np.asarray([snap.rows_of[x] for x in hits.column(snap.meta.key).to_pylist()],
                                  np.int64)
                dist = hits.column("distance").to_numpy()
                return 200, knn_reply(snap, rows, dist, k, exclude, raw=True), snap.version
        except ValidationError as e:
            return 400, _error(str(e)), snap.version
        name = b"EA.KNNKEY" if by_key else b"EA.KNN"

        def done(got: Any, exc: BaseException | None) -> None:
            if exc is not None:
                log.error("batched kNN failed: %s", type(exc).__name__)
                status, reply = 500, _error(f"unexpected {type(exc).__name__}")
            else:
                status, reply = 200, knn_reply(snap, got[0], got[1], k, exclude)
            conn.record(name, status, t0, table, snap.version, 4, len(reply))
            conn._answered(reply)

        app._batcher.submit(snap, q, k + (exclude >= 0), done)
        return 200, PENDING, snap.version


def knn_reply(snap: Snapshot, rows: np.ndarray, dist: np.ndarray, k: int, exclude: int = -1,
              raw: bool = False) -> bytes:
    """``*2n+1 :version key distance ...``: ``rows`` nearest first (``exclude``, a row, left
    out), distances in the store's conventions (``raw``: already as the store answers,
    else as the in-memory paths return them: squared for l2)."""
    if exclude >= 0:
        keep = rows != exclude
        rows, dist = rows[keep][:k], dist[keep][:k]
    if not raw:
        dist = snap.store_distances(dist)
    frames = snap.resp_keys
    assert frames is not None
    parts = [b"*%d\r\n:%d\r\n" % (2 * len(rows) + 1, snap.version)]
    for r, d in zip(rows.tolist(), dist.tolist(), strict=True):
        text = b"%.7g" % d
        parts.append(frames[r])
        parts.append(b"$%d\r\n%s\r\n" % (len(text), text))
    return b"".join(parts)


def _int(k: bytes) -> int | None:
    try:
        return int(k)
    except ValueError:
        return None
