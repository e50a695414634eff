"""A Dagster job for tests/test_stream.py: a Parquet source embedded in groups of 100 rows
by an embedder that fails once it has embedded ``$STREAM_TEST_FAIL_AFTER`` texts (0: never).

Re-execution needs a reconstructable job, so it lives in a module of its own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import Definitions, asset, define_asset_job, in_process_executor, reconstructable

from embed_assets import HashEmbedder
from embed_assets.dagster import (
    EmbedderResource,
    EmbedStoreResource,
    LanceDBIOManager,
    build_embedding_asset,
)


class FailingHash(HashEmbedder):
    """The hashing embedder, raising once it has embedded ``fail_after`` texts."""

    def __init__(self, fail_after: int) -> None:
        super().__init__(dimension=32)
        self.fail_after, self.done = fail_after, 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.fail_after and self.done + len(texts) > self.fail_after:
            raise RuntimeError("the model crashed halfway (planted)")
        self.done += len(texts)
        return super().embed(texts)


class FailingEmbedderResource(EmbedderResource):
    def get_embedder(self) -> HashEmbedder:
        return FailingHash(int(os.environ.get("STREAM_TEST_FAIL_AFTER", "0")))


@asset(key="src")
def src() -> pa.Table:
    return pq.read_table(os.environ["STREAM_TEST_SOURCE"])


t = build_embedding_asset("t", source="src", key_column="id", text_column="text")


def defs() -> Definitions:
    store = EmbedStoreResource(uri=os.environ["STREAM_TEST_STORE"])
    return Definitions(
        assets=[src, t], executor=in_process_executor,
        jobs=[define_asset_job("embed_job", selection=["src", "t"],
                               config={"ops": {"t": {"config": {"commit_every": 100}}}})],
        resources={"embed_store": store, "embedder": FailingEmbedderResource(backend="hash"),
                   "lance_io_manager": LanceDBIOManager(store=store)})


def embed_job() -> Any:
    """What reconstructable() rebuilds in the run's process."""
    return defs().resolve_job_def("embed_job")


def reconstructable_job() -> Any:
    return reconstructable(embed_job)
