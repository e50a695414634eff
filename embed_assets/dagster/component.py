"""``EmbeddingsComponent``: embedding assets configured in a ``defs.yaml``.

The Dagster 1.13 way to ship an integration (as dagster-sling and dagster-dlt do): a
``Component`` + ``Resolvable`` dataclass, registered through the
``dagster_dg_cli.registry_modules`` entry point (``dg list components`` lists it),
scaffolded by ``dg scaffold defs embed_assets.dagster.EmbeddingsComponent NAME``, and built
on this package's own factory (:func:`build_embedding_asset`, :func:`build_embedding_checks`,
:func:`build_version_jobs`), so YAML and Python give the same assets.

What the YAML says, per table: the upstream asset (or a file), key and text column,
partitions, write mode, index recall target, checks; for the component: the store, the
model, automation condition, freshness policy, group, kinds. The model identity (name,
revision, backend) is each asset's ``code_version``, and the default automation condition
``eager() | code_version_changed()`` re-embeds when the upstream changes or the model does.
"""

# No `from __future__ import annotations`: Dagster resolves the dataclass annotations of
# Resolvable classes into the YAML schema at runtime.
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

import pyarrow as pa
from dagster import (
    AssetKey,
    AssetSpec,
    AutomationCondition,
    Component,
    ComponentLoadContext,
    Definitions,
    FreshnessPolicy,
    Model,
    PartitionsDefinition,
    Resolvable,
    Resolver,
    scaffold_with,
)
from dagster.components import Scaffolder, ScaffoldRequest
from dagster.components.component_scaffolding import scaffold_component
from dagster.components.resolved.core_models import (
    DailyPartitionsDefinitionModel,
    HourlyPartitionsDefinitionModel,
    StaticPartitionsDefinitionModel,
    WeeklyPartitionsDefinitionModel,
    resolve_partitions_def,
)
from dagster.components.utils.translation import TranslationFn, TranslationFnResolver

from ..embed import DEFAULT_MODEL
from ..errors import ValidationError
from .assets import build_embedding_asset
from .checks import INTEGRITY_CHECKS, WARN_CHECKS, build_embedding_checks
from .experiments import build_experiment_asset, build_promotion_job
from .io_manager import LanceDBIOManager
from .jobs import build_table_jobs, rollback_link, sync_version_choices, version_choices_sensor
from .metadata import lance_table_name, latest_version_markdown
from .resources import BACKENDS, EmbedderResource, EmbedStoreResource

CheckName = Literal["vectors_finite", "vector_dimension", "no_zero_vectors", "unique_keys",
                    "index_freshness", "drift"]
Backend = Literal["sentence-transformers", "torch", "onnx", "onnx-int8", "openvino", "openvino-bf16",
                  "torch-fp16", "hash"]
assert set(get_args(Backend)) == set(BACKENDS)  # one list of backends: resources.BACKENDS


# -- the YAML schema ------------------------------------------------------------------------
class StoreSpec(Resolvable, Model):
    """Where the tables live (``{{ env.X }}`` templating works in every value)."""

    uri: str | None = None
    storage_options: dict[str, str] | None = None


class ModelSpec(Resolvable, Model):
    """Which model embeds, and how it runs. Its identity is every asset's code version."""

    name: str | None = None
    backend: Backend = "sentence-transformers"
    # A label of the weights' revision for the code version; empty: a fingerprint of the
    # model directory's config files where it is local, else the name alone.
    revision: str | None = None
    device: str | None = None
    batch_size: int = 64
    dimension: int = 64
    ray_address: str | None = None


class ChecksSpec(Resolvable, Model):
    """Which asset checks run, and at which severity (ERROR blocks downstream assets)."""

    enabled: list[CheckName] = field(
        default_factory=lambda: cast(list[CheckName], [*INTEGRITY_CHECKS, *WARN_CHECKS]))
    severity: dict[CheckName, Literal["ERROR", "WARN"]] = field(default_factory=dict)
    expected_dimension: int | None = None
    max_centroid_shift: float = 0.05
    min_neighbour_overlap: float = 0.8
    max_unindexed_share: float = 0.1


