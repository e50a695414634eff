"""A small client of ``embed-assets serve``: the standard library's HTTP client and Arrow
IPC answers, returned as Arrow, Polars, pandas or numpy like the library's own reads."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import EmbedAssetsError, TableNotFoundError, ValidationError

ARROW = "application/vnd.apache.arrow.stream"
OUTPUTS = ("arrow", "polars", "pandas", "numpy")


class ServeError(EmbedAssetsError):
    """The server refused or failed a request (``status``: the HTTP status)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status} {kind})")
        self.status = status
        self.kind = kind


class Client:
    """Reads a served store over HTTP.

    Every answer names the version it was read from: :meth:`version_of` on an Arrow result
    (schema metadata ``embed_assets.version``), or ``output="numpy"`` / ``with_version=True``.
    One keep-alive connection per thread.

    Examples
    --------
    >>> c = Client("http://127.0.0.1:8765", token=None)  # doctest: +SKIP
    >>> c.get("docs", ["vim"]).column("vector")  # doctest: +SKIP
    >>> c.search("docs", key="vim", k=5, where={"section": "editors"})  # doctest: +SKIP
    """

    def __init__(self, url: str = "http://127.0.0.1:8765", *, token: str | None = None,
                 timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValidationError(f"not an http(s) URL: {url!r}")
        self._https = u.scheme == "https"
        self._host, self._port = u.hostname, u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._auth = f"Bearer {token}" if token else None
        self.timeout = timeout
        self._local = threading.local()

    def __repr__(self) -> str:  # never the token
        return f"Client({'https' if self._https else 'http'}://{self._host}:{self._port}{self._prefix})"

    # -- transport ------------------------------------------------------------------------
    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            c = self._local.conn = cls(self._host, self._port, timeout=self.timeout)
        return c

    def _request(self, method: str, path: str, doc: Any = None, arrow: bool = False,
                 ) -> tuple[int, dict[str, str], bytes]:
        headers = {"accept": ARROW if arrow else "application/json"}
        if self._auth:
            headers["authorization"] = self._auth
        body = None
        if doc is not None:
            body = json.dumps(doc).encode()
            headers["content-type"] = "application/json"
        for attempt in (0, 1):
            c = self._conn()
            try:
                c.request(method, self._prefix + path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (ConnectionError, http.client.HTTPException, OSError):
                # a kept-alive connection the server closed (a restart): one fresh try
                c.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _checked(self, method: str, path: str, doc: Any = None, arrow: bool = False,
                 ) -> tuple[dict[str, str], bytes]:
        status, headers, data = self._request(method, path, doc, arrow)
        if status >= 400:
            try:
                err = json.loads(data)["error"]
                kind, msg = err["type"], err["message"]
            except (ValueError, KeyError, TypeError):
                kind, msg = "HTTPError", data[:200].decode(errors="replace")
            if status == 400 or status == 413:
                raise ValidationError(msg)
            if kind == "TableNotFoundError":
                raise TableNotFoundError(msg)
            raise ServeError(status, kind, msg)
        return headers, data

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    # -- endpoints ------------------------------------------------------------------------
    def health(self) -> bool:
        return self._request("GET", "/health")[0] == 200

    def ready(self) -> bool:
        return self._request("GET", "/ready")[0] == 200

    def tables(self) -> list[dict[str, Any]]:
        """Served tables: ``name``, ``pinned`` (tag or version), ``version`` served, ``rows``..."""
        return json.loads(self._checked("GET", "/v1/tables")[1])

    def table(self, name: str) -> dict[str, Any]:
        return json.loads(self._checked("GET", f"/v1/tables/{urllib.parse.quote(name, safe='')}")[1])

    def metrics(self) -> str:
        return self._checked("GET", "/metrics")[1].decode()

    def get(self, table: str, keys: Iterable[Any], *, columns: list[str] | None = None,
            vectors: bool = True, output: str = "arrow", with_version: bool = False) -> Any:
        """Rows by key in the order asked (keys not stored are skipped, as ``t.get``)."""
        doc: dict[str, Any] = {"keys": [_plain(k) for k in keys], "vectors": vectors}
        if columns:
            doc["columns"] = list(columns)
        return self._arrow(table, "get", doc, output, with_version)

    def search(self, table: str, vector: Any = None, *, key: Any = None, text: str | None = None,
               k: int = 10, where: dict[str, Any] | None = None, columns: list[str] | None = None,
               vectors: bool = False, output: str = "arrow", with_version: bool = False) -> Any:
        """Nearest neighbours of a vector, of a stored key's vector ("more like this", the
        key itself left out) or of a text (where the server has the table's model).
        ``where``: ``{"section": "editors", "installed_size_kb": {"<": 100}, "priority":
        ["optional", "extra"]}`` (conditions joined by AND)."""
        doc: dict[str, Any] = {"k": k, "vectors": vectors}
        if vector is not None:
            q = np.ascontiguousarray(np.asarray(vector, dtype="<f4")).reshape(-1)
            doc["vector"] = base64.b64encode(q.tobytes()).decode()
        if key is not None:
            doc["key"] = _plain(key)
        if text is not None:
            doc["text"] = text
        if where is not None:
            doc["where"] = where
        if columns:
            doc["columns"] = list(columns)
        return self._arrow(table, "search", doc, output, with_version)

    def _arrow(self, table: str, verb: str, doc: dict[str, Any], output: str, with_version: bool) -> Any:
        if output not in OUTPUTS:
            raise ValidationError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        headers, data = self._checked(
            "POST", f"/v1/tables/{urllib.parse.quote(table, safe='')}/{verb}", doc, arrow=True)
        tbl = pa.ipc.open_stream(data).read_all()
        version = int(headers["x-embed-assets-version"])
        out: Any = tbl
        if output == "polars":
            import polars as pl

            out = pl.from_arrow(tbl)
        elif output == "pandas":
            out = tbl.to_pandas()
        elif output == "numpy":
            col = tbl.column("vector").combine_chunks() if "vector" in tbl.column_names else None
            out = (np.zeros((0, 0), np.float32) if col is None else
                   col.values.to_numpy().reshape(len(col), col.type.list_size))
        return (out, version) if with_version else out

    @staticmethod
    def version_of(result: pa.Table) -> int:
        """The version an Arrow answer was read from."""
        return int((result.schema.metadata or {})[b"embed_assets.version"])


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
