"""Materialisation metadata and run <-> Lance version traceability.

Every materialisation of an embedding table carries the same entries, whoever wrote it
(the IO manager or the embedding-asset factory): the Lance version and tags, the standard
``dagster/row_count``, ``dagster/column_schema`` and ``dagster/table_name`` keys, the
model and dimension, the incremental counts, a preview and a 2-D PCA picture.

Dagster 1.13 has no image metadata type; the picture is a PNG inside a markdown
``data:`` URI (``MetadataValue.md``), which the UI renders inline and which needs no
file server or shared disk between the run worker and the webserver.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from dagster import (
    AssetKey,
    DagsterInstance,
    MetadataValue,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)

from ..store import VECTOR_COLUMN, EmbeddingTable, Store, WriteResult

if TYPE_CHECKING:
    import lance

# Metadata keys, named once so assets, checks, tests and the browser test agree.
VERSION_KEY = "lance/version"
PREVIOUS_VERSION_KEY = "lance/previous_version"
COMMITTED_KEY = "lance/committed"
TAGS_KEY = "lance/tags"
WRITER_RUN_KEY = "lance/written_by_run"
# How often the commit met a concurrent one and was planned again (see store/_commits.py).
COMMIT_RETRIES_KEY = "lance/commit_retries"
PROJECTION_KEY = "projection"
PREVIEW_KEY = "preview"
SUMMARY_KEY = "summary"
# Dagster's documented table-metadata keys (what its TableMetadataSet writes; that class
# is not exported by `dagster`, the keys are the public contract).
ROW_COUNT_KEY = "dagster/row_count"
PARTITION_ROW_COUNT_KEY = "dagster/partition_row_count"
COLUMN_SCHEMA_KEY = "dagster/column_schema"
TABLE_NAME_KEY = "dagster/table_name"
URI_KEY = "dagster/uri"
# Run tag prefix: ``embed_assets/version/<table>`` = the version a run wrote (run -> version).
RUN_TAG_PREFIX = "embed_assets/version/"
# Points drawn in the projection; more only slows the PNG down and hides nothing.
MAX_PLOT_POINTS = 2000
PREVIEW_ROWS = 8


def lance_table_name(asset_key: AssetKey, definition_metadata: Mapping[str, Any] | None = None) -> str:
    """The store table behind an asset: metadata ``table``, else the key path joined by ``_``.

    ``debian/embeddings`` -> ``debian_embeddings``: one flat namespace, so the SQL layer's
    view names stay plain identifiers.
    """
    md = definition_metadata or {}
    name = md.get("table")
    return str(name) if name else "_".join(asset_key.path)


def column_schema(schema: pa.Schema) -> TableSchema:
    """A Dagster ``TableSchema`` from an Arrow schema (vector columns show their dimension)."""
    cols = []
    for f in schema:
        typ = f"FLOAT[{f.type.list_size}]" if pa.types.is_fixed_size_list(f.type) else str(f.type)
        desc = None
        if f.name == VECTOR_COLUMN:
            desc = "embedding vector"
        elif f.name.startswith("_"):
            desc = "provenance"
        cols.append(TableColumn(name=f.name, type=typ, description=desc))
    return TableSchema(columns=cols)


def column_lineage(source: AssetKey, column: str) -> TableColumnLineage:
    """``vector`` <- ``source.column``: the embedding is computed from that one column."""
    return TableColumnLineage(deps_by_column={
        VECTOR_COLUMN: [TableColumnDep(asset_key=source, column_name=column)]})


def standard_table_metadata(*, row_count: int | None = None, column_schema: TableSchema | None = None,
                            table_name: str | None = None,
                            partition_row_count: int | None = None,
                            uri: str | None = None) -> dict[str, MetadataValue]:
    """Dagster's standard table entries (``dagster/row_count``, ...), for those given."""
    out: dict[str, MetadataValue] = {}
    if uri is not None:
        out[URI_KEY] = MetadataValue.text(uri)
    if column_schema is not None:
        out[COLUMN_SCHEMA_KEY] = MetadataValue.table_schema(column_schema)
    if row_count is not None:
        out[ROW_COUNT_KEY] = MetadataValue.int(row_count)
    if partition_row_count is not None:
        out[PARTITION_ROW_COUNT_KEY] = MetadataValue.int(partition_row_count)
    if table_name is not None:
        out[TABLE_NAME_KEY] = MetadataValue.text(table_name)
    return out


def _cell(v: Any) -> str:
    if isinstance(v, list | tuple):
        head = ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in v[:3])
        return f"[{head}, … ({len(v)})]"
    s = "" if v is None else str(v)
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= 60 else s[:57] + "…"


