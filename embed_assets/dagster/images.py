"""Image tables in Dagster: an asset that embeds a folder, glob or Parquet column of pictures
with EfficientNet-Lite0, and the metadata that shows a few stored pictures beside their
nearest neighbours in the asset's page (Dagster has no image metadata type: a PNG inside
markdown, as the other projections here).
"""

# No `from __future__ import annotations`: Dagster reads the Config and context annotations.
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ..embed import EfficientNetEmbedder, ImageLimits, embed_images, image_grid_png
from ..embed._image_io import image_source, search_by_image, stored_images
from ..store import EmbeddingTable
from ._compat import CoercibleToAssetKey
from .metadata import lance_table_name, projection_markdown, record_run_version


def image_neighbours_metadata(table: EmbeddingTable, *, k: int = 5, queries: int = 4,
                              label: str | None = None, version: Any = None,
                              cell: int = 64) -> dict[str, Any]:
    """``{"neighbours": markdown PNG}``: ``queries`` stored pictures (one per ``label`` value
    where given, else the first keys), each followed by its ``k`` nearest stored pictures;
    with ``label``, a neighbour of the query's label is framed green, another red."""
    from PIL import Image

    from ..embed import decode_image

    v = table.resolve(version)
    meta = table.meta_at(v)
    cols = [meta.key, *([label] if label else [])]
    rows_tbl = table.read(v, columns=cols)
    keys = rows_tbl.column(meta.key).to_pylist()
    labels = rows_tbl.column(label).to_pylist() if label else [None] * len(keys)
    chosen: list[Any] = []
    seen: set[Any] = set()
    for kk, lab in sorted(zip(keys, labels, strict=True), key=lambda r: str(r[0])):
        if len(chosen) >= queries:
            break
        if label is None or lab not in seen:
            chosen.append((kk, lab))
            seen.add(lab)
    blank = Image.new("RGB", (cell, cell), (235, 235, 235))
    grid, marks = [], []
    for kk, lab in chosen:
        hits, _ = search_by_image(table, kk, k=k, version=v, by_key=True)
        hit_keys = hits.column(meta.key).to_pylist()
        pics = stored_images(table, [kk, *hit_keys], v)

        def show(raw: bytes | None) -> Any:
            try:
                return decode_image(raw) if raw else blank
            except Exception:
                return blank

        grid.append([show(pics.get(kk)), *(show(pics.get(h)) for h in hit_keys)])
        marks.append([None, *((h == lab) if label else None
                              for h in (hits.column(label).to_pylist() if label else hit_keys))])
    if not grid:
        return {}
    png = image_grid_png(grid, cell=cell, marks=marks if label else None)
    what = f"{len(grid)} stored pictures (first column), each with its {k} nearest"
    return {"neighbours": projection_markdown(png, what)}


class ImageEmbedConfig(Config):
    """Run config of an image embedding asset."""

    source: str = ""
    skip_bad: bool = False
    overwrite: bool = False


def build_image_embedding_asset(
    key: CoercibleToAssetKey,
    *,
    source: str,
    column: str | None = None,
    key_column: str | None = None,
    store_bytes: bool = False,
    table: str | None = None,
    label_column: str | None = None,
    skip_bad: bool = False,
    backend: str = "auto",
    max_pixels: int | None = None,
    group_name: str | None = None,
    store_key: str = "embed_store",
    neighbours: int = 5,
) -> AssetsDefinition:
    """An asset embedding the pictures of ``source`` (a folder, a glob, or a Parquet/Arrow
    file with ``column`` of paths or bytes keyed by ``key_column``) with EfficientNet-Lite0
    into store table ``table``; only new or changed pictures reach the model. Its metadata
    names the version, rows, model and the pictures left out, and shows stored pictures
    beside their nearest neighbours. Run config may point ``source`` elsewhere, skip bad
    pictures (``skip_bad``) or re-embed everything (``overwrite``).
    """
    asset_key = AssetKey.from_coercible(key)
    name = table or lance_table_name(asset_key)

    @asset(key=asset_key, required_resource_keys={store_key}, group_name=group_name,
           kinds={"lancedb", "python"},
           metadata={"table": name, "source": source, "model": "efficientnet-lite0-imagenet"},
           description=f"EfficientNet-Lite0 embeddings of the pictures in `{source}`, in store "
                       f"table `{name}`.")
    def _image_asset(context: AssetExecutionContext, config: ImageEmbedConfig) -> MaterializeResult:
        store = getattr(context.resources, store_key).get_store()
        data, kcol, image = image_source(config.source or source, column=column, key=key_column,
                                         store_bytes=store_bytes)
        limits = ImageLimits(max_pixels=max_pixels) if max_pixels else ImageLimits()
        res = embed_images(store, name, data, key=kcol, image=image,
                           embedder=EfficientNetEmbedder(backend=backend),
                           mode="overwrite" if config.overwrite else "upsert",
                           on_bad="skip" if (config.skip_bad or skip_bad) else "error",
                           run_id=context.run.run_id, limits=limits,
                           properties={"dagster_asset": asset_key.to_user_string()})
        context.log.info(res.summary())
        record_run_version(context, name, res.version)
        t = store.table(name)
        md: dict[str, Any] = {
            "lance_version": res.version, "rows": t.count_rows(res.version),
            "model": t.meta.model, "model_revision": t.meta.model_revision,
            "dimension": t.meta.dimension, "rows_embedded": res.rows_embedded,
            "bad_images": MetadataValue.md(
                "\n".join(f"- `{k}`: {why}" for k, why in res.bad_images) or "none"),
        }
        md.update(image_neighbours_metadata(t, k=neighbours, label=label_column, version=res.version))
        return MaterializeResult(metadata=md)

    return _image_asset