class ImageModelSpec(Resolvable, Model):
    """The model of image tables: ``efficientnet`` (EfficientNet-Lite0 on ImageNet, 1,280-d,
    shipped; the default), ``clip`` (a sentence-transformers image model: name or path),
    ``torch`` (a torch image model file: ``name`` is its path) or ``pixels`` (raw pixels
    resized to ``size``: a baseline, no weights)."""

    backend: Literal["efficientnet", "pixels", "clip", "torch"] = "efficientnet"
    name: str | None = None
    size: list[int] = field(default_factory=lambda: [8, 8])
    image_mode: Literal["L", "RGB"] = "L"


class FreshnessSpec(Resolvable, Model):
    """A time-window freshness policy: fail when the last materialisation is older than
    ``fail_after`` (``30m``, ``12h``, ``7d``), warn after ``warn_after``."""

    fail_after: str
    warn_after: str | None = None


@dataclass
class ExperimentSpec(Resolvable):
    """A model to try on the table (docs/experiments.md): an asset
    ``<asset>/experiments/<name>`` embeds production's rows with it into a Lance branch and
    shows the comparison; the ``promote_<table>`` job makes it production."""

    # A dataclass, as EmbeddingTableSpec: as a pydantic Model, the `model` field shadowing
    # Resolvable's `model` classmethod made pydantic warn on every import of this module.
    name: str
    model: str  # type: ignore[assignment]  # (Resolvable.model: unused here)
    backend: str | None = None
    sample: int = 200
    k: int = 10


@dataclass
class EmbeddingTableSpec(Resolvable):
    """One embedding table: its asset, its source, what to embed."""

    asset: str
    key_column: str
    # what is embedded: a text column (the component's model), or an image column (its
    # image_model): exactly one
    text_column: str | None = None
    image_column: str | None = None
    # the upstream asset (loaded by its IO manager), or a file (Parquet, CSV, JSON lines)
    # read at run time, relative to the defs.yaml's folder
    source: str | None = None
    path: str | None = None
    columns: list[str] | None = None
    table: str | None = None
    description: str | None = None
    partitions: Annotated[
        PartitionsDefinition | None,
        Resolver(resolve_partitions_def, model_field_type=(
            StaticPartitionsDefinitionModel | DailyPartitionsDefinitionModel
            | WeeklyPartitionsDefinitionModel | HourlyPartitionsDefinitionModel)),
    ] = None
    partition_column: str | None = None
    write_mode: Literal["sync", "upsert", "append", "overwrite"] = "sync"
    on_empty: Literal["error", "skip"] = "error"
    index_recall: float | None = None
    label_column: str | None = None
    checks: ChecksSpec | None = None
    # this table's own automation condition / freshness (else the component's)
    automation_condition: Annotated[
        AutomationCondition | None, Resolver.default(model_field_type=str | None)] = None
    freshness: FreshnessSpec | None = None
    # models to try on this table, each an experiment asset; a promote_<table> job
    experiments: list[ExperimentSpec] | None = None


def _table_template_vars(t: EmbeddingTableSpec) -> Mapping[str, Any]:
    return {"table": t}


