"""Experiments: a new model tried on a Lance branch of the table, compared with production on
the table's own rows, then promoted in one commit or discarded.

* **The branch.** ``experiment(name, embedder=...)`` creates a Lance branch named ``name``
  from production's latest version (``create_branch``: a manifest under ``tree/<name>``
  that references production's files; nothing of production is written) and writes the
  re-embedded rows there. Production's versions, tags and index are untouched. When the
  branch already holds an experiment, only rows whose stored text changed since (their
  ``_content_hash``, the rule of the embedding plan) reach the model; rows gone from
  production are deleted from the branch. The branch records, per commit, the model,
  the production version it was based on and the run (transaction properties), and the
  latest base in its branch metadata.
* **Reading.** A branch version is read wherever a version is: ``("name", 3)``,
  ``"name:3"``, or ``"name"`` for its latest (a tag of that name wins).
* **Promotion** commits one Lance ``Overwrite`` on production whose fragments are the
  branch's: a data file production already holds is referenced as is, a file the branch
  wrote is hard-linked into production's ``data/`` (local stores: no data byte written;
  on object stores it is rewritten), and only a fragment with deleted rows (an
  incremental experiment) is rewritten, because Lance's ``Overwrite`` renumbers fragments
  and so refuses deletion files. Lance's ``Overwrite`` conflicts with no concurrent data
  commit (its conflict resolver lets it replace anything), so the fence is this module's:
  under the table's writer lock, production must still hold the rows the experiment was
  based on (else :class:`ProductionMovedError`, or ``resync=True`` re-embeds the changed
  rows first), and the committed version must directly follow the one checked; a write
  from another machine that slipped in between is made current again at once (a Lance
  ``Restore``) and the promotion is refused. Tags stay where they were, so ``rollback``
  to the previous production version is one step.
* **Discard** marks the branch discarded (hidden, refused for reads); ``cleanup`` deletes
  it, and its files, once the grace period has passed (``grace=0``: at once). Lance's
  cleanup of production never removes a file a live branch references, nor the version a
  branch was created from (tested in tests/test_experiments.py), so the store adds nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import lance
import numpy as np
import polars as pl
import pyarrow as pa
from lance import LanceOperation
from lance.fragment import DataFile, FragmentMetadata

from ..errors import (
    ProductionMovedError,
    SchemaMismatchError,
    StorageError,
    ValidationError,
    VersionNotFoundError,
    describe,
)
from . import _filters as sqlx
from ._commits import fence, table_lock, with_retries
from ._meta import (
    MAX_ROWS_PER_FILE,
    META_KEY,
    METRICS,
    PROP_PREFIX,
    VECTOR_COLUMN,
    TableMeta,
    is_local,
    local_path,
    version_number,
)
from ._validation import validate_tag

# Provenance columns an embedding run writes beside the vector (see embed/_plan.py).
_PROVENANCE = ("_model", "_embedded_at", "_run_id")
_MD_BASE = "ea.base_version"
_MD_MODEL = "ea.model"
_MD_DISCARDED = "ea.discarded_at"
# Test hook: runs between the promotion's checks and its commit (a slow promotion, or a
# write from another machine landing in that window).
before_promote_commit: Any = None


def validate_experiment_name(name: Any) -> str:
    """An experiment is named like a tag (and never ``main``, Lance's default branch)."""
    try:
        validate_tag(name)
    except ValidationError as exc:
        raise ValidationError(str(exc).replace("tag ", "experiment name ", 1)) from None
    if name == "main":
        raise ValidationError("experiment name 'main' is production's branch; choose another")
    return name


def branch_ref(ref: Any) -> tuple[str, int | None] | None:
    """``("name", 3)`` / ``("name", None)`` / ``"name:3"`` as (branch, version), else None."""
    if isinstance(ref, tuple):
        if len(ref) != 2 or not isinstance(ref[0], str) or not (
                ref[1] is None or (isinstance(ref[1], int) and not isinstance(ref[1], bool))):
            raise ValidationError(f"a branch version is (experiment name, version number), got {ref!r}")
        return ref[0], ref[1]
    if isinstance(ref, str) and ":" in ref:
        name, _, v = ref.rpartition(":")
        n = version_number(v)
        if not name or n is None:
            raise ValidationError(f"{ref!r}: write an experiment's version as NAME:NUMBER")
        return name, n
    return None


@dataclass
class ExperimentInfo:
    """One experiment of a table: its branch's latest version and what it holds."""

    name: str
    version: int
    base_version: int
    model: str | None
    dimension: int
    metric: str
    rows: int
    created_at: dt.datetime | None
    embedded: bool
    properties: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat() if self.created_at else None
        return d


@dataclass
class ExperimentResult:
    """What ``experiment()`` did: rows re-embedded, kept, deleted, and the branch version."""

    table: str
    experiment: str
    version: int
    base_version: int
    model: str
    rows: int
    rows_embedded: int
    rows_rewritten: int
    rows_deleted: int
    committed: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        what = (f"version {self.version}" if self.committed
                else f"nothing changed, stays at version {self.version}")
        return (f"{self.table}@{self.experiment}: {self.model} on production version "
                f"{self.base_version}; embedded {self.rows_embedded} row(s), rewrote "
                f"{self.rows_rewritten}, deleted {self.rows_deleted}; {what}")


@dataclass
class PromotionResult:
    """What ``promote()`` did: production's new version and what the commit cost."""

    table: str
    experiment: str
    version: int
    previous_version: int
    experiment_version: int
    rows: int
    seconds: float
    bytes_written: int
    bytes_referenced: int
    files_linked: int
    rows_rewritten: int
    index_rebuilt: str | None = None
    index_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.table}: experiment {self.experiment!r} (its version "
                f"{self.experiment_version}) is production version {self.version} "
                f"(was {self.previous_version}); {self.rows} rows, {self.seconds:.3f} s, "
                f"{self.bytes_written} bytes written, {self.bytes_referenced} bytes of data "
                f"referenced; rollback --to {self.previous_version} undoes it")


