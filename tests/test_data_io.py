"""Data in and out the way people hold it (issue 12, item 6): 2-D numpy vector columns,
pandas/Polars in, ``to_pandas``, ``Store.tables()``, ``search(output=...)``, and an
embedder whose vectors do not have its declared dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from embed_assets import Store, embed_table
from embed_assets.errors import ValidationError
from embed_assets.store import TableInfo, as_arrow


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def _stored(store: Store, name: str) -> np.ndarray:
    t = store.table(name).read()
    return np.asarray(t.column("vector").combine_chunks().flatten()).reshape(t.num_rows, -1)


# -- in -------------------------------------------------------------------------------
def test_a_2d_numpy_array_is_a_vector_column(store: Store) -> None:
    res = store.write("t", {"id": [1, 2], "vector": np.ones((2, 4), np.float32)}, key="id")
    assert res.committed
    np.testing.assert_array_equal(_stored(store, "t"), np.ones((2, 4), np.float32))
    assert store.table("t").meta.dimension == 4


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_other_numeric_dtypes_and_non_contiguous_matrices(store: Store, dtype: type) -> None:
    m = np.arange(24).reshape(4, 6).astype(dtype)[:, ::2]   # a strided view
    store.write("t", {"id": np.arange(4), "vector": m}, key="id")
    np.testing.assert_array_equal(_stored(store, "t"), m.astype(np.float32))


def test_as_arrow_gives_a_fixed_size_list_and_refuses_3d_and_strings() -> None:
    tbl = as_arrow({"id": [1, 2, 3], "vector": np.eye(3, 5, dtype=np.float32)})
    assert tbl.schema.field("vector").type == pa.list_(pa.float32(), 5)
    with pytest.raises(ValidationError, match=r"'vector' is a 3-D array"):
        as_arrow({"id": [1], "vector": np.ones((1, 2, 3))})
    with pytest.raises(ValidationError, match="must hold numbers"):
        as_arrow({"id": [1], "vector": np.array([["a", "b"]])})
    with pytest.raises(ValidationError, match="cannot convert the columns"):
        as_arrow({"id": [1, 2], "vector": np.ones((3, 2))})   # lengths differ: no ArrowInvalid


def test_lists_of_1d_arrays_pandas_and_polars_array_columns(store: Store) -> None:
    m = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    store.write("a", {"id": [1, 2, 3], "vector": list(m)}, key="id")
    store.write("b", pd.DataFrame({"id": [1, 2, 3], "vector": list(m)}), key="id")
    store.write("c", pl.DataFrame({"id": [1, 2, 3], "vector": m}), key="id")   # pl.Array(Float32, 8)
    assert pl.DataFrame({"vector": m}).schema["vector"] == pl.Array(pl.Float32, 8)
    for name in "abc":
        np.testing.assert_array_equal(_stored(store, name), m)


# -- out ------------------------------------------------------------------------------
def test_to_pandas_reads_any_version(store: Store) -> None:
    store.write("t", {"id": [1, 2], "vector": np.eye(2, dtype=np.float32), "s": ["x", "y"]}, key="id")
    store.write("t", {"id": [3], "vector": np.ones((1, 2), np.float32), "s": ["z"]}, key="id",
                mode="append")
    t = store.table("t")
    t.tag("first", 1)
    df = t.to_pandas()
    assert isinstance(df, pd.DataFrame) and sorted(df["id"]) == [1, 2, 3]
    old = t.to_pandas("first", columns=["id", "vector"])
    assert list(old.columns) == ["id", "vector"] and sorted(old["id"]) == [1, 2]
    np.testing.assert_array_equal(np.stack(old.sort_values("id")["vector"]), np.eye(2))
    assert list(t.to_pandas(where="id = 3")["s"]) == ["z"]


def test_store_tables_lists_what_the_cli_prints(store: Store) -> None:
    assert store.tables() == []
    store.write("b", {"id": ["x", "y"], "vector": np.ones((2, 3), np.float32)}, key="id",
                model="m1", metric="dot")
    store.write("a", {"id": [1], "vector": np.ones((1, 5), np.float32)}, key="id")
    store.write("a", {"id": [2], "vector": np.ones((1, 5), np.float32)}, key="id", mode="append")
    store.table("a").tag("prod")
    infos = store.tables()
    assert [i.name for i in infos] == store.table_names() == ["a", "b"]
    a, b = infos
    assert isinstance(a, TableInfo)
    assert a.to_dict() == {"name": "a", "version": 2, "rows": 2, "dimension": 5, "model": None,
                           "metric": "cosine", "key": "id", "tags": ["prod"]}
    assert (b.version, b.rows, b.dimension, b.model, b.metric, b.key, b.tags) == \
        (1, 2, 3, "m1", "dot", "id", [])


def test_search_output_types(store: Store) -> None:
    m = np.random.default_rng(1).normal(size=(20, 4)).astype(np.float32)
    store.write("t", {"id": np.arange(20), "vector": m}, key="id")
    t = store.table("t")
    arrow = t.search(m[3], k=5)
    assert isinstance(arrow, pa.Table) and arrow.column("id")[0].as_py() == 3
    assert t.search(m[3], k=5, output="arrow").equals(arrow)
    pol = t.search(m[3], k=5, output="polars")
    assert isinstance(pol, pl.DataFrame) and pol["id"].to_list() == arrow.column("id").to_pylist()
    pdf = t.search(m[3], k=5, output="pandas")
    assert isinstance(pdf, pd.DataFrame) and list(pdf["id"]) == arrow.column("id").to_pylist()
    np.testing.assert_allclose(pdf["distance"], arrow.column("distance").to_numpy())
    with pytest.raises(ValidationError,
                       match=r"output must be one of 'arrow', 'polars', 'pandas', got 'numpy'"):
        t.search(m[3], k=5, output="numpy")


# -- an embedder that lies about its dimension -------------------------------------------
class _Lying:
    """Declares 64 dimensions, returns 32."""

    name = "liar-64"
    revision = "1"
    dimension = 64

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 32), np.float32)


def test_an_embedder_returning_another_dimension_is_refused(store: Store) -> None:
    src = pa.table({"id": [1, 2], "text": ["a b", "c d"]})
    with pytest.raises(ValidationError, match=r"embedder 'liar-64' declares dimension 64 but "
                                              r"returned 32-dimensional vectors"):
        embed_table(store, "t", src, key="id", text="text", embedder=_Lying())
    assert not store.exists("t")