@dataclass
class EmbeddingsComponent(Component, Resolvable):
    """Embedding assets in versioned Lance tables, configured in YAML.

    Each entry of ``tables`` becomes an embedding asset (incremental by content hash),
    its asset checks, a rollback job (``rollback_<table>``: to the previous version),
    a ``restore_<table>`` job whose Launchpad offers every version of the table to pick
    (run, model, rows, time), and a ``tag_<table>`` job. The model identity is each
    asset's code version; the default automation condition re-embeds when the upstream
    asset changes or the model does.

    Scaffold one with ``dg scaffold defs embed_assets.dagster.EmbeddingsComponent NAME``.
    """

    tables: Sequence[EmbeddingTableSpec]
    store: StoreSpec = field(default_factory=StoreSpec)
    # the YAML key `model`; it shadows Resolvable's `model` classmethod, which this
    # component does not use
    model: ModelSpec = field(default_factory=ModelSpec)  # type: ignore[assignment]
    image_model: ImageModelSpec = field(default_factory=ImageModelSpec)
    group_name: str | None = None
    kinds: list[str] = field(default_factory=lambda: ["lancedb", "python"])
    automation_condition: Annotated[
        AutomationCondition | None, Resolver.default(model_field_type=str | None)] = None
    # False: no automation condition at all (materialise by hand or on a schedule)
    automate: bool = True
    freshness: FreshnessSpec | None = None
    translation: Annotated[
        TranslationFn[EmbeddingTableSpec] | None,
        TranslationFnResolver[EmbeddingTableSpec](_table_template_vars),
    ] = None
    # Resource keys: the documented ones by default. Equal store / model settings in two
    # components share one resource object, so they merge; give a component other keys
    # only where it needs a different store or model beside another component's.
    store_key: str = "embed_store"
    embedder_key: str = "embedder"
    io_manager_key: str = "lance_io_manager"
    # Rollback / restore / tag jobs per table, and the sensor keeping the restore
    # Launchpad's version choices in step with the store.
    version_jobs: bool = True
    # The asset description shows the latest version when the code location loaded: its
    # number, rows, model and the 2-D projection as a picture (the description is the one
    # place Dagster's UI renders an image without a click; metadata markdown opens in a
    # modal). Reads up to 1,000 vectors per table at load; false: no store read at load.
    describe_latest: bool = True

    def __post_init__(self) -> None:
        _validate(self)

    # -- what the YAML becomes ------------------------------------------------------------
    def code_version(self) -> str:
        """The model identity: name, revision, backend."""
        return model_identity(self.model)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        store_res = shared_store_resource(self.store.uri, self.store.storage_options)
        embedder_res = shared_embedder_resource(self.model)
        assets: list[Any] = []
        checks: list[Any] = []
        owners: dict[str, Any] = {}
        partitioned: dict[str, tuple[PartitionsDefinition, str]] = {}
        promotions: list[Any] = []
        base = getattr(context, "path", None)
        for i, t in enumerate(self.tables):
            spec = self._asset_spec(t)
            name = t.table or lance_table_name(spec.key)
            source_key = AssetKey.from_user_string(t.source) if t.source else None
            load_source = None
            if source_key is None:
                # A file: read by the asset at each run. Not an asset of its own: an
                # external asset would only add a node nothing materialises.
                path = _resolve_path(t.path, base, i)
                _check_columns(f"tables[{i}]", source_file_columns(path), t)
                load_source = _loader(path)
            on_write = sync_version_choices if self.version_jobs else None
            if t.image_column is not None:
                asset_def = build_image_embedding_asset(
                    spec, t, name, self.image_model, source_key=source_key,
                    load_source=load_source, store_key=self.store_key,
                    io_manager_key=self.io_manager_key, on_write=on_write)
            else:
                asset_def = build_embedding_asset(
                    spec.key, source=source_key, key_column=t.key_column,
                    text_column=cast(str, t.text_column),  # a text table: no image_column
                    columns=t.columns, partitions_def=t.partitions,
                    partition_expr=t.partition_column if t.partitions is not None else None,
                    table=name, on_empty=t.on_empty, group_name=spec.group_name,
                    description=spec.description, io_manager_key=self.io_manager_key,
                    store_key=self.store_key, embedder_key=self.embedder_key,
                    label_column=t.label_column, metadata=spec.metadata,
                    code_version=spec.code_version, automation_condition=spec.automation_condition,
                    freshness_policy=spec.freshness_policy, kinds=sorted(spec.kinds),
                    tags=spec.tags, owners=spec.owners, write_mode=t.write_mode,
                    reembed_on_model_change=True, index_recall=t.index_recall, on_write=on_write,
                    load_source=load_source,
                )
            assets.append(asset_def)
            cs = t.checks or ChecksSpec()
            if cs.enabled:
                checks.append(build_embedding_checks(
                    spec.key, table=name, store_key=self.store_key,
                    expected_dimension=cs.expected_dimension,
                    max_centroid_shift=cs.max_centroid_shift,
                    min_neighbour_overlap=cs.min_neighbour_overlap,
                    max_unindexed_share=cs.max_unindexed_share,
                    include=cs.enabled, severities={str(k): v for k, v in cs.severity.items()}))
            owners[name] = spec.key
            for e in t.experiments or []:
                assets.append(build_experiment_asset(
                    name, e.name, model=e.model, backend=e.backend, production=spec.key,
                    store_key=self.store_key, sample=e.sample, k=e.k,
                    label_column=t.label_column or t.partition_column, group_name=spec.group_name))
            if t.experiments:
                promotions.append(build_promotion_job(name, production=spec.key, store_key=self.store_key,
                                                      experiments=[e.name for e in t.experiments]))
            if t.partitions is not None and t.partition_column:
                partitioned[name] = (t.partitions, t.partition_column)
        jobs: list[Any] = list(promotions)
        sensors: list[Any] = []
        if self.version_jobs:
            jobs += build_table_jobs(owners, checks=checks, store_key=self.store_key,
                                    partitioned=partitioned)
            sensors = [version_choices_sensor(_sensor_name(owners), owners, store_key=self.store_key)]
        io = LanceDBIOManager(store=store_res)
        return Definitions(
            assets=assets, asset_checks=checks, jobs=jobs, sensors=sensors,
            resources={self.store_key: store_res, self.embedder_key: embedder_res,
                       self.io_manager_key: _shared(("io", id(store_res)), lambda: io)},
        )

    def _asset_spec(self, t: EmbeddingTableSpec) -> AssetSpec:
        """The table's attributes as an AssetSpec, after ``translation``."""
        key = AssetKey.from_user_string(t.asset)
        condition = t.automation_condition or self.automation_condition
        if condition is None and self.automate:
            condition = default_automation_condition()
        fresh = t.freshness or self.freshness
        spec = AssetSpec(
            key=key,
            group_name=self.group_name,
            kinds=set(self.kinds),
            code_version=(image_model_identity(self.image_model) if t.image_column
                          else self.code_version()),
            automation_condition=condition,
            freshness_policy=_freshness_policy(fresh) if fresh else None,
            description=t.description or _description(
                t, key, image_model_identity(self.image_model) if t.image_column
                else self.code_version(), links=self.version_jobs,
                latest=self._latest_snapshot(t, key) if self.describe_latest else ""),
            deps=[AssetKey.from_user_string(t.source)] if t.source else [],
        )
        if self.translation is not None:
            spec = self.translation(spec, t)
        return spec


    def _latest_snapshot(self, t: EmbeddingTableSpec, key: AssetKey) -> str:
        """The latest version as markdown, read when the code location loads ("" if none)."""
        name = t.table or lance_table_name(key)
        try:
            store = EmbedStoreResource(uri=self.store.uri or None,
                                       storage_options=self.store.storage_options).get_store()
            if not store.exists(name):
                return ""
            return latest_version_markdown(store.table(name), label_column=t.label_column
                                           or t.partition_column)
        except Exception:  # a store that cannot be read at load time: the page says less
            return ""