class ExperimentsMixin:
    """Experiments of :class:`~._table.EmbeddingTable` (see the module docstring)."""

    if TYPE_CHECKING:  # what the mixin reads of the table it is part of
        store: Any
        name: str
        _identity: str
        _ds: lance.LanceDataset

        @property
        def uri(self) -> str: ...

        def refresh(self) -> Any: ...

        def dataset(self, version: Any = None) -> lance.LanceDataset: ...

        def rollback(self, to: Any, *, run_id: str | None = None) -> int: ...

    # -- the branches ---------------------------------------------------------------------
    def _branches(self, *, discarded: bool = False) -> dict[str, dict[str, Any]]:
        raw: dict[str, Any] = self.refresh()._ds.branches.list()
        return {n: b for n, b in raw.items()
                if discarded or _MD_DISCARDED not in (b.get("metadata") or {})}

    def _branch_ds(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """The dataset of an experiment's version (latest by default)."""
        if name == "main":
            return self.dataset(version)
        if name not in self._branches():
            raise self._no_experiment(name)
        # a numbered version never changes: its handle is kept (a checkout costs ~0.2 ms,
        # which would count in every search of it, and in compare's latency figure)
        opened: dict[tuple[str, int, str], lance.LanceDataset] = self.__dict__.setdefault(
            "_branch_versions_open", {})
        cached = opened.get((name, version, self._identity)) if version is not None else None
        if cached is not None:
            return cached
        try:
            ds = self.refresh()._ds.checkout_version((name, version))
        except (OSError, ValueError) as exc:
            versions = [int(v["version"]) for v in
                        self._ds.checkout_version((name, None)).versions()]
            raise VersionNotFoundError(
                f"experiment {name!r} of {self.name!r} has no version {version}; versions: "
                f"{', '.join(map(str, versions))} ({describe(exc)})") from None
        # cache keys tell an experiment's versions from production's by this attribute
        ds._ea_branch = name
        if version is not None:
            if len(opened) > 64:
                opened.clear()
            opened[(name, version, self._identity)] = ds
        return ds

    def _forget_branch(self, name: str) -> None:
        """Drop the kept handles of a branch being deleted (a new one may reuse its name)."""
        opened = self.__dict__.get("_branch_versions_open", {})
        for k in [k for k in opened if k[0] == name]:
            opened.pop(k, None)

    def _no_experiment(self, name: str) -> VersionNotFoundError:
        names = sorted(self._branches())
        return VersionNotFoundError(
            f"table {self.name!r} has no experiment {name!r}; experiments: "
            + (", ".join(names) if names else "none"))

    def experiments(self) -> list[ExperimentInfo]:
        """The table's live experiments, by name."""
        return [self.experiment_info(n) for n in sorted(self._branches())]

    def experiment_info(self, name: str) -> ExperimentInfo:
        branches = self._branches()
        if name not in branches:
            raise self._no_experiment(name)
        b = branches[name]
        md = b.get("metadata") or {}
        ds = self._branch_ds(name)
        meta = TableMeta.infer(ds.schema)
        props = _props(ds, ds.version)
        created = b.get("create_at")
        base, model = _state(md, props)
        return ExperimentInfo(
            name=name, version=ds.version,
            base_version=base if base is not None else int(b.get("parent_version") or 0),
            model=meta.model, dimension=meta.dimension, metric=meta.metric,
            rows=ds.count_rows(),
            created_at=dt.datetime.fromtimestamp(created, dt.UTC) if created else None,
            embedded=model is not None, properties=props)

    # -- running one ----------------------------------------------------------------------
    def experiment(self, name: str, *, embedder: Any, metric: str | None = None,
                   batch_size: int = 1024, run_id: str | None = None) -> ExperimentResult:
        """Re-embed production's current rows with ``embedder`` into the branch ``name``.

        The first run embeds every row (the stored text, the table's ``text_column``);
        a later run of the same experiment re-embeds only rows whose text changed in
        production since, rewrites rows whose other columns changed (keeping their new
        vector), and deletes rows production no longer holds. Production is not written.
        ``metric`` sets the experiment's distance metric (default production's).
        """
        validate_experiment_name(name)
        if metric is not None and metric not in METRICS:
            raise ValidationError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if not hasattr(embedder, "embed") or not getattr(embedder, "name", None):
            raise ValidationError("embedder must have a name and an embed(texts) method")
        started = time.perf_counter()
        run_id = run_id or f"experiment-{uuid.uuid4().hex[:12]}"
        main = self.refresh()._ds
        base = main.version
        meta = TableMeta.infer(main.schema)
        text = meta.text_column
        names = main.schema.names
        if not text or text not in names or "_content_hash" not in names:
            raise ValidationError(
                f"table {self.name!r} keeps no source text ({text or 'no text column recorded'}"
                "): an experiment re-embeds the stored text; write the table with "
                "embed_table keeping the text column")
        every = self._branches(discarded=True)
        if name in every and _MD_DISCARDED in (every[name].get("metadata") or {}):
            main.branches.delete(name)  # a discarded experiment of that name: start afresh
            self._forget_branch(name)
            every.pop(name)
        if name not in every:
            try:
                main.create_branch(name, base)
            except (OSError, ValueError) as exc:
                if name not in self._branches():  # not a concurrent run creating it too
                    raise StorageError(f"cannot create experiment {name!r} of {self.name!r}: "
                                       f"{describe(exc)}") from None
            self.refresh()
        md = dict(self._branches()[name].get("metadata") or {})
        bds = self._branch_ds(name)
        state = _state(md, _props(bds, bds.version))
        embedded = state[1] is not None
        if embedded and state[1] != embedder.name:
            raise SchemaMismatchError(
                f"experiment {name!r} of {self.name!r} holds vectors from {state[1]!r}, "
                f"not {embedder.name!r}; discard it or name another experiment")
        cols = [c for c in names if c != VECTOR_COLUMN]
        prod = main.to_table(columns=cols)
        key = meta.key
        props = {
            f"{PROP_PREFIX}run_id": run_id, f"{PROP_PREFIX}mode": "experiment",
            f"{PROP_PREFIX}experiment": name, f"{PROP_PREFIX}model": embedder.name,
            f"{PROP_PREFIX}experiment_base": str(base),
            f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        if not embedded:
            vectors = _embed(embedder, prod.column(text).to_pylist(), batch_size)
            bmeta = TableMeta(
                key=key, dimension=int(vectors.shape[1]), metric=metric or meta.metric,
                model=embedder.name, model_revision=_revision(embedder), text_column=text,
                partition_column=meta.partition_column, table_id=self._identity)
            rows = _with_vectors(prod, main.schema, vectors, bmeta, embedder.name, run_id)
            props[f"{PROP_PREFIX}rows_written"] = str(rows.num_rows)
            bds = lance.write_dataset(rows, bds, mode="overwrite", max_rows_per_file=MAX_ROWS_PER_FILE,
                                      storage_options=self.store.storage_options,
                                      transaction_properties=props)
            n_embed, n_rewrite, n_del, committed = rows.num_rows, 0, 0, True
        else:
            bmeta = TableMeta.infer(bds.schema)
            if metric is not None and metric != bmeta.metric:
                raise SchemaMismatchError(f"experiment {name!r} uses metric {bmeta.metric!r}; "
                                          "discard it to change the metric")
            bds, n_embed, n_rewrite, n_del, committed = self._sync_branch(
                name, bds, prod, main.schema, bmeta, embedder, batch_size, run_id, props)
        md.update({_MD_BASE: str(base), _MD_MODEL: embedder.name})
        main.branches.replace_metadata(name, md)
        return ExperimentResult(self.name, name, bds.version, base, embedder.name, bds.count_rows(),
                                n_embed, n_rewrite, n_del, committed, time.perf_counter() - started)

    def _sync_branch(self, name: str, bds: lance.LanceDataset, prod: pa.Table, schema: pa.Schema,
                     bmeta: TableMeta, embedder: Any, batch_size: int, run_id: str,
                     props: dict[str, str]) -> tuple[lance.LanceDataset, int, int, int, bool]:
        """A later run: the content-hash diff of production against the branch."""
        key = bmeta.key
        sig_cols = [c for c in prod.column_names if c != key and c not in _PROVENANCE]
        stored = bds.to_table(columns=[c for c in [key, *sig_cols] if c in bds.schema.names])
        src = _signed(prod, key, sig_cols)
        old = _signed(stored, key, [c for c in sig_cols if c in stored.column_names])
        j = src.join(old, on=key, how="left", suffix="__old")
        same_text = (j["_content_hash"] == j["_content_hash__old"]).fill_null(False).to_numpy()
        same_row = (same_text & (j["_sig"] == j["_sig__old"]).fill_null(False).to_numpy())
        gone = old.join(src.select(key), on=key, how="anti")[key].to_list()
        write_idx = np.flatnonzero(~same_row)
        if not write_idx.size and not gone:
            return bds, 0, 0, 0, False
        rows = prod.take(pa.array(write_idx, pa.int64()))
        embed_mask = ~same_text[write_idx]
        vectors = np.zeros((rows.num_rows, bmeta.dimension), np.float32)
        if embed_mask.any():
            texts = rows.column(bmeta.text_column).take(
                pa.array(np.flatnonzero(embed_mask), pa.int64())).to_pylist()
            new = _embed(embedder, texts, batch_size)
            if new.shape[1] != bmeta.dimension:
                raise SchemaMismatchError(
                    f"experiment {name!r} has dimension {bmeta.dimension}; embedder "
                    f"{embedder.name!r} produced {new.shape[1]}")
            vectors[embed_mask] = new
        keep_idx = np.flatnonzero(~embed_mask)
        if keep_idx.size:  # other columns changed: the branch's vector stays
            keys = rows.column(key).take(pa.array(keep_idx, pa.int64())).to_pylist()
            kept = bds.to_table(columns=[key, VECTOR_COLUMN], filter=sqlx.in_list(key, keys))
            by_key = dict(zip(kept.column(key).to_pylist(),
                              kept.column(VECTOR_COLUMN).to_numpy(zero_copy_only=False), strict=True))
            for i, k in zip(keep_idx, keys, strict=True):
                vectors[i] = by_key[k]
        rows = _with_vectors(rows, schema, vectors, bmeta, embedder.name, run_id).cast(bds.schema)
        props = {**props, f"{PROP_PREFIX}rows_written": str(rows.num_rows),
                 f"{PROP_PREFIX}rows_deleted": str(len(gone))}

        def attempt(_n: int) -> lance.LanceDataset:
            b = self._branch_ds(name)
            builder = b.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
            if gone:
                builder = builder.when_not_matched_by_source_delete(sqlx.in_list(key, gone))
            txn, _ = builder.execute_uncommitted(rows)
            op: Any = txn.operation
            return lance.LanceDataset.commit(
                b, lance.Transaction(b.version, fence(b, list(op.removed_fragment_ids),
                                                       list(op.updated_fragments),
                                                       list(op.new_fragments)),
                                     transaction_properties=props),
                storage_options=self.store.storage_options)

        with table_lock(self.store, f"{self.name}@{name}"):
            with_retries(attempt)
        return (self._branch_ds(name), int(embed_mask.sum()), int((~embed_mask).sum()),
                len(gone), True)

    # -- comparing ------------------------------------------------------------------------
    def compare(self, name: str, *, production: Any = None, queries: Any = None,
                embedders: tuple[Any, Any] | None = None, sample: int = 200, k: int = 10,
                label_column: str | None = None, pairs: Any = None, seed: int = 0) -> Any:
        """Compare experiment ``name`` with production (its latest version, or
        ``production``) on ``sample`` of the table's own rows (or ``queries``, texts, with
        ``embedders=(production's, the experiment's)``): top-k overlap, rank correlation,
        share of rows whose nearest neighbour changed, ``same_label_at_k`` for a
        ``label_column``, ``recall_at_k`` for labelled ``pairs``, search latency and index
        build time of each side. Returns a :class:`~embed_assets.store.Comparison`
        (``.to_arrow()``, ``.to_polars()``, ``.summary()``)."""
        from ._compare import compare

        if name not in self._branches():
            raise self._no_experiment(name)
        return compare(self, name, production=production, queries=queries, embedders=embedders,
                       sample=sample, k=k, label_column=label_column, pairs=pairs, seed=seed)

    # -- promotion ------------------------------------------------------------------------
    def promote(self, name: str, *, resync: bool = False, embedder: Any = None,
                comparison: Any = None, run_id: str | None = None) -> PromotionResult:
        """Make experiment ``name``'s rows production's next version, in one commit.

        No model is called. Refused with :class:`ProductionMovedError` when production's
        rows changed since the experiment's base version, unless ``resync=True`` (with the
        experiment's ``embedder``), which first re-embeds only the changed rows.
        ``comparison`` (a :class:`Comparison`) is recorded in the version's provenance.
        """
        from ._index_facts import ensure_scalar_indexes, has_scalar_index, index_config, vector_index_type
        from ._rollback import IndexKeeper, _same_rows

        started = time.perf_counter()
        run_id = run_id or f"promote-{uuid.uuid4().hex[:12]}"
        info = self.experiment_info(name)
        if not info.embedded:
            raise ValidationError(f"experiment {name!r} of {self.name!r} holds no embedded rows "
                                  "yet (an interrupted first run): run the experiment again")
        main = self.refresh()._ds
        if not self._holds_base(main, info.base_version, _same_rows):
            if not resync:
                raise ProductionMovedError(
                    f"production of {self.name!r} changed since experiment {name!r} was based on "
                    f"version {info.base_version} (now version {main.version}); promoting would "
                    "drop those changes. Nothing was written: promote with resync=True "
                    "(CLI --resync) to re-embed the changed rows first",
                    base_version=info.base_version, production_version=main.version)
            if embedder is None:
                raise ValidationError("resync=True needs the experiment's embedder")
            self.experiment(name, embedder=embedder, run_id=run_id)
            info = self.experiment_info(name)
        keeper: IndexKeeper | None = getattr(self.store, "index_keeper", None)
        lost = vector_index_type(main)
        had_scalar = has_scalar_index(main)
        report = index_config(main, self._identity) or {}
        with table_lock(self.store, self.name):
            main = self.refresh()._ds
            if not self._holds_base(main, info.base_version, _same_rows):
                raise ProductionMovedError(
                    f"production of {self.name!r} changed while experiment {name!r} was being "
                    f"promoted (base version {info.base_version}, now {main.version}); nothing "
                    "was written", base_version=info.base_version, production_version=main.version)
            bds = self._branch_ds(name, info.version)
            before = _metadata_bytes(self.uri)
            frags, referenced, linked, rewritten, copied = _production_fragments(
                self.uri, name, bds, main, self.store.storage_options)
            props = {
                f"{PROP_PREFIX}run_id": run_id, f"{PROP_PREFIX}mode": "promote",
                f"{PROP_PREFIX}experiment": name,
                f"{PROP_PREFIX}experiment_version": str(info.version),
                f"{PROP_PREFIX}experiment_base": str(info.base_version),
                f"{PROP_PREFIX}model": info.model or "",
                f"{PROP_PREFIX}rows_written": str(rewritten),
                f"{PROP_PREFIX}written_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            if comparison is not None:
                props[f"{PROP_PREFIX}comparison"] = json.dumps(comparison.figures(), default=str)
            if before_promote_commit is not None:
                before_promote_commit(main.version)
            txn = lance.Transaction(main.version, LanceOperation.Overwrite(bds.schema, frags),
                                    transaction_properties=props)
            try:
                new = lance.LanceDataset.commit(self.uri, txn, storage_options=self.store.storage_options)
            except BaseException:
                _remove_unreferenced(self.uri, linked + copied)
                raise
            if new.version != main.version + 1:
                # Another machine's write landed between the check and the commit (Lance's
                # Overwrite does not conflict with it): make it current again, refuse.
                slipped = new.version - 1
                self.rollback(slipped, run_id=run_id)
                raise ProductionMovedError(
                    f"a write to {self.name!r} (version {slipped}) landed while experiment "
                    f"{name!r} was promoted; the promotion (version {new.version}) was undone by "
                    f"version {self.refresh()._ds.version}", base_version=info.base_version,
                    production_version=slipped)
        written = _metadata_bytes(self.uri) - before + sum(_size(self.uri, p) for p in copied)
        seconds = time.perf_counter() - started
        self.refresh()
        index_started = time.perf_counter()
        # Lance's Overwrite leaves no index: production's are rebuilt on the promoted rows
        # (maintenance versions after the promotion, as after a rollback).
        if lost and keeper is not None:
            keeper(self, report, lost)
        elif had_scalar:
            meta = TableMeta.infer(new.schema)
            ensure_scalar_indexes(self.refresh()._ds, meta.key, meta.partition_column)
        return PromotionResult(self.name, name, new.version, main.version, info.version,
                               new.count_rows(), seconds, written, referenced, len(linked),
                               rewritten, lost if lost and keeper is not None else None,
                               time.perf_counter() - index_started if lost else 0.0)

    def _holds_base(self, main: lance.LanceDataset, base: int, same_rows: Any) -> bool:
        """Whether production still holds the rows of ``base`` (index builds and tags
        after it change no rows)."""
        if main.version == base:
            return True
        try:
            return bool(same_rows(main, self.dataset(base)))
        except VersionNotFoundError:  # the base was cleaned up: nothing to compare with
            return False

    # -- discarding ---------------------------------------------------------------------
    def discard(self, name: str, *, grace: Any = None) -> None:
        """Throw experiment ``name`` away: hidden and unreadable at once; its branch and
        files are deleted by ``cleanup`` once ``grace`` has passed (default the cleanup's
        grace period), or now with ``grace=0``."""
        from ._validation import as_duration

        branches = self._branches()
        if name not in branches:
            raise self._no_experiment(name)
        ds = self.refresh()._ds
        self._forget_branch(name)
        if grace is not None and as_duration(grace, "grace") == dt.timedelta(0):
            ds.branches.delete(name)
            return
        md = dict(branches[name].get("metadata") or {})
        md[_MD_DISCARDED] = dt.datetime.now(dt.UTC).isoformat()
        ds.branches.replace_metadata(name, md)

    def _purge_discarded(self, grace: dt.timedelta) -> list[str]:
        """Delete the branches discarded at least ``grace`` ago (cleanup calls it)."""
        now = dt.datetime.now(dt.UTC)
        out = []
        ds = self.refresh()._ds
        for n, b in ds.branches.list().items():
            stamp = (b.get("metadata") or {}).get(_MD_DISCARDED)
            if stamp and now - dt.datetime.fromisoformat(stamp) >= grace:
                with contextlib.suppress(Exception):
                    ds.branches.delete(n)
                    self._forget_branch(n)
                    out.append(n)
        return out


# -- helpers -----------------------------------------------------------------------------------
def _props(ds: lance.LanceDataset, version: int) -> dict[str, str]:
    try:
        txn = ds.read_transaction(version)
    except Exception:
        return {}
    raw = getattr(txn, "transaction_properties", None) or {}
    return {k[len(PROP_PREFIX):]: v for k, v in sorted(raw.items()) if k.startswith(PROP_PREFIX)}


def _state(md: dict[str, str], props: dict[str, str]) -> tuple[int | None, str | None]:
    """(base version, model) of an experiment. Its latest commit records both atomically
    with its rows; the branch metadata, written after each run, also moves the base when a
    run found nothing to change. A run killed between the two leaves the older base in
    the metadata: the newer of the two is the experiment's."""
    bases = [int(b) for b in (md.get(_MD_BASE), props.get("experiment_base")) if b]
    model = md.get(_MD_MODEL) or (props.get("model") if props.get("mode") == "experiment" else None)
    return (max(bases) if bases else None), model


def _revision(embedder: Any) -> str | None:
    rev = getattr(embedder, "revision", None)
    return rev if isinstance(rev, str) and rev else None


def _embed(embedder: Any, texts: list[str], batch_size: int) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        got = np.asarray(embedder.embed(chunk), dtype=np.float32)
        if got.ndim != 2 or got.shape[0] != len(chunk):
            raise ValidationError(f"embedder {embedder.name!r} returned shape {got.shape} for "
                                  f"{len(chunk)} texts")
        parts.append(got)
    if not parts:
        dim = int(getattr(embedder, "dimension", 0) or 0)
        if dim <= 0:
            raise ValidationError("cannot run an experiment on a table with no rows")
        return np.zeros((0, dim), np.float32)
    return np.concatenate(parts)


def _signed(tbl: pa.Table, key: str, cols: list[str]) -> pl.DataFrame:
    frame = pl.from_arrow(tbl.select([key, "_content_hash"]))
    assert isinstance(frame, pl.DataFrame)
    others = [c for c in cols if c != "_content_hash"]
    sig = (pl.from_arrow(tbl.select(others)).hash_rows(seed=0)  # type: ignore[union-attr]
           if others else pl.Series(np.zeros(tbl.num_rows, np.uint64)))
    return frame.with_columns(sig.alias("_sig"))


def _with_vectors(rows: pa.Table, schema: pa.Schema, vectors: np.ndarray, meta: TableMeta,
                  model: str, run_id: str) -> pa.Table:
    """Production's rows with the experiment's vectors and provenance, in production's
    column order, under the experiment's table facts."""
    n = rows.num_rows
    vec = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                            int(vectors.shape[1]))
    now = dt.datetime.now(dt.UTC)
    fresh = {"_model": pa.array([model] * n, pa.string()),
             "_embedded_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
             "_run_id": pa.array([run_id] * n, pa.string())}
    cols, fields = [], []
    for f in schema:
        if f.name == VECTOR_COLUMN:
            cols.append(vec)
            fields.append(pa.field(VECTOR_COLUMN, vec.type, f.nullable, f.metadata))
        elif f.name in fresh:
            cols.append(fresh[f.name].cast(f.type))
            fields.append(f)
        else:
            cols.append(rows.column(f.name))
            fields.append(f)
    md = {**(schema.metadata or {}), META_KEY: meta.to_bytes()}
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=md))


