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


def decode_memory(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> int:
    """An upper estimate of the bytes ``decode_bytes(data, max_pixels, min_side)`` holds
    at its peak, read from the header alone (nothing is decoded).

    Pillow keeps RGB, CMYK and alpha modes at 4 bytes a pixel, 16-bit greyscale at 2
    and 1-bit, greyscale and palette at 1. A JPEG with ``min_side`` decodes at the DCT
    scale ``Image.draft`` picks (1/2, 1/4 or 1/8 of each side); every other format
    decodes at full size first. Then RGB, greyscale and CMYK images box-reduce with
    little more; alpha images are premultiplied into a full-size copy first; palette
    and 1-bit images become RGBA, then RGB, at full size; WebP passes through a buffer
    of libwebp's own; and without ``min_side`` the upright and RGB copies are full size
    too. The factors are measured peaks with a margin (``tests/unit/test_decode.py``
    checks them in a fresh process): a 100 MP RGBA PNG holds ~800 MB whatever
    ``min_side``, a 100 MP JPEG ~9 MB at ``min_side=64``.

    Raises:
        ImageError: empty, not an image, or over ``max_pixels``.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    heif_available()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                mode, fmt = image.mode, image.format
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode: {exc}") from exc
    check_pixels(width, height, max_pixels)
    if min_side is not None and min_side > 0 and fmt == "JPEG":
        fits = min(width // min_side, height // min_side)
        scale = next((s for s in (8, 4, 2) if fits >= s), 1)
        width, height = -(-width // scale), -(-height // scale)
    pixels = width * height
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    decoded = pixels * per_pixel
    if fmt == "WEBP":
        peak = pixels * 17  # libwebp decodes into a buffer of its own, then it is converted
    elif mode in ("1", "P", "PA"):
        peak = pixels * 16  # to RGBA, then composited onto an RGB background, full size
    elif mode in ("RGBA", "LA"):
        peak = decoded + pixels * (14 if min_side is None else 5)
    elif min_side is not None and mode in _REDUCED_IN_PLACE:
        peak = decoded * 5 // 4
    else:
        peak = decoded + pixels * 8
    if fmt in ("HEIF", "AVIF"):
        peak += pixels * 4  # the decoder's own buffer, copied into Pillow's
    return peak + _DECODER_STATE


# Modes ``_reduce`` shrinks without a full-size copy first.
_REDUCED_IN_PLACE = frozenset({"RGB", "L", "CMYK", "YCbCr", "I", "F"})
# Working memory of a decoder itself (libjpeg's buffers, zlib's window), whatever the size.
_DECODER_STATE = 4_000_000


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
