"""The one entry point of embedding: :func:`embed_table` prepares an
:class:`~._plan.EmbedPlan` and hands it to an executor (:class:`~._executors.InProcess`,
:class:`~._executors.Streamed`, :class:`~._ray.OnRay`). ``embed_images`` (the same with
``image=``) and ``embed_table_ray`` (deprecated: ``executor=OnRay(...)``) remain as thin
spellings of it for the code that calls them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..errors import ValidationError
from ..store import Store
from ._backends import default_embedder
from ._embedders import Embedder, EmptyTextPolicy
from ._executors import DEFAULT_COMMIT_EVERY, InProcess, Streamed
from ._image_guard import DEFAULT_LIMITS, ImageLimits
from ._images import IMAGE_HASH_COLUMN, BadImagePolicy, ImageEmbedder, ImageEmbedResult, prepare_images
from ._plan import EmbedJob, EmbedMode, EmbedPlan, EmbedResult, Executor, is_stream_source
from ._ray import DEFAULT_MAX_RETRIES, OnRay, RayEmbedResult


def embed_table(
    store: Store,
    name: str,
    data: Any,
    *,
    key: str,
    text: str | None = None,
    image: str | None = None,
    embedder: Embedder | ImageEmbedder | str | None = None,
    mode: EmbedMode = "upsert",
    columns: Sequence[str] | None = None,
    partition: tuple[str, Any] | None = None,
    on_empty: EmptyTextPolicy = "error",
    run_id: str | None = None,
    properties: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
    commit_every: int | None = None,
    progress: bool | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> EmbedResult:
    """Embed ``data[text]`` (or the images of ``data[image]``) keyed by ``data[key]`` into
    table ``name``; only new or changed rows reach the model (:mod:`~embed_assets.embed._plan`).

    Parameters
    ----------
    data : table-like or path
        An Arrow/polars/pandas table, a dict of columns, or the path of a Parquet file.
    text, image : str
        The column to embed, one of the two: texts, for an :class:`~embed_assets.Embedder`,
        or images (bytes, file paths, pixel arrays), for an :class:`~embed_assets.ImageEmbedder`.
        Rows are keyed on a hash of the text, or of the image's bytes.
    mode : {"upsert", "sync", "overwrite", "append", "replace_partition"}
        ``upsert`` inserts new keys and updates changed ones; ``sync`` also deletes keys
        missing from ``data``; ``replace_partition`` does the same within the rows where
        ``partition[0] == partition[1]`` (or is one of the values of a list);
        ``overwrite`` re-embeds everything; ``append`` requires new keys.
    columns : sequence of str, optional
        Source columns to keep beside key and vector (default: all source columns).
    on_empty : {"error", "skip"}
        Null or blank texts, or unusable images: refuse the run naming their keys, or leave
        them out (``rows_skipped_empty``; for images ``bad_images`` says why).
    executor : InProcess, Streamed or OnRay, optional
        In this process with one commit, streamed with resumable commits, or on Ray (see
        ``docs/embedding.md``). Default: ``Streamed`` for a Parquet path or with
        ``commit_every``, else ``InProcess``.
    embedder
        The model; for images it may be left out: EfficientNet-Lite0 (ImageNet).
    limits : ImageLimits
        For images: size bounds (decompression bombs, placeholders) and animations.
    commit_every, progress
        Shorthand for ``executor=Streamed(commit_every, progress)`` (a commit every this
        many rows, default 50,000; a progress bar on stderr, ``None``: when a terminal).

    Examples
    --------
    >>> import tempfile
    >>> from embed_assets import Store, HashEmbedder
    >>> store = Store(tempfile.mkdtemp())
    >>> src = {"id": [1, 2], "text": ["a text editor", "a web browser"]}
    >>> embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder()).rows_embedded
    2
    >>> embed_table(store, "t", src, key="id", text="text", embedder=HashEmbedder()).rows_embedded
    0
    """
    embedder, images = _checked_embedder(embedder, text, image), None
    if image is not None:  # the plan keys rows on the images' hashes, its hidden "text"
        images = prepare_images(data, key=key, image=image, embedder=cast(ImageEmbedder, embedder),
                                columns=columns, on_bad=on_empty, limits=limits)
        data, embedder, columns = images.table, images.embedder, images.columns
        properties = {"input_kind": "image", "image_column": image, **(properties or {})}
    job = EmbedJob(name=name, key=key, text=text or IMAGE_HASH_COLUMN,
                   embedder=cast(Embedder, embedder),  # for images: their view for the plan
                   mode=mode, columns=columns, partition=partition, on_empty=on_empty,
                   run_id=run_id or "", properties=properties or {})
    executor = _executor(executor, data, commit_every, progress)
    executor.check(job)
    plan = EmbedPlan.prepare(store, job, data, scan_rows=executor.scan_rows())
    result = executor.run(plan)
    return images.result(result) if images is not None else result


def _checked_embedder(embedder: Any, text: str | None, image: str | None) -> Any:
    """The embedder object: for text, a model name is built as the CLI's --model builds it;
    for images, none stays none (the default image model, :func:`prepare_images`)."""
    if (text is None) == (image is None):
        raise ValidationError("pass the column to embed as text=COLUMN or image=COLUMN (one of them)")
    if embedder is None and text is None:
        return None
    if isinstance(embedder, str) and text is not None:
        embedder = default_embedder(embedder)
    # an image embedder embeds images (embed_images), a text one texts (embed)
    if not callable(getattr(embedder, "embed" if text is not None else "embed_images", None)):
        raise ValidationError(
            f"embedder must be an embedder object (SentenceTransformerEmbedder(), HashEmbedder(), "
            f"an ImageEmbedder...) or, for text, a model name; got {embedder!r}")
    return embedder


def _executor(executor: Executor | None, data: Any, commit_every: int | None,
              progress: bool | None) -> Executor:
    """The executor given, else the one the data and the shorthand arguments ask for."""
    if executor is not None:
        if commit_every is not None or progress is not None:
            raise ValidationError("commit_every and progress are a streamed run's: pass "
                                  "executor=Streamed(commit_every, progress) or no executor")
        return executor
    if commit_every is not None or is_stream_source(data):
        return Streamed(commit_every if commit_every is not None else DEFAULT_COMMIT_EVERY,
                        progress)
    return InProcess()


def embed_images(store: Store, name: str, data: Any, *, key: str, image: str,
                 embedder: ImageEmbedder | None = None, on_bad: BadImagePolicy = "error",
                 **kwargs: Any) -> ImageEmbedResult:
    """``embed_table(..., image=image, on_empty=on_bad)``: the images of ``data[image]``
    (bytes, file paths or pixel arrays) keyed by ``data[key]``, through the same plan,
    write modes, versions and provenance as texts; only new or changed images reach the
    model. Kept for the code that calls it.

    Examples
    --------
    >>> import io, tempfile
    >>> from PIL import Image
    >>> from embed_assets.embed import PixelEmbedder
    >>> def png(v):
    ...     b = io.BytesIO(); Image.new("L", (4, 4), v).save(b, "PNG"); return b.getvalue()
    >>> store = Store(tempfile.mkdtemp())
    >>> src = {"id": [1, 2], "png": [png(10), png(200)]}
    >>> emb = PixelEmbedder(size=(4, 4))
    >>> embed_images(store, "pics", src, key="id", image="png", embedder=emb).rows_embedded
    2
    >>> embed_images(store, "pics", src, key="id", image="png", embedder=emb).rows_embedded
    0
    """
    return embed_table(store, name, data, key=key, image=image, embedder=embedder,  # type: ignore[return-value]
                       on_empty=on_bad, **kwargs)


def embed_table_ray(
    store: Store,
    name: str,
    data: Any,
    *,
    address: str | None = "auto",
    rows_per_task: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    cpus_per_task: int = 1,
    resources: dict[str, float] | None = None,
    runtime_env: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RayEmbedResult:
    """:func:`embed_table` with the model on a Ray cluster: the same as
    ``embed_table(..., executor=OnRay(address, rows_per_task, max_retries, cpus_per_task,
    resources, runtime_env))`` (see :class:`~embed_assets.embed.OnRay`). Deprecated:
    kept for the code that calls it; the other keyword arguments are :func:`embed_table`'s."""
    warnings.warn("embed_table_ray is deprecated: use embed_table(..., executor=OnRay(...))",
                  DeprecationWarning, stacklevel=2)
    ray = OnRay(address, rows_per_task, max_retries, cpus_per_task, resources, runtime_env)
    return embed_table(store, name, data, executor=ray, **kwargs)  # type: ignore[return-value]
