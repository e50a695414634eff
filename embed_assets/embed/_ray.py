"""The Ray executor (:class:`OnRay`): workers embed slices and write Lance fragments, the
driver commits them as one version.

The driver (the process calling ``embed_table(..., executor=OnRay(...))``) prepares the
same plan as every executor (:mod:`._plan`): it checks the source, hashes the texts and
diffs them against the stored keys and content hashes, so only new or changed texts
leave it. Those rows are cut into slices, one Ray task each; a task loads
the embedder once per worker process (later tasks on that worker reuse it), embeds its
slice with one torch thread per CPU it holds, and writes the rows, vectors and
provenance as Lance data files into the table's own directory
(:func:`embed_assets.store._fragments.write_uncommitted`). It returns only the
fragments' metadata. When every slice is done the driver commits all the fragments in
one transaction through the store's commit path
(:func:`~embed_assets.store._fragments.commit_fragments`): the same fenced commit, the
same refusals and the same provenance (model, revision, run id, row counts) as any
write, one version.

Failures
--------
A task that raises, or whose worker process or node dies, is retried up to
``max_retries`` times (Ray's own task retry). Bad input (an embedder returning the wrong
shape, ...) is not retried: it would fail again. If a slice still fails, the other tasks
are cancelled, the files of the fragments already written are deleted, and
:class:`RayEmbedError` says which slice failed and why: no version is committed, the
table stays exactly as it was. Files of attempts that died mid-write are referenced by
no version, so no reader ever sees them, and ``cleanup`` deletes them after Lance's 7
days, or at once with ``grace=0`` (they count as ``orphan_files``).

Addresses
---------
``auto`` (a running cluster found by Ray: ``RAY_ADDRESS`` or ``ray start`` on this
machine), ``HOST:PORT`` (a cluster's GCS address, ``ray start --head`` prints it),
``ray://HOST:PORT`` (Ray Client), or ``local:N``: start a private one-node cluster of
``N`` CPUs for this run and stop it after. A process that already called ``ray.init``
is used as it is. Every node must be able to import ``embed_assets`` (the same
version) and load the model, and reach the store's URI.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .._extras import require
from ..errors import EmbedAssetsError, ValidationError, describe
from ..store import Store, WriteResult
from ..store._fragments import (
    FragmentTarget,
    commit_fragments,
    fragment_target,
    remove_uncommitted,
    write_uncommitted,
)
from ..store._writes import WriteRequest, prepare_rows
from ._plan import Batch, Diff, EmbedJob, EmbedPlan, EmbedResult, RowLayout, check_vectors

#: Retries of a failed slice (after its first attempt) before the run fails.
DEFAULT_MAX_RETRIES = 3
# Slices per worker when ``rows_per_task`` is not given: more than one, so a slow or
# retried slice does not leave the other workers idle; few, since each is a task and at
# least one fragment file.
_SLICES_PER_WORKER = 4
# No slice above one full data file (the store's MAX_ROWS_PER_FILE), none below this.
_MIN_ROWS_PER_TASK = 256
_MAX_ROWS_PER_TASK = 32_768
# Attributes the embedders keep their loaded model in: cleared before shipping, so a
# task carries a recipe (a name, a path) and never the weights.
_LOADED_STATE = ("_model", "_session", "_tokenizer", "_st")
_CONNECT_TIMEOUT_S = 5.0
# PyPI package extra that installs Ray.


class RayEmbedError(EmbedAssetsError, RuntimeError):
    """A distributed embedding run failed; nothing was committed."""


@dataclass
class RayEmbedResult(EmbedResult):
    """What :func:`embed_table_ray` did: an :class:`~embed_assets.EmbedResult` plus
    ``ray``: workers, tasks, and where the time went (seconds)."""

    ray: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        head = super().summary()
        if not self.ray.get("tasks"):
            return head
        return f"{head}; on Ray: {self.ray['tasks']} task(s) over {self.ray['workers']} worker(s)"


# -- connecting -----------------------------------------------------------------------------
def import_ray() -> Any:
    """The ``ray`` module, or a :class:`~embed_assets.MissingExtraError` naming the extra."""
    return require("ray", "distributed embedding (Ray)", "ray")


def parse_address(address: str) -> tuple[str, int | None]:
    """``("local", N)`` for ``local:N``, else ``(address, None)``; refuses what is
    neither an address nor ``auto``."""
    if not isinstance(address, str) or not address.strip():
        raise ValidationError("a Ray address is 'auto', HOST:PORT, ray://HOST:PORT or local:N")
    address = address.strip()
    if address.startswith("local"):
        spec = address[len("local") :]
        if spec == "":
            return "local", os.cpu_count() or 1
        if spec.startswith(":") and spec[1:].isdigit() and int(spec[1:]) >= 1:
            return "local", int(spec[1:])
        raise ValidationError(
            f"Ray address {address!r}: local:N needs N a positive integer (the CPUs of the local cluster)"
        )
    if address != "auto":
        host, _ = _host_port(address)
        if host is None:
            raise ValidationError(
                f"Ray address {address!r} is not auto, HOST:PORT, ray://HOST:PORT or local:N"
            )
    return address, None


def _host_port(address: str) -> tuple[str | None, int | None]:
    rest = address[len("ray://") :] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None, None
    return host.strip("[]"), int(port)


def _check_reachable(address: str) -> None:
    """Fail in seconds, with the address in the message, where ``ray.init`` would retry
    an unreachable GCS for minutes."""
    host, port = _host_port(address)
    if host is None or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ValidationError(
            f"cannot reach the Ray cluster at {address}: {exc}; start one with "
            "`ray start --head` (it prints the address), or use local:N for a local "
            "cluster of N CPUs"
        ) from None


@contextlib.contextmanager
def _quiet_local_start() -> Iterator[None]:
    """Start a private cluster without two messages that say nothing a user can act on
    (issue 23.6; both printed by every ``--ray local:N`` run, Ray 2.60, pylance 14):

    - Ray's WARNING that token authentication is on for the new cluster: it is, and we
      keep it on (the cluster is this run's alone); only the announcement is dropped;
    - lance's "not fork-safe" UserWarning, raised by its at-fork hook when Ray starts its
      GCS and raylet: those children exec a new program at once, so no Lance state is
      carried into a forked Python.
    """
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="lance is not fork-safe", category=UserWarning)
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` for the duration (see the module docstring); a
    process already connected keeps its connection, and a ``local:N`` cluster started
    here is stopped at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is None:
        raise ValidationError(
            "no Ray address: pass 'auto', HOST:PORT, ray://HOST:PORT or local:N (or call ray.init() first)"
        )
    where, cpus = parse_address(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning", "log_to_driver": True}
    try:
        if where == "local":
            # "local": always a new cluster, even with RAY_ADDRESS set or one running here
            with _quiet_local_start():
                ray.init(address="local", num_cpus=cpus, **kwargs)
        else:
            _check_reachable(where)
            ray.init(address=where, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValidationError(
            f"cannot connect to the Ray cluster at {address}: {describe(exc)} (start one with "
            "`ray start --head`, or use local:N for a local cluster of N CPUs)"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


# -- the worker side ------------------------------------------------------------------------
@dataclass
class _SliceJob:
    """One task's input: the rows to write (key, kept columns, content hash), their
    texts, and how to embed and where to write them."""

    index: int
    rows: pa.Table
    texts: pa.Array
    embedder: Any
    embedder_key: str
    target: FragmentTarget
    layout: RowLayout
    threads: int
    submitted_at: float = 0.0


@dataclass
class _SliceResult:
    """One task's output: its fragments and what they hold, or the input error that a
    retry would repeat (returned, not raised, so that Ray does not retry it)."""

    index: int
    fragments: list[Any] = field(default_factory=list)
    schema: pa.Schema | None = None
    rows: int = 0
    revision: str = ""
    error: str | None = None
    error_type: str = ""
    node: str = ""
    pid: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    submitted_at: float = 0.0
    fetch_s: float = 0.0
    load_s: float = 0.0
    embed_s: float = 0.0
    write_s: float = 0.0


# One loaded embedder per recipe per worker process: later tasks reuse the model.
_WORKER_EMBEDDERS: dict[str, Any] = {}


def _set_threads(n: int) -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _worker_embedder(job: _SliceJob) -> tuple[Any, float]:
    """The job's embedder, loaded on first use in this process; with the load seconds."""
    emb = _WORKER_EMBEDDERS.get(job.embedder_key)
    if emb is not None:
        return emb, 0.0
    t0 = time.perf_counter()
    emb = job.embedder
    load = getattr(emb, "_load", None)
    if callable(load):  # load now, so the load is timed apart from the embedding
        load()
    if len(_WORKER_EMBEDDERS) >= 2:
        _WORKER_EMBEDDERS.clear()
    _WORKER_EMBEDDERS[job.embedder_key] = emb
    return emb, time.perf_counter() - t0


def _embed_slice(refs: list[Any]) -> _SliceResult:
    """A Ray task: fetch its slice, embed it, and write it as uncommitted fragments.

    The slice comes as an object reference inside a list, so Ray does not resolve it
    before the call: the fetch (transfer and unpickling) is timed here, apart."""
    import ray

    started = time.time()
    t0 = time.perf_counter()
    job: _SliceJob = ray.get(refs[0])
    out = _SliceResult(
        index=job.index,
        started_at=started,
        submitted_at=job.submitted_at,
        pid=os.getpid(),
        fetch_s=time.perf_counter() - t0,
    )
    with contextlib.suppress(Exception):
        out.node = ray.get_runtime_context().get_node_id()
    try:
        _set_threads(job.threads)
        emb, out.load_s = _worker_embedder(job)
        _set_threads(job.threads)  # the model's import of torch came after the first call
        t0 = time.perf_counter()
        texts = job.texts.to_pylist()
        vectors = check_vectors(emb.embed(texts), emb, len(texts))
        out.embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = _prepared(job.target, job.layout.key, job.layout.rows(job.rows, None, vectors))
        out.fragments = write_uncommitted(job.target, rows)
        out.schema = rows.schema.remove_metadata()
        out.rows = rows.num_rows
        out.revision = str(emb.revision)
        out.write_s = time.perf_counter() - t0
    except ValidationError as exc:  # bad input: the same on every attempt
        out.error, out.error_type = describe(exc), type(exc).__name__
    out.finished_at = time.time()
    return out


def _prepared(target: FragmentTarget, key: str, rows: pa.Table) -> pa.Table:
    """Rows as the store's write path stores them (types normalised, checked)."""
    return prepare_rows(WriteRequest(name=target.table, key=key, mode="append"), rows)


# -- the driver side ------------------------------------------------------------------------
def _shippable(embedder: Any) -> Any:
    """A copy of the embedder without its loaded model (each worker loads its own)."""
    inner = getattr(embedder, "inner", None)  # the CLI's announcing wrapper
    if inner is not None and hasattr(inner, "embed"):
        embedder = inner
    twin = copy.copy(embedder)
    for attr in _LOADED_STATE:
        if getattr(twin, attr, None) is not None:
            with contextlib.suppress(AttributeError):
                setattr(twin, attr, None)
    return twin


def _recipe_key(embedder: Any) -> str:
    import ray.cloudpickle as cloudpickle

    try:
        blob = cloudpickle.dumps(embedder)
    except Exception as exc:
        raise ValidationError(
            f"embedder {getattr(embedder, 'name', embedder)!r} cannot be "
            f"sent to Ray workers (it does not pickle): {exc}"
        ) from None
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def task_rows(n: int, workers: int, requested: int | None = None) -> int:
    """Rows per slice: ``requested``, else about :data:`_SLICES_PER_WORKER` slices per
    worker, within [256, 32768] rows."""
    if requested is not None:
        if requested < 1:
            raise ValidationError(f"rows_per_task must be >= 1, got {requested}")
        return requested
    want = math.ceil(n / max(1, workers * _SLICES_PER_WORKER))
    return max(_MIN_ROWS_PER_TASK, min(_MAX_ROWS_PER_TASK, want))


@dataclass(frozen=True)
class OnRay:
    """Run the model on a Ray cluster: workers embed slices of the rows to embed and write
    them as Lance fragments, the driver commits them as one version (see the module
    docstring for failures and addresses). With nothing to embed, no cluster is
    contacted: the run is the in-process one. The source is read whole (the driver holds
    its columns, never its vectors).

    Attributes
    ----------
    address : str, optional
        ``auto``, ``HOST:PORT``, ``ray://HOST:PORT`` or ``local:N``; ignored when this
        process is already connected (``ray.init`` was called).
    rows_per_task : int, optional
        Rows per Ray task (each writes at least one fragment). Default: about four
        tasks per worker, between 256 and 32,768 rows.
    max_retries : int
        Retries of a failed task (an exception, a dead worker or node) before the run
        fails; input errors are not retried.
    cpus_per_task : int
        CPUs each task reserves; also its torch threads.
    resources : dict, optional
        Custom Ray resources each task also needs (``{"embedder": 1}`` runs the tasks
        only on nodes started with ``--resources '{"embedder": N}'``).
    runtime_env : dict, optional
        Ray's runtime environment of the tasks: ``{"env_vars": {"HF_HUB_OFFLINE": "1"}}``,
        ``{"py_modules": [...]}`` or ``{"pip": [...]}`` where the nodes lack the package
        or the settings (see Ray's docs on runtime environments).

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store, HashEmbedder, embed_table
    >>> store = Store(tempfile.mkdtemp())
    >>> src = {"id": [1, 2], "text": ["a text editor", "a web browser"]}
    >>> r = embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder(),
    ...                 executor=OnRay("local:2"))  # doctest: +SKIP
    >>> r.rows_embedded, r.ray["tasks"]  # doctest: +SKIP
    (2, 1)
    """

    address: str | None = "auto"
    rows_per_task: int | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    cpus_per_task: int = 1
    resources: dict[str, float] | None = None
    runtime_env: dict[str, Any] | None = None

    def check(self, job: EmbedJob) -> None:
        """Refuse bad settings (an address typo too) before the source is read."""
        n = self.max_retries
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"max_retries must be an integer >= 0, got {n!r}")
        n = self.cpus_per_task
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValidationError(f"cpus_per_task must be an integer >= 1, got {n!r}")
        if self.address is not None:
            parse_address(self.address)

    def scan_rows(self) -> int | None:
        return None

    def run(self, plan: EmbedPlan) -> RayEmbedResult:
        batch = plan.batch(plan.source.read(plan.columns()))
        tally = batch.tally
        timings: dict[str, float] = {"diff_s": time.perf_counter() - plan.started}
        props = plan.properties(tally)
        if batch.diff.n_embed == 0:
            # Nothing for a model: the in-process commit (reused rows, deletes, or nothing
            # at all) without a cluster.
            write = plan.commit_batch(batch, plan.rows(batch, plan.vectors(batch)), props)
            return plan.result(write, tally, RayEmbedResult,
                               ray={"workers": 0, "tasks": 0, "timings": timings})
        target = _target(plan, batch)
        with ray_session(self.address) as ray:
            workers = _workers(ray, self.cpus_per_task, self.resources)
            per_task = task_rows(batch.diff.n_embed, workers, self.rows_per_task)
            jobs = _slice_jobs(plan, batch, target, per_task, self.cpus_per_task)
            results, info = _run_slices(ray, jobs, target, self, timings)
        props.update({"executor": "ray", "ray_workers": workers, "ray_tasks": info["tasks"]})
        write = _commit(plan, batch, target, results, props, timings)
        info.update(timings=timings, rows_per_task=per_task)
        return plan.result(write, tally, RayEmbedResult, ray=info)


