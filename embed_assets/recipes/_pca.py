"""Dimension reduction: PCA of one version of an embedding table, stored as a versioned table.

The model table has **one row per principal component**, so SQL can read it with no
matrix type::

    component                 INTEGER (the key): 0 = the axis of most variance
    vector                    FLOAT[d]: the unit principal axis (scikit-learn's components_[i])
    mean                      FLOAT[d]: the mean of the source vectors (the same on every row)
    explained_variance        DOUBLE
    explained_variance_ratio  DOUBLE: the share of the total variance this axis explains
    singular_value            DOUBLE
    source_table, source_version, n_rows   what it was fitted on

Coordinate ``i`` of a vector ``v`` is ``dot(v - mean, component i)``. In SQL, in an
:func:`embed_assets.connect` session (``emb`` the embedding table, ``emb_pca2`` the
model)::

    SELECT e.package,
           list(vec_dot(vec_sub(e.vector, c.mean), c.vector) ORDER BY c.component) AS xy
    FROM emb e, "emb_pca2@1" c
    GROUP BY e.package

Every fit is one ``overwrite`` version of the model table, so a version (or a tag) keeps
projecting the same way whatever happens to the source table afterwards:
``project(store, vectors, "emb_pca2", version=1)``. The projected table, when asked for,
holds the source table's key and a ``vector`` of dimension ``k``; its model is
``pca:<model table>`` and its model revision the model table's version, so the two are
tied together in the store's own provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..store import VECTOR_COLUMN, EmbeddingTable, Store, VersionRef

_MODEL_COLUMNS = ("component", VECTOR_COLUMN, "mean", "explained_variance",
                  "explained_variance_ratio", "singular_value", "source_table",
                  "source_version", "n_rows")


@dataclass(eq=False)
class PcaReport:
    """A fitted PCA and where it was stored.

    Attributes
    ----------
    k : int
        Number of components.
    dimension : int
        Dimension of the source vectors.
    n_rows : int
        Rows it was fitted on.
    components : numpy.ndarray
        (k, dimension) float32, unit rows, most variance first.
    mean : numpy.ndarray
        (dimension,) float32.
    explained_variance, explained_variance_ratio, singular_values : numpy.ndarray
        (k,) float64, as scikit-learn reports them; the ratios are sorted, largest first.
    source_table : str
    source_version : int
        The table and version fitted on.
    seed : int
        The ``random_state`` given to scikit-learn (used by its randomized solver).
    name : str or None
        The model table, when stored; ``model_version`` its version.
    projected_table : str or None
        The projected table, when written; ``projected_version`` its version.
    """

    k: int
    dimension: int
    n_rows: int
    components: np.ndarray = field(repr=False)
    mean: np.ndarray = field(repr=False)
    explained_variance: np.ndarray = field(repr=False)
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray = field(repr=False)
    source_table: str
    source_version: int
    seed: int = 0
    name: str | None = None
    model_version: int | None = None
    projected_table: str | None = None
    projected_version: int | None = None

    @property
    def explained(self) -> float:
        """The share of the variance the ``k`` components explain together."""
        return float(np.sum(self.explained_variance_ratio))

    def transform(self, vectors: Any) -> np.ndarray:
        """Project vectors with this model (what :func:`project` does with a stored one)."""
        x, single = _as_matrix(vectors, self.dimension)
        return _project(x, self.components, self.mean, single)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (no matrices): for logs and asset metadata."""
        return {
            "k": self.k, "dimension": self.dimension, "n_rows": self.n_rows,
            "explained": round(self.explained, 6),
            "explained_variance_ratio": [round(float(x), 6) for x in self.explained_variance_ratio],
            "source_table": self.source_table, "source_version": self.source_version,
            "seed": self.seed, "name": self.name, "model_version": self.model_version,
            "projected_table": self.projected_table, "projected_version": self.projected_version,
        }


