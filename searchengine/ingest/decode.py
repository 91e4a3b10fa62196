"""Decode one image file safely into RGB pixels plus its metadata.

Every failure becomes ``ImageError`` with a reason a person can act on; nothing a
file contains can stop an ingest run.
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageOps, UnidentifiedImageError

from searchengine.errors import ImageError

# Twice a 48 MP camera's output; anything larger is refused before decoding, which
# keeps a crafted file from allocating gigabytes (a "decompression bomb").
MAX_PIXELS = 100_000_000

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
DATETIME = 0x0132


@dataclass
class Decoded:
    image: Image.Image  # RGB, EXIF orientation applied
    width: int  # after orientation
    height: int
    taken_at: float | None  # EXIF DateTimeOriginal as a POSIX timestamp (local time)


@lru_cache(maxsize=1)
def heif_available() -> bool:
    """Register the HEIC/HEIF opener when the optional pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def decode_bytes(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Decoded:
    """Decode image bytes (first frame of animations) to an upright RGB image.

    Args:
        data: the file's bytes.
        max_pixels: larger images are refused before any pixel is decoded.
        min_side: when given, the image may come back smaller, but with its shorter
            side still at least this long: JPEGs are decoded at a reduced DCT scale
            (``Image.draft``, which filters as well as a proper downsample), other
            large images are box-reduced to at least twice ``min_side`` (a box filter
            aliases, so the final resize keeps a margin). Either costs a fraction of a
            full-size decode plus resize. ``width``/``height`` always report the
            full, upright size. Callers pass the model's input size: a 12 MP JPEG
            is then decoded at 1/8 scale (500x375), ~0.13x a full decode, and the
            embedding stays within 1e-4 cosine of a full decode's
            (``tests/unit/test_decode.py``).

    Raises:
        ImageError: empty, truncated, not an image, or over ``max_pixels``.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    heif_available()
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP; our own limit below decides (Pillow still
            # refuses outright above twice its limit, with DecompressionBombError).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            check_pixels(width, height, max_pixels)
            image.seek(0)
            taken_at = taken_at_of(image)
            if image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width  # rotated by 90°: report upright size
            if min_side is not None and image.format == "JPEG":
                image.draft("RGB", (min_side, min_side))
            image.load()
            pixels: Image.Image = image if min_side is None else _reduce(image, 2 * min_side)
            upright = ImageOps.exif_transpose(pixels) or pixels
            rgb = to_rgb(upright)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode: {exc}") from exc
    return Decoded(rgb, width, height, taken_at)


def check_pixels(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image over ``max_pixels`` before any pixel is decoded."""
    if width * height > max_pixels:
        raise ImageError(
            f"refused: {width}x{height} is {width * height / 1e6:.0f} MP, over the "
            f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)"
        )


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor keeping the shorter side >= ``min_side``."""
    factor = min(image.size) // min_side
    if factor < 2 or image.mode not in ("RGB", "L", "RGBA", "LA", "CMYK", "P", "I", "F"):
        return image
    if image.mode == "P":
        return image  # a palette cannot be averaged; the model's resize handles it
    reduced = image.reduce(factor)
    reduced.info = image.info  # keep EXIF for the orientation step
    return reduced


def decode_file(path: str, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Decoded:
    """Read and decode one file (see ``decode_bytes``); unreadable files raise ``ImageError``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from exc
    return decode_bytes(data, max_pixels, min_side)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        image = image.point(lambda v: v * (255 / 65535)).convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def taken_at_of(image: Image.Image) -> float | None:
    try:
        exif = image.getexif()
        raw = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    except Exception:  # malformed EXIF must not cost the image
        return None
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None
