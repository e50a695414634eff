"""Rollback: a new latest version equal to an old one, keeping a tuned index."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import lance
from lance import LanceOperation

from ..errors import ValidationError, VersionNotFoundError
from ._cache import STATE
from ._commits import table_lock, with_retries
from ._identity import fingerprint
from ._index_facts import ensure_scalar_indexes, has_scalar_index, index_config, vector_index_type
from ._meta import PROP_PREFIX, VersionRef
from ._retention import guarded, version_whole, wait_for_cleanups

# Rebuilds a tuned vector index on the latest version, given (the table, the report of the
# index that a rollback lost, its index type). The index policy lives above the store
# (embed_assets.index), so each Store is given one (``Store(index_keeper=...)``;
# ``embed_assets.Store`` passes the index policy's ``rebuild_after_rollback``). Without
# one a rollback keeps the scalar indexes, records the pending rebuild (``index_pending``,
# which ``refresh_index`` finishes) and the table is searched exactly meanwhile.
IndexKeeper = Callable[[Any, dict[str, Any], str], None]


class RollbackMixin:
    """``rollback`` and ``index_pending`` of :class:`~._table.EmbeddingTable`."""

    if TYPE_CHECKING:  # what the mixin reads of the table it is part of
        store: Any
        name: str
        _identity: str

        @property
        def meta(self) -> Any: ...

        def refresh(self) -> Any: ...

        def resolve(self, ref: VersionRef) -> int: ...

        def _at(self, ref: int | str) -> lance.LanceDataset: ...

        def _properties(self, version: int) -> dict[str, str]: ...

        @property
        def uri(self) -> str: ...

        _ds: lance.LanceDataset
        _versions_open: dict[int, lance.LanceDataset]

    def rollback(self, to: VersionRef, *, run_id: str | None = None) -> int:
        """Make a new latest version equal to version/tag ``to``; history stays readable.

        If the table had a vector index and the target version predates it, the index is
        rebuilt (and re-tuned to the same recall target) so the table stays searchable
        with an index. The Restore commit records that intent (``index_pending``), so a
        crash before the rebuild is visible: :func:`embed_assets.freshness` reports it and
        :func:`embed_assets.refresh_index` finishes it.

        Returns the Restore's version: the user's new version, equal to ``to``. The index
        rebuild that may follow commits maintenance versions after it (``versions()``
        lists them under ``indexed_by``; :attr:`version` is the latest).
        """
        if to is None:  # resolve() reads None as the latest: a rollback to it did nothing
            raise ValidationError(f"rollback of {self.name!r} needs the version number or tag to "
                                  "roll back to, got None")
        target = self.resolve(to)  # refuses unknown and partly removed versions
        run_id = run_id or f"manual-{uuid.uuid4().hex[:12]}"
        what = repr(self.name)
        # A cleanup running now must not delete the files the Restore makes current again:
        # the target is tagged first, running cleanups are waited for (see _retention).
        with guarded(self.refresh()._ds, target, what):
            wait_for_cleanups(self._ds)
            if not version_whole(self.uri, target, self.store.storage_options):
                self._versions_open.pop(target, None)
                raise VersionNotFoundError(
                    f"version {target} of {what} was removed by a cleanup running at the same "
                    "time: it cannot be rolled back to")
            with table_lock(self.store, self.name):
                (ds, report, lost, had_scalar, committed), _ = with_retries(
                    lambda n: self._restore(target, run_id, n))
        if committed:  # what the versions before the Restore cached is not read again soon
            STATE.clear(self.uri, before=int(ds.version))
        keeper: IndexKeeper | None = getattr(self.store, "index_keeper", None)
        if lost and not vector_index_type(ds) and keeper is not None:
            keeper(self.refresh(), report, lost)
        elif had_scalar:
            meta = self.meta
            if ensure_scalar_indexes(self.refresh()._ds, meta.key, meta.partition_column):
                self.refresh()
        return int(ds.version)

    def _restore(self, target: int, run_id: str, retries: int = 0
                 ) -> tuple[Any, dict[str, Any], str | None, bool, bool]:
        latest = self.refresh()._ds
        lost = vector_index_type(latest)
        report = index_config(latest, self._identity) or {}
        if _same_rows(latest, self._at(target)):
            # Rolling back to what is already current (the latest version, or one that only
            # index bookkeeping followed) changes nothing: no version, and the index stays.
            return latest, report, None, False, False
        txn = lance.Transaction(read_version=latest.version,
                                operation=LanceOperation.Restore(target))
        props = {
            f"{PROP_PREFIX}run_id": run_id,
            f"{PROP_PREFIX}mode": "rollback",
            f"{PROP_PREFIX}rollback_to": str(target),
            f"{PROP_PREFIX}rollback_from": str(latest.version),
            f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        if retries:
            props[f"{PROP_PREFIX}retries"] = str(retries)
        if lost and not vector_index_type(self._at(target)):
            props[f"{PROP_PREFIX}index_pending"] = json.dumps({**report, "index_type": lost})
        txn.transaction_properties = props
        ds = lance.LanceDataset.commit(latest, txn)
        return ds, report, lost, has_scalar_index(latest), True

    def index_pending(self) -> dict[str, Any] | None:
        """The index a rollback set out to rebuild and no later commit built (a crash in
        between), or None. Reads the provenance of the latest few versions."""
        ds = self.refresh()._ds
        for v in range(ds.version, max(0, ds.version - 16), -1):
            props = self._properties(v)
            if props.get("mode") == "index":
                return None
            if "index_pending" in props:
                return json.loads(props["index_pending"])
            if props.get("mode") in ("overwrite",):
                return None
        return None


def _same_rows(a: lance.LanceDataset, b: lance.LanceDataset) -> bool:
    """Whether two versions hold the same rows (the same data and deletion files) under the
    same schema and table facts."""
    return a.schema.equals(b.schema, check_metadata=True) and fingerprint(a) == fingerprint(b)