def _metadata_bytes(uri: str) -> int:
    """Bytes of production's manifests and transaction files (local stores; 0 elsewhere)."""
    if not is_local(uri):
        return 0
    total = 0
    for sub in ("_versions", "_transactions"):
        folder = os.path.join(local_path(uri), sub)
        with contextlib.suppress(OSError):
            total += sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
    return total


def _size(uri: str, rel: str) -> int:
    try:
        return os.path.getsize(os.path.join(local_path(uri), rel))
    except OSError:
        return 0


def _remove_unreferenced(uri: str, rels: list[str]) -> None:
    """Files a failed promotion placed in production (never committed)."""
    if not is_local(uri):
        return
    for rel in rels:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(local_path(uri), rel))


def _production_fragments(uri: str, branch: str, bds: lance.LanceDataset, main: lance.LanceDataset,
                          storage_options: dict[str, str] | None
                          ) -> tuple[list[FragmentMetadata], int, list[str], int, list[str]]:
    """The branch's fragments as production fragments: (fragments, bytes referenced,
    files linked, rows rewritten, files rewritten). See the module docstring."""
    root = local_path(uri)
    local = is_local(uri)
    bases: dict[int, Any] = bds.base_paths()
    out: list[FragmentMetadata] = []
    referenced, rewritten = 0, 0
    linked: list[str] = []
    copied_frags: list[FragmentMetadata] = []
    for frag in bds.get_fragments():
        md = frag.metadata
        own = all(f.base_id is None for f in md.files)
        if md.deletion_file is not None or (own and not local):
            live = frag.to_table()
            new = lance.fragment.write_fragments(
                live, uri, schema=bds.schema, mode="overwrite", max_rows_per_file=MAX_ROWS_PER_FILE,
                data_storage_version=main.data_storage_version, storage_options=storage_options)
            copied_frags.extend(new)
            rewritten += live.num_rows
            continue
        files = []
        for f in md.files:
            if f.base_id is not None:
                base = bases.get(f.base_id)
                if base is None or not getattr(base, "is_dataset_root", False) or \
                        os.path.normpath(str(base.path)) != os.path.normpath(root):
                    raise ValidationError(f"experiment {branch!r} references files outside the "
                                          f"table ({base}); it cannot be promoted")
            else:  # written by the branch: link it into production's data folder
                src = os.path.join(root, "tree", branch, "data", f.path)
                dst = os.path.join(root, "data", f.path)
                if not os.path.exists(dst):
                    try:
                        os.link(src, dst)
                    except OSError:  # another file system: copy (measured as written)
                        import shutil

                        shutil.copyfile(src, dst)
                    linked.append(os.path.join("data", f.path))
            referenced += int(f.file_size_bytes or 0)
            files.append(DataFile(f.path, list(f.fields), list(f.column_indices),
                                  f.file_major_version, f.file_minor_version, f.file_size_bytes))
        out.append(FragmentMetadata(md.id, files, md.physical_rows))
    copied = [os.path.join("data", f.path) for fr in copied_frags for f in fr.files]
    return out + copied_frags, referenced, linked, rewritten, copied
