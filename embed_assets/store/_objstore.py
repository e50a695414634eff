"""Object stores (``s3://...``): plain object access and readable errors.

Lance commits a version on S3 by writing the next manifest with a conditional ``PUT``
(``If-None-Match: *``, object_store's ``PutMode::Create``: pylance 14's
``ConditionalPutCommitHandler``), so two commits can never both become version N: the
loser gets HTTP 412 and Lance checks the two transactions for a conflict. Writers of
embed_assets need nothing more: every write is fenced by Lance (:mod:`._commits`), so
there is no lease or lock object. The store must support conditional ``PUT`` (AWS S3
since 2024-08, MinIO, Cloudflare R2 and moto do); the README's "Object storage" says so.

``obstore`` (the same Rust ``object_store`` crate Lance uses) remains for the two things
pylance does not expose: deleting the files of a failed run at once
(:func:`._staged.remove_files`; Lance's cleanup would wait 7 days for them) and
listing a table's files for the cleanup report.
"""

from __future__ import annotations

import re
from typing import Any

from .._extras import require
from ..errors import StorageError, describe
from ._cache import STATE


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
    return STATE.client(("obstore", uri, tuple(sorted(opts.items()))),
                        lambda: _make(uri, opts))


def _make(uri: str, opts: dict[str, str]) -> Any:
    from_url = require("obstore.store", "writing to an object store", "s3").from_url
    scheme, _, rest = uri.partition("://")
    if scheme == "s3+ddb":  # Lance's DynamoDB-locked S3: the objects are plain S3 ones
        scheme, uri = "s3", "s3://" + rest.split("?", 1)[0]
    client = {k: v for k, v in opts.items() if k in _CLIENT_KEYS}
    config = {(k if k.startswith("aws_") or scheme not in ("s3", "s3a") else f"aws_{k}"): v
              for k, v in opts.items() if k not in _CLIENT_KEYS}
    for _ in range(len(config) + 1):
        try:
            # user-given option names: obstore checks them at run time (from_url comes
            # through require(), untyped: its TypedDicts could not check them anyway)
            store = from_url(uri, config=config or None, client_options=client or None)
            break
        except BaseException as exc:  # obstore raises a pyo3 PanicException for some keys
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            key = _unknown_key(exc)
            if key is None or key not in config:
                raise StorageError(f"cannot configure object store {uri}: {explain(exc, uri)}") from None
            config.pop(key)
    return store


# What each cloud needs when no credentials were found (the scheme decides: a gs:// store
# was told to set AWS keys before).
_CREDENTIALS_HINT = {
    "s3": "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
          "storage_options aws_access_key_id / aws_secret_access_key)",
    "gs": "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service "
          "account file (or storage_options google_service_account)",
    "az": "no Azure credentials found: set AZURE_STORAGE_ACCOUNT_NAME and "
          "AZURE_STORAGE_ACCOUNT_KEY (or storage_options account_name / account_key)",
}
_SCHEME_CLOUD = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
                 "abfss": "az", "azure": "az"}


def explain(exc: BaseException | str, uri: str | None = None) -> str:
    """An object-store failure in one line that names the problem (credentials, an
    unreachable endpoint, a missing bucket), followed by the store's own words. ``uri``
    (the store's) picks which cloud's credentials to name."""
    text = str(exc)
    low = text.lower()
    cloud = _SCHEME_CLOUD.get((uri or "s3://").split("://", 1)[0].lower(), "s3")
    # (169.254.169.254: the instance-metadata endpoint, asked when no key was given)
    if ("credentials" in low and ("failed to get" in low or "no credentials" in low)) \
            or "169.254.169.254" in low or "metadata.google.internal" in low:
        return _CREDENTIALS_HINT[cloud]
    if "failed to resolve region" in low:
        # S3 asks the bucket for its region first: with no region and no credentials that
        # is what fails, and its words named neither
        return (f"cannot find the region of the bucket: set AWS_REGION (or storage_options "
                f"region), and credentials if none are set ({_CREDENTIALS_HINT['s3']})")
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


def list_objects(uri: str, storage_options: dict[str, str] | None, prefix: str) -> list[dict[str, Any]]:
    """Objects under ``prefix`` of the store at ``uri``: path (relative to ``uri``), size,
    last_modified (aware datetime)."""
    import obstore as obs

    store = object_store(uri, storage_options)
    try:
        return [dict(m) for batch in obs.list(store, prefix=prefix) for m in batch]
    except Exception as exc:
        raise StorageError(f"cannot list {uri}/{prefix}: {explain(exc, uri)}") from None


def delete_objects(uri: str, storage_options: dict[str, str] | None, paths: list[str]) -> None:
    import obstore as obs

    if paths:
        store = object_store(uri, storage_options)
        try:
            obs.delete(store, paths)
        except Exception as exc:
            raise StorageError(f"cannot delete objects under {uri}: {explain(exc, uri)}") from None
