"""The read-only HTTP API, as a bare ASGI application.

Bare ASGI rather than a framework: measured on loopback (docs/serving.md) a framework's
routing and request objects cost more per request than a 1-key lookup itself, and the API
is eight routes. Handlers run on the event loop thread: every one is a short CPU-bound
read of an in-memory snapshot, and a thread hop would cost more than most of them take.

Routes (``{t}`` is a served table)::

    GET  /health                  the process is up
    GET  /ready                   200 once every table's pinned version is loaded, else 503
    GET  /metrics                 Prometheus text
    GET  /v1/tables               served tables, their pins and versions
    GET  /v1/tables/{t}           one table
    POST /v1/tables/{t}/get       {"keys": [...], "columns": [...], "vectors": true}
    POST /v1/tables/{t}/search    {"vector"|"key"|"text": ..., "k": 10, "where": {...},
                                   "columns": [...], "vectors": false}

Answers are JSON, or Arrow IPC (stream) when the request's Accept header asks for
``application/vnd.apache.arrow.stream``. Every answer about a table names the version it
was read from: header ``x-embed-assets-version``, and ``version`` in JSON or the Arrow
schema metadata ``embed_assets.version``.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import EmbedAssetsError, ValidationError, describe
from ..store import Store
from ._batch import Batcher
from ._metrics import Metrics
from ._snapshot import Snapshot, check_k
from ._state import PinnedTable, Poller, TableSpec

ARROW = "application/vnd.apache.arrow.stream"
VERSION_HEADER = b"x-embed-assets-version"
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
access_log = logging.getLogger("embed_assets.serve.access")
log = logging.getLogger("embed_assets.serve")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ServeConfig:
    """What a server serves and its limits."""

    store: str
    tables: list[TableSpec]
    poll_interval: float = 1.0  # seconds between reads of the pinned tags (0: never)
    token: str | None = None  # bearer token; None: no authentication
    max_body_bytes: int = 1 << 20
    max_k: int = 1000
    max_keys: int = 10_000
    text: bool = False  # load each table's model for text queries
    access_log: bool = True
    keep_versions: int = 2  # loaded versions held per table (a rollback swaps instantly)
    storage_options: dict[str, str] | None = None
    resp_port: int | None = None  # key lookups over the Redis protocol too (see _resp)
    resp_host: str = "127.0.0.1"
    resp_reuse_port: bool = False  # several worker processes bind the RESP port
    graceful_timeout: float = 10.0


class HTTPError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class App:
    """The ASGI application. Tables load in a background thread at startup, so /health
    answers at once and /ready turns 200 when every pinned version is in memory."""

    def __init__(self, config: ServeConfig) -> None:
        if not config.tables:
            raise ValidationError("serve at least one table")
        names = [t.name for t in config.tables]
        if len(set(names)) != len(names):
            raise ValidationError("a table is listed twice")
        self.config = config
        self.store = Store(config.store, storage_options=config.storage_options)
        self.metrics = Metrics()
        self.tables: dict[str, PinnedTable] = {}

        def on_swap(t: Any, old: Any, new: Any) -> None:
            if old is not None:
                self.metrics.swapped(t.name)

        for spec in config.tables:
            self.tables[spec.name] = PinnedTable(
                self.store, spec, text=config.text, keep=config.keep_versions, on_swap=on_swap,
                resp=config.resp_port is not None)
        self.poller = Poller(list(self.tables.values()), config.poll_interval)
        self._token = config.token.encode() if config.token else None
        self._batcher = Batcher(self.metrics)
        self._loader: threading.Thread | None = None
        self.load_error: str | None = None
        self.resp: Any = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._loader = threading.Thread(target=self._load_all, name="embed-assets-load", daemon=True)
        self._loader.start()

    def _load_all(self) -> None:
        for t in self.tables.values():
            while True:
                try:
                    t.sync()
                    break
                except (EmbedAssetsError, OSError, ValueError) as exc:
                    # a pin that names nothing yet (the tag is made later) keeps /ready at
                    # 503 and is retried; it is an operator's error, logged each time
                    self.load_error = f"{t.name}@{t.spec.ref}: {describe(exc)}"
                    log.warning("cannot load %s", self.load_error)
                    time.sleep(max(self.config.poll_interval, 0.5))
        self.load_error = None
        self.poller.start()

    def stop(self) -> None:
        self.poller.stop()
        log.info("shut down: in-flight requests answered, tag poller stopped")

    @property
    def ready(self) -> bool:
        return all(t.current is not None for t in self.tables.values())

    # -- ASGI ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        endpoint, table, version = "unknown", None, None
        try:
            endpoint, handler, table = self._route(scope["method"], scope["path"])
            if endpoint not in ("health", "ready"):
                self._authorise(scope)
            body = await self._body(scope, receive) if scope["method"] == "POST" else b""
            got = handler(scope, body, table)
            if inspect.isawaitable(got):  # an unfiltered kNN, answered in a batch
                got = await got
            status, headers, payload, version = got
        except HTTPError as e:
            status, headers, payload = e.status, [(b"content-type", b"application/json")], \
                json.dumps({"error": {"type": e.kind, "message": e.message}}).encode()
            if e.status == 401:
                headers.append((b"www-authenticate", b'Bearer realm="embed-assets"'))
        except EmbedAssetsError as e:  # a store error while reading: the request cannot be answered
            status, headers, payload = 500, [(b"content-type", b"application/json")], \
                json.dumps({"error": {"type": type(e).__name__, "message": describe(e)}}).encode()
        except Exception as e:  # never a traceback (nor anything it might hold) to the caller
            log.exception("unexpected error answering %s %s", scope["method"], scope["path"])
            status, headers, payload = 500, [(b"content-type", b"application/json")], \
                json.dumps({"error": {"type": "InternalError",
                                      "message": f"unexpected {type(e).__name__}"}}).encode()
        if version is not None:
            headers.append((VERSION_HEADER, str(version).encode()))
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        dt = time.perf_counter() - t0
        self.metrics.observe(endpoint, status, dt)
        if self.config.access_log:
            # path only: never a query string or a header (the token travels in one)
            client = scope.get("client")
            access_log.info(json.dumps({
                "ts": round(time.time(), 3), "method": scope["method"], "path": scope["path"][:200],
                "endpoint": endpoint, "status": status, "ms": round(dt * 1e3, 3),
                "table": table, "version": version, "bytes": len(payload),
                "client": f"{client[0]}:{client[1]}" if client else None}))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self._start_resp()
                except OSError as exc:
                    await send({"type": "lifespan.startup.failed",
                                "message": f"cannot listen for RESP on port {self.config.resp_port}: "
                                           f"{exc.strerror}"})
                    return
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.resp is not None:
                    await self.resp.drain(self.config.graceful_timeout)
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_resp(self) -> None:
        if self.config.resp_port is None:
            return
        from ._resp import RespServer

        self.resp = RespServer(self, self.config.resp_host, self.config.resp_port,
                               self.config.resp_reuse_port)
        await self.resp.start()
        # uvicorn stops accepting HTTP on SIGINT/SIGTERM and tells the app only after its
        # connections drained (lifespan shutdown): chain its handlers so the RESP listener
        # stops accepting at the signal too, not seconds later
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            prev = signal.getsignal(sig)
            if not callable(prev):
                continue

            def chained(signum: int, frame: Any, prev: Any = prev) -> None:
                loop.call_soon_threadsafe(self.resp.stop_accepting)
                prev(signum, frame)

            try:
                signal.signal(sig, chained)
            except ValueError:  # not the main thread (an embedding server): its own handlers
                return

    def _route(self, method: str, path: str) -> tuple[str, Any, str | None]:
        simple = {"/health": ("health", self._health), "/ready": ("ready", self._ready),
                  "/metrics": ("metrics", self._metrics), "/v1/tables": ("tables", self._list)}
        if path in simple:
            ep, h = simple[path]
            _method(method, "GET")
            return ep, h, None
        if path.startswith("/v1/tables/"):
            parts = path[len("/v1/tables/"):].split("/")
            name = parts[0]
            if len(parts) == 1:
                _method(method, "GET")
                return "table", self._info, self._table(name)
            if len(parts) == 2 and parts[1] in ("get", "search"):
                _method(method, "POST")
                ep = parts[1]
                return ep, self._get if ep == "get" else self._search, self._table(name)
        raise HTTPError(404, "NotFound", f"no route {path[:100]!r}")

    def _table(self, name: str) -> str:
        if name not in self.tables:
            raise HTTPError(404, "TableNotFoundError",
                            f"table {name[:60]!r} is not served here; served: {', '.join(self.tables)}")
        return name

    def _authorise(self, scope: Scope) -> None:
        if self._token is None:
            return
        for k, v in scope["headers"]:
            if k == b"authorization":
                scheme, _, given = v.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token):
                    return
                break
        raise HTTPError(401, "Unauthorized", "missing or wrong bearer token")

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.config.max_body_bytes
        for k, v in scope["headers"]:
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                raise HTTPError(413, "PayloadTooLarge", f"request body of {int(v)} bytes; at most {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise HTTPError(400, "BadRequest", "client went away")
            b = msg.get("body", b"")
            size += len(b)
            if size > limit:
                raise HTTPError(413, "PayloadTooLarge", f"request body over {limit} bytes")
            chunks.append(b)
            if not msg.get("more_body"):
                return b"".join(chunks)

    # -- handlers: (scope, body, table) -> (status, headers, payload, version) -----------
    def _health(self, scope: Scope, body: bytes, _: str | None) -> Any:
        return 200, [(b"content-type", b"application/json")], b'{"status":"ok"}', None

    def _ready(self, scope: Scope, body: bytes, _: str | None) -> Any:
        info = {n: t.current.version if t.current else None for n, t in self.tables.items()}
        ok = self.ready
        doc: dict[str, Any] = {"ready": ok, "versions": info}
        if not ok and self.load_error:
            doc["error"] = self.load_error
        return (200 if ok else 503), [(b"content-type", b"application/json")], \
            json.dumps(doc).encode(), None

    def _metrics(self, scope: Scope, body: bytes, _: str | None) -> Any:
        versions = {n: (str(t.spec.ref), t.current.version if t.current else None,
                        t.current.rows if t.current else 0) for n, t in self.tables.items()}
        text = self.metrics.render(versions, self.poller.errors)
        return 200, [(b"content-type", b"text/plain; version=0.0.4")], text.encode(), None

    def _describe(self, t: PinnedTable) -> dict[str, Any]:
        s = t.current
        d: dict[str, Any] = {"name": t.name, "pinned": t.spec.ref,
                             "version": s.version if s else None, "swaps": t.swaps}
        if s is not None:
            d.update(rows=s.rows, dimension=s.dimension, key=s.meta.key, metric=s.meta.metric,
                     model=s.meta.model, columns=s.columns, text=s.embedder is not None,
                     knn=s.knn_path)
        if t.last_error:
            d["follow_error"] = t.last_error
        return d

    def _list(self, scope: Scope, body: bytes, _: str | None) -> Any:
        doc = [self._describe(t) for t in self.tables.values()]
        return 200, [(b"content-type", b"application/json")], json.dumps(doc).encode(), None

    def _info(self, scope: Scope, body: bytes, name: str) -> Any:
        t = self.tables[name]
        return 200, [(b"content-type", b"application/json")], \
            json.dumps(self._describe(t)).encode(), t.current.version if t.current else None

    def _snapshot(self, name: str) -> Snapshot:
        snap = self.tables[name].current  # taken once: the whole request reads this version
        if snap is None:
            raise HTTPError(503, "NotReady", f"table {name!r} is still loading")
        return snap

    def _get(self, scope: Scope, body: bytes, name: str) -> Any:
        snap = self._snapshot(name)
        req = _json(body)
        try:
            keys = snap.check_keys(req.get("keys"), self.config.max_keys)
            columns = snap.check_columns(req.get("columns"))
            vectors = _flag(req, "vectors", True)
        except ValidationError as e:
            raise HTTPError(400, "ValidationError", str(e)) from None
        rows, missing = snap.lookup(keys)
        tbl = snap.rows_table(rows, columns, vectors)
        return self._answer(scope, snap, name, tbl, {"missing": missing})

    def _search(self, scope: Scope, body: bytes, name: str) -> Any:
        snap = self._snapshot(name)
        req = _json(body)
        try:
            k = check_k(req.get("k", 10), self.config.max_k)
            given = [f for f in ("vector", "key", "text") if req.get(f) is not None]
            if len(given) != 1:
                raise ValidationError("give exactly one of vector, key or text")
            columns = snap.check_columns(req.get("columns"))
            vectors = _flag(req, "vectors", False)
            where = snap.where_sql(req.get("where"))
            exclude = None
            if given[0] == "vector":
                q = snap.query_vector(req["vector"])
            elif given[0] == "key":
                (key,) = snap.check_keys([req["key"]], 1)
                rows, _ = snap.lookup([key])
                if not len(rows):
                    raise HTTPError(404, "KeyNotFound", f"key {str(key)[:60]!r} is not in version "
                                                        f"{snap.version} of {name!r}")
                q, exclude, k = snap.matrix[int(rows[0])], key, k + 1
            else:
                if not isinstance(req["text"], str) or not req["text"].strip():
                    raise ValidationError("text must be a non-empty string")
                q = snap.embed_text(req["text"])
            if where is None and snap.batched_knn:
                snap.check_probe_query(q)
                return self._batched(scope, snap, name, q, k, exclude, columns, vectors)
            tbl = snap.search(q, k, where, columns, vectors)
        except ValidationError as e:
            raise HTTPError(400, "ValidationError", str(e)) from None
        return self._hits(scope, snap, name, tbl, exclude, k)

    async def _batched(self, scope: Scope, snap: Snapshot, name: str, q: np.ndarray, k: int,
                       exclude: Any, columns: list[str], vectors: bool) -> Any:
        idx, dist = await self._batcher.future(snap, q, k)
        tbl = snap.hits_table(idx, dist, columns, vectors)
        return self._hits(scope, snap, name, tbl, exclude, k)

    def _hits(self, scope: Scope, snap: Snapshot, name: str, tbl: pa.Table, exclude: Any,
              k: int) -> Any:
        if exclude is not None:  # "more like this": not the item itself
            keep = np.asarray(tbl.column(snap.meta.key).to_pylist(), dtype=object) != exclude
            tbl = tbl.filter(pa.array(keep))[: k - 1]
            if "rank" in tbl.column_names:
                i = tbl.column_names.index("rank")
                tbl = tbl.set_column(i, tbl.schema.field(i),
                                     pa.array(np.arange(1, tbl.num_rows + 1, dtype=np.int32)))
        return self._answer(scope, snap, name, tbl, {})

    def _answer(self, scope: Scope, snap: Snapshot, name: str, tbl: pa.Table,
                extra: dict[str, Any]) -> Any:
        if _wants_arrow(scope):
            payload = _ipc(tbl, snap, name)
            headers = [(b"content-type", ARROW.encode())]
            if extra.get("missing"):
                headers.append((b"x-embed-assets-missing", str(len(extra["missing"])).encode()))
        else:
            doc = {"table": name, "version": snap.version, "rows": _rows(tbl), **extra}
            payload = json.dumps(doc, default=str).encode()
            headers = [(b"content-type", b"application/json")]
        return 200, headers, payload, snap.version


def _ipc(tbl: pa.Table, snap: Snapshot, name: str) -> bytes:
    # schema message + batches + end-of-stream marker: the stream format without a writer
    # object per answer (a writer costs more than encoding a 1-row batch); the schema
    # message, with the version in its metadata, is encoded once per snapshot and shape
    key = (name, *tbl.schema.names)
    head = snap.ipc_heads.get(key)
    if head is None:
        head = tbl.schema.with_metadata({"embed_assets.version": str(snap.version),
                                         "embed_assets.table": name}).serialize().to_pybytes()
        snap.ipc_heads[key] = head
    batches = tbl.to_batches()
    if not batches:
        batches = [pa.RecordBatch.from_pylist([], schema=tbl.schema)]
    return b"".join([head, *(b.serialize().to_pybytes() for b in batches), _EOS])


def _rows(tbl: pa.Table) -> list[dict[str, Any]]:
    rows = tbl.to_pylist()
    for r in rows:  # JSON has no NaN: a float column's NaN becomes null
        for c, v in r.items():
            if isinstance(v, float) and not math.isfinite(v):
                r[c] = None
    return rows


def _wants_arrow(scope: Scope) -> bool:
    for k, v in scope["headers"]:
        if k == b"accept":
            return ARROW.encode() in v
    return False


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise HTTPError(400, "ValidationError", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise HTTPError(400, "ValidationError", "the body must be a JSON object")
    return doc


def _flag(req: dict[str, Any], name: str, default: bool) -> bool:
    v = req.get(name, default)
    if not isinstance(v, bool):
        raise ValidationError(f"{name} must be true or false")
    return v


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise HTTPError(405, "MethodNotAllowed",
                        f"{method} is not allowed here (the server is read-only; use {allowed})")