def fit_pca(table: EmbeddingTable, k: int, *, version: VersionRef = None,
            store: Store | None = None, name: str | None = None, seed: int = 0,
            projected: str | None = None, run_id: str | None = None) -> PcaReport:
    """Fit a ``k``-component PCA (scikit-learn) on one version of ``table``.

    Parameters
    ----------
    table : EmbeddingTable
    k : int
        Components, from 1 to ``min(rows, dimension)``.
    version : int or str, optional
        The version or tag of ``table`` to fit on; latest by default.
    store : Store, optional
        Where to write the model (and the projection). Given ``name`` or ``projected``
        without ``store``, the table's own store.
    name : str, optional
        The model table (one row per component, see the module docstring); with
        ``store`` and no name, ``"<table>_pca<k>"``. Each fit is a new version of it.
    seed : int
        ``random_state`` of scikit-learn's PCA (only its randomized solver uses it).
    projected : str, optional
        Also write the table's key and its projected vectors (dimension ``k``) to this
        table (one ``overwrite`` version; the model is stored too).
    run_id : str, optional
        Stored with the versions written.

    Returns
    -------
    PcaReport
    """
    from sklearn.decomposition import PCA

    v = table.resolve(version)
    meta = table.meta_at(v)
    tbl = table.read(v, columns=[meta.key, VECTOR_COLUMN])
    n, d = tbl.num_rows, meta.dimension
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= min(n, d):
        raise ValidationError(f"k must be an integer from 1 to min(rows, dimension) = "
                              f"{min(n, d)} for {table.name!r} at version {v}, got {k!r}")
    if n < 2:
        raise ValidationError(f"PCA needs at least two rows; {table.name!r} at version {v} "
                              f"has {n}")
    x = _column_matrix(tbl.column(VECTOR_COLUMN))
    if not np.ptp(x, axis=0).any():
        # scikit-learn divides by the total variance and returns NaN ratios: refuse before
        # anything is written, so a stored model is never replaced by a meaningless one.
        raise ValidationError(f"PCA of {table.name!r} at version {v}: every vector is the same, "
                              "so there is no variance to explain")
    pca = PCA(n_components=k, random_state=seed).fit(x)
    report = PcaReport(
        k=k, dimension=d, n_rows=n,
        components=np.ascontiguousarray(pca.components_, dtype=np.float32),
        mean=np.asarray(pca.mean_, dtype=np.float32),
        explained_variance=np.asarray(pca.explained_variance_, dtype=np.float64),
        explained_variance_ratio=np.asarray(pca.explained_variance_ratio_, dtype=np.float64),
        singular_values=np.asarray(pca.singular_values_, dtype=np.float64),
        source_table=table.name, source_version=v, seed=seed)
    if store is None and (name is not None or projected is not None):
        store = table.store
    if store is None:
        return report
    report.name = name or f"{table.name}_pca{k}"
    res = store.write(report.name, _model_rows(report), key="component", mode="overwrite",
                      model=meta.model, model_revision=meta.model_revision, run_id=run_id,
                      properties={"recipe": "pca", "source_table": table.name,
                                  "source_version": v, "k": k})
    report.model_version = res.version
    if projected is not None:
        coords = _project(x, report.components, report.mean, False)
        data = pa.table({meta.key: tbl.column(meta.key), VECTOR_COLUMN: _vector_array(coords)})
        res = store.write(projected, data, key=meta.key, mode="overwrite",
                          model=f"pca:{report.name}", model_revision=str(report.model_version),
                          metric=meta.metric, run_id=run_id,
                          properties={"recipe": "pca", "source_table": table.name,
                                      "source_version": v, "pca_table": report.name,
                                      "pca_version": report.model_version})
        report.projected_table, report.projected_version = projected, res.version
    return report