def _description(t: EmbeddingTableSpec, key: AssetKey, identity: str, *, links: bool,
                 latest: str = "") -> str:
    """What the asset page says first: what is embedded, by which model, the latest version
    (at load time) with its picture, and the way back."""
    name = t.table or lance_table_name(key)
    model, _, backend = identity.rpartition("#")
    text = (f"Embeddings of `{t.source or Path(str(t.path)).name}`.{t.text_column or t.image_column}, "
            "keyed by "
            f"`{t.key_column}`, in store table `{name}` (SQL: `FROM {name}`). "
            f"**Model** `{model.split('@')[0]}` ({backend}; the code version is the model "
            "identity). Only new or changed rows are embedded; the data version is the Lance "
            "version.")
    if links:  # before the picture, which the page folds under "Show more"
        text += (f"\n\n[Restore a version]({rollback_link(name).replace('rollback_', 'restore_', 1)}) "
                 f"(pick it from a list: version, rows, model, run, time) · "
                 f"[Roll back this asset]({rollback_link(name)}) (to the previous version)")
    if latest:
        text += "\n\n" + latest
    return text


# -- validation at load time ------------------------------------------------------------------
def _validate(c: EmbeddingsComponent) -> None:
    """What the schema cannot say, refused when the code location loads, naming the attribute."""
    if not c.tables:
        raise ValidationError("tables: give at least one table to embed")
    names: set[str] = set()
    for i, t in enumerate(c.tables):
        at = f"tables[{i}]"
        if (t.source is None) == (t.path is None):
            raise ValidationError(f"{at}: give exactly one of source (an upstream asset key) "
                                  "and path (a Parquet/CSV/JSON lines file)")
        if t.index_recall is not None and not 0 < t.index_recall <= 1:
            raise ValidationError(f"{at}.index_recall: a recall target is in (0, 1], got "
                                  f"{t.index_recall}")
        if (t.partitions is None) != (t.partition_column is None):
            raise ValidationError(f"{at}: partitions and partition_column go together (the "
                                  "column of the source holding each row's partition key)")
        if (t.text_column is None) == (t.image_column is None):
            raise ValidationError(f"{at}: give exactly one of text_column and image_column")
        if t.image_column is not None and (t.partitions is not None or t.index_recall is not None):
            raise ValidationError(f"{at}: partitions and index_recall apply to text tables")
        for name, value in (("key_column", t.key_column), ("text_column", t.text_column),
                            ("image_column", t.image_column)):
            if value is not None and not value.strip():
                raise ValidationError(f"{at}.{name}: empty")
        name = t.table or lance_table_name(AssetKey.from_user_string(t.asset))
        if name in names:
            raise ValidationError(f"{at}.table: {name!r} is already the table of another entry")
        names.add(name)
    if c.model.batch_size < 1:
        raise ValidationError(f"model.batch_size: must be >= 1, got {c.model.batch_size}")
    if c.model.backend == "hash" and c.model.dimension < 1:
        raise ValidationError(f"model.dimension: must be >= 1, got {c.model.dimension}")


