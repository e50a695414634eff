"""Bad images (issue 27, deliverable 4): each kind named by its key, refused by default or
skipped with on_bad="skip", and nothing stored changed by a refused write.

Real encoded files made with Pillow here: truncated, zero bytes, 1 x 1, a 20,000 x 20,000
decompression bomb (a 60 KB PNG), CMYK, 16-bit, animated, SVG.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from embed_assets import Store, ValidationError
from embed_assets.embed import (
    BadImage,
    ImageLimits,
    PixelEmbedder,
    decode_image,
    embed_images,
)


def _encode(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _bomb_png(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels, all zero: ~60 KB that decode to 400M pixels
    (written by hand: Pillow would have to hold the pixels to save it)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


GOOD = _encode(Image.new("RGB", (16, 16), (200, 30, 30)))
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<rect width="10" height="10" fill="red"/></svg>')
BAD = {
    "truncated": GOOD[: len(GOOD) // 2],
    "zero_bytes": b"",
    "one_pixel": _encode(Image.new("RGB", (1, 1), "white")),
    "bomb": _bomb_png(),
    "svg": SVG,
}
REASONS = {
    "truncated": "unreadable image",
    "zero_bytes": "empty (0 bytes)",
    "one_pixel": "1x1 is smaller than 4 pixels a side",
    "bomb": "decompression bomb",
    "svg": "SVG is a vector drawing",
}


def test_each_bad_image_is_named_by_key_and_nothing_stored_changes(store: Store) -> None:
    assert len(BAD["bomb"]) < 100_000  # small on disk, 400M pixels decoded
    emb = PixelEmbedder(size=(4, 4))
    embed_images(store, "pics", {"id": ["ok"], "img": [GOOD]}, key="id", image="img", embedder=emb)
    table = store.table("pics")
    before_version, before = table.version, table.read()
    src = {"id": ["ok", "new_ok", *BAD], "img": [GOOD, GOOD, *BAD.values()]}
    with pytest.raises(ValidationError) as exc:
        embed_images(store, "pics", src, key="id", image="img", embedder=emb)
    msg = str(exc.value)
    assert msg.startswith(f"{len(BAD)} image(s) cannot be used")
    for key, why in REASONS.items():
        assert f"{key!r}: " in msg and why in msg, (key, msg)
    assert store.table("pics").version == before_version  # refused: no version, no row
    assert store.table("pics").read().equals(before)
    res = embed_images(store, "pics", src, key="id", image="img", embedder=emb, on_bad="skip")
    assert sorted(k for k, _ in res.bad_images) == sorted(BAD)
    assert res.rows_embedded == 1 and res.rows_skipped_empty == len(BAD)
    assert sorted(store.table("pics").read(columns=["id"]).column("id").to_pylist()) == ["new_ok", "ok"]


def test_the_bomb_is_refused_from_its_header_before_decoding() -> None:
    import time

    t0 = time.perf_counter()
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(BAD["bomb"])
    # decoding 400M pixels would take seconds and 400 MB; the header check takes none of it
    assert time.perf_counter() - t0 < 30  # a bound against a hang, not a timing claim
    # between Pillow's warning (89M pixels) and its own refusal (179M) the old code decoded
    # the whole picture; the header check refuses it first
    with pytest.raises(BadImage, match="10000x10000 = 100,000,000 pixels exceeds the limit"):
        decode_image(_bomb_png(10_000))
    # a limit raised on purpose admits a big image that the default refuses
    big = _encode(Image.new("L", (3000, 3000), 7))
    with pytest.raises(BadImage, match="9,000,000 pixels exceeds the limit of 1,000,000"):
        decode_image(big, limits=ImageLimits(max_pixels=1_000_000))
    assert decode_image(big, limits=ImageLimits(max_pixels=10_000_000)).size == (3000, 3000)


def test_cmyk_is_converted_to_the_colours_it_prints() -> None:
    cmyk = _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    r, g, b = decode_image(cmyk).getpixel((8, 8))
    assert r > 200 and g < 50 and b < 50  # cyan 0, magenta and yellow full: red


def test_sixteen_bit_greyscale_keeps_its_tones() -> None:
    # Pillow's own convert("RGB") clips I;16 at 255: a 46% grey would come out white
    arr = np.full((16, 16), 30000, np.uint16)
    arr[:8] = 65535
    png = _encode(Image.fromarray(arr))
    assert Image.open(io.BytesIO(png)).mode.startswith("I;16")
    assert Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 12)) == (255, 255, 255)
    rgb = decode_image(png)
    assert rgb.getpixel((0, 12)) == (117, 117, 117)  # 30000 / 257
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert decode_image(png, "L").getpixel((0, 12)) == 117


def test_animations_embed_their_first_frame_or_are_refused(store: Store) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    apng = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    for data in (gif, apng):
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
        r, g, b = decode_image(data).getpixel((4, 4))
        assert r > 200 and g < 50 and b < 50
        with pytest.raises(BadImage, match=r"animated image \(3 frames\) refused"):
            decode_image(data, limits=ImageLimits(animated="refuse"))
    src = {"id": ["gif", "apng", "still"], "img": [gif, apng, _encode(frames[0])]}
    emb = PixelEmbedder(size=(4, 4), image_mode="RGB")
    with pytest.raises(ValidationError, match=r"2 image\(s\) cannot be used \('gif': animated"):
        embed_images(store, "anim", src, key="id", image="img", embedder=emb,
                     limits=ImageLimits(animated="refuse"))
    assert not store.exists("anim")
    res = embed_images(store, "anim", src, key="id", image="img", embedder=emb)
    assert res.rows_embedded == 3
    vec = {r["id"]: np.asarray(r["vector"]) for r in store.table("anim").read().to_pylist()}
    np.testing.assert_allclose(vec["gif"], vec["still"], atol=0.02)  # the red first frame
    np.testing.assert_allclose(vec["apng"], vec["still"], atol=0.02)


def test_svg_and_tiny_images_are_refused_with_what_to_do(store: Store) -> None:
    with pytest.raises(BadImage, match="rasterise it first"):
        decode_image(SVG)
    with pytest.raises(BadImage, match="rasterise it first"):
        decode_image(b"  <svg xmlns='http://www.w3.org/2000/svg'/>")
    with pytest.raises(BadImage, match="1x1 is smaller than 4 pixels"):
        decode_image(np.zeros((1, 1, 3), np.uint8))
    assert decode_image(BAD["one_pixel"], limits=ImageLimits(min_side=1)).size == (1, 1)
    with pytest.raises(ValidationError, match="max_pixels and min_side must be >= 1"):
        ImageLimits(min_side=0)