def load_pca(store: Store, pca_table: str, version: VersionRef = None) -> PcaReport:
    """The PCA stored in ``pca_table`` at a version (latest by default).

    Parameters
    ----------
    store : Store
    pca_table : str
        A table written by :func:`fit_pca`.
    version : int or str, optional
        A version number or tag.

    Returns
    -------
    PcaReport
    """
    t = store.table(pca_table)
    v = t.resolve(version)
    tbl = t.read(v)
    missing = [c for c in _MODEL_COLUMNS if c not in tbl.column_names]
    if missing:
        raise ValidationError(f"table {pca_table!r} is not a PCA model (written by fit_pca): "
                              f"it has no {', '.join(missing)} column(s)")
    tbl = tbl.sort_by("component")
    comps = _column_matrix(tbl.column(VECTOR_COLUMN))
    first = tbl.slice(0, 1).to_pylist()[0]
    return PcaReport(
        k=tbl.num_rows, dimension=comps.shape[1], n_rows=int(first["n_rows"]),
        components=comps, mean=np.asarray(first["mean"], dtype=np.float32),
        explained_variance=tbl.column("explained_variance").to_numpy().astype(np.float64),
        explained_variance_ratio=tbl.column("explained_variance_ratio").to_numpy().astype(np.float64),
        singular_values=tbl.column("singular_value").to_numpy().astype(np.float64),
        source_table=first["source_table"], source_version=int(first["source_version"]),
        name=pca_table, model_version=v)


def project(store: Store, vectors: Any, pca_table: str, version: VersionRef = None) -> np.ndarray:
    """Project vectors with a stored PCA version.

    Parameters
    ----------
    store : Store
    vectors : array-like
        One vector ``(d,)`` or a matrix ``(n, d)`` (numpy, lists, or an Arrow vector
        column) of the model's dimension.
    pca_table : str
        A table written by :func:`fit_pca`.
    version : int or str, optional
        The model's version or tag; latest by default. A version keeps projecting the
        same way after the source table or the model table get new versions.

    Returns
    -------
    numpy.ndarray
        float32, ``(k,)`` for one vector, else ``(n, k)``: ``(v - mean) @ components.T``,
        the same numbers :func:`fit_pca` wrote to its projected table.
    """
    return load_pca(store, pca_table, version).transform(vectors)


# -- helpers ------------------------------------------------------------------------------
def _project(x: np.ndarray, components: np.ndarray, mean: np.ndarray, single: bool) -> np.ndarray:
    """``(x - mean) @ components.T`` in float64, as float32: the one formula both the
    projected table and :func:`project` use, so they agree exactly."""
    out = ((x.astype(np.float64) - mean.astype(np.float64)) @ components.astype(np.float64).T)
    out = out.astype(np.float32)
    return out[0] if single else out


def _as_matrix(vectors: Any, dim: int) -> tuple[np.ndarray, bool]:
    """``vectors`` as a float64 matrix, and whether it was one vector."""
    if isinstance(vectors, pa.Array | pa.ChunkedArray):
        x = _column_matrix(vectors)
    else:
        try:
            x = np.asarray(vectors, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValidationError("vectors must be numeric: one vector or a matrix") from None
    single = x.ndim == 1
    if single:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValidationError(f"vectors have shape {np.shape(x)}; the PCA model has "
                              f"dimension {dim}")
    if not np.isfinite(x).all():
        raise ValidationError("vectors have NaN or infinite values")
    return x, single


def _column_matrix(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type)):
        raise ValidationError(f"expected a column of vectors, got {arr.type}")
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return flat.reshape(len(arr), -1) if len(arr) else flat.reshape(0, 0)


def _vector_array(m: np.ndarray) -> pa.FixedSizeListArray:
    m = np.ascontiguousarray(m, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def _model_rows(r: PcaReport) -> pa.Table:
    k = r.k
    return pa.table({
        "component": pa.array(np.arange(k), pa.int64()),
        VECTOR_COLUMN: _vector_array(r.components),
        "mean": _vector_array(np.tile(r.mean, (k, 1))),
        "explained_variance": pa.array(r.explained_variance, pa.float64()),
        "explained_variance_ratio": pa.array(r.explained_variance_ratio, pa.float64()),
        "singular_value": pa.array(r.singular_values, pa.float64()),
        "source_table": pa.array([r.source_table] * k, pa.string()),
        "source_version": pa.array([r.source_version] * k, pa.int64()),
        "n_rows": pa.array([r.n_rows] * k, pa.int64()),
    })


__all__ = ["PcaReport", "fit_pca", "load_pca", "project"]