def _check_columns(at: str, names: Sequence[str], t: EmbeddingTableSpec) -> None:
    """Every column the entry names is a column of its source file."""
    wanted = {"key_column": [t.key_column], "text_column": [t.text_column] if t.text_column else [],
              "image_column": [t.image_column] if t.image_column else [],
              "columns": t.columns or [], "partition_column": [t.partition_column] if
              t.partition_column else [], "label_column": [t.label_column] if t.label_column else []}
    for attr, cols in wanted.items():
        for col in cols:
            if col not in names:
                raise ValidationError(f"{at}.{attr}: {col!r} is not a column of {t.path}; its "
                                      f"columns are {', '.join(names)}")


def _loader(path: Path) -> Any:
    return lambda: read_source_file(path)


def _resolve_path(path: str | None, base: Path | None, i: int) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    if not p.exists():
        raise ValidationError(f"tables[{i}].path: no file {p}")
    return p


# -- the file source --------------------------------------------------------------------------
def read_source_file(path: Path) -> pa.Table:
    """A Parquet, CSV or JSON lines file as an Arrow table."""
    import polars as pl

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pl.read_parquet(path).to_arrow()
    if suffix in (".csv", ".tsv"):
        return pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",").to_arrow()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pl.read_ndjson(path).to_arrow()
    raise ValidationError(f"path {path}: read Parquet, CSV/TSV or JSON lines; got {suffix!r}")


def source_file_columns(path: Path) -> list[str]:
    """The column names of a source file, read without loading its rows where possible."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return read_source_file(path).column_names


# -- model identity, automation, freshness ------------------------------------------------
def model_identity(model: ModelSpec) -> str:
    """``name@revision#backend``: what the code version of an embedding asset is.

    A change of any part makes Dagster's ``code_version_changed()`` true, and the run it
    starts re-embeds every row (a table never mixes models).
    """
    if model.backend == "hash" or (model.name or "").startswith("hash-bow"):
        name = model.name if (model.name or "").startswith("hash-bow:") else f"hash-bow:{model.dimension}"
        return f"{name}@v1#hash"
    name = model.name or DEFAULT_MODEL
    revision = model.revision or _local_revision(model.name)
    backend = "torch" if model.backend == "sentence-transformers" else model.backend
    return f"{name}@{revision}#{backend}" if revision else f"{name}#{backend}"


def _local_revision(name: str | None) -> str | None:
    """A fingerprint of a local model directory's config files (cheap: no weights read);
    the shipped default model's directory when ``name`` is empty."""
    from ..embed._embedders import _default_model_path, _model_revision

    try:
        path = _default_model_path() if not name or name in ("all-MiniLM-L6-v2", DEFAULT_MODEL) else name
    except Exception:  # the shipped model package is absent: the name alone identifies it
        return None
    if not Path(path).is_dir():
        return None
    return _model_revision(None, str(path))


