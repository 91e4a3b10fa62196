"""Decode one image file safely into RGB pixels plus its metadata.

Each file is decoded once, completely: the pixels are loaded first (a file whose
pixels cannot all be read is refused, never padded), and only then are EXIF date and
orientation read from what was loaded. Reading EXIF first made Pillow decode a PNG's
pixels as a side effect, the error was lost, and a broken image went into the index.

Every failure becomes ``ImageError`` with one sentence naming the cause and the
format (``reasons``); whatever a decoder raises, nothing a file contains can stop an
ingest run. Library warnings are kept with the file (``Decoded.warnings``) instead of
being printed (``capture``).

Measured on the 2-core machine, alternating with the decode this replaced (which read
EXIF first and applied orientation through ``ImageOps.exif_transpose``): per-file
median ratio 1.00 on 12 MP JPEGs (~37-80 ms each at the model's input size, with the
machine's load) and 0.99 on 1.9 MP ones; reading EXIF from the already-parsed image
costs microseconds, and capturing warnings a thread-local list.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import io
import stat
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, UnidentifiedImageError

from searchengine.errors import ImageError
from searchengine.fsutil import open_regular
from searchengine.ingest import reasons
from searchengine.ingest.capture import captured
from searchengine.ingest.entries import kind
from searchengine.ingest.raw import decode_raw, is_raw, raw_memory

# Twice a 48 MP camera's output; anything larger is refused before decoding, which
# keeps a crafted file from allocating gigabytes (a "decompression bomb").
MAX_PIXELS = 100_000_000
# The largest file read as an image, read whole into memory: 2.5 times what the
# largest image within MAX_PIXELS takes uncompressed (16-bit RGBA, 800 MB). Past it a
# file is something else under an image's name (a video, a disk image), refused
# before it is read: reading it whole could take the machine's memory.
MAX_FILE_BYTES = 2 << 30

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003
DATETIME = 0x0132

# EXIF orientation -> the transpose that makes the picture upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE = frozenset({"RGB", "L", "RGBA", "LA", "CMYK", "I", "F", "RGBX", "YCbCr"})
_ALPHA = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@dataclass
class Decoded:
    image: Image.Image  # RGB, EXIF orientation applied
    width: int  # full size, upright
    height: int
    taken_at: float | None  # EXIF DateTimeOriginal as a POSIX timestamp (local time)
    format: str | None = None  # Pillow's name for it: JPEG, PNG, TIFF ...
    warnings: list[str] = field(default_factory=list)  # what the libraries said about it


def open_image(data: bytes) -> Image.Image:
    """``Image.open`` on untrusted bytes, by every Pillow plugin that decodes in this
    process: never one that runs another program (``reasons.EXTERNAL_FORMATS``).

    Raises:
        UnidentifiedImageError: as ``Image.open``; an EPS file among them.
    """
    Image.init()  # the list covers plugins registered later too (pillow-heif)
    formats = [fmt for fmt in Image.ID if fmt not in reasons.EXTERNAL_FORMATS]
    # pillow-heif's plugin last: it claims every file of the generic HEIF brands
    # (``mif1``), AVIF photos among them, then fails on them (it has no AV1 decoder).
    # Pillow's own AVIF plugin, tried first, passes on a HEIC photo to it.
    formats.sort(key=lambda fmt: fmt == "HEIF")
    return Image.open(io.BytesIO(data), formats=formats)


@lru_cache(maxsize=1)
def avif_available() -> bool:
    """Whether this Pillow reads AVIF (its own plugin: wheels from 11.3 on)."""
    from PIL import features

    try:
        return bool(features.check("avif"))
    except ValueError:  # a Pillow that does not know the feature at all
        return False


@lru_cache(maxsize=1)
def heif_installed() -> bool:
    """Whether the optional pillow-heif is installed: found, not imported (its import
    loads libheif and its codecs, 40-140 ms, which a search that walks its folders
    first would pay without decoding a photo). ``heif_available`` imports it."""
    return importlib.util.find_spec("pillow_heif") is not None


@lru_cache(maxsize=1)
def heif_available() -> bool:
    """Register the HEIC/HEIF opener when the optional pillow-heif is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def decode_bytes(
    data: bytes,
    max_pixels: int = MAX_PIXELS,
    min_side: int | None = None,
    name: str | None = None,
) -> Decoded:
    """Decode image bytes (the first frame of animations) to an upright RGB image.

    Args:
        data: the file's bytes.
        name: the file's name or path, where known: a camera RAW file is told by its
            extension and read with rawpy (``ingest.raw``).
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
        ImageError: the file is empty, truncated, corrupt, uses a feature the
            decoder lacks, is not an image, or is over ``max_pixels``; the message is
            one sentence naming the cause.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    if is_raw(name):
        with captured() as messages:
            image, width, height = decode_raw(data, max_pixels, min_side)
        if min_side is not None:
            image = _reduce(image, 2 * min_side)  # a demosaic is half the sensor's size
        return Decoded(image, width, height, _raw_taken_at(data), "RAW", messages)
    heif = heif_available()
    fmt: str | None = None
    with captured() as messages:
        try:
            image = open_image(data)
            fmt = image.format
            width, height = image.size  # TIFF: already upright
            if width * height > max_pixels:
                raise ImageError(reasons.too_large(width, height, max_pixels, fmt))
            if min_side is not None and fmt == "JPEG":
                image.draft("RGB", (min_side, min_side))
            image.load()  # every pixel of the first frame, or an error
            orientation, taken_at = _metadata(image, messages)
            pixels = image if min_side is None else _reduce(image, 2 * min_side)
            if orientation in _UPRIGHT:
                pixels = pixels.transpose(_UPRIGHT[orientation])
            rgb = to_rgb(pixels)
        except ImageError:
            raise
        except Image.DecompressionBombError as exc:
            fmt = fmt or reasons.guess_format(data)
            raise ImageError(reasons.too_large_for_pillow(exc, data, max_pixels, fmt)) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(reasons.unidentified(data, heif)) from exc
        except BaseException as exc:  # any decoder, any exception type: this file only
            if isinstance(exc, KeyboardInterrupt):
                raise
            fmt = fmt or reasons.guess_format(data)  # it failed while being opened
            why = reasons.heif_needed(data, heif) or reasons.decode_failure(exc, fmt, messages)
            raise ImageError(why) from exc
    if orientation in (5, 6, 7, 8):
        width, height = height, width  # turned by 90°
    return Decoded(rgb, width, height, taken_at, fmt, messages)


def _raw_taken_at(data: bytes) -> float | None:
    """When a RAW photo was taken, from the EXIF that TIFF-based RAW formats (DNG, CR2,
    NEF, ARW ...) carry where Pillow reads it; None for the others."""
    if data[:4] not in (b"II*\0", b"MM\0*"):
        return None  # not TIFF inside (CR3, RAF ...): no date
    try:
        exif = Image.Exif()
        exif.load(data)  # the TIFF structure only: no image is opened
        return _taken_at(exif)
    except Exception:  # an odd one: no date
        return None


def decode_memory(
    data: bytes,
    max_pixels: int = MAX_PIXELS,
    min_side: int | None = None,
    name: str | None = None,
) -> int:
    """An upper estimate of the bytes ``decode_bytes(data, max_pixels, min_side)`` holds
    at its peak, read from the header alone (nothing is decoded).

    Pillow keeps RGB, CMYK and alpha modes at 4 bytes a pixel, 16-bit greyscale at 2
    and 1-bit, greyscale and palette at 1. A JPEG with ``min_side`` decodes at the DCT
    scale ``Image.draft`` picks (1/2, 1/4 or 1/8 of each side); every other format
    decodes at full size first. Then RGB, greyscale and CMYK images box-reduce with
    little more; alpha images are premultiplied into a full-size copy first; palette
    and 1-bit images become RGBA, then RGB, at full size; 16-bit, 32-bit and float
    greyscale pass through numpy (float64 for the last two) when not reduced; WebP
    passes through a buffer of libwebp's own, HEIF through libheif's planes and
    pillow-heif's RGB buffer (16-bit for a 10-bit photo), AVIF through libavif's; and
    without ``min_side`` the upright and
    RGB copies are full size too. The factors are measured peaks with a margin
    (``tests/unit/test_decode.py`` checks them in a fresh process): a 100 MP RGBA PNG
    holds ~800 MB whatever ``min_side``, a 100 MP JPEG ~9 MB at ``min_side=64``.

    A camera RAW file (by ``name``) is estimated from its sensor size, read from its
    header by LibRaw (``ingest.raw.raw_memory``).

    Raises:
        ImageError: empty, not an image, or over ``max_pixels``.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    if is_raw(name):
        return raw_memory(data, max_pixels, min_side)
    heif = heif_available()
    fmt: str | None = None
    with captured() as messages:
        try:
            with open_image(data) as image:
                width, height = image.size
                mode, fmt = image.mode, image.format
        except Image.DecompressionBombError as exc:
            fmt = fmt or reasons.guess_format(data)
            raise ImageError(reasons.too_large_for_pillow(exc, data, max_pixels, fmt)) from exc
        except UnidentifiedImageError as exc:
            raise ImageError(reasons.unidentified(data, heif)) from exc
        except Exception as exc:  # a header no decoder can read: this file only
            fmt = fmt or reasons.guess_format(data)
            why = reasons.heif_needed(data, heif) or reasons.decode_failure(exc, fmt, messages)
            raise ImageError(why) from exc
    check_pixels(width, height, max_pixels, fmt)
    if min_side is not None and min_side > 0 and fmt == "JPEG":
        fits = min(width // min_side, height // min_side)
        scale = next((s for s in (8, 4, 2) if fits >= s), 1)
        width, height = -(-width // scale), -(-height // scale)
    pixels = width * height
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    decoded = pixels * per_pixel
    reduced = min_side is not None and mode in _REDUCIBLE
    if fmt == "WEBP":
        peak = pixels * 17  # libwebp decodes into a buffer of its own, then it is converted
    elif mode in ("1", "P", "PA"):
        peak = pixels * 16  # to RGBA, then composited onto an RGB background, full size
    elif mode in ("I", "F") and not reduced:
        peak = decoded + pixels * 48  # scaled to 8 bits through float64 arrays
    elif mode in ("RGBA", "LA"):
        peak = decoded + pixels * (14 if min_side is None else 5)
    elif reduced:
        peak = decoded * 5 // 4
    else:
        peak = decoded + pixels * 8
    if fmt == "HEIF":
        peak += pixels * 8  # libheif's planes, and pillow-heif's RGB (16-bit for 10-bit)
    elif fmt == "AVIF":
        peak += pixels * 4  # the decoder's own buffer, copied into Pillow's
    return peak + _DECODER_STATE


# Working memory of a decoder itself (libjpeg's buffers, zlib's window), whatever the size.
_DECODER_STATE = 8_000_000


def check_pixels(
    width: int, height: int, max_pixels: int = MAX_PIXELS, fmt: str | None = None
) -> None:
    """Refuse an image over ``max_pixels`` before any pixel is decoded."""
    if width * height > max_pixels:
        raise ImageError(reasons.too_large(width, height, max_pixels, fmt))


def _metadata(image: Image.Image, messages: list[str]) -> tuple[int, float | None]:
    """EXIF orientation (1 when absent or invalid) and date of a loaded image.

    Malformed EXIF costs only the metadata, never the image: the pixels are already
    decoded when this runs. Pillow turns a TIFF upright while loading it and drops
    its orientation tag, so a TIFF gives 1 here.
    """
    try:
        exif = image.getexif()
        orientation = exif.get(ORIENTATION, 1)
        taken_at = _taken_at(exif)
    except Exception as exc:
        messages.append(f"EXIF data ignored: {reasons.one_sentence(str(exc))}")
        return 1, None
    return (orientation if orientation in _UPRIGHT else 1), taken_at


def taken_at_of(image: Image.Image) -> float | None:
    """EXIF date of an opened image, read from its header without decoding pixels.

    For a PNG whose EXIF chunk comes after the pixels, Pillow would have to decode
    the pixels to reach it: such an image gives None unless it is already loaded.
    """
    if image.format == "PNG" and "exif" not in image.info and getattr(image, "tile", None):
        return None
    try:
        return _taken_at(image.getexif())
    except Exception:  # malformed EXIF must not cost the image
        return None


def _taken_at(exif: Image.Exif) -> float | None:
    raw = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    if not isinstance(raw, str):
        return None
    try:
        return dt.datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").timestamp()
    except ValueError:
        return None


def _reduce(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by the largest integer factor keeping the shorter side >= ``min_side``."""
    factor = min(image.size) // min_side
    if factor < 2 or image.mode not in _REDUCIBLE:
        return image  # a palette cannot be averaged; the model's resize handles it
    return image.reduce(factor)


def decode_file(path: str, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Decoded:
    """Read and decode one file (see ``decode_bytes``).

    Raises:
        ImageError: it cannot be read, is not a regular file (a FIFO would block for
            ever, ``/dev/zero`` never end), is over ``MAX_FILE_BYTES``, or does not
            decode; the first three before a byte is read.
    """
    try:
        handle, st = open_regular(path)
        with handle:
            if not stat.S_ISREG(st.st_mode):
                raise ImageError(f"not a regular file ({kind(st.st_mode)})")
            if st.st_size > MAX_FILE_BYTES:
                raise ImageError(reasons.file_too_large(st.st_size, MAX_FILE_BYTES))
            data = handle.read()
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}") from exc
    return decode_bytes(data, max_pixels, min_side, name=path)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited onto white.

    16-bit greyscale (either byte order) is scaled to 8 bits, not clipped; 32-bit
    integer and float images are scaled from their range (floats in 0..1 as is).
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        image = _grey8(image)
    elif mode == "La":  # premultiplied: over white, a pixel is L + (255 - alpha)
        grey, alpha = np.asarray(image, dtype=np.int16).transpose(2, 0, 1)
        return Image.fromarray(np.clip(grey + 255 - alpha, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in _ALPHA or image.has_transparency_data:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _grey8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit ``L``."""
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        return Image.fromarray((values >> 8).astype(np.uint8))
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
