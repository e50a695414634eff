"""Images as store citizens: where they come from, how they are kept, searching by one.

Sources (:func:`image_source`)
------------------------------
A folder (every image file below it, keyed by its path relative to the folder), a glob
(``'photos/**/*.jpg'``, keyed by the matched path), or a Parquet / Arrow IPC file with a
column of paths or encoded bytes (keyed by ``key``).

How the pictures are kept (docs/images.md has the measurements)
---------------------------------------------------------------
- **references** (default for files): the table keeps the path; the bytes stay where
  they are. The row's content hash is of the file's bytes, so an edited file is
  re-embedded and a renamed one is not.
- **Lance blobs** (``store_bytes=True``, and always for a source of bytes): the bytes go
  into a ``large_binary`` column with Lance's blob encoding, stored out of line. A scan
  of the key and vector, every DuckDB view and ``knn`` do not read them; a version
  keeps the pictures as they were; :func:`stored_image` reads one back.

Search by image (:func:`search_by_image`)
-----------------------------------------
The query is encoded bytes, a path to an image file, or the key of a stored row (its
stored vector, no model run); a picture of the query and its neighbours comes from
:func:`neighbours_png`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ValidationError
from ..store import VECTOR_COLUMN

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".svg")
BLOB_META = {b"lance-encoding:blob": b"true"}


def blob_field(name: str) -> pa.Field:
    """A ``large_binary`` field Lance stores with its blob encoding (out of line)."""
    return pa.field(name, pa.large_binary(), metadata=BLOB_META)


def as_blob_column(table: pa.Table, column: str) -> pa.Table:
    """``table`` with ``column`` (binary) marked for Lance's blob encoding."""
    i = table.schema.get_field_index(column)
    return table.set_column(i, blob_field(column), table.column(column).cast(pa.large_binary()))


def _is_blob(field: pa.Field) -> bool:
    """A blob column as the dataset's schema shows it: Lance's ``lance.blob`` extension
    type (the write-side field metadata is not kept in the schema it reports)."""
    return (field.metadata or {}).get(b"lance-encoding:blob") == b"true" or \
        "blob" in str(getattr(field.type, "extension_name", ""))


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def image_source(source: str, *, column: str | None = None, key: str | None = None,
                 store_bytes: bool = False) -> tuple[pa.Table, str, str]:
    """A source of images as ``(table, key column, image column)``.

    ``source`` is a folder, a glob pattern, or a ``.parquet`` / ``.arrow`` / ``.feather``
    file (then ``column`` names its paths or bytes and ``key`` its key). For files,
    ``store_bytes`` reads the bytes into a blob column ``image`` instead of keeping the
    ``path``.
    """
    source = os.fspath(source)
    if source.endswith((".parquet", ".arrow", ".feather", ".ipc")) and os.path.isfile(source):
        if not column or not key:
            raise ValidationError(f"{source!r} is a table: name its image column (--column, "
                                  "paths or bytes) and its key column (--key)")
        tbl = _read_table(source)
        for c in (column, key):
            if c not in tbl.column_names:
                raise ValidationError(f"column {c!r} not in {source!r}; it has {', '.join(tbl.column_names)}")
        typ = tbl.schema.field(column).type
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
            return as_blob_column(tbl, column), key, column
        if store_bytes and (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            paths = tbl.column(column).to_pylist()
            data = [None if p is None or not os.path.isfile(p) else _read(p) for p in paths]
            tbl = tbl.append_column(blob_field("image"), pa.array(data, pa.large_binary()))
            return tbl, key, "image"
        return tbl, key, column
    if os.path.isdir(source):
        root = source
        files = sorted(p for p in glob.glob(os.path.join(root, "**", "*"), recursive=True)
                       if p.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(p))
        keys = [os.path.relpath(p, root) for p in files]
    else:
        files = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        keys = list(files)
        if not files and not glob.has_magic(source):
            raise ValidationError(f"{source!r} is neither a folder, a glob, nor a Parquet/Arrow file")
    if not files:
        raise ValidationError(f"no image files in {source!r} (looked for {', '.join(IMAGE_SUFFIXES)})")
    kcol = key or "key"
    if store_bytes:
        tbl = pa.table([pa.array(keys), pa.array([_read(p) for p in files], pa.large_binary())],
                       schema=pa.schema([pa.field(kcol, pa.string()), blob_field("image")]))
        if os.path.isdir(source):
            tbl = tbl.append_column("folder", pa.array([os.path.dirname(k) for k in keys]))
        return tbl, kcol, "image"
    # a folder's pictures carry their subfolder: the filing many collections label by
    folders = [os.path.dirname(k) for k in keys] if os.path.isdir(source) else None
    cols = {kcol: keys, "path": [os.path.abspath(p) for p in files],
            **({"folder": folders} if folders is not None else {})}
    return pa.table(cols), kcol, "path"


def _read_table(path: str) -> pa.Table:
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.feather as feather

        return feather.read_table(path)
    except Exception as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}") from None