def image_model_identity(model: ImageModelSpec) -> str:
    """The code version of an image table: ``name#backend`` (pixels: size and mode)."""
    if model.backend == "pixels":
        w, h = model.size
        return f"pixels-raw:{w}x{h}:{model.image_mode}#pixels"
    if model.backend == "efficientnet":
        return "efficientnet-lite0-imagenet#efficientnet"
    return f"{model.name or '?'}#{model.backend}"


def build_image_embedder(model: ImageModelSpec) -> Any:
    """The image embedder of an :class:`ImageModelSpec`."""
    from ..embed import (
        EfficientNetEmbedder,
        PixelEmbedder,
        SentenceTransformerImageEmbedder,
        TorchImageEmbedder,
    )

    if model.backend == "efficientnet":
        return EfficientNetEmbedder()
    if model.backend == "pixels":
        w, h = model.size
        return PixelEmbedder(size=(w, h), image_mode=model.image_mode)
    if not model.name:
        raise ValidationError(f"image_model.name: the {model.backend} backend needs a model name or path")
    if model.backend == "clip":
        return SentenceTransformerImageEmbedder(model=model.name, image_mode=model.image_mode)
    return TorchImageEmbedder(path=model.name)


def build_image_embedding_asset(spec: AssetSpec, t: EmbeddingTableSpec, table: str,
                                model: ImageModelSpec, *, source_key: AssetKey | None,
                                load_source: Any, store_key: str, io_manager_key: str,
                                on_write: Any) -> Any:
    """An asset embedding the images of ``t.image_column`` (:func:`embed_assets.embed.embed_images`):
    incremental by a hash of the image bytes; a model change re-embeds every image."""
    from dagster import AssetExecutionContext, AssetIn, DataVersion, MaterializeResult, MetadataValue, asset

    from ..embed import embed_images
    from ..store import as_arrow
    from .metadata import record_run_version, table_metadata

    def _embed(context: AssetExecutionContext, source: Any) -> MaterializeResult:
        store = getattr(context.resources, store_key).get_store()
        embedder = build_image_embedder(model)
        mode = "sync"
        if store.exists(table):
            meta = store.table(table).meta
            if (meta.model, meta.model_revision) != (embedder.name, embedder.revision):
                context.log.warning(f"{table}: model {meta.model} -> {embedder.name}: re-embedding "
                                    "every image")
                mode = "overwrite"
        res = embed_images(store, table, as_arrow(source), key=t.key_column,
                           image=cast(str, t.image_column),  # an image table
                           embedder=embedder, mode=mode, columns=t.columns, run_id=context.run.run_id,
                           properties={"dagster_asset": spec.key.to_user_string()})
        context.log.info(res.summary())
        record_run_version(context, table, res.version)
        tbl = store.table(table)
        md = table_metadata(tbl, version=res.version, write=res.write, label_column=t.label_column,
                            preview_columns=[c for c in (t.key_column, t.label_column) if c],
                            extra={"summary": MetadataValue.text(res.summary()),
                                   "rows_embedded": MetadataValue.int(res.rows_embedded),
                                   "rows_reused": MetadataValue.int(res.rows_reused),
                                   "rows_unchanged": MetadataValue.int(res.rows_unchanged),
                                   "bad_images": MetadataValue.int(res.rows_skipped_empty)})
        if on_write is not None:
            on_write(context, tbl)
        return MaterializeResult(metadata=md, data_version=DataVersion(f"v{res.version}"))

    common: dict[str, Any] = dict(
                  key=spec.key, required_resource_keys={store_key}, io_manager_key=io_manager_key,
                  metadata={"key": t.key_column, "table": table, "image_column": t.image_column,
                            **spec.metadata},
                  group_name=spec.group_name, kinds=set(spec.kinds) | {"image"}, tags=spec.tags,
                  owners=list(spec.owners) or None, code_version=spec.code_version,
                  automation_condition=spec.automation_condition,
                  freshness_policy=spec.freshness_policy, description=spec.description)
    if load_source is not None:
        @asset(**common)
        def _image_asset_from_file(context: AssetExecutionContext) -> MaterializeResult:
            return _embed(context, load_source())

        return _image_asset_from_file

    @asset(ins={"source": AssetIn(key=source_key)}, **common)
    def _image_asset(context: AssetExecutionContext, source: Any) -> MaterializeResult:
        return _embed(context, source)

    return _image_asset


