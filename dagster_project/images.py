"""The image asset group of the demo: a CNN trained here, its embeddings, a PCA baseline.

images (scikit-learn's 1,797 bundled 8 x 8 digits, as PNG bytes, a stratified split)
  -> cnn_model (a small CNN trained on the train split; the output is the path of a
     versioned artefact in the store, revision = hash of its weights)
  -> embeddings (the encoder's vectors of every image, table ``digits_embeddings``,
     incremental by a hash of the image bytes; the shared asset checks)
images -> pca_baseline (PCA of the raw pixels, fitted on the train split, table ``digits_pca``)
embeddings, pca_baseline -> knn_eval (k-NN label accuracy of both on the held-out split,
     and a picture of nearest neighbours found by searching the table with an image)

Both tables live in the store with the text tables: versions, tags, rollback (the
``rollback_image_table`` job), SQL (``knn('digits_embeddings', ...)``) and checks.
"""

# No `from __future__ import annotations`: Dagster reads the Config and context
# annotations of the decorated functions at definition time.
from typing import Any

import numpy as np
import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    Config,
    Definitions,
    MaterializeResult,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field

from embed_assets import Store
from embed_assets._demo import digits_dataset, train_digits_cnn
from embed_assets.dagster import (
    EmbedStoreResource,
    build_embedding_checks,
    build_version_jobs,
    table_metadata,
)
from embed_assets.dagster.metadata import projection_markdown, record_run_version
from embed_assets.embed import (
    ImageEmbedder,
    TorchImageEmbedder,
    decode_image,
    embed_images,
    fit_pixel_pca,
    image_grid_png,
)
from embed_assets.train import knn_label_accuracy, save_model


class CnnConfig(Config):
    epochs: int = Field(default=40, description="training epochs (about 5 s for 40 on one core)")
    seed: int = Field(default=0, description="seeds initialisation, batch order, augmentation")
    dimension: int = Field(default=32, description="embedding size (the encoder's last layer)")
    channels: int = Field(default=16, description="channels of the first convolution")


class PcaBaselineConfig(Config):
    k: int = Field(default=32, description="PCA components of the raw pixels (the CNN's dimension)")


class KnnConfig(Config):
    k: int = Field(default=5, description="neighbours voting for a held-out image's label")


def _f(x: float) -> MetadataValue:
    return MetadataValue.float(round(float(x), 4))


def _write(context: AssetExecutionContext, store: Store, name: str, source: pl.DataFrame,
           embedder: ImageEmbedder) -> dict[str, Any]:
    """Embed the images into ``name``: incremental (sync) while the model is the same
    revision; a new model or revision re-embeds everything (a table never mixes models)."""
    mode = "sync"
    if store.exists(name):
        meta = store.table(name).meta
        if (meta.model, meta.model_revision) != (embedder.name, embedder.revision):
            context.log.warning(f"{name}: model {meta.model}@{meta.model_revision} -> "
                                f"{embedder.name}@{embedder.revision}: re-embedding every image")
            mode = "overwrite"
    res = embed_images(store, name, source, key="digit_id", image="png", embedder=embedder,
                       mode=mode, run_id=context.run.run_id,  # type: ignore[arg-type]
                       properties={"dagster_asset": context.asset_key.to_user_string()})
    context.log.info(res.summary())
    record_run_version(context, name, res.version)
    return table_metadata(store.table(name), version=res.version, write=res.write, label_column="label",
                          extra={"summary": MetadataValue.text(res.summary()),
                                 "rows_embedded": MetadataValue.int(res.rows_embedded),
                                 "rows_skipped_bad": MetadataValue.int(res.rows_skipped_empty),
                                 "embed_mode": MetadataValue.text(mode),
                                 "model_revision": MetadataValue.text(embedder.revision)})


