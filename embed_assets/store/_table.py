"""One table: its versions and tags, reads at any version, search. Rollback and retention
are mixed in from :mod:`._rollback` and :mod:`._retention`."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import lance
import numpy as np
import pyarrow as pa

from .._extras import require
from ..errors import KeyNotFoundError, StorageError, ValidationError, VersionNotFoundError, describe
from . import _filters as sqlx
from . import _hybrid, _partitions, _retention, _search
from ._cache import CACHE, VersionKey, meta_of, take_rows
from ._experiments import ExperimentsMixin, branch_ref
from ._latest import VersionsWatch
from ._meta import (
    PROP_PREFIX,
    SCAN_ALL,
    StoreLocation,
    TableMeta,
    VersionRef,
    is_local,
    local_path,
    version_number,
)
from ._results import VersionInfo, is_maintenance
from ._retention import RetentionMixin
from ._rollback import RollbackMixin
from ._validation import as_list, validate_columns, validate_tag, validate_where
from .graph import Graph, GraphHome


class EmbeddingTable(RollbackMixin, RetentionMixin, ExperimentsMixin):
    """A handle on one table; every read can pin a version number, a tag, or a version of
    an experiment (``("name", 3)``, ``"name:3"``, ``"name"`` for its latest)."""

    def __init__(self, store: StoreLocation, name: str, ds: lance.LanceDataset) -> None:
        self.store = store
        self.name = name
        self._uri = store.table_uri(name)  # validated once: cache keys ask for it per search
        self._ds = ds
        self._identity = table_identity(ds)
        self._versions_open: dict[int, lance.LanceDataset] = {}
        self._readable_cache: set[int] = set()
        self._watch = VersionsWatch(local_path(self._uri)) if is_local(self._uri) else None
        self._home: GraphHome | None = None
        self._last_context: _search.VersionContext | None = None
        self._seen = self._fingerprint()

    def __repr__(self) -> str:
        return f"EmbeddingTable({self.name!r}, version={self.version})"

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def identity(self) -> str:
        """An id written when the table was created, kept by overwrites; a table dropped
        and created again under the same name has another one."""
        return self._identity

    def _searched(self, version: VersionRef) -> lance.LanceDataset:
        """The dataset a search reads: the latest version is looked up only when the
        table's ``_versions`` folder changed since the last lookup (:mod:`._latest`)."""
        if version is not None:
            return self._at(version)
        watch = self._watch
        if watch is not None and watch.unchanged():
            return self._ds
        stamp = watch.before_lookup() if watch is not None else None
        ds = self.refresh()._ds
        if watch is not None:
            watch.looked_up(stamp)
        return ds

    def cache_key(self, version: int) -> VersionKey:
        return VersionKey(self.uri, self._identity, version)

    def _key(self, ds: lance.LanceDataset) -> VersionKey:
        """The cache key of an opened version: an experiment's versions are numbered
        like production's, so its key names the branch."""
        branch = getattr(ds, "_ea_branch", None)
        uri = self.uri if branch is None else f"{self.uri}#{branch}"
        return VersionKey(uri, self._identity, ds.version)

    def _fingerprint(self) -> tuple[int, int] | None:
        return table_fingerprint(self.uri)

    def refresh(self) -> EmbeddingTable:
        """Point at the latest version. An unchanged table keeps its open handle: asking
        for the latest version number is ~0.01 ms, reopening ~0.3 ms, and a reopened
        handle's first reads are slower too (its file metadata caches start cold).

        "Unchanged" includes the table's identity: a handle kept across another
        process's drop and re-create never serves the dropped table's rows. Locally
        the ``_versions`` folder tells (one ``stat``); on an object store the latest
        manifest is reopened (one GET more per refresh)."""
        seen = self._fingerprint()
        try:
            if (seen is not None and seen == self._seen
                    and self._ds.latest_version == self._ds.version):
                return self
        except Exception:  # e.g. the table was dropped: reopening says so
            pass
        ds = self.store.open_dataset(self.name, required=True)
        assert ds is not None
        self._ds = ds
        self._seen = seen
        identity = table_identity(self._ds)
        if identity != self._identity:  # recreated under this name: old handles are stale
            self._identity = identity
            self._versions_open.clear()
            self._readable_cache.clear()
        return self

    @property
    def version(self) -> int:
        """The latest version number."""
        return self.refresh()._ds.version

    @property
    def meta(self) -> TableMeta:
        """The facts of the latest version (key, dimension, metric, model...)."""
        return TableMeta.infer(self.refresh()._ds.schema)

    def meta_at(self, version: VersionRef = None) -> TableMeta:
        """The facts of one version: an overwrite may have changed model or dimension."""
        return TableMeta.infer(self.dataset(version).schema)

    # -- versions and tags ----------------------------------------------------------------
    def tags(self) -> dict[str, int]:
        """Tag name -> version (the store's own bookkeeping tags left out)."""
        return {t: int(d["version"]) for t, d in _retention.list_tags(self._ds).items()
                if not t.startswith(_retention.INTERNAL_TAG)}

    def _open_raw(self, version: int) -> lance.LanceDataset:
        return lance.dataset(self.uri, version=version, storage_options=self.store.storage_options)

    def versions(self, *, with_properties: bool = True,
                 include_maintenance: bool = False) -> list[VersionInfo]:
        """Readable versions, oldest first, with row counts, tags and provenance.

        By default only the user's versions are listed: a version whose only change is
        index or config bookkeeping (Lance CreateIndex / UpdateConfig, an index report)
        is hidden, and the version it followed lists it in ``indexed_by``.
        ``include_maintenance=True`` lists every version (those marked ``maintenance``).

        A version whose files are partly gone (a cleanup by other tools killed midway) is
        not listed: it cannot be read, tagged or rolled back to.
        """
        self.refresh()
        by_version: dict[int, list[str]] = {}
        for t, tagged in self.tags().items():
            by_version.setdefault(tagged, []).append(t)
        out: list[VersionInfo] = []
        for v in self._ds.versions():
            num = int(v["version"])
            if not self._readable(num):
                continue
            props = self._properties(num)
            info = VersionInfo(
                version=num,
                # Lance gives a naive local datetime (its type also allows an int)
                timestamp=cast(dt.datetime, v["timestamp"]).astimezone(dt.UTC),
                rows=int(v.get("metadata", {}).get("total_rows", -1)),
                tags=sorted(by_version.get(num, [])),
                properties=props if with_properties else {},
                # the first version holds the table's rows whatever its operation says
                maintenance=bool(out) and is_maintenance(props),
            )
            if info.maintenance:
                next(u for u in reversed(out) if not u.maintenance).indexed_by.append(num)
            out.append(info)
        return out if include_maintenance else [v for v in out if not v.maintenance]

    def _readable(self, version: int) -> bool:
        """Whether every file a version references is there (local stores; object stores
        are trusted, a check would cost a request per file)."""
        if not is_local(self.uri):
            return True
        if version in self._readable_cache:
            return True
        try:
            ds = self._versions_open.get(version) or lance.dataset(
                self.uri, version=version, storage_options=self.store.storage_options)
            ok = not _retention.missing_files(local_path(self.uri), ds)
        except Exception:  # the manifest itself is unreadable
            ok = False
        if ok:  # files of a listed version are only ever removed with its manifest
            self._readable_cache.add(version)
        return ok

    def properties(self, version: VersionRef = None) -> dict[str, str]:
        """Provenance of one version: run id, mode, model, row counts (transaction properties)."""
        br = branch_ref(version)
        if br is not None:
            from ._experiments import _props

            ds = self._branch_ds(*br)
            return _props(ds, ds.version)
        return self._properties(self.resolve(version))

    def _properties(self, version: int) -> dict[str, str]:
        try:
            txn = self._ds.read_transaction(version)
        except Exception:  # versions written without a transaction file have no provenance
            return {}
        raw = getattr(txn, "transaction_properties", None) or {}
        props = {k[len(PROP_PREFIX):]: v for k, v in sorted(raw.items()) if k.startswith(PROP_PREFIX)}
        if txn is not None and "operation" not in props:
            props["operation"] = type(txn.operation).__name__
        return props

    def resolve(self, ref: VersionRef) -> int:
        """Turn ``None`` (latest), a version number or a tag into a version number of
        production. An experiment's version is refused: its number names another
        version of production (read it with ``read``/``search(version=...)``)."""
        if ref is None:
            return self.version
        ds = self._at(ref)
        branch = getattr(ds, "_ea_branch", None)
        if branch is not None:
            raise ValidationError(
                f"{ref!r} is version {ds.version} of experiment {branch!r} of {self.name!r}, "
                "not a version of production; read or search it with version=..., or promote it")
        return ds.version

    def _at(self, ref: int | str | tuple[str, int | None]) -> lance.LanceDataset:
        """The dataset at a version number, tag or experiment version. Versions are
        immutable, so handles are kept; listing every version (one manifest read each)
        happens only for the error."""
        br = branch_ref(ref)
        if br is not None:
            return self._branch_ds(*br)
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise ValidationError(f"a version must be an int or a tag name, got "
                                  f"{type(ref).__name__} {ref!r}")
        if isinstance(ref, str) and version_number(ref) is None:
            tags = self.tags()
            branches = self._branches() if ref not in tags else {}
            if ref in branches:
                return self._branch_ds(ref)  # an experiment's name: its latest version
            if ref not in tags:
                numbers = [int(v["version"]) for v in self._ds.versions()]
                raise VersionNotFoundError(
                    f"table {self.name!r} has no tag {ref!r}; "
                    + (f"tags: {', '.join(sorted(tags))}" if tags else "it has no tags")
                    + f"; versions: {_ranges(numbers)}"
                    + (f"; experiments: {', '.join(sorted(branches))}" if branches else ""))
            n = tags[ref]
        else:
            n = int(ref)
        ds = self._versions_open.get(n)
        if ds is None:
            ds = self._open_version(n)
            if len(self._versions_open) > 64:
                self._versions_open.clear()
            self._versions_open[n] = ds
        return ds

    def _open_version(self, n: int) -> lance.LanceDataset:
        try:
            ds = lance.dataset(self.uri, version=n, storage_options=self.store.storage_options)
        except Exception as exc:
            numbers = [int(v["version"]) for v in self.refresh()._ds.versions()]
            if n in numbers:  # it exists, so opening failed for another reason
                raise StorageError(f"cannot open version {n} of {self.name!r}: "
                                   f"{describe(exc)}") from None
            raise VersionNotFoundError(
                f"table {self.name!r} has no version {n}; versions: {_ranges(numbers)}"
                + self._tags_hint()) from None
        if not self._readable(n):
            raise VersionNotFoundError(
                f"version {n} of {self.name!r} is partly removed (an interrupted cleanup): it "
                "cannot be read or rolled back to; `cleanup` removes it")
        return ds

    def _tags_hint(self) -> str:
        tags = self.tags()
        return f"; tags: {', '.join(f'{t}={v}' for t, v in sorted(tags.items()))}" if tags else ""

    def dataset(self, version: VersionRef = None) -> lance.LanceDataset:
        """The Lance dataset at a version or tag (latest by default)."""
        if version is None:
            return self.refresh()._ds
        if self._seen is not None and self._fingerprint() != self._seen:
            self.refresh()  # the folder changed: a drop and re-create clears stale handles
        return self._at(version)

    def tag(self, tag: str, version: VersionRef = None) -> int:
        """Tag a version (latest by default); moving an existing tag is explicit via ``retag``.

        A cleanup running meanwhile either sees the tag or is waited for; a version it
        removed first is refused (:class:`VersionNotFoundError`), never tagged."""
        validate_tag(tag)
        v = self.resolve(version)
        tags = self.tags()
        if tag in tags:
            raise ValidationError(
                f"tag {tag!r} already points at version {tags[tag]} of {self.name!r}; untag it first")
        self._create_tag(tag, v)
        return v

    def _create_tag(self, tag: str, v: int, move: bool = False) -> None:
        try:
            (self._ds.tags.update if move else self._ds.tags.create)(tag, v)
        except (ValueError, OSError) as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise VersionNotFoundError(f"table {self.name!r} has no version {v} "
                                           "(removed by a cleanup)") from None
            raise StorageError(f"cannot tag version {v} of {self.name!r}: {describe(exc)}") from None
        _retention.wait_for_cleanups(self._ds)
        if not _retention.version_whole(self.uri, v, self.store.storage_options):
            with contextlib.suppress(Exception):
                self._ds.tags.delete(tag)
            self._versions_open.pop(v, None)
            self._readable_cache.discard(v)
            raise VersionNotFoundError(f"version {v} of {self.name!r} was removed by a cleanup "
                                       "running at the same time; it was not tagged")

    def retag(self, tag: str, version: VersionRef = None) -> int:
        """Point ``tag`` at a version (latest by default), creating or moving it."""
        validate_tag(tag)
        v = self.resolve(version)
        self._create_tag(tag, v, move=tag in self.tags())
        return v

    def migrate(self) -> bool:
        """Declare the key column as Lance's unenforced primary key on a table created
        before embed_assets declared it (a one-time, idempotent step; new tables have it).

        One maintenance version (Lance ``Project``: the key column becomes non-null and
        carries ``lance-schema:unenforced-primary-key``), hidden from :meth:`versions`
        like an index build. Returns False when there was nothing to do. The store's own
        writers keep keys unique without it (their commits are fenced); it makes Lance's
        ``merge_insert`` run by other tools on the same table detect concurrent inserts of
        one key too.
        """
        from ._commits import commit, with_retries
        from ._writes import has_primary_key, with_primary_key

        def attempt(_n: int) -> bool:
            ds = self.refresh()._ds
            key = TableMeta.infer(ds.schema).key
            if has_primary_key(ds.schema, key):
                return False
            schema = with_primary_key(ds.schema, key)
            if not has_primary_key(schema, key):
                raise ValidationError(f"the key column {key!r} of {self.name!r} has type "
                                      f"{ds.schema.field(key).type}: Lance takes no primary key of it")
            nulls = ds.count_rows(filter=f"{sqlx.quote_ident(key)} IS NULL")
            if nulls:
                raise ValidationError(f"the key column {key!r} of {self.name!r} holds {nulls} null(s) "
                                      "(written around embed_assets): it cannot become a primary key")
            commit(ds, lance.LanceOperation.Project(schema), ds.version,
                   {f"{PROP_PREFIX}mode": "migrate",
                    f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat()},
                   self.store.storage_options)
            return True

        changed, _ = with_retries(attempt)
        self.refresh()
        return changed

    def untag(self, tag: str) -> int:
        tags = self.tags()
        if tag not in tags:
            raise VersionNotFoundError(
                f"table {self.name!r} has no tag {tag!r}; "
                + (f"tags: {', '.join(sorted(tags))}" if tags else "it has no tags"))
        self._ds.tags.delete(tag)
        return tags[tag]

    # -- reading ------------------------------------------------------------------------
    def count_rows(self, version: VersionRef = None) -> int:
        return self.dataset(version).count_rows()

    def read(self, version: VersionRef = None, *, columns: Sequence[str] | None = None,
             where: str | None = None) -> pa.Table:
        """Read the table at a version (or tag) as Arrow."""
        validate_where(where)
        ds = self.dataset(version)
        cols = validate_columns(columns, ds.schema.names, self.name)
        try:
            return ds.to_table(columns=cols,
                               filter=where if where is not None else SCAN_ALL)
        except (ValueError, OSError) as exc:
            self._raise_if_vanished(ds.version, exc)
            if where is None or is_storage_failure(exc):  # a torn read is not bad input
                raise StorageError(f"cannot read {self.name!r} at version {ds.version}: "
                                   f"{describe(exc)}") from None
            raise ValidationError(f"cannot read {self.name!r}: {describe(exc)}") from None

    def _raise_if_vanished(self, version: int, exc: BaseException) -> None:
        """A read that failed because a cleanup removed its version meanwhile is a
        :class:`VersionNotFoundError`, not a bad filter or a storage failure."""
        if is_local(self.uri):
            gone = _retention.manifest_path(local_path(self.uri), version) is None
        else:
            try:
                lance.dataset(self.uri, version=version, storage_options=self.store.storage_options)
                gone = False
            except Exception:  # the version cannot be opened any more
                gone = True
        if gone:
            self._versions_open.pop(version, None)
            self._readable_cache.discard(version)
            raise VersionNotFoundError(
                f"version {version} of {self.name!r} was removed by a cleanup while it was read "
                f"({describe(exc)})") from None

    def to_polars(self, version: VersionRef = None, **kwargs: Any) -> Any:
        import polars as pl

        return pl.from_arrow(self.read(version, **kwargs))

    def to_pandas(self, version: VersionRef = None, **kwargs: Any) -> Any:
        """The table at a version (or tag) as a pandas DataFrame; ``columns`` and ``where``
        as in :meth:`read`. Vectors are numpy arrays (one per cell)."""
        require("pandas", "to_pandas()", "pandas")
        return self.read(version, **kwargs).to_pandas()

    def get(self, keys: Iterable[Any], version: VersionRef = None, *,
            columns: Sequence[str] | None = None,
            missing: Literal["skip", "error"] = "skip") -> pa.Table:
        """Fetch rows by key at any version, in the order asked; keys not stored are
        skipped, or with ``missing="error"`` refused with :class:`KeyNotFoundError` naming
        them (a key is never converted: 1.5 does not find the integer key 1).

        Served by an in-memory key index of the (immutable) version, built from one scan
        of the key column on first use; the rows come from the version's cached scalar
        columns and, if asked for, a Lance ``take`` of the vectors.
        """
        keys = as_list(keys, "keys", "key")
        ds = self.dataset(version)
        key = self._key(ds)
        meta = TableMeta.infer(ds.schema)
        idx = CACHE.key_index(key, ds, meta.key)
        cols = validate_columns(columns, ds.schema.names, self.name)
        if missing not in ("skip", "error"):
            raise ValidationError(f"missing must be 'skip' or 'error', got {missing!r}")
        if idx is not None:
            out = take_rows(key, ds, idx.lookup(keys), cols)
        else:
            out = pa.concat_tables([
                ds.to_table(columns=cols, filter=sqlx.in_list(meta.key, keys[i:i + 5000]))
                for i in range(0, max(len(keys), 1), 5000)])
        if missing == "error" and out.num_rows < len(keys):
            found = set(self.get(keys, ds.version, columns=[meta.key]).column(meta.key).to_pylist()) \
                if cols is not None and meta.key not in cols else set(out.column(meta.key).to_pylist())
            absent = [k for k in keys if k not in found]
            if absent:
                shown = ", ".join(map(repr, absent[:10])) + (", ..." if len(absent) > 10 else "")
                raise KeyNotFoundError(f"{len(absent)} key(s) not in {self.name!r} at version "
                                       f"{ds.version}: {shown}")
        return out

    # -- search ---------------------------------------------------------------------------
    def search(
        self,
        query: Any,
        k: int = 10,
        *,
        where: str | None = None,
        version: VersionRef = None,
        columns: Sequence[str] | None = None,
        embedder: Any = None,
        use_index: bool | None = None,
        nprobes: int | None = None,
        refine_factor: int | None = None,
        metric: str | None = None,
        output: str = "arrow",
        partition: Any = None,
        explain: bool = False,
        mode: str = "vector",
        fusion: _hybrid.Fusion | None = None,
    ) -> Any:
        """Nearest neighbours of a vector, or of a text embedded with ``embedder``.

        Everything is checked against the version searched: a text's embedder must be
        the model that version was embedded with, a vector must have its dimension.

        Parameters
        ----------
        use_index : bool, optional
            ``None`` (default) follows the table's index policy: the tuned ANN index and its
            stored ``nprobes``/``refine_factor`` when :func:`build_index` chose one, exact
            search otherwise. ``False`` forces exact search; ``True`` forces the index.
        nprobes, refine_factor : int, optional
            Override the stored search parameters.
        output : {"arrow", "polars", "pandas"}
            The type of the result (default a pyarrow Table).
        where : str, optional
            A SQL filter (Lance/DataFusion syntax), applied before ranking: the rows it
            selects on this version are found once and kept, and a selective filter is
            answered by an exact scan of just those rows (see ``explain``).
        partition : value or (column, value), optional
            Search one partition: ``partition="editors"`` on a table written by partition
            (its partition column is recorded), or ``("section", "editors")``. The same
            sub-index as ``where="section = 'editors'"``; combined with ``where`` by AND.
        explain : bool
            Also return the :class:`~embed_assets.store.Plan` that ran (which path, why,
            how many rows the filter selected): ``rows, plan = t.search(..., explain=True)``.
        mode : {"vector", "text", "hybrid"}
            ``"text"``: BM25 over the full-text index (:func:`~embed_assets.build_text_index`),
            no embedder needed; ``"hybrid"``: the vector ranking and the BM25 ranking fused
            by reciprocal rank (see ``fusion``), so a term that only appears literally (a
            package name) is found beside what the text means. Both add ``text_score``
            (BM25, null for a row the text search did not return); hybrid adds ``score``
            (the fused score) and keeps ``distance`` (exact, for every row).
        fusion : Fusion, optional
            Weights of the two rankings and the RRF constant (default 1, 1 and 60).

        Returns
        -------
        pyarrow.Table (or polars / pandas DataFrame, see ``output``)
            The table's columns plus ``distance`` (the table's metric: cosine ``1 - cos``,
            dot ``1 - dot``, l2 Euclidean, as in the SQL macros) and ``rank`` (1 = nearest).
            With ``explain=True``, a ``(result, Plan)`` pair.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from embed_assets import Store
        >>> s = Store(tempfile.mkdtemp())
        >>> _ = s.write("t", {"id": [1, 2, 3], "section": ["a", "b", "a"],
        ...                   "vector": np.eye(3, dtype=np.float32)}, key="id")
        >>> rows, plan = s.table("t").search([1, 0, 0], k=2, where="section = 'a'", explain=True)
        >>> rows.column("id").to_pylist(), plan.path
        ([1, 3], 'filtered-exact')
        """
        if output not in _OUTPUTS:
            raise ValidationError(
                f"output must be one of {', '.join(map(repr, _OUTPUTS))}, got {output!r}")
        if mode not in _hybrid.SEARCH_MODES:
            raise ValidationError(f"mode must be one of {', '.join(map(repr, _hybrid.SEARCH_MODES))}, "
                                  f"got {mode!r}")
        ds = self._searched(version)
        key = self._key(ds)
        meta = meta_of(key, ds)
        parts: tuple[str, ...] = ()
        if where is not None or partition is not None:
            where, parts = _search.combine_filters(
                validate_where(where), _search.partition_filter(self.name, meta, ds, partition))
        req = _search.SearchRequest(query, k, where, list(columns) if columns else None,
                                    embedder, use_index, nprobes, refine_factor, metric, parts)
        rank_metric = _search.check_request(req, meta)
        try:
            if mode == "text":
                res, p = self._text_search(ds, meta, key, req)
            else:
                q = _search.query_vector(self.name, meta, query, embedder, rank_metric)
                if mode == "hybrid":
                    res, p = self._hybrid_search(ds, meta, key, req, q, rank_metric,
                                                 (fusion or _hybrid.Fusion()).check())
                else:
                    ctx = self._context(ds, key, meta)
                    p = _search.plan(ctx, req, rank_metric)
                    res = _search.run(ctx, q, req, rank_metric, p)
        except (ValidationError, OSError) as exc:
            self._raise_if_vanished(ds.version, exc)
            raise
        out = _as_output(res, output)
        return (out, p) if explain else out

    def search_batch(
        self,
        queries: Any,
        k: int = 10,
        *,
        where: str | None = None,
        version: VersionRef = None,
        columns: Sequence[str] | None = None,
        embedder: Any = None,
        use_index: bool | None = None,
        metric: str | None = None,
        partition: Any = None,
        output: str = "arrow",
        explain: bool = False,
        threads: int = 1,
    ) -> Any:
        """Nearest neighbours of many queries in one call: one plan, one version, and the
        rows of every query in one table with a ``query`` column (the query's position in
        ``queries``), each query's rows nearest first. The same answers as calling
        :meth:`search` once per query, for a fraction of the fixed cost per query: the
        HNSW graph answers all queries in one call (``threads`` > 1 spreads them over
        cores), an exact scan is one matrix product per block of queries, and the rows
        are gathered once.

        ``queries``: a list of texts (embedded in one call with ``embedder``) or vectors
        (an (n, d) array). The other arguments as in :meth:`search`.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from embed_assets import Store
        >>> s = Store(tempfile.mkdtemp())
        >>> _ = s.write("t", {"id": [1, 2, 3], "vector": np.eye(3, dtype=np.float32)}, key="id")
        >>> got = s.table("t").search_batch(np.eye(3, dtype=np.float32)[:2], k=1)
        >>> got.column("query").to_pylist(), got.column("id").to_pylist()
        ([0, 1], [1, 2])
        """
        if output not in _OUTPUTS:
            raise ValidationError(
                f"output must be one of {', '.join(map(repr, _OUTPUTS))}, got {output!r}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValidationError(f"threads must be a positive integer, got {threads!r}")
        ds = self._searched(version)
        key = self._key(ds)
        meta = meta_of(key, ds)
        where, parts = _search.combine_filters(
            validate_where(where), _search.partition_filter(self.name, meta, ds, partition))
        req = _search.SearchRequest(None, k, where, list(columns) if columns else None,
                                    embedder, use_index, None, None, metric, parts)
        rank_metric = _search.check_request(req, meta)
        qs = _search.query_matrix(self.name, meta, queries, embedder, rank_metric)
        try:
            ctx = self._context(ds, key, meta)
            p = _search.plan(ctx, req, rank_metric)
            res = _search.run_batch(ctx, qs, req, rank_metric, p, threads)
        except (ValidationError, OSError) as exc:
            self._raise_if_vanished(ds.version, exc)
            raise
        out = _as_output(res, output)
        return (out, p) if explain else out

    def partitions(self, version: VersionRef = None) -> list[dict[str, Any]]:
        """The partitions of the recorded partition column at a version, sorted by value:
        ``value``, ``rows``, ``last_written`` (the version that last wrote the partition's
        rows: its sub-index is gathered once per such version, see :meth:`search`) and
        ``fragments`` (the data fragments holding its rows). ``[]`` for a table that
        records no partition column.

        Examples
        --------
        >>> import numpy as np, tempfile
        >>> from embed_assets import Store
        >>> s = Store(tempfile.mkdtemp())
        >>> for sec in ("a", "b"):
        ...     _ = s.write("t", {"id": [ord(sec)], "section": [sec],
        ...                       "vector": np.ones((1, 2), np.float32)}, key="id",
        ...                 mode="replace_partition", partition=("section", sec))
        >>> [(p["value"], p["rows"], p["last_written"]) for p in s.table("t").partitions()]
        [('a', 1, 1), ('b', 1, 2)]
        """
        ds = self.dataset(version)
        meta = TableMeta.infer(ds.schema)
        column = meta.partition_column
        if column is None or column not in ds.schema.names:
            return []
        key = self._key(ds)
        by_value: dict[Any, dict[str, Any]] = {}
        for frag in ds.get_fragments():
            col = frag.to_table(columns=[column]).column(column)
            values, counts = np.unique(np.asarray(col.to_pylist(), dtype=object), return_counts=True)
            for v, n in zip(values.tolist(), counts.tolist(), strict=True):
                entry = by_value.setdefault(v, {"value": v, "rows": 0, "fragments": []})
                entry["rows"] += int(n)
                entry["fragments"].append(frag.fragment_id)
        out = []
        for v in sorted(by_value, key=str):
            entry = by_value[v]
            entry["last_written"] = _partitions.epoch(key, column, str(v), self._properties)
            out.append(entry)
        return out

    def unfiltered_graph(self, version: VersionRef = None) -> tuple[Graph | None, str]:
        """The verified HNSW graph that unfiltered searches of ``version`` in the table's
        metric run on, or (None, why) when they take another path (the store's own
        loader and checks, :func:`embed_assets.store.graph.load`; never a graph of other
        rows). For a server that answers many queries in one ``knn_query`` call."""
        ds = self._searched(version)
        key = self._key(ds)
        return _search.unfiltered_graph(self._context(ds, key, meta_of(key, ds)))

    def _context(self, ds: lance.LanceDataset, key: VersionKey, meta: TableMeta,
                 ) -> _search.VersionContext:
        """What the planner needs about the one version a search reads (the last one
        made is kept: building it costs ~1.5 us of a ~35 us graph query)."""
        ctx = self._last_context
        if ctx is None or ctx.key != key or ctx.ds is not ds:
            ctx = self._last_context = _search.VersionContext(
                self.name, ds, key, meta, self.graph_home(), self._partition_epoch(meta, key))
        return ctx

    def graph_home(self) -> GraphHome:
        """Where this table's HNSW graphs live (:mod:`.graph`)."""
        home = self._home
        if home is None or home.table_id != self._identity:  # made once per incarnation
            home = self._home = GraphHome(self.uri, self._identity,
                                          getattr(self.store, "storage_options", None))
        return home

    def _partition_epoch(self, meta: TableMeta, key: VersionKey,
                         ) -> Callable[[str], tuple[str, VersionKey] | None]:
        """For the planner: a filter selecting one partition of the recorded partition
        column -> (its canonical filter, the version it was last written at)."""

        def epoch_of(where: str) -> tuple[str, VersionKey] | None:
            column = meta.partition_column
            value = _partitions.partition_value(where, column)
            if column is None or value is None:
                return None
            v = _partitions.epoch(key, column, value, self._properties)
            return _partitions.canonical(column, value), self.cache_key(v)

        return epoch_of

    def _text_search(self, ds: lance.LanceDataset, meta: TableMeta, key: VersionKey,
                     req: _search.SearchRequest) -> tuple[pa.Table, _search.Plan]:
        hits = _hybrid.text_hits(self.name, ds, meta, req.query, req.k, req.where)
        rows, _ = _hybrid.rows_by_key(key, ds, meta, hits.column(meta.key).to_pylist(), req.columns)
        rows = rows.append_column("text_score", hits.column("text_score").cast(pa.float32()))
        rows = rows.append_column("rank", pa.array(np.arange(1, rows.num_rows + 1), pa.int32()))
        cols = ", ".join(_hybrid.text_columns(ds))
        return rows, _search.Plan("text", False, {}, f"BM25 over the full-text index on {cols}",
                                  ds.count_rows())

    def _hybrid_search(self, ds: lance.LanceDataset, meta: TableMeta, key: VersionKey,
                       req: _search.SearchRequest, q: np.ndarray, metric: str,
                       fusion: _hybrid.Fusion) -> tuple[pa.Table, _search.Plan]:
        n = max(4 * req.k, 50)
        texts = _hybrid.text_hits(self.name, ds, meta, req.query, n, req.where)
        vreq = dataclasses.replace(req, k=n, columns=[meta.key])
        ctx = self._context(ds, key, meta)
        vp = _search.plan(ctx, vreq, metric)
        vec = _search.run(ctx, q, vreq, metric, vp)
        vkeys = vec.column(meta.key).to_pylist()
        fused = _hybrid.fuse(vkeys, texts.column(meta.key).to_pylist(), req.k, fusion)
        keys = [f[0] for f in fused]
        rows, offsets = _hybrid.rows_by_key(key, ds, meta, keys, req.columns)
        vdist = dict(zip(vkeys, vec.column("distance").to_pylist(), strict=True))
        tscore = dict(zip(texts.column(meta.key).to_pylist(),
                          texts.column("text_score").to_pylist(), strict=True))
        missing = [i for i, k in enumerate(keys) if k not in vdist]
        dist = np.array([vdist.get(k, np.nan) for k in keys], np.float32)
        if missing:
            dist[missing] = _hybrid.vector_distances(ds, offsets[missing], q, metric)
        rows = rows.append_column("distance", pa.array(dist, pa.float32()))
        rows = rows.append_column("text_score", pa.array([tscore.get(k) for k in keys], pa.float32()))
        rows = rows.append_column("score", pa.array([f[1] for f in fused], pa.float32()))
        rows = rows.append_column("rank", pa.array(np.arange(1, rows.num_rows + 1), pa.int32()))
        p = _search.Plan("hybrid", vp.ann, vp.params,
                         f"reciprocal rank fusion (rrf_k={fusion.rrf_k}, vector weight "
                         f"{fusion.vector_weight:g}, text weight {fusion.text_weight:g}) of BM25 "
                         f"and the vector search ({vp.path}: {vp.reason})", vp.rows, vp.matching)
        return rows, p

    # -- rollback and retention ----------------------------------------------------------
_OUTPUTS = ("arrow", "polars", "pandas")


def _as_output(tbl: pa.Table, output: str) -> Any:
    if output == "polars":
        import polars as pl

        return pl.from_arrow(tbl)
    if output == "pandas":
        require("pandas", "output='pandas'", "pandas")
        return tbl.to_pandas()
    return tbl


def table_fingerprint(uri: str) -> tuple[int, int] | None:
    """The table folder's ``_versions`` directory (inode, ctime) on a local store: a table
    dropped and created again under this name has another one, even with the same latest
    version number. None on object stores (nothing as cheap to ask there)."""
    if not is_local(uri):
        return None
    try:
        st = os.stat(os.path.join(local_path(uri), "_versions"))
    except OSError:
        return (0, 0)
    return (st.st_ino, st.st_ctime_ns)


_STORAGE_WORDS = ("not found", "no such file", "io error", "object store", "permission denied",
                  "error sending request", "unexpected eof", "corrupt", "checksum")


def is_storage_failure(exc: BaseException) -> bool:
    """Whether a Lance error is the storage failing (a file gone or unreadable) rather
    than a filter it cannot parse."""
    low = str(exc).lower()
    return any(w in low for w in _STORAGE_WORDS)


def table_identity(ds: lance.LanceDataset) -> str:
    """The table id from the schema metadata; for a table written without one (by an
    older embed_assets, or by Lance directly), the creation time of its oldest version."""
    meta = TableMeta.from_schema(ds.schema)
    if meta is not None and meta.table_id:
        return meta.table_id
    first = min(ds.versions(), key=lambda v: int(v["version"]))
    ts = first["timestamp"]
    return f"created:{ts.isoformat() if isinstance(ts, dt.datetime) else ts}"


def _ranges(nums: Sequence[int]) -> str:
    """Compact '1-4, 7, 9-12' rendering of version numbers."""
    if not nums:
        return "none"
    nums = sorted(nums)
    out, start, prev = [], nums[0], nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)