def preview_markdown(tbl: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A small markdown table of the first rows (vectors shortened)."""
    head = tbl.slice(0, rows).to_pylist()
    cols = tbl.column_names
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in head]
    return "\n".join(lines)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project rows onto their first two principal components (SVD of the centred data)."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2))
    x = x - x.mean(axis=0, keepdims=True)
    _u, _s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2] if vt.shape[0] >= 2 else np.vstack([vt, np.zeros_like(vt)])
    return x @ comps.T


def projection_png(vectors: np.ndarray, labels: Sequence[Any] | None = None, *,
                   title: str = "") -> bytes:
    """A PNG scatter of the 2-D PCA projection, coloured by ``labels`` when given.

    Draws on its own Agg canvas: no pyplot, no display, and the process's matplotlib
    backend is left as it was.
    """
    xy = pca_2d(vectors)
    fig, ax = _canvas(4.0)
    if labels is not None and len(set(labels)) <= 20:
        lab = np.asarray([str(v) for v in labels])
        for name in sorted(set(lab.tolist())):
            m = lab == name
            ax.scatter(xy[m, 0], xy[m, 1], s=6, alpha=0.7, label=name)
        ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2, frameon=False)
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, alpha=0.7)
    return _png(fig, ax, "PC 1", "PC 2", title)


def histogram_png(values: np.ndarray, *, bins: int = 10, value_range: tuple[float, float] = (0.0, 1.0),
                  xlabel: str = "", title: str = "") -> bytes:
    """A PNG bar chart of ``values`` in ``bins`` equal bins (the Agg canvas, as
    :func:`projection_png`)."""
    counts, edges = np.histogram(np.asarray(values, float), bins=bins, range=value_range)
    fig, ax = _canvas(3.0)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="white")
    return _png(fig, ax, xlabel, "queries", title)


def _canvas(height: float) -> tuple[Any, Any]:
    """A figure on its own Agg canvas: no pyplot, no display, and the process's
    matplotlib backend is left as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, height), dpi=72)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _png(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str) -> bytes:
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def projection_markdown(png: bytes, alt: str = "2-D PCA projection") -> MetadataValue:
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _label_column(tbl: pa.Table, key: str, preferred: str | None) -> str | None:
    if preferred and preferred in tbl.column_names:
        return preferred
    for name in tbl.column_names:
        if name in (key, VECTOR_COLUMN) or name.startswith("_"):
            continue
        col = tbl.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            distinct = len(pa.compute.unique(col))
            if 1 < distinct <= 20:
                return name
    return None


