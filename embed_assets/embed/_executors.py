"""Executors that run an :class:`~._plan.EmbedPlan` in this process: at once, or streamed.

:class:`InProcess` embeds the whole source and commits once. :class:`Streamed` embeds a
corpus larger than memory: from Parquet (or a table) in groups of rows, committed as
they are done, so a killed run resumes where it stopped.

Streaming: memory is bounded by one group (its rows, texts and vectors) plus the stored
side of the diff (key + content hash + a 64-bit row signature per stored row: never
vectors). The plan's row checks read keys and texts only, a group at a time, so
duplicate or null keys, non-text values and (with ``on_empty="error"``) blank texts are
refused before anything is written. Then each group of ``commit_every`` source rows is
hashed, diffed against the stored state as it was when the run started, and its new or
changed texts embedded; the rows to write are committed once ``commit_every`` of them
have gathered (and at the end), so unchanged groups cost no version and a small change
spread over the corpus is one commit.

Resuming: with ``upsert`` or ``sync`` a rerun after an interruption finds the committed
groups' rows stored with the same content hash and embeds none of them again; the final
table holds the same keys and vectors as an uninterrupted run. ``sync`` deletes the keys
gone from the source in the last group's commit. ``overwrite`` streams too (the first
group replaces the table, the others are upserted into it) but a rerun starts over: use
``upsert`` to resume. Each commit is one Lance version; it records the group number and
the source rows done (``stream_group``, ``stream_rows_done``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..store import WriteResult
from ._embedders import Embedder
from ._plan import EmbedJob, EmbedPlan, EmbedResult, Tally, unchanged_result

#: Rows per committed group when streaming (one Lance version each).
DEFAULT_COMMIT_EVERY = 50_000
# Texts per model call inside a group: the progress bar moves this often, and each call
# is length-sorted by the embedder. 4,096 left the bar at 0% for the first 3 minutes of
# a 13-minute CPU run; 512 is 8 batches of 64, a step every few seconds on a CPU.
_EMBED_CHUNK = 512
_STREAM_MODES = ("upsert", "sync", "overwrite", "append")


@dataclass(frozen=True)
class InProcess:
    """Embed the whole source in this process and commit it as one version."""

    def check(self, job: EmbedJob) -> None:
        pass

    def scan_rows(self) -> int | None:
        return None

    def run(self, plan: EmbedPlan) -> EmbedResult:
        batch = plan.batch(plan.source.read(plan.columns()))
        rows = plan.rows(batch, plan.vectors(batch))
        tally = batch.tally
        write = plan.commit_batch(batch, rows, plan.properties(tally))
        return plan.result(write, tally)


@dataclass(frozen=True)
class Streamed:
    """Embed in groups of ``commit_every`` source rows, committing every ``commit_every``
    written rows (see the module docstring); a rerun after an interruption resumes.

    ``progress``: a progress bar (rows/s, ETA) on stderr; ``None``: when stderr is a terminal.
    """

    commit_every: int = DEFAULT_COMMIT_EVERY
    progress: bool | None = None

    def check(self, job: EmbedJob) -> None:
        if isinstance(self.commit_every, bool) or not isinstance(self.commit_every, int) \
                or self.commit_every < 1:
            raise ValidationError(f"commit_every must be >= 1, got {self.commit_every}")
        if job.partition is not None:
            raise ValidationError(
                "a partitioned write is one commit, it does not stream: pass an in-memory "
                "table and no commit_every (executor InProcess or OnRay)")
        if job.mode not in _STREAM_MODES:
            raise ValidationError(
                f"mode {job.mode!r} does not stream; use upsert, sync, overwrite or append")

    def scan_rows(self) -> int | None:
        return self.commit_every

    def run(self, plan: EmbedPlan) -> EmbedResult:
        run = _StreamRun(plan, self.commit_every)
        bar = _progress(plan.source.num_rows, plan.name, self.progress)
        with _quiet(plan.embedder):
            for group, last in _lookahead(plan.source.batches(plan.columns(), self.commit_every)):
                run.add(group, last, bar)
                # as text: tqdm prints numbers in the shorter of two forms, so the postfix
                # flipped between "5000" and "1e+4"
                bar.set_postfix(embedded=f"{run.total.embedded:,}",
                                committed=f"{len(run.writes):,}", refresh=False)
        bar.close()
        return plan.result(run.summed_write(), run.total)


@dataclass
class _StreamRun:
    """The state of one streamed run: totals, the rows waiting for a commit, the commits."""

    plan: EmbedPlan
    commit_every: int
    total: Tally = field(default_factory=Tally)
    since: Tally = field(default_factory=Tally)
    pending: list[pa.Table] = field(default_factory=list)
    writes: list[WriteResult] = field(default_factory=list)
    groups: int = 0

    def add(self, group: pa.Table, last: bool, bar: Any) -> None:
        plan = self.plan
        self.groups += 1
        batch = plan.batch(group)
        vectors = plan.vectors(batch, _Chunked(plan.embedder, bar, group.num_rows,
                                               batch.diff.n_embed))
        out = plan.rows(batch, vectors)
        self.total += batch.tally
        if out.num_rows:
            self.pending.append(out)
            self.since += batch.tally
        # A commit per commit_every rows *written*: groups with nothing changed cost no
        # version, and a 1% change spread over the corpus is one commit, not one per group
        # (each merge_insert scans the table's keys).
        full = sum(t.num_rows for t in self.pending) >= self.commit_every
        deletes = plan.gone if last and plan.gone else None
        if last and not (self.pending or deletes or self.writes) and plan.stored is not None:
            # nothing to write at all: no store call (it would load the model for its revision)
            self.writes.append(unchanged_result(plan.store, plan.name, plan.job.mode))
        elif full or (last and (self.pending or deletes or not self.writes)):
            self._commit(out, deletes)

    def _commit(self, out: pa.Table, deletes: list[Any] | None) -> None:
        plan, mode = self.plan, self.plan.job.mode
        wmode = "overwrite" if mode == "overwrite" and not self.writes else \
            ("append" if mode == "append" else "upsert")
        rows = pa.concat_tables(self.pending) if len(self.pending) > 1 else \
            (self.pending[0] if self.pending else out)
        props = plan.properties(self.since, rows_source=self.total.source,
                                stream_group=self.groups, stream_rows_done=self.total.source)
        req = plan.request(props, revision=plan.embedder.revision, mode=wmode, delete_keys=deletes)
        self.writes.append(plan.commit(rows, req))
        self.pending.clear()
        self.since = Tally()

    def summed_write(self) -> WriteResult:
        """The groups' commits as one result (``version`` is the last one)."""
        writes = self.writes
        committed = [w for w in writes if w.committed]
        last = writes[-1]
        return WriteResult(
            self.plan.name, last.version,
            committed[0].previous_version if committed else last.previous_version,
            self.plan.job.mode,
            rows_inserted=sum(w.rows_inserted for w in writes),
            rows_updated=sum(w.rows_updated for w in writes),
            rows_deleted=sum(w.rows_deleted for w in writes),
            properties=last.properties, retries=sum(w.retries for w in writes))


