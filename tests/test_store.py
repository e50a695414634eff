"""The store on real Lance directories: modes, versions, tags, time travel, rollback, retention."""

from __future__ import annotations

import datetime as dt

import lance
import lancedb
import numpy as np
import pyarrow as pa
import pytest

from embed_assets import (
    SchemaMismatchError,
    Store,
    TableNotFoundError,
    ValidationError,
    VersionNotFoundError,
    build_index,
)

from .conftest import vectors_table


def _ids(store: Store, name: str, version=None) -> list:
    return sorted(store.table(name).read(version, columns=["id"]).column("id").to_pylist())


def test_each_write_is_exactly_one_version(store):
    r1 = store.write("t", vectors_table([1, 2, 3]), key="id", mode="overwrite")
    r2 = store.write("t", vectors_table([4]), key="id", mode="append")
    r3 = store.write("t", vectors_table([1, 5], seed=9), key="id", mode="upsert")
    assert (r1.version, r2.version, r3.version) == (1, 2, 3)
    assert (r3.rows_inserted, r3.rows_updated) == (1, 1)
    assert [v.version for v in store.table("t").versions()] == [1, 2, 3]
    assert _ids(store, "t") == [1, 2, 3, 4, 5]
    assert _ids(store, "t", 1) == [1, 2, 3]


def test_upsert_updates_vectors_by_key(store):
    store.write("t", vectors_table([1, 2], seed=1), key="id")
    new = vectors_table([2], seed=2)
    store.write("t", new, key="id", mode="upsert")
    got = store.table("t").get([2]).column("vector").to_pylist()[0]
    assert np.allclose(got, new.column("vector").to_pylist()[0])


def test_overwrite_replaces_everything_and_may_change_dimension(store):
    store.write("t", vectors_table([1, 2], dim=4), key="id")
    r = store.write("t", vectors_table([7], dim=8), key="id", mode="overwrite")
    assert r.rows_deleted == 2
    t = store.table("t")
    assert t.meta.dimension == 8 and _ids(store, "t") == [7]
    assert t.read(1).num_rows == 2  # history is still readable


def test_replace_partition_in_one_commit(store):
    data = vectors_table([1, 2, 3, 4], sec=["a", "a", "b", "b"])
    store.write("t", data, key="id")
    new_a = vectors_table([2, 9], seed=3, sec=["a", "a"])
    r = store.write("t", new_a, key="id", mode="replace_partition", partition=("sec", "a"))
    assert r.version == 2
    assert (r.rows_inserted, r.rows_updated, r.rows_deleted) == (1, 1, 1)
    assert _ids(store, "t") == [2, 3, 4, 9]


def test_replace_partition_refuses_rows_of_other_partitions(store):
    store.write("t", vectors_table([1, 2], sec=["a", "b"]), key="id")
    before = store.table("t").version
    with pytest.raises(ValidationError, match="partition"):
        store.write("t", vectors_table([3], sec=["b"]), key="id", mode="replace_partition",
                    partition=("sec", "a"))
    assert store.table("t").version == before


def test_upsert_with_delete_keys_is_one_commit(store):
    store.write("t", vectors_table([1, 2, 3]), key="id")
    r = store.write("t", vectors_table([4]), key="id", mode="upsert", delete_keys=[1, 2])
    assert r.version == 2 and r.rows_deleted == 2
    assert _ids(store, "t") == [3, 4]


def test_noop_upsert_succeeds_without_a_new_version(store):
    store.write("t", vectors_table([1]), key="id")
    r = store.write("t", vectors_table([]).slice(0, 0), key="id", mode="upsert")
    assert not r.committed and r.version == 1
    assert len(store.table("t").versions()) == 1


def test_provenance_is_recorded_per_version(store):
    store.write("t", vectors_table([1, 2]), key="id", model="m1", model_revision="abc",
                run_id="run-123", properties={"source": "unit"})
    t = store.table("t")
    (v,) = t.versions()
    assert v.properties["run_id"] == "run-123"
    assert v.properties["model"] == "m1" and v.properties["model_revision"] == "abc"
    assert v.properties["source"] == "unit"
    assert v.rows == 2 and v.timestamp.tzinfo is not None
    assert t.meta.model == "m1" and t.meta.dimension == 4 and t.meta.metric == "cosine"


def test_tables_are_lancedb_tables(store):
    store.write("t", vectors_table([1, 2]), key="id")
    db = lancedb.connect(store.uri)
    assert db.open_table("t").count_rows() == 2
    assert store.table_names() == ["t"]


def test_tags_and_time_travel(store):
    store.write("t", vectors_table([1]), key="id")
    store.write("t", vectors_table([2]), key="id", mode="append")
    t = store.table("t")
    assert t.tag("prod", 1) == 1
    assert t.tags() == {"prod": 1}
    assert _ids(store, "t", "prod") == [1]
    assert [v.tags for v in t.versions()] == [["prod"], []]
    with pytest.raises(ValidationError, match="already points at version 1"):
        t.tag("prod", 2)
    assert t.untag("prod") == 1
    assert t.tags() == {}


@pytest.mark.parametrize("bad", ["", "1", "has space", "a/b", "x" * 200])
def test_bad_tag_names(store, bad):
    store.write("t", vectors_table([1]), key="id")
    with pytest.raises(ValidationError):
        store.table("t").tag(bad)


def test_unknown_version_and_tag_list_what_exists(store):
    store.write("t", vectors_table([1]), key="id")
    store.write("t", vectors_table([2]), key="id", mode="append")
    t = store.table("t")
    t.tag("prod", 1)
    with pytest.raises(VersionNotFoundError, match=r"no version 7; versions: 1-2; tags: prod=1"):
        t.read(7)
    with pytest.raises(VersionNotFoundError, match=r"no tag 'nope'; tags: prod"):
        t.read("nope")
    with pytest.raises(VersionNotFoundError, match="no tag 'nope'"):
        t.untag("nope")