def _neighbour_picture(store: Store, table: str, source: pl.DataFrame, k: int,
                       hard: list[int] | None = None) -> tuple[bytes, float]:
    """The first held-out image of each label, then the ``hard`` ones (the worst
    neighbour lists, so the picture shows failures too), each with its k nearest training
    images found by searching the table with the image's stored vector; green frame =
    same label, red = another. Returns the PNG and the share of green frames."""
    tbl = store.table(table)
    test = source.filter(pl.col("split") == "test").group_by("label", maintain_order=True).first() \
        .sort("label")
    pngs = dict(zip(source["digit_id"].to_list(), source["png"].to_list(), strict=True))
    label_of = dict(zip(source["digit_id"].to_list(), source["label"].to_list(), strict=True))
    queries = test["digit_id"].to_list() + [h for h in (hard or []) if h not in test["digit_id"]]
    rows, marks, same = [], [], []
    for qid in queries:
        qlab = label_of[qid]
        vec = tbl.get([qid], columns=["vector"]).column("vector")[0].as_py()
        hits = tbl.search(vec, k=k, where="split = 'train'", columns=["digit_id", "label"])
        labs = hits.column("label").to_pylist()
        rows.append([decode_image(pngs[qid], "L")] +
                    [decode_image(pngs[h], "L") for h in hits.column("digit_id").to_pylist()])
        marks.append([None] + [lab == qlab for lab in labs])
        same.extend(lab == qlab for lab in labs)
    return image_grid_png(rows, cell=32, marks=marks), float(np.mean(same))


