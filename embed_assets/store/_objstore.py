"""Object stores (``s3://...``): the writer lock, plain object access, readable errors.

Lance commits a version on S3 by writing the next manifest with a conditional ``PUT``
(``If-None-Match: *``, object_store's ``PutMode::Create``: pylance 14's
``ConditionalPutCommitHandler``), so two commits can never both become version N: the
loser gets HTTP 412 and Lance rebases it onto the winner. That keeps every *Lance*
version whole, but a rebase happily stacks two appends of the same new keys (see
:mod:`._commits`), so embed_assets writers of one table still take turns. On a local
disk that is an ``fcntl`` lock; an object store has no such thing, so here it is a
**lease object** written with the same conditional writes:

* take: ``PUT <store>/.embed_assets/locks/<table>.lock`` with ``If-None-Match: *``;
  the one writer whose PUT succeeds holds the lock;
* keep: the holder rewrites the object every ``ttl / 3`` seconds with ``If-Match`` on its
  own ETag (a heartbeat thread), so a waiter sees the ETag change;
* a holder that died stops rewriting: a waiter that has seen the *same* ETag for ``ttl``
  seconds (its own monotonic clock, so clock skew between machines does not matter)
  takes it over with ``If-Match`` on that ETag: of several waiters, exactly one wins;
* release: delete the object if its ETag is still the holder's.

The store must therefore support conditional ``PUT`` (AWS S3 does since 2024-08 for
``If-None-Match`` and 2024-11 for ``If-Match``; MinIO, Cloudflare R2 and moto do). A
store that ignores the headers would let two writers in: the README's "Object storage"
section says so. The objects are reached through ``obstore`` (the same Rust
``object_store`` crate Lance uses), configured from the store's ``storage_options`` and
the standard ``AWS_*`` environment variables, as Lance is.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import StorageError, describe

LOCK_DIR = ".embed_assets/locks"
# A lease a holder stopped renewing is taken over after this long. A heartbeat renews it
# every LOCK_TTL_S / 3, so a live holder is never mistaken for a dead one unless it
# cannot reach the store for 20 s; a killed writer blocks the next one for at most this.
LOCK_TTL_S = 30.0
_POLL_S = (0.02, 0.2)  # a waiter polls with backoff 20 ms .. 200 ms (a PUT and a HEAD each)

_stores: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_stores_guard = threading.Lock()


def _unknown_key(exc: BaseException) -> str | None:
    m = re.search(r"Configuration key: '([^']+)' is not valid", str(exc))
    return m.group(1) if m else None


# Options object_store takes as HTTP client options rather than store config.
_CLIENT_KEYS = {"allow_http", "allow_invalid_certificates", "connect_timeout", "timeout",
                "proxy_url", "pool_idle_timeout", "user_agent", "http1_only", "http2_only"}


def object_store(uri: str, storage_options: dict[str, str] | None) -> Any:
    """An obstore store rooted at ``uri`` (a store prefix), configured like Lance.

    Lance accepts option names with or without the ``aws_`` prefix and a few of its own;
    obstore wants the prefixed names, client options apart, and refuses unknown keys:
    those are dropped here, since they only tune Lance's own reads.
    """
    opts = {str(k).lower(): str(v) for k, v in (storage_options or {}).items()}
    cache_key = (uri, tuple(sorted(opts.items())))
    with _stores_guard:
        if cache_key in _stores:
            return _stores[cache_key]
    try:
        from obstore.store import from_url
    except ImportError:  # pragma: no cover - a dependency of the package
        raise StorageError("object stores need the 'obstore' package (pip install obstore)") from None
    scheme, _, rest = uri.partition("://")
    if scheme == "s3+ddb":  # Lance's DynamoDB-locked S3: the objects are plain S3 ones
        scheme, uri = "s3", "s3://" + rest.split("?", 1)[0]
    client = {k: v for k, v in opts.items() if k in _CLIENT_KEYS}
    config = {(k if k.startswith("aws_") or scheme not in ("s3", "s3a") else f"aws_{k}"): v
              for k, v in opts.items() if k not in _CLIENT_KEYS}
    for _ in range(len(config) + 1):
        try:
            # user-given option names: obstore checks them at run time, its TypedDicts cannot
            store = from_url(uri, config=config or None,  # type: ignore[arg-type]
                             client_options=client or None)  # type: ignore[arg-type]
            break
        except BaseException as exc:  # obstore raises a pyo3 PanicException for some keys
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            key = _unknown_key(exc)
            if key is None or key not in config:
                raise StorageError(f"cannot configure object store {uri}: {explain(exc)}") from None
            config.pop(key)
    with _stores_guard:
        _stores[cache_key] = store
    return store


def explain(exc: BaseException | str) -> str:
    """An object-store failure in one line that names the problem (credentials, an
    unreachable endpoint, a missing bucket), followed by the store's own words."""
    text = str(exc)
    low = text.lower()
    # (169.254.169.254: the instance-metadata endpoint, asked when no key was given)
    if "failed to get aws credentials" in low or "no credentials" in low or "169.254.169.254" in low:
        return ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                "storage_options aws_access_key_id / aws_secret_access_key)")
    if "nosuchbucket" in low or "bucket does not exist" in low or "specified bucket does not exist" in low:
        return f"the bucket does not exist ({describe(exc)[:200]})"
    if any(s in low for s in ("error sending request", "connection refused", "dns error",
                              "tcp connect error", "failed to lookup address")):
        m = re.search(r"(https?://[^/\s?]+)", text)
        where = m.group(1) if m else "the object store endpoint"
        return f"cannot reach {where} (is the endpoint right, is the server up?)"
    if "accessdenied" in low or "signaturedoesnotmatch" in low or "invalidaccesskeyid" in low \
            or "403 forbidden" in low:
        return f"access denied: check the credentials ({describe(exc)[:200]})"
    return describe(exc)


