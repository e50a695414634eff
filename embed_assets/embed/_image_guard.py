"""What decoding refuses or normalises before an image reaches a model.

Pillow opens nearly anything, and some of what it opens is not a picture a model
should see, or not the picture it looks like:

- a decompression bomb (a few KB of PNG that decode to 20,000 x 20,000 pixels, 1.6 GB
  of RGBA): refused from the header, before any pixel is decoded;
- a 1 x 1 (or a few pixels) tracking pixel or placeholder: refused, it has no content;
- 16-bit greyscale (PNG/TIFF ``I;16``): Pillow's own ``convert("RGB")`` clips it at 255,
  so a mid-grey becomes white; scaled to 8 bits here instead;
- an animation (GIF, APNG, WebP): the first frame, as thumbnails and link previews use,
  or refused with ``animated="refuse"``;
- SVG (a vector drawing, not pixels): refused with what to do, not as "unreadable";
- CMYK (print JPEGs): converted by Pillow, which honours Adobe's inverted CMYK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

# Pillow's own bomb threshold (Image.MAX_IMAGE_PIXELS), kept as a number so a user who
# changes Pillow's global does not silently change what this store accepts.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_MIN_SIDE = 4


class BadImage(ValueError):
    """One image that cannot be used, with the reason (collected per key by the pipeline)."""


@dataclass(frozen=True)
class ImageLimits:
    """What a decoded image must satisfy.

    Parameters
    ----------
    max_pixels : int
        Width x height above which an image is refused from its header, before decoding
        (default: Pillow's 89,478,485, about 9,459 x 9,459). Pillow itself refuses
        above twice its ``Image.MAX_IMAGE_PIXELS``; raise that too to go beyond.
    min_side : int
        Width and height below which an image is refused (default 4 pixels).
    animated : {"first", "refuse"}
        An animation is embedded as its first frame, or refused.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    animated: Literal["first", "refuse"] = "first"

    def __post_init__(self) -> None:
        from ..errors import ValidationError

        if self.max_pixels < 1 or self.min_side < 1:
            raise ValidationError("max_pixels and min_side must be >= 1")
        if self.animated not in ("first", "refuse"):
            raise ValidationError(f"animated must be 'first' or 'refuse', got {self.animated!r}")


DEFAULT_LIMITS = ImageLimits()


def refuse_vector(raw: bytes) -> None:
    """Refuse SVG by its first bytes (Pillow would say only "cannot identify image file")."""
    head = raw[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in raw[:4096].lower()):
        raise BadImage("SVG is a vector drawing, not pixels: rasterise it first "
                       "(rsvg-convert, cairosvg, or Inkscape --export-type=png)")


def check_header(im: Image, limits: ImageLimits) -> None:
    """Size and animation checks from the header alone (nothing decoded yet)."""
    w, h = im.size
    if w == 0 or h == 0:
        raise BadImage(f"zero-size image ({w}x{h})")
    if w * h > limits.max_pixels:
        raise BadImage(f"{w}x{h} = {w * h:,} pixels exceeds the limit of {limits.max_pixels:,} "
                       "(a possible decompression bomb); raise ImageLimits.max_pixels if it is real")
    if w < limits.min_side or h < limits.min_side:
        raise BadImage(f"{w}x{h} is smaller than {limits.min_side} pixels a side (a placeholder "
                       "or tracking pixel, no content to embed)")
    if getattr(im, "is_animated", False) and limits.animated == "refuse":
        raise BadImage(f"animated image ({getattr(im, 'n_frames', '?')} frames) refused "
                       "(ImageLimits.animated='refuse')")


def to_8bit(im: Image) -> Image:
    """A high-bit-depth single-channel image scaled to 8 bits (``L``), else ``im``.

    Pillow converts ``I;16``/``I``/``F`` to ``L``/``RGB`` by clipping at 255, which turns
    most of a 16-bit picture white. 16-bit modes scale by 1/257 (65535 -> 255); ``I``
    and ``F`` (32-bit) by their own maximum when it is above 255.
    """
    if im.mode not in ("I", "F") and not im.mode.startswith("I;16"):
        return im
    import numpy as np
    from PIL import Image as PILImage

    a = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16"):
        a = a / 257.0
    else:
        top = float(a.max()) if a.size else 0.0
        if im.mode == "F" and top <= 1.0:
            a = a * 255.0
        elif top > 255.0:
            a = a * (255.0 / (65535.0 if top <= 65535.0 else top))
    return PILImage.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def open_checked(raw: bytes, limits: ImageLimits) -> Any:
    """Open, check and fully decode encoded bytes; every refusal is a :class:`BadImage`."""
    import io
    import warnings

    from PIL import Image as PILImage

    if not raw:
        raise BadImage("empty (0 bytes)")
    refuse_vector(raw)
    try:
        with warnings.catch_warnings():
            # our own max_pixels decides; Pillow's warning between 1x and 2x its limit
            # would otherwise go to the user's log for an image we then refuse anyway
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            im = PILImage.open(io.BytesIO(raw))
    except PILImage.DecompressionBombError as exc:
        # above twice Pillow's own limit its open() refuses before we see the size
        raise BadImage(f"a possible decompression bomb, refused by Pillow: {exc}") from None
    except Exception as exc:  # Pillow raises several types for bad data
        raise BadImage(f"unreadable image ({type(exc).__name__}: {exc})") from None
    check_header(im, limits)
    try:
        im.load()  # decode now: a truncated file fails here, not inside the model
    except Exception as exc:
        raise BadImage(f"unreadable image ({type(exc).__name__}: {exc})") from None
    return to_8bit(im)
