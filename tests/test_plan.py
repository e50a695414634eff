"""One embedding plan, several executors (issue 22, deliverable 1).

``embed_table(..., executor=...)`` is the one entry point: the in-process, streamed and
Ray executors run one plan (source checks, content hashes, the diff, the model-change
refusal, the write request), so they refuse the same things the same way and write the
same table; images go through the same plan. Real Lance stores throughout.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from embed_assets import HashEmbedder, SchemaMismatchError, Store, ValidationError, embed_table
from embed_assets.embed import InProcess, OnRay, PixelEmbedder, Streamed, decode_image, embed_images

VOLATILE = ["_embedded_at", "_run_id"]
EMBED = Path(__file__).resolve().parents[1] / "embed_assets" / "embed"


def _source(n: int = 23) -> pa.Table:
    return pa.table({"id": list(range(n)), "text": [f"package number {i} does {i % 4}" for i in range(n)],
                     "section": [f"s{i % 3}" for i in range(n)]})


def _content(store: Store, name: str = "t") -> pa.Table:
    return store.table(name).read().sort_by("id").drop_columns(VOLATILE)


def test_in_process_and_streamed_runs_of_one_plan_write_the_same_table(tmp_path: Path) -> None:
    src = _source()
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    ra = embed_table(a, "t", src, key="id", text="text", embedder=HashEmbedder(16),
                     executor=InProcess())
    rb = embed_table(b, "t", src, key="id", text="text", embedder=HashEmbedder(16),
                     executor=Streamed(commit_every=7, progress=False))
    assert ra.rows_embedded == rb.rows_embedded == 23
    assert len(a.table("t").versions()) == 1 and len(b.table("t").versions()) == 4
    assert _content(a).equals(_content(b))
    # the same edit through either executor: one re-embedded text, one reused vector,
    # one deleted key (sync)
    edit = src.to_pydict()
    edit["text"][3] += " (revised)"
    edit["section"][5] = "moved"
    changed = pa.table(edit).slice(0, 22)
    for store, ex in ((a, InProcess()), (b, Streamed(commit_every=7, progress=False))):
        r = embed_table(store, "t", changed, key="id", text="text", embedder=HashEmbedder(16),
                        mode="sync", executor=ex)
        assert (r.rows_embedded, r.rows_reused, r.write.rows_deleted) == (1, 1, 1)
    assert _content(a).equals(_content(b))


@pytest.mark.parametrize("executor", [InProcess(), Streamed(commit_every=5), OnRay("local:1")],
                         ids=["in-process", "streamed", "ray"])
def test_every_executor_refuses_a_model_change_before_the_model_runs(tmp_path: Path,
                                                                     executor: object) -> None:
    store = Store(tmp_path / "s")
    embed_table(store, "t", _source(), key="id", text="text", embedder=HashEmbedder(16))

    class Loud(HashEmbedder):
        def embed(self, texts):  # type: ignore[no-untyped-def]
            raise AssertionError("the model ran")

    other = Loud(16, name="hash-bow:16#other")
    with pytest.raises(SchemaMismatchError, match="holds vectors from model 'hash-bow:16'"):
        embed_table(store, "t", _source(), key="id", text="text", embedder=other,
                    executor=executor)  # type: ignore[arg-type]
    assert len(store.table("t").versions()) == 1


def test_every_executor_refuses_blank_texts_the_same_way(tmp_path: Path) -> None:
    src = _source().to_pydict()
    src["text"][11] = "  "
    bad = pa.table(src)
    for ex in (InProcess(), Streamed(commit_every=4), OnRay("local:1")):
        with pytest.raises(ValidationError, match=r"1 row\(s\) have null or empty text \(keys 11\)"):
            embed_table(Store(tmp_path / "s"), "t", bad, key="id", text="text",
                        embedder=HashEmbedder(16), executor=ex)  # type: ignore[arg-type]
    assert not Store(tmp_path / "s").exists("t")


def test_executor_settings_are_checked_before_the_source_is_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    missing = str(tmp_path / "nope.parquet")
    kw = dict(key="id", text="text", embedder=HashEmbedder(16))
    with pytest.raises(ValidationError, match="Ray address 'nowhere'"):
        embed_table(store, "t", missing, executor=OnRay("nowhere"), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cpus_per_task"):
        embed_table(store, "t", missing, executor=OnRay("local:1", cpus_per_task=0), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="commit_every must be >= 1"):
        embed_table(store, "t", missing, executor=Streamed(commit_every=0), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="does not stream"):
        embed_table(store, "t", _source(), mode="replace_partition", partition=("section", "s1"),
                    executor=Streamed(), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="commit_every and progress"):
        embed_table(store, "t", _source(), executor=InProcess(), commit_every=5, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="text=COLUMN or image=COLUMN"):
        embed_table(store, "t", _source(), key="id", embedder=HashEmbedder(16))
    assert not store.exists("t")


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4, 4), value).save(buf, "PNG")
    return buf.getvalue()


def test_images_go_through_the_same_plan_and_any_executor(tmp_path: Path) -> None:
    src = pa.table({"id": list(range(9)), "png": [_png(20 * i) for i in range(9)]})
    emb = PixelEmbedder(size=(4, 4))
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    ra = embed_images(a, "pics", src, key="id", image="png", embedder=emb)
    rb = embed_table(b, "pics", src, key="id", image="png", embedder=emb,
                     executor=Streamed(commit_every=4, progress=False))
    assert ra.rows_embedded == rb.rows_embedded == 9 and len(b.table("pics").versions()) == 3
    ta = a.table("pics").read().sort_by("id").drop_columns(VOLATILE)
    tb = b.table("pics").read().sort_by("id").drop_columns(VOLATILE)
    assert ta.equals(tb)
    assert a.table("pics").properties()["input_kind"] == "image"
    # the content hash is the image's: one changed image re-embeds one row; a broken one
    # is left out and reported
    rows = src.to_pydict()
    rows["png"][2] = _png(255)
    rows["png"][7] = b"not a png"
    r = embed_table(b, "pics", pa.table(rows), key="id", image="png", embedder=emb,
                    on_empty="skip")
    assert (r.rows_embedded, r.rows_unchanged, r.rows_skipped_empty) == (1, 7, 1)
    assert [k for k, _why in r.bad_images] == [7]
    stored = b.table("pics").read(where="id = 2")
    want = emb.embed_images([decode_image(_png(255), "L")])[0]
    assert np.allclose(stored.column("vector")[0].as_py(), want)


def test_no_function_in_embed_is_over_80_lines() -> None:
    # Issue 22: embed_table_ray was 201 lines; a function a reader can hold is shorter.
    long = []
    for path in sorted(EMBED.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long
