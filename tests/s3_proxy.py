"""A loopback TCP proxy in front of the test S3 server that misbehaves during a commit.

It forwards bytes both ways, watching the client's requests for the ``PUT`` of a Lance
manifest (``_versions/....manifest``: the commit itself). For the first ``arm`` such
requests it forwards the request, then either holds the server's answer for ``delay_s``
seconds, or drops the connection instead of answering (``drop=True``): the commit may
have happened and the writer cannot know. ``seen`` is set when a commit request passed.
The server is plain HTTP (moto), so the request line is readable.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_COMMIT = re.compile(rb"PUT [^ ]*_versions/[^ ]*\.manifest")


@dataclass
class Proxy:
    upstream: tuple[str, int]
    delay_s: float = 0.0
    drop: bool = False
    arm: int = 1
    port: int = 0
    seen: threading.Event = field(default_factory=threading.Event)
    hits: int = 0
    _sock: socket.socket | None = None
    _stop: bool = False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        self._sock, self.port = s, s.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._stop = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            state = {"pending": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while chunk := client.recv(65536):
                commit = self.hits < self.arm and _COMMIT.search(chunk) is not None
                if commit:
                    self.hits += 1
                    state["pending"] = True
                server.sendall(chunk)
                # (not state["pending"]: the answer may already have cleared it - with drop=True
                # the server answers before this line runs often enough to fail a CI run)
                if commit:
                    self.seen.set()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)

    def _down(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while chunk := server.recv(65536):
                if state["pending"]:
                    state["pending"] = False
                    if self.drop:  # the commit reached the server; its answer never arrives
                        # linger 0: a reset, as a broken connection gives
                        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        client.close()
                        server.close()
                        return
                    time.sleep(self.delay_s)
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()


@contextlib.contextmanager
def proxy(endpoint: str, **kwargs) -> Iterator[Proxy]:
    host, port = endpoint.rsplit("//", 1)[1].split(":")
    p = Proxy((host, int(port)), **kwargs).start()
    try:
        yield p
    finally:
        p.close()