def _target(plan: EmbedPlan, batch: Batch) -> FragmentTarget:
    """Where the workers write: the table's directory, to be replaced or added to."""
    store, name, mode = plan.store, plan.name, plan.job.mode
    replace = mode == "overwrite" or plan.stored is None
    if mode == "append" and store.exists(name):
        replace = False
        _refuse_stored_keys(store, name, plan.job.key, batch.base)
    return fragment_target(store, name, replace=replace)


def _slice_jobs(plan: EmbedPlan, batch: Batch, target: FragmentTarget, per_task: int,
                threads: int) -> Iterator[_SliceJob]:
    """One job per slice of the rows to embed (made one at a time, as they are submitted)."""
    shipped = _shippable(plan.embedder)
    recipe = _recipe_key(shipped)
    to_embed = np.flatnonzero(batch.diff.embed_mask)
    text_arr = pa.array(batch.texts, pa.string())
    for i, start in enumerate(range(0, len(to_embed), per_task)):
        idx = pa.array(to_embed[start : start + per_task], pa.int64())
        yield _SliceJob(index=i, rows=batch.base.take(idx), texts=text_arr.take(idx),
                        embedder=shipped, embedder_key=recipe, target=target,
                        layout=plan.layout, threads=threads)


def _refuse_stored_keys(store: Store, name: str, key: str, base: pa.Table) -> None:
    """Mode append: refuse stored keys before any worker embeds (the commit checks again)."""
    from ..store._writes import existing_keys

    ds = store.open_dataset(name, required=True)
    clash = existing_keys(ds, key, base.column(key).to_pylist())
    if clash:
        raise ValidationError(
            f"{len(clash)} key(s) already exist in table {name!r} "
            f"(e.g. {', '.join(repr(k) for k in clash[:5])}); use mode 'upsert'"
        )


