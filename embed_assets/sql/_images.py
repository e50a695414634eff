"""SQL functions that turn a picture into the default image model's vector, so a search by
image is one query: ``knn('pics', image_vector('/photos/cat.jpg'), 5)`` (a file path) or
``knn('pics', image_vector_blob(some_blob_column), 5)`` (encoded bytes). A stored row's
picture needs neither: ``knn('pics', (SELECT vector FROM pics WHERE key = 'x'), 5)``.

The model loads on first call, not at connect(). Its vectors only compare with a table
embedded by the same model (EfficientNet-Lite0, 1,280-d): knn refuses another dimension.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.func import ARROW, SPECIAL

_VEC = "FLOAT[]"


def _embed(values: list[Any]) -> pa.Array:
    from ..embed import decode_image, default_image_embedder
    from ..embed._image_guard import BadImage

    out: list[Any] = [None] * len(values)
    idx, ims = [], []
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            ims.append(decode_image(v))
        except BadImage as exc:
            # DuckDB shows the message; the value names which picture
            shown = v if isinstance(v, str) else f"{len(v)} bytes"
            raise ValueError(f"image_vector: {shown!r} cannot be used: {exc}") from None
        idx.append(i)
    if ims:
        vecs = np.asarray(default_image_embedder().embed_images(ims), np.float32)
        for j, i in enumerate(idx):
            out[i] = vecs[j].tolist()
    return pa.array(out, pa.list_(pa.float32()))


def _from_paths(paths: pa.Array) -> pa.Array:
    return _embed(paths.to_pylist())


def _from_bytes(blobs: pa.Array) -> pa.Array:
    return _embed(blobs.to_pylist())


def register_image_functions(con: duckdb.DuckDBPyConnection) -> None:
    """``image_vector(path VARCHAR)`` and ``image_vector_blob(data BLOB)`` on ``con``."""
    con.create_function("image_vector", _from_paths, ["VARCHAR"], _VEC, type=ARROW,
                        null_handling=SPECIAL, side_effects=False)
    con.create_function("image_vector_blob", _from_bytes, ["BLOB"], _VEC, type=ARROW,
                        null_handling=SPECIAL, side_effects=False)