def _image_column(table: Any, version: int) -> str | None:
    """The column embed_images recorded, else the newest version that recorded one (an
    unchanged upsert or a rollback writes its own properties), else a blob column."""
    for v in sorted((x for x in _versions(table) if x <= version), reverse=True):
        col = table.properties(v).get("image_column")
        if col:
            return col
    schema = table.dataset(version).schema
    return next((f.name for f in schema if _is_blob(f)), None)


def _versions(table: Any) -> list[int]:
    return [int(r["version"]) if isinstance(r, dict) else int(getattr(r, "version", r))
            for r in table.versions(with_properties=False)]


def stored_images(table: Any, keys: Sequence[Any], version: Any = None) -> dict[Any, bytes | None]:
    """The pictures of stored rows, by key: blob or inline bytes read back, a path's file
    read (``None`` where the row keeps no picture or its file is gone)."""
    import pyarrow.compute as pc

    v = table.resolve(version)
    meta = table.meta_at(v)
    col = _image_column(table, v)
    ds = table.dataset(v)
    if col is None or col not in ds.schema.names:
        return dict.fromkeys(keys)
    field = ds.schema.field(col)
    mask = pc.is_in(pc.field(meta.key), pa.array(list(keys))) if keys else None
    is_blob = _is_blob(field)
    out: dict[Any, bytes | None] = dict.fromkeys(keys)
    if is_blob:
        rows = ds.to_table(columns=[meta.key], filter=mask, with_row_id=True)
        ids = rows.column("_rowid").to_pylist()
        blobs = ds.take_blobs(col, ids=ids)
        for k, b in zip(rows.column(meta.key).to_pylist(), blobs, strict=True):
            out[k] = None if b is None else b.readall()
        return out
    rows = ds.to_table(columns=[meta.key, col], filter=mask)
    for k, v in zip(rows.column(meta.key).to_pylist(), rows.column(col).to_pylist(), strict=True):
        if isinstance(v, str):
            v = _read(v) if os.path.isfile(v) else None
        out[k] = v
    return out


def query_vector(table: Any, query: Any, *, embedder: Any = None, version: Any = None,
                 by_key: bool | None = None) -> tuple[np.ndarray, bytes | None]:
    """The vector to search with, and the query picture's bytes (for the picture).

    ``query``: bytes (an encoded image), a path to an image file, or a stored key. A
    string that is not an existing file is taken as a key; ``by_key=True`` forces that.
    A key's stored vector is used as it is; bytes and files are embedded with
    ``embedder`` (default: the table's model when it is the default image model).
    """
    from ._decode import decode_image

    v = table.resolve(version)
    meta = table.meta_at(v)
    is_file = isinstance(query, str | os.PathLike) and os.path.isfile(query) and by_key is not True
    if isinstance(query, bytes | bytearray | memoryview) or is_file:
        raw = bytes(query) if not is_file else _read(os.fspath(query))
        if embedder is None:
            from ._efficientnet import MODEL_NAME, default_image_embedder

            if meta.model != MODEL_NAME:
                raise ValidationError(
                    f"table {table.name!r} was embedded with {meta.model!r}; pass that model as "
                    "embedder= (or search by a stored key)")
            embedder = default_image_embedder()
        if embedder.name != meta.model or (meta.model_revision and embedder.revision != meta.model_revision):
            raise ValidationError(f"the query embedder {embedder.name!r} ({embedder.revision}) is not "
                                  f"the model of {table.name!r} v{v}: {meta.model!r} ({meta.model_revision})")
        from ._image_guard import BadImage

        try:
            im = decode_image(raw, getattr(embedder, "image_mode", "RGB"))
        except BadImage as exc:
            raise ValidationError(f"the query image cannot be used: {exc}") from None
        return np.asarray(embedder.embed_images([im])[0], np.float32), raw
    key_type = table.dataset(v).schema.field(meta.key).type
    try:
        kv = pa.scalar(os.fspath(query) if isinstance(query, os.PathLike) else query).cast(key_type).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        raise ValidationError(f"{query!r} is not an image file nor a key of {table.name!r}") from None
    rows = _row(table, v, meta.key, kv)
    if rows.num_rows == 0:
        raise ValidationError(f"{query!r} is not an image file nor a key of {table.name!r} v{v}")
    vec = np.asarray(rows.column(VECTOR_COLUMN)[0].as_py(), np.float32)
    return vec, stored_images(table, [kv], v).get(kv)