def default_automation_condition() -> AutomationCondition:
    """Re-embed when the upstream asset has new data or the model (code version) changed."""
    return (AutomationCondition.eager() | AutomationCondition.code_version_changed()).with_label(
        "eager, or the model changed")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, attribute: str) -> dt.timedelta:
    """``30m``, ``12h``, ``7d``... as a timedelta; anything else refused, naming ``attribute``."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValidationError(f"{attribute}: {text!r} is not a duration such as 30m, 12h or 7d")
    return dt.timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def _freshness_policy(spec: FreshnessSpec) -> FreshnessPolicy:
    fail = parse_duration(spec.fail_after, "freshness.fail_after")
    warn = parse_duration(spec.warn_after, "freshness.warn_after") if spec.warn_after else None
    if warn is not None and warn >= fail:
        raise ValidationError("freshness.warn_after: must be shorter than fail_after")
    return FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


# -- resources shared between components -------------------------------------------------------
_SHARED: dict[Any, Any] = {}


def _shared(key: Any, make: Any) -> Any:
    # Definitions.merge accepts one resource key from two components only if it is the
    # same object: equal settings give the same object.
    if key not in _SHARED:
        _SHARED[key] = make()
    return _SHARED[key]


def shared_store_resource(uri: str | None = None,
                          storage_options: Mapping[str, str] | None = None) -> Any:
    """The store resource for these settings, one object per settings in a process.

    A ``configure_at_launch`` partial: what the YAML leaves unset (the URI, by default)
    stays settable in the Launchpad, and the IO manager, which holds this very object as
    its nested ``store``, follows what is set there (a fully built resource would be
    resolved on its own and keep its defaults).
    """
    opts = dict(storage_options) if storage_options else None
    given = {k: v for k, v in (("uri", uri or None), ("storage_options", opts)) if v is not None}
    key = ("store", uri or None, tuple(sorted((opts or {}).items())))
    return _shared(key, lambda: EmbedStoreResource.configure_at_launch(**given))


def shared_embedder_resource(model: ModelSpec) -> EmbedderResource:
    """The embedder resource for a model spec, one object per spec in a process."""
    fields = model.model_dump()
    fields.pop("revision", None)
    fields["model"] = fields.pop("name") or None
    key = ("embedder", tuple(sorted(fields.items())))
    return _shared(key, lambda: EmbedderResource(**fields))


def _sensor_name(owners: Mapping[str, Any]) -> str:
    return "version_choices_" + "_".join(sorted(owners))[:80]


# -- scaffolding ---------------------------------------------------------------------------------
class EmbeddingsScaffolder(Scaffolder):
    """``dg scaffold defs embed_assets.dagster.EmbeddingsComponent NAME``: a defs.yaml that
    loads as written (a sample file beside it); point ``path`` (or ``source``), the key and
    text column at your data and it embeds your table."""

    def scaffold(self, request: ScaffoldRequest) -> None:
        from .._demo import demo_source

        sample = request.target_path / "sample.parquet"
        request.target_path.mkdir(parents=True, exist_ok=True)
        demo_source().head(200).select(["package", "section", "description"]).write_parquet(sample)
        name = request.target_path.name
        scaffold_component(request, {
            "tables": [{
                "asset": f"{name}/embeddings",
                "path": "sample.parquet",   # or source: an upstream asset key
                "key_column": "package",
                "text_column": "description",
            }],
            "model": {"name": "", "backend": "sentence-transformers"},
            "store": {"uri": "{{ env('EMBED_ASSETS_STORE', '.embed_store') }}"},
        })


# (the scaffolder is defined after the class it scaffolds, so not as a decorator)
EmbeddingsComponent = scaffold_with(EmbeddingsScaffolder)(EmbeddingsComponent)  # type: ignore[misc]
