"""Image inputs: decoding with Pillow, hashing their content, refusing bad ones.

Inputs
------
A source column of images may hold, per row:

- ``bytes``: an encoded image (PNG, JPEG, anything Pillow reads);
- ``str``: a path to such a file (read when the write runs);
- a nested list / array of numbers, ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1, 3, 4
  (a Polars ``Array`` or Arrow list column): integers are 0-255, floats 0-1;
- (in a dict of columns only) a Pillow image or a numpy array.

Bad images
----------
Unreadable bytes, missing files, zero-size images, arrays of the wrong shape or range,
and what :mod:`._image_guard` refuses (decompression bombs, placeholders, SVG) are found
before the model runs. Like blank texts, they are refused by default with an
error naming their keys and the reason (``on_bad="error"``), or left out and reported
(``on_bad="skip"``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import ValidationError
from ._image_guard import DEFAULT_LIMITS, BadImage, ImageLimits, check_header, open_checked, to_8bit

if TYPE_CHECKING:  # Pillow is imported when images are decoded, not with the package
    from PIL.Image import Image

BadImagePolicy = Literal["error", "skip"]
IMAGE_MODES = ("RGB", "L")


def pil() -> Any:
    try:
        from PIL import Image as PILImage
    except ImportError as exc:  # pragma: no cover - Pillow is a dependency
        raise ValidationError("image embeddings need Pillow (pip install pillow)") from exc
    return PILImage


def _read_path(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise BadImage(f"cannot read file {path!r}: {exc.strerror or exc}") from None


def _as_array(value: Any) -> np.ndarray:
    """A nested list or array as a uint8 image array, refusing shapes and ranges that are
    not an image (a guess would silently embed garbage)."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        raise BadImage("ragged nested list: not an image array") from None
    if arr.dtype.kind not in "uif":
        raise BadImage(f"array of dtype {arr.dtype}: not an image (need integers 0-255 or floats 0-1)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise BadImage(f"array of shape {arr.shape}: an image is (H, W) or (H, W, C) with C in 1, 3, 4")
    if arr.size == 0:
        raise BadImage(f"zero-size image (shape {arr.shape})")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise BadImage("float array outside [0, 1] (or not finite); floats are read as 0-1")
        arr = np.rint(arr * 255)
    elif arr.min() < 0 or arr.max() > 255:
        raise BadImage("integer array outside 0-255")
    return arr.astype(np.uint8)


def image_hash(value: Any) -> str:
    """A stable hash of an image input's content: what incremental re-embedding keys on.

    Bytes hash as themselves, a path as its file's bytes (so renaming a file changes
    nothing, editing it does), an array as its dtype, shape and data, a Pillow image as
    its mode, size and pixels.

    Examples
    --------
    >>> image_hash(b"abc") == image_hash(b"abc"), len(image_hash(b"abc"))
    (True, 32)
    """
    h = hashlib.blake2b(digest_size=16)
    if isinstance(value, bytes | bytearray | memoryview):
        h.update(b"bytes:")
        h.update(bytes(value))
    elif isinstance(value, str | os.PathLike):
        h.update(b"bytes:")  # a file hashes like its bytes: the same image either way
        h.update(_read_path(os.fspath(value)))
    elif hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):
        h.update(f"pil:{value.mode}:{value.size}:".encode())
        h.update(value.tobytes())
    else:
        arr = _as_array(value)
        h.update(f"array:{arr.dtype.str}:{arr.shape}:".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def decode_image(value: Any, mode: str = "RGB", limits: ImageLimits = DEFAULT_LIMITS) -> Image:
    """One image input (bytes, path, array or Pillow image) as a Pillow image in ``mode``.

    Raises
    ------
    BadImage
        With the reason: unreadable or truncated bytes, a missing file, an image too
        large (a decompression bomb) or too small, SVG, an array that is not an image,
        a mode that cannot be converted (see :class:`ImageLimits`).
    """
    if mode not in IMAGE_MODES:
        raise ValidationError(f"image mode must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    PILImage = pil()
    if value is None:
        raise BadImage("null image")
    if isinstance(value, str | os.PathLike):
        value = _read_path(os.fspath(value))
    if isinstance(value, bytes | bytearray | memoryview):
        im = open_checked(bytes(value), limits)
    else:
        if isinstance(value, PILImage.Image):
            im = to_8bit(value)
        else:
            arr = _as_array(value)
            im = PILImage.fromarray(arr, "L" if arr.ndim == 2 else ("RGB" if arr.shape[2] == 3 else "RGBA"))
        check_header(im, limits)
    if im.mode != mode:
        try:
            # Transparent pixels are composited on white, the usual "no background".
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                bg = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
                im = PILImage.alpha_composite(bg, rgba)
            im = im.convert(mode)
        except Exception as exc:
            raise BadImage(f"image mode {im.mode!r} cannot be converted to {mode!r}: {exc}") from None
    return im


@dataclass
class LoadedImages:
    """The usable rows of an image column: their indices, images and hashes, and the
    ``(key, reason)`` of each row left out. ``images`` holds the decoded Pillow images,
    or with ``keep_decoded=False`` the inputs themselves (a path's bytes)."""

    indices: list[int]
    images: list[Any]
    hashes: list[str]
    bad: list[tuple[Any, str]]


def load_images(keys: Sequence[Any], values: Sequence[Any], *, mode: str = "RGB",
                on_bad: BadImagePolicy = "error", keep_decoded: bool = True,
                limits: ImageLimits = DEFAULT_LIMITS) -> LoadedImages:
    """Decode and hash every image; refuse (``"error"``) or leave out (``"skip"``) bad ones.

    ``keep_decoded=False`` keeps the encoded inputs instead of the decoded images: a
    decoded photo is ten to a hundred times its file, and most rows of an incremental
    run never reach the model; those that do are decoded again.

    Raises
    ------
    ValidationError
        With ``on_bad="error"``, naming up to five bad keys with their reasons.
    """
    if on_bad not in ("error", "skip"):
        raise ValidationError(f"bad-image policy must be 'error' or 'skip', got {on_bad!r}")
    out = LoadedImages([], [], [], [])
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        try:
            if isinstance(v, str | os.PathLike):
                v = _read_path(os.fspath(v))  # read once: decoded and hashed from the same bytes
            im = decode_image(v, mode, limits)
            h = image_hash(v)
        except BadImage as exc:
            out.bad.append((k, str(exc)))
            continue
        out.indices.append(i)
        out.images.append(im if keep_decoded else v)
        out.hashes.append(h)
    if out.bad and on_bad == "error":
        shown = "; ".join(f"{k!r}: {why}" for k, why in out.bad[:5])
        more = f" (and {len(out.bad) - 5} more)" if len(out.bad) > 5 else ""
        raise ValidationError(
            f"{len(out.bad)} image(s) cannot be used ({shown}{more}); "
            "fix the source or pass on_bad='skip'")
    return out
