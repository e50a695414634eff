"""Tables pinned to a tag or version, followed by one background poller.

A swap is one assignment of a fully loaded and warmed :class:`Snapshot`: a request that
took the old snapshot finishes on it (the Python object stays alive while referenced), a
request that starts after the assignment reads the new one. Nothing is ever half-loaded
in sight of a request. The last few snapshots stay in memory, so a rollback (the tag moved
back) swaps without reading anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..errors import EmbedAssetsError, ValidationError, describe
from ..store import Store, validate_table_name, validate_tag, version_number
from ._snapshot import Snapshot, load

log = logging.getLogger("embed_assets.serve")


@dataclass(frozen=True)
class TableSpec:
    """One served table: its name and what it is pinned to (a tag, or a version number)."""

    name: str
    ref: str | int = "prod"

    def __post_init__(self) -> None:
        validate_table_name(self.name)
        if isinstance(self.ref, str):
            validate_tag(self.ref)
        elif isinstance(self.ref, bool) or not isinstance(self.ref, int) or self.ref < 1:
            raise ValidationError(f"pin {self.name!r} to a tag or a version number >= 1, got {self.ref!r}")

    @classmethod
    def parse(cls, text: str) -> TableSpec:
        """``NAME``, ``NAME@TAG`` or ``NAME@VERSION``."""
        name, at, ref = text.partition("@")
        if at and not ref:
            raise ValidationError(f"{text!r}: give a tag or a version after '@'")
        if not ref:
            return cls(name)
        n = version_number(ref)
        return cls(name, n if n is not None else ref)

    @property
    def follows_tag(self) -> bool:
        return isinstance(self.ref, str)


class PinnedTable:
    """The current snapshot of one table and the swap machinery."""

    def __init__(self, store: Store, spec: TableSpec, *, text: bool = False, keep: int = 2,
                 on_swap: Any = None, resp: bool = False) -> None:
        self.store = store
        self.spec = spec
        self.text = text
        self.resp = resp
        self.keep = max(1, keep)
        self.current: Snapshot | None = None
        self.swaps = 0
        self.last_error: str | None = None
        self._held: OrderedDict[int, Snapshot] = OrderedDict()
        self._on_swap = on_swap
        self._handle = store.table(spec.name)  # for reading the tag only

    @property
    def name(self) -> str:
        return self.spec.name

    def target(self) -> int:
        """The version the pin names now (reads the tag: ~0.1 ms on a local store)."""
        if isinstance(self.spec.ref, int):
            return self.spec.ref
        return self._handle.resolve(self.spec.ref)

    def sync(self) -> bool:
        """Load the pinned version if it moved; return whether a swap happened."""
        want = self.target()
        cur = self.current
        if cur is not None and cur.version == want:
            return False
        snap = self._held.get(want)
        if snap is None:
            snap = load(self.store, self.name, want, text=self.text, resp=self.resp)
        self._held[want] = snap
        self._held.move_to_end(want)
        while len(self._held) > self.keep:
            self._held.popitem(last=False)
        old = cur.version if cur is not None else None
        self.current = snap  # the swap: one reference assignment
        if old is not None:
            self.swaps += 1
        log.info("serving %s version %s (was %s; %s)", self.name, want, old,
                 f"loaded in {snap.loaded_s * 1e3:.0f} ms" if snap.loaded_s else "held")
        if self._on_swap is not None:
            self._on_swap(self, old, want)
        return True


class Poller:
    """Polls every tag-pinned table every ``interval`` seconds in one daemon thread; a
    failed poll (store unreachable, tag deleted) keeps serving the current snapshot and
    is reported by /ready's details and the error counter."""

    def __init__(self, tables: list[PinnedTable], interval: float) -> None:
        self.tables = [t for t in tables if t.spec.follows_tag]
        self.interval = interval
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.tables or self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="embed-assets-tag-poller", daemon=True)
        self._thread.start()
        log.info("following %s every %s s", ", ".join(f"{t.name}@{t.spec.ref}" for t in self.tables),
                 self.interval)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def poll_once(self) -> None:
        for t in self.tables:
            try:
                t.sync()
                t.last_error = None
            except Exception as exc:  # any failure: the thread must live to poll again
                self.errors += 1
                t.last_error = describe(exc) if isinstance(exc, EmbedAssetsError | OSError | ValueError) \
                    else f"{type(exc).__name__}: {describe(exc)}"
                log.warning("cannot follow %s@%s: %s", t.name, t.spec.ref, t.last_error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def wait_loaded(tables: list[PinnedTable], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for t in tables:
        while t.current is None and time.monotonic() < deadline:
            time.sleep(0.01)