def table_metadata(
    table: EmbeddingTable,
    *,
    version: int | None = None,
    write: WriteResult | None = None,
    extra: Mapping[str, Any] | None = None,
    label_column: str | None = None,
    plot: bool = True,
    preview_columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The metadata of a materialisation that left ``table`` at ``version`` (latest by default).

    ``preview_columns``: the columns the preview shows first (key, text, label); the
    provenance columns (``_*``) are left out of the preview, which a reader uses to see
    what was embedded (they stay in the column schema).
    """
    version = table.version if version is None else version
    ds = table.dataset(version)
    rows = ds.count_rows()
    out = _version_entries(table, version, rows, ds.schema)
    if write is not None:
        out.update(_write_entries(write))
    out.update(extra or {})
    if rows:
        out.update(_sample_entries(table, ds, version, rows, label_column=label_column, plot=plot,
                                   preview_columns=preview_columns))
    return out


def _version_entries(table: EmbeddingTable, version: int, rows: int, schema: pa.Schema) -> dict[str, Any]:
    """What a version is: number, tags, writer run, the standard table entries, the model."""
    meta = table.meta
    tags = sorted(t for t, v in table.tags().items() if v == version)
    props = table.properties(version)  # the run that wrote this version, its mode, counts
    return {
        VERSION_KEY: MetadataValue.int(version),
        TAGS_KEY: MetadataValue.text(", ".join(tags) if tags else "(none)"),
        WRITER_RUN_KEY: MetadataValue.text(props.get("run_id", "")),
        # table_name: what SQL reads (``FROM debian_embeddings``, ``"name@N"``); uri: what
        # lancedb / pylance / DuckDB's lance extension open, at ``lance/version``.
        **standard_table_metadata(row_count=rows, column_schema=column_schema(schema),
                                  table_name=table.name, uri=table.uri),
        "dimension": MetadataValue.int(int(meta.dimension)),
        "model": MetadataValue.text(meta.model or "(not recorded)"),
        "metric": MetadataValue.text(meta.metric),
    }


def _write_entries(write: WriteResult) -> dict[str, Any]:
    """What a write did: committed or not, the version before, rows in / changed / out."""
    out: dict[str, Any] = {COMMITTED_KEY: MetadataValue.bool(write.committed),
                           COMMIT_RETRIES_KEY: MetadataValue.int(write.retries)}
    if write.previous_version is not None:
        out[PREVIOUS_VERSION_KEY] = MetadataValue.int(write.previous_version)
    out["rows_inserted"] = MetadataValue.int(write.rows_inserted)
    out["rows_updated"] = MetadataValue.int(write.rows_updated)
    out["rows_deleted"] = MetadataValue.int(write.rows_deleted)
    return out


def _sample_entries(table: EmbeddingTable, ds: lance.LanceDataset, version: int, rows: int, *,
                    label_column: str | None, plot: bool,
                    preview_columns: Sequence[str] | None = None) -> dict[str, Any]:
    """A preview and (with ``plot``) the projection, from one bounded, deterministic sample."""
    sample = ds.take(_sample_indices(rows, MAX_PLOT_POINTS))
    visible = preview_column_order(sample.column_names, table.meta.key, preview_columns)
    out: dict[str, Any] = {PREVIEW_KEY: MetadataValue.md(preview_markdown(sample.select(visible)))}
    if not plot or VECTOR_COLUMN not in sample.column_names or sample.num_rows < 2:
        return out
    vecs = np.asarray(sample.column(VECTOR_COLUMN).combine_chunks().flatten()
                      .to_numpy(zero_copy_only=False)).reshape(sample.num_rows, -1)
    if np.isfinite(vecs).all():
        lab_col = _label_column(sample, table.meta.key, label_column)
        labels = sample.column(lab_col).to_pylist() if lab_col else None
        png = projection_png(vecs, labels,
                             title=f"{table.name} v{version} ({sample.num_rows} of {rows} rows)")
        out[PROJECTION_KEY] = projection_markdown(png)
    return out


def preview_column_order(names: Sequence[str], key: str | None,
                         first: Sequence[str] | None = None) -> list[str]:
    """The preview's columns: key, then ``first`` (text, label), then the other user
    columns, then the vector; provenance columns (``_*``) are left out: they are the
    same in every row of a run and push the text off the screen."""
    head = [c for c in [key, *(first or [])] if c and c in names]
    head = list(dict.fromkeys(head))
    rest = [c for c in names if c not in head and c != VECTOR_COLUMN and not c.startswith("_")]
    return head + rest + ([VECTOR_COLUMN] if VECTOR_COLUMN in names else [])


def latest_version_markdown(table: EmbeddingTable, *, label_column: str | None = None,
                            points: int = 1000) -> str:
    """The latest user version of ``table`` as markdown: number, tags, rows, model, run,
    time, and the 2-D projection of a bounded sample as an inline picture."""
    info = table.versions()[-1]
    ds = table.dataset(info.version)
    tags = f" [{', '.join(info.tags)}]" if info.tags else ""
    model = table.meta_at(info.version).model or "?"
    when = info.timestamp.strftime("%Y-%m-%d %H:%M UTC")
    run = (info.properties.get("run_id") or "-")[:8]
    text = (f"**Latest version when this code location loaded: v{info.version}{tags}**, "
            f"{info.rows:,} rows, model `{model}`, run `{run}`, {when}. (Reload the code "
            "location to refresh this paragraph; the Metadata below is always current.)")
    if info.rows < 2 or VECTOR_COLUMN not in ds.schema.names:
        return text
    sample = ds.take(_sample_indices(info.rows, points))
    vecs = np.asarray(sample.column(VECTOR_COLUMN).combine_chunks().flatten()
                      .to_numpy(zero_copy_only=False)).reshape(sample.num_rows, -1)
    if not np.isfinite(vecs).all():
        return text
    lab = _label_column(sample, table.meta.key, label_column)
    png = projection_png(vecs, sample.column(lab).to_pylist() if lab else None,
                         title=f"{table.name} v{info.version} ({sample.num_rows} of {info.rows} rows)")
    return f"{text}\n\n![2-D PCA projection of v{info.version}]" \
           f"(data:image/png;base64,{base64.b64encode(png).decode()})"


def _sample_indices(rows: int, limit: int) -> list[int]:
    # Evenly spaced, deterministic: the same version always gives the same picture.
    if rows <= limit:
        return list(range(rows))
    return np.linspace(0, rows - 1, limit).astype(int).tolist()


def record_run_version(context: Any, table: str, version: int) -> None:
    """Tag the run of an asset or op ``context`` with the version it left the table at."""
    instance = getattr(context, "instance", None)
    run = getattr(context, "run", None)
    run_id = run.run_id if run is not None else getattr(context, "run_id", None)
    if instance is None or not run_id:
        return
    tag_run_with_version(instance, run_id, table, version, context.log)


def tag_run_with_version(instance: DagsterInstance, run_id: str, table: str, version: int,
                         log: Any) -> None:
    """Tag run ``run_id`` with ``embed_assets/version/<table>`` = ``version`` (run -> version)."""
    try:
        instance.add_run_tags(run_id, {f"{RUN_TAG_PREFIX}{table}": str(version)})
    except Exception as exc:  # tags are a convenience; never fail a write over them
        log.warning(f"could not tag run with the Lance version: {exc}")


def versions_for_run(store: Store, run_id: str) -> dict[str, list[int]]:
    """Version -> run, reversed: every (table, version) a run wrote, from the store alone."""
    found: dict[str, list[int]] = {}
    for name in store.table_names():
        for v in store.table(name).versions():
            if v.properties.get("run_id") == run_id:
                found.setdefault(name, []).append(v.version)
    return found


def run_for_version(store: Store, table: str, version: int | str) -> str | None:
    """The run id recorded with a version (or tag) of a table, if any."""
    t = store.table(table)
    return t.properties(version).get("run_id")