def build_image_definitions(prefix: str = "digits", *,
                            store: EmbedStoreResource | None = None) -> Definitions:
    """The image group's assets, checks and version jobs under asset key prefix ``prefix``.

    ``store``: the store resource to share (pass the text location's, so the two groups
    merge into one Definitions and one Launchpad setting); default: configured at launch.
    """
    group = prefix
    images_key = AssetKey([prefix, "images"])
    model_key = AssetKey([prefix, "cnn_model"])
    emb_key = AssetKey([prefix, "embeddings"])
    pca_key = AssetKey([prefix, "pca_baseline"])
    emb_table, pca_table = f"{prefix}_embeddings", f"{prefix}_pca"

    @asset(key=images_key, group_name=group, kinds={"polars"},
           description="scikit-learn's 1,797 bundled 8x8 handwritten digits as PNG bytes, "
                       "with a stratified 75/25 train/test split.")
    def images(context: AssetExecutionContext) -> pl.DataFrame:
        df = pl.from_arrow(digits_dataset())
        assert isinstance(df, pl.DataFrame)
        first = df.group_by("label", maintain_order=True).head(8).sort("label", "digit_id")
        grid = [[decode_image(v, "L") for v in part["png"].to_list()]
                for _, part in first.group_by("label", maintain_order=True)]
        context.add_output_metadata({
            "dagster/row_count": MetadataValue.int(df.height),
            "train_rows": MetadataValue.int(int((df["split"] == "train").sum())),
            "test_rows": MetadataValue.int(int((df["split"] == "test").sum())),
            "sample": projection_markdown(image_grid_png(grid, cell=24), "the first digits of each label"),
        })
        return df

    @asset(key=model_key, group_name=group, kinds={"pytorch"}, required_resource_keys={"embed_store"},
           ins={"images": AssetIn(key=images_key)},
           description="A small CNN trained on the train split; the output is the path of its "
                       "artefact in the store (revision = hash of the weights).")
    def cnn_model(context: AssetExecutionContext, config: CnnConfig, images: pl.DataFrame) -> Output[str]:
        store = context.resources.embed_store.get_store()
        m = train_digits_cnn(images.to_arrow(), epochs=config.epochs, seed=config.seed,
                             dimension=config.dimension, channels=config.channels)
        path = save_model(m, store, run_id=context.run.run_id)
        context.log.info(f"{m.name}@{m.revision}: held-out accuracy {m.test_accuracy:.4f}, "
                         f"{m.seconds:.1f} s; saved {path}")
        # "artefact_path", not "path": the IO manager that pickles the output reports its own "path"
        return Output(path, metadata={
            "model": MetadataValue.text(m.name), "revision": MetadataValue.text(m.revision),
            "artefact_path": MetadataValue.path(path), "parameters": MetadataValue.int(m.parameters),
            "classifier_test_accuracy": _f(m.test_accuracy),
            "classifier_train_accuracy": _f(m.train_accuracy),
            "epochs": MetadataValue.int(m.epochs), "seconds": _f(m.seconds),
            "final_loss": _f(m.losses[-1]), "provenance": MetadataValue.json(m.provenance),
        })

    @asset(key=emb_key, group_name=group, kinds={"lancedb", "pytorch"},
           required_resource_keys={"embed_store"},
           ins={"images": AssetIn(key=images_key), "cnn_model": AssetIn(key=model_key)},
           metadata={"key": "digit_id", "table": emb_table},
           description=f"The CNN encoder's embedding of every digit, in store table `{emb_table}`; "
                       "only new or changed images (by a hash of their bytes) are embedded.")
    def embeddings(context: AssetExecutionContext, images: pl.DataFrame,
                   cnn_model: str) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        return MaterializeResult(metadata=_write(context, store, emb_table, images,
                                                 TorchImageEmbedder(cnn_model)))

    @asset(key=pca_key, group_name=group, kinds={"lancedb", "numpy"},
           required_resource_keys={"embed_store"}, ins={"images": AssetIn(key=images_key)},
           metadata={"key": "digit_id", "table": pca_table},
           description=f"The baseline: PCA of the raw pixels (fitted on the train split), in `{pca_table}`.")
    def pca_baseline(context: AssetExecutionContext, config: PcaBaselineConfig,
                     images: pl.DataFrame) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        train = images.filter(pl.col("split") == "train")["png"].to_list()
        pca = fit_pixel_pca([decode_image(v, "L") for v in train], config.k)
        return MaterializeResult(metadata=_write(context, store, pca_table, images, pca))

    @asset(key=AssetKey([prefix, "knn_eval"]), group_name=group, kinds={"lancedb"},
           required_resource_keys={"embed_store"}, deps=[emb_key, pca_key],
           ins={"images": AssetIn(key=images_key)},
           description="k-NN label accuracy on the held-out split, trained CNN vs PCA baseline, "
                       "and a picture of nearest neighbours found by searching with an image.")
    def knn_eval(context: AssetExecutionContext, config: KnnConfig,
                 images: pl.DataFrame) -> MaterializeResult:
        store = context.resources.embed_store.get_store()
        cnn = knn_label_accuracy(store.table(emb_table), k=config.k)
        pca = knn_label_accuracy(store.table(pca_table), k=config.k)
        labels = dict(zip(images["digit_id"].to_list(), images["label"].to_list(), strict=True))
        shares = [np.mean([labels[n] == labels[q] for n in row])
                  for q, row in zip(cnn.queries.tolist(), cnn.neighbours.tolist(), strict=True)]
        hard = [int(cnn.queries[i]) for i in np.argsort(shares, kind="stable")[:2] if shares[i] < 1]
        png, picture_agreement = _neighbour_picture(store, emb_table, images, config.k, hard)
        verdict = "beats" if cnn.accuracy > pca.accuracy else "does not beat"
        context.log.info(f"k-NN accuracy (k={config.k}): CNN {cnn.accuracy:.4f} (v{cnn.version}) "
                         f"{verdict} PCA {pca.accuracy:.4f} (v{pca.version})")
        return MaterializeResult(metadata={
            "cnn_knn_accuracy": _f(cnn.accuracy), "pca_knn_accuracy": _f(pca.accuracy),
            "cnn_neighbour_agreement": _f(cnn.agreement), "pca_neighbour_agreement": _f(pca.agreement),
            "cnn_beats_baseline": MetadataValue.bool(cnn.accuracy > pca.accuracy),
            "k": MetadataValue.int(config.k), "held_out": MetadataValue.int(cnn.n_test),
            "cnn_version": MetadataValue.int(cnn.version), "pca_version": MetadataValue.int(pca.version),
            "neighbours": projection_markdown(png, f"held-out digits (one per label, then the "
                                                   f"{len(hard)} worst) and their {config.k} nearest "
                                                   f"training images in {emb_table}"),
            "picture_agreement": _f(picture_agreement),
        })

    store = store or EmbedStoreResource.configure_at_launch()
    return Definitions(
        assets=[images, cnn_model, embeddings, pca_baseline, knn_eval],
        asset_checks=[build_embedding_checks(emb_key)],
        jobs=build_version_jobs(tables={emb_table: emb_key, pca_table: pca_key},
                                rollback_name="rollback_image_table", tag_name="tag_image_table_version"),
        resources={"embed_store": store},
    )


def with_image_assets(defs: Definitions, prefix: str = "digits") -> Definitions:
    """``defs`` plus the image group, sharing ``defs``' ``embed_store`` resource."""
    return Definitions.merge(defs, build_image_definitions(prefix, store=defs.resources["embed_store"]))