def _lookahead(it: Iterator[pa.Table]) -> Iterator[tuple[pa.Table, bool]]:
    """Each item with whether it is the last (the last group carries sync's deletes)."""
    prev = next(it, None)
    while prev is not None:
        nxt = next(it, None)
        yield prev, nxt is None
        prev = nxt


@contextmanager
def _quiet(embedder: Embedder) -> Iterator[None]:
    """The stream has its own progress bar: silence the embedder's (if it has one)."""
    had = getattr(embedder, "show_progress", "absent")
    if had is None:
        embedder.show_progress = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if had is None:
            embedder.show_progress = None  # type: ignore[attr-defined]


def _progress(total: int, name: str, show: bool | None) -> Any:
    from tqdm.auto import tqdm

    # tqdm shows rows/s and the ETA; disable=None hides it when stderr is not a terminal.
    return tqdm(total=total, unit=" rows", unit_scale=True, desc=f"embed {name}",
                file=sys.stderr, disable=None if show is None else not show, smoothing=0.1)


class _Chunked:
    """The embedder, called on chunks of a group's texts, advancing the progress bar (rows
    of the source done) after each, so it moves while a large group is embedded."""

    def __init__(self, embedder: Any, bar: Any, rows: int, n_embed: int) -> None:
        self.inner, self.bar, self.rows = embedder, bar, rows
        self.name, self.dimension = embedder.name, getattr(embedder, "dimension", None)
        if n_embed == 0:
            bar.update(rows)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        if n <= _EMBED_CHUNK:
            out = np.asarray(self.inner.embed(texts), np.float32)
            self.bar.update(self.rows)
            return out
        parts = []
        for i in range(0, n, _EMBED_CHUNK):
            parts.append(np.asarray(self.inner.embed(texts[i:i + _EMBED_CHUNK]), np.float32))
            self.bar.update(round(self.rows * min(i + _EMBED_CHUNK, n) / n)
                            - round(self.rows * i / n))
        return np.concatenate(parts)