@dataclass
class _Lease:
    key: str
    etag: str
    lost: bool = False


class ObjectLock:
    """The exclusive writer lock of one table on an object store (see the module docstring)."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None, name: str,
                 ttl: float = LOCK_TTL_S) -> None:
        self.uri = uri
        self.store = object_store(uri, storage_options)
        self.key = f"{LOCK_DIR}/{name}.lock"
        self.ttl = ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.takeovers = 0  # leases taken over from a holder that stopped renewing

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "ttl_s": self.ttl, "at": time.time()}).encode()

    def acquire(self) -> _Lease:
        import obstore as obs
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError

        seen: tuple[str, float] | None = None  # (etag, when first seen) of the holder
        delay = _POLL_S[0]
        while True:
            try:
                res = obs.put(self.store, self.key, self._body(), mode="create")
                return _Lease(self.key, res["e_tag"] or "")
            except AlreadyExistsError:
                pass
            except Exception as exc:
                raise StorageError(f"cannot take the writer lock {self.uri}/{self.key}: "
                                   f"{explain(exc)}") from None
            try:
                etag = obs.head(self.store, self.key)["e_tag"] or ""
            except (NotFoundError, FileNotFoundError):
                # released meanwhile: try again at once (obstore's head raises the
                # builtin FileNotFoundError for a 404, not its own NotFoundError)
                continue
            now = time.monotonic()
            if seen is None or seen[0] != etag:
                seen = (etag, now)  # the holder is alive (or new): start its clock
            elif now - seen[1] >= self.ttl:
                try:  # a lease nobody renewed for ttl seconds: exactly one waiter takes it
                    res = obs.put(self.store, self.key, self._body(), mode={"e_tag": etag})
                    self.takeovers += 1
                    return _Lease(self.key, res["e_tag"] or "")
                except (PreconditionError, NotFoundError, FileNotFoundError):
                    seen = None
                    continue
            time.sleep(delay)
            delay = min(_POLL_S[1], delay * 2)

    def _renew(self, lease: _Lease, stop: threading.Event) -> None:
        import obstore as obs

        while not stop.wait(self.ttl / 3):
            try:
                lease.etag = obs.put(self.store, self.key, self._body(),
                                     mode={"e_tag": lease.etag})["e_tag"] or ""
            except Exception:  # taken over or unreachable: the next commit may not be ours alone
                lease.lost = True
                return

    def release(self, lease: _Lease) -> None:
        import obstore as obs

        with contextlib.suppress(Exception):  # an unreleased lease expires after ttl anyway
            if (obs.head(self.store, self.key)["e_tag"] or "") == lease.etag:
                obs.delete(self.store, self.key)

    @contextlib.contextmanager
    def held(self) -> Iterator[_Lease]:
        lease = self.acquire()
        stop = threading.Event()
        beat = threading.Thread(target=self._renew, args=(lease, stop), daemon=True,
                                name=f"embed-assets-lease:{self.key}")
        beat.start()
        try:
            yield lease
        finally:
            stop.set()
            beat.join()
            self.release(lease)


def list_objects(uri: str, storage_options: dict[str, str] | None, prefix: str) -> list[dict[str, Any]]:
    """Objects under ``prefix`` of the store at ``uri``: path (relative to ``uri``), size,
    last_modified (aware datetime)."""
    import obstore as obs

    store = object_store(uri, storage_options)
    try:
        return [dict(m) for batch in obs.list(store, prefix=prefix) for m in batch]
    except Exception as exc:
        raise StorageError(f"cannot list {uri}/{prefix}: {explain(exc)}") from None


def delete_objects(uri: str, storage_options: dict[str, str] | None, paths: list[str]) -> None:
    import obstore as obs

    if paths:
        store = object_store(uri, storage_options)
        try:
            obs.delete(store, paths)
        except Exception as exc:
            raise StorageError(f"cannot delete objects under {uri}: {explain(exc)}") from None