def _row(table: Any, version: int, key: str, value: Any) -> pa.Table:
    import pyarrow.compute as pc

    t = table.read(version, columns=[key, VECTOR_COLUMN])
    return t.filter(pc.equal(t.column(key), pa.scalar(value, t.schema.field(key).type)))


def search_by_image(table: Any, query: Any, k: int = 10, *, embedder: Any = None,
                    version: Any = None, where: str | None = None, by_key: bool | None = None,
                    columns: Sequence[str] | None = None) -> tuple[pa.Table, bytes | None]:
    """The ``k`` nearest stored images to ``query`` (bytes, a path, or a stored key), and
    the query picture's bytes. A stored key's own row is left out of its hits."""
    vec, raw = query_vector(table, query, embedder=embedder, version=version, by_key=by_key)
    v = table.resolve(version)
    meta = table.meta_at(v)
    self_hit = not isinstance(query, bytes | bytearray | memoryview) and not (
        isinstance(query, str | os.PathLike) and os.path.isfile(query) and by_key is not True)
    hits = table.search(vec, k=k + 1 if self_hit else k, version=v, where=where, columns=columns)
    if self_hit:
        keys = hits.column(meta.key).to_pylist()
        keep = [i for i, kk in enumerate(keys) if str(kk) != str(query)][:k]
        hits = hits.take(pa.array(keep, pa.int64()))
        hits = hits.set_column(hits.schema.get_field_index("rank"), "rank",
                               pa.array(range(1, hits.num_rows + 1), hits.schema.field("rank").type))
    return hits, raw


def neighbours_png(table: Any, hits: pa.Table, query: bytes | None, *, version: Any = None,
                   label: str | None = None, query_label: Any = None, cell: int = 128) -> bytes:
    """A PNG: the query picture, then its neighbours in rank order. With ``label`` (a
    column of ``hits``) and ``query_label``, a neighbour with the query's label is framed
    green, another red."""
    from PIL import Image

    from ._decode import decode_image
    from ._images import image_grid_png

    v = table.resolve(version)
    meta = table.meta_at(v)
    keys = hits.column(meta.key).to_pylist()
    pics = stored_images(table, keys, v)
    blank = Image.new("RGB", (cell, cell), (235, 235, 235))

    def show(raw: bytes | None) -> Any:
        try:
            return decode_image(raw) if raw else blank
        except Exception:
            return blank

    row = [show(query), *(show(pics.get(kk)) for kk in keys)]
    marks = None
    if label and label in hits.column_names and query_label is not None:
        marks = [[None, *(lab == query_label for lab in hits.column(label).to_pylist())]]
    return image_grid_png([row], cell=cell, marks=marks)


def stored_value(table: Any, key: Any, column: str, version: Any = None) -> Any:
    """One stored row's ``column`` value (``None`` if the key or the column is absent)."""
    v = table.resolve(version)
    meta = table.meta_at(v)
    ds = table.dataset(v)
    if column not in ds.schema.names:
        return None
    t = table.read(v, columns=[meta.key, column])
    try:
        kv = pa.scalar(key).cast(t.schema.field(meta.key).type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
        return None
    import pyarrow.compute as pc

    hit = t.filter(pc.equal(t.column(meta.key), kv))
    return hit.column(column)[0].as_py() if hit.num_rows else None