def _workers(ray: Any, cpus_per_task: int, resources: dict[str, float] | None = None) -> int:
    """How many tasks the cluster runs at once (each live node's share, summed)."""
    need = {"CPU": float(cpus_per_task), **{k: float(v) for k, v in (resources or {}).items()}}
    workers = 0
    for node in ray.nodes():
        if not node.get("Alive", True):
            continue
        have = node.get("Resources", {})
        workers += int(min(have.get(k, 0.0) // v for k, v in need.items() if v > 0))
    if workers < 1:
        shown = ", ".join(f"{k}={v:g}" for k, v in need.items())
        raise ValidationError(
            f"no node of the Ray cluster has the resources a task needs ({shown}); lower "
            "cpus_per_task, add nodes, or check the resource names"
        )
    return workers


def _run_slices(ray: Any, jobs: Iterator[_SliceJob], target: FragmentTarget, cfg: OnRay,
                timings: dict[str, float]) -> tuple[list[_SliceResult], dict[str, Any]]:
    """Submit one task per slice and wait for all; on a slice's final failure cancel
    the rest, delete what was written and raise :class:`RayEmbedError`."""
    remote = ray.remote(_embed_slice).options(
        num_cpus=cfg.cpus_per_task,
        max_retries=cfg.max_retries,
        retry_exceptions=True,
        scheduling_strategy="SPREAD",
        name="embed_assets.embed_slice",
        resources=cfg.resources or {},
        **({"runtime_env": cfg.runtime_env} if cfg.runtime_env else {}),
    )
    t0 = time.perf_counter()
    pending: dict[Any, int] = {}
    for job in jobs:
        job.submitted_at = time.time()
        # serialised into the object store here, once, by the driver
        pending[remote.remote([ray.put(job)])] = job.index
    timings["submit_s"] = time.perf_counter() - t0
    tasks = len(pending)
    t0 = time.perf_counter()
    results, failure = _wait(ray, pending, cfg.max_retries)
    if failure is not None:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        remove_uncommitted(target, [f for r in results for f in r.fragments])
        i, why = failure
        raise RayEmbedError(
            f"slice {i + 1} of {tasks} failed: {why}; "
            f"nothing was committed: table {target.table!r} stays at version "
            f"{target.base_version if target.base_version is not None else '(none: not created)'}"
        )
    timings["wait_s"] = time.perf_counter() - t0
    results.sort(key=lambda r: r.index)
    timings.update(_worker_timings(results))
    nodes = sorted({r.node for r in results if r.node})
    return results, {
        "workers": _workers(ray, cfg.cpus_per_task, cfg.resources),
        "tasks": tasks,
        "nodes": len(nodes),
        "processes": len({(r.node, r.pid) for r in results}),
    }


def _wait(ray: Any, pending: dict[Any, int],
          max_retries: int) -> tuple[list[_SliceResult], tuple[int, str] | None]:
    """The tasks' results as they finish, until all are done or one has failed for good
    (its slice and why); the tasks still pending stay in ``pending``."""
    results: list[_SliceResult] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            i = pending.pop(ref)
            try:
                got: _SliceResult = ray.get(ref)
            except Exception as exc:  # retries spent: a task error, a dead worker or node
                return results, (i, f"{type(exc).__name__} after {max_retries + 1} "
                                    f"attempt(s): {_first_lines(exc)}")
            results.append(got)
            if got.error is not None:
                return results, (i, f"{got.error_type}: {got.error} (bad input: not retried)")
    return results, None


def _commit(plan: EmbedPlan, batch: Batch, target: FragmentTarget, results: list[_SliceResult],
            props: dict[str, Any], timings: dict[str, float]) -> WriteResult:
    """The workers' fragments, and the driver's of rows that keep their stored vector,
    committed as one version through the store's commit path; on any failure the
    fragments' files are deleted and nothing is committed."""
    fragments = [f for r in results for f in r.fragments]
    try:
        schema = _agreed(results, "schema", "schemas")
        revision = _agreed(results, "revision", "model revisions")
        t0 = time.perf_counter()
        fragments += _write_reused(plan, batch, target)
        timings["driver_write_s"] = time.perf_counter() - t0
        written = batch.base.column(plan.job.key).take(
            pa.array(np.flatnonzero(batch.diff.write_mask), pa.int64()))
        req = plan.request(props, revision=revision or None, keep_keys=plan.keep_keys(batch))
        t0 = time.perf_counter()
        write = commit_fragments(plan.store, req, target, fragments, schema=schema, keys=written)
        timings["commit_s"] = time.perf_counter() - t0
    except BaseException:
        remove_uncommitted(target, fragments)
        raise
    return write


def _write_reused(plan: EmbedPlan, batch: Batch, target: FragmentTarget) -> list[Any]:
    """Rows whose text is unchanged but other columns changed: written by the driver
    with their stored vectors (no model)."""
    d, key = batch.diff, plan.job.key
    reuse = np.flatnonzero(d.write_mask & ~d.embed_mask)
    if not reuse.size:
        return []
    sub = batch.base.take(pa.array(reuse, pa.int64()))
    keys = sub.column(key).to_pylist()
    vecs = np.stack([d.reused[k][0] for k in keys]).astype(np.float32)
    every = np.ones(len(keys), bool)
    rows = plan.layout.rows(sub, Diff(~every, every, d.reused, d.dimension), vecs)
    return write_uncommitted(target, _prepared(target, key, rows))


def _first_lines(exc: BaseException, n: int = 3) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    # RayTaskError puts the worker's traceback first; its last lines say what happened
    return " | ".join(lines[-n:]) if lines else type(exc).__name__


def _worker_timings(results: list[_SliceResult]) -> dict[str, float]:
    """Where the workers' time went, summed over tasks (seconds of worker time)."""
    return {
        "worker_model_load_s": sum(r.load_s for r in results),
        "worker_embed_s": sum(r.embed_s for r in results),
        "worker_write_s": sum(r.write_s for r in results),
        # moving the slice to the worker and unpickling it
        "worker_fetch_s": sum(r.fetch_s for r in results),
        # submit -> start: the queue (more slices than workers), scheduling, and a worker
        # process's first import of embed_assets
        "worker_queue_s": sum(max(0.0, r.started_at - r.submitted_at) for r in results),
    }


def _agreed(results: list[_SliceResult], attr: str, what: str) -> Any:
    values = [getattr(r, attr) for r in results]
    first = values[0]
    if any(v != first for v in values[1:]):
        shown = sorted({str(v) for v in values})[:3]
        raise RayEmbedError(
            f"the workers disagree on the {what} ({'; '.join(shown)}): install "
            "the same embed_assets and model on every node; nothing was committed"
        )
    return first


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "OnRay",
    "RayEmbedError",
    "RayEmbedResult",
    "import_ray",
    "parse_address",
    "ray_session",
    "task_rows",
]