def test_unknown_table_lists_tables(store):
    store.write("alpha", vectors_table([1]), key="id")
    with pytest.raises(TableNotFoundError, match="tables: alpha"):
        store.table("beta")


def test_rollback_creates_new_version_equal_to_old(store):
    store.write("t", vectors_table([1, 2], seed=1), key="id")
    store.write("t", vectors_table([2, 3], seed=2), key="id")
    t = store.table("t")
    t.tag("good", 1)
    new = t.rollback("good", run_id="rb-1")
    assert new == 3
    assert t.read(3).sort_by("id").equals(t.read(1).sort_by("id"))
    assert t.read(2).num_rows == 3  # history still readable
    last = t.versions()[-1]
    assert last.properties["mode"] == "rollback" and last.properties["rollback_to"] == "1"
    assert last.properties["run_id"] == "rb-1"


def test_rollback_to_before_an_index_keeps_an_index(store):
    rng = np.random.default_rng(0)
    mat = rng.normal(size=(600, 16)).astype(np.float32)
    data = pa.table({"id": np.arange(600),
                     "vector": pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), 16)})
    store.write("t", data.slice(0, 300), key="id")
    store.write("t", data.slice(300), key="id", mode="append")
    t = store.table("t")
    build_index(t, force_ann=True)
    assert t.dataset().describe_indices()
    t.rollback(1)
    ds = t.dataset()
    assert ds.count_rows() == 300
    vec_idx = [i for i in ds.describe_indices() if i.field_names == ["vector"]]
    assert vec_idx and vec_idx[0].index_type.startswith("IVF")
    assert [i for i in ds.describe_indices() if i.field_names == ["id"]]  # key index too
    hits = t.search(mat[5], k=1, use_index=True)
    assert hits.column("id").to_pylist() == [5]


def test_cleanup_keeps_tagged_and_latest(store):
    for i in range(5):
        store.write("t", vectors_table([i], seed=i), key="id", mode="upsert")
    t = store.table("t")
    t.tag("prod", 2)
    rep = t.cleanup(keep_last=1, grace=dt.timedelta(0))
    assert rep.removed_versions == [1, 3, 4]
    assert rep.kept_versions == [2, 5]
    assert rep.bytes_freed > 0 and rep.files_removed > 0
    assert _ids(store, "t", "prod") == [0, 1]
    assert _ids(store, "t") == [0, 1, 2, 3, 4]


def test_cleanup_older_than_spares_recent_versions(store):
    for i in range(3):
        store.write("t", vectors_table([i]), key="id", mode="upsert")
    rep = store.table("t").cleanup(older_than=dt.timedelta(hours=1))
    assert rep.removed_versions == [] and rep.kept_versions == [1, 2, 3]


def test_cleanup_needs_a_rule(store):
    store.write("t", vectors_table([1]), key="id")
    with pytest.raises(ValidationError):
        store.table("t").cleanup()
    with pytest.raises(ValidationError):
        store.table("t").cleanup(keep_last=0)


def test_search_exact_by_vector_with_filter_and_version(store):
    data = vectors_table(list(range(50)), dim=8, sec=["a" if i % 2 else "b" for i in range(50)])
    store.write("t", data, key="id")
    store.write("t", vectors_table([100], dim=8, seed=5, sec=["a"]), key="id", mode="append")
    t = store.table("t")
    mat = np.stack(data.column("vector").to_pylist())
    q = mat[7]
    res = t.search(q, k=3, where="sec = 'a'", version=1)
    sims = (mat @ q) / (np.linalg.norm(mat, axis=1) * np.linalg.norm(q))
    odd = [i for i in range(50) if i % 2]
    expect = sorted(odd, key=lambda i: -sims[i])[:3]
    assert res.column("id").to_pylist() == expect
    assert res.column("rank").to_pylist() == [1, 2, 3]
    assert np.allclose(res.column("distance").to_numpy(), 1 - sims[expect], atol=1e-5)


def test_search_rejects_wrong_dimension_and_nan(store):
    store.write("t", vectors_table([1, 2], dim=4), key="id")
    t = store.table("t")
    with pytest.raises(ValidationError, match="dimension 3"):
        t.search([0.1, 0.2, 0.3])
    with pytest.raises(ValidationError, match="NaN"):
        t.search([np.nan, 0, 0, 0])
    with pytest.raises(ValidationError, match="k must be"):
        t.search([1, 0, 0, 0], k=0)


def test_store_accepts_polars_and_pandas(store):
    import pandas as pd
    import polars as pl

    store.write("p", pl.DataFrame({"id": [1], "vector": [[1.0, 2.0]]}), key="id")
    store.write("p", pd.DataFrame({"id": [2], "vector": [[3.0, 4.0]]}), key="id", mode="append")
    assert _ids(store, "p") == [1, 2]
    assert store.table("p").to_polars().height == 2


def test_lance_tables_written_elsewhere_are_readable(store, tmp_path):
    lance.write_dataset(vectors_table([1, 2]), f"{store.uri}/raw.lance")
    t = store.table("raw")
    assert t.meta.dimension == 4 and t.count_rows() == 2


def test_model_mismatch_is_refused_unless_overwrite(store):
    store.write("t", vectors_table([1]), key="id", model="m1")
    with pytest.raises(SchemaMismatchError, match="model 'm1'"):
        store.write("t", vectors_table([2]), key="id", model="m2")
    assert store.write("t", vectors_table([2]), key="id", model="m2", mode="overwrite").committed
    assert store.table("t").meta.model == "m2"
