"""Camera RAW photos (``.dng``, ``.cr2``, ``.nef``, ``.arw`` ...), read with rawpy (LibRaw).

Optional: ``pip install 'searchengine[raw]'``. Without rawpy the walk counts RAW files
and ``index`` says what to install (``scan.missing_codecs_note``).

A RAW file is told by its extension: most RAW formats are TIFF inside, and Pillow
would open them as TIFF and decode the first image it finds, often a 160x120
thumbnail. What is embedded is used when it is large enough: nearly every camera
stores its own JPEG rendering of the shot, which is what the photographer saw, and
decoding it costs a fraction of demosaicing the sensor data. Otherwise the sensor
data is demosaiced at half size (the camera's white balance, 8 bits), which is still
larger than a model's input. A RAW file beside a JPEG, HEIC or other photo of the
same name in the same folder (a camera set to RAW+JPEG) is left to that photo
(``scan``), so a shot is not indexed twice.
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import os
import platform
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import ImageError
from searchengine.ingest import reasons
from searchengine.ingest.capture import note
from searchengine.ingest.tiff_layout import data_end

RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
     ".orf", ".rw2", ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".iiq", ".erf", ".kdc",
     ".dcr", ".mrw", ".mos"}
)  # fmt: skip

# The reason of a RAW file met where rawpy is missing (a Ray worker without the extra,
# or a file named directly): ``ingest.run`` tries such files again once rawpy is there.
NEEDS_RAWPY = (
    "unsupported RAW file: reading camera RAW photos needs rawpy (pip install 'searchengine[raw]')"
)

# LibRaw's ``flip``: how the sensor image is turned to stand upright.
_TURN = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90,
         6: Image.Transpose.ROTATE_270}  # fmt: skip


@lru_cache(maxsize=1)
def raw_available() -> bool:
    """Whether rawpy (LibRaw) is installed; found, not imported (~50 ms, which every
    walk would pay: ``scan.image_extensions``)."""
    return importlib.util.find_spec("rawpy") is not None


def is_raw(name: str | None) -> bool:
    """Whether a file of this name is a camera RAW file (by its extension)."""
    return name is not None and os.path.splitext(name)[1].lower() in RAW_EXTENSIONS


def decode_raw(data: bytes, max_pixels: int, min_side: int | None) -> tuple[Image.Image, int, int]:
    """A RAW file's picture, upright RGB, and its full upright size.

    With ``min_side``, the embedded JPEG when its shorter side is at least that long,
    else the sensor data at half size; without it, the sensor data at full size.

    Raises:
        ImageError: rawpy is missing, or the file is not a RAW file LibRaw reads,
            is truncated or corrupt, or is over ``max_pixels``.
    """
    try:
        import rawpy
    except ImportError as exc:  # not installed, or installed broken
        raise ImageError(NEEDS_RAWPY) from exc

    try:
        with _libraw_stderr(), _zeroed_allocations(), rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if sizes.flip in (5, 6):
                width, height = height, width
            if width * height > max_pixels:
                raise ImageError(reasons.too_large(width, height, max_pixels, "RAW"))
            image = _preview(raw, sizes.flip, min_side) if min_side is not None else None
            from_preview = image is not None
            if image is None:
                _check_sensor_data(raw)
                pixels = raw.postprocess(
                    half_size=min_side is not None, use_camera_wb=True, output_bps=8
                )
                image = Image.fromarray(pixels)  # LibRaw has turned it upright
    except ImageError:
        raise
    except rawpy.LibRawFileUnsupportedError as exc:
        raise ImageError(_unsupported()) from exc
    except (rawpy.LibRawIOError, rawpy.LibRawDataError, rawpy.LibRawTooBigError) as exc:
        raise ImageError("truncated or corrupt RAW file: its image data cannot be read") from exc
    except rawpy.LibRawError as exc:
        raise ImageError(f"corrupt RAW file: {reasons.one_sentence(str(exc))}") from exc
    end = data_end(data)
    if end is not None and end > len(data):  # read, but not all there: say so
        note(
            f"the file is cut short: it ends at byte {len(data):,} and its image data runs "
            f"to byte {end:,}"
            + ("; indexed from the camera's preview in it" if from_preview else "")
        )
    return image.convert("RGB"), width, height


def raw_memory(data: bytes, max_pixels: int, min_side: int | None) -> int:
    """An upper estimate of the bytes ``decode_raw`` holds at its peak, from the
    sensor size in the file's header (LibRaw reads no pixel for it).

    LibRaw keeps the sensor data at 2 bytes a pixel and demosaics into 4 16-bit
    channels (a quarter of the pixels at half size), then 3 bytes a pixel of output;
    an embedded preview costs less than that. With a margin: 8 bytes a sensor pixel,
    5 at half size.

    Raises:
        ImageError: as ``decode_raw``, for a file it would refuse by its header.
    """
    try:
        import rawpy
    except ImportError:
        return len(data)  # refused at once by ``decode_raw``

    try:
        with _libraw_stderr(), rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            pixels = max(sizes.raw_width * sizes.raw_height, sizes.width * sizes.height)
    except rawpy.LibRawError as exc:
        raise ImageError(_unsupported()) from exc
    if pixels > max_pixels:
        raise ImageError(reasons.too_large(sizes.width, sizes.height, max_pixels, "RAW"))
    return len(data) + pixels * (5 if min_side is not None else 8)


def _unsupported() -> str:
    """Why LibRaw refused a file by its header: every extension read as RAW is one
    LibRaw reads, so it is a damaged file or a camera newer than this LibRaw."""
    import rawpy

    version = ".".join(str(n) for n in rawpy.libraw_version)
    return (
        f"unsupported or corrupt RAW file: LibRaw {version} finds no image it reads in it "
        "(a damaged file, or a camera newer than this LibRaw: a newer rawpy may read it)"
    )


# glibc's mallopt(M_PERTURB): while set to 0xFF, every block malloc hands out is
# filled with 0 (and every block freed with 0xFF).
_M_PERTURB = -6


@lru_cache(maxsize=1)
def _mallopt() -> Any:
    """glibc's ``mallopt``, or None under another C library (macOS, Windows, musl)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


@contextmanager
def _zeroed_allocations() -> Iterator[None]:
    """While LibRaw reads a file, memory it allocates starts at 0.

    LibRaw allocates the sensor data with ``malloc`` and writes only what it reads: the
    part of a damaged file it cannot read keeps what that memory held before, which
    in a run of many RAW files is the previous photo's sensor data (seen with rawpy
    0.28, LibRaw 0.22). Filled with 0, that part reads as missing
    (``_check_sensor_data``), and no other photo's pixels can end up in this one.
    Under another C library nothing is changed. RAW files are read one at a time
    (``_STDERR_LOCK``); other threads' allocations meanwhile are filled too, which
    costs them time, not correctness.
    """
    mallopt = _mallopt()
    if mallopt is None:
        yield
        return
    mallopt(_M_PERTURB, 0xFF)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)


# Where a file cut short or damaged loses its sensor data first: the bottom right (rows
# are stored top to bottom, tiles in rows, Fuji's stripes left to right). For some
# formats LibRaw says nothing of what it could not read (a tile that is not lossless
# JPEG, data past the end of a Panasonic file) and leaves that memory as it found it,
# which ``_zeroed_allocations`` makes 0. No sensor gives a corner of this many pixels
# at exactly 0: even where the camera subtracts the black level, its read noise puts
# half of the darkest pixels above 0.
EMPTY_CORNER = (8, 64)  # rows, columns: narrower than a tile (DNG tiles are 256 or more)


def _check_sensor_data(raw: Any) -> None:
    """Refuse sensor data whose bottom-right corner is all 0 (see ``EMPTY_CORNER``), in
    every channel where the data has several (a linear DNG: a phone's ProRAW).

    Raises:
        ImageError: saying how much of the sensor data is missing.
    """
    raw.unpack()  # postprocess would do it next; a file it cannot read raises here
    try:
        visible = raw.raw_image_visible
    except Exception:  # no such view of this kind of data: nothing to check
        return
    rows, cols = EMPTY_CORNER
    if visible.size == 0 or visible[-rows:, -cols:].any():
        return
    filled = visible.reshape(*visible.shape[:2], -1).any(axis=-1)  # a pixel: any channel
    empty = 1 - np.count_nonzero(filled) / filled.size
    if empty == 1:
        raise ImageError(
            "truncated or corrupt RAW file: it holds no sensor data (every pixel is 0)"
        )
    raise ImageError(
        "truncated or corrupt RAW file: its sensor data is missing from the bottom right "
        f"({empty:.0%} of the pixels are 0)"
    )


# LibRaw writes what it meets in a damaged file ("unknown file: Unexpected end of
# file") to stderr itself, and rawpy offers no way to route it. While a RAW file is
# read, stderr (the descriptor) goes to a temporary file, one RAW file at a time; its
# LibRaw lines become that file's messages (``capture``), and anything else written
# there meanwhile (another thread's progress bar) is written to stderr after.
_STDERR_LOCK = threading.Lock()
_LIBRAW_LINE = re.compile(rb"^unknown file: .*$", re.MULTILINE)


@contextmanager
def _libraw_stderr() -> Iterator[None]:
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said = sink.read()
            if said:
                for line in _LIBRAW_LINE.findall(said):
                    note(f"LibRaw: {line[len(b'unknown file: ') :].decode(errors='replace')}")
                rest = _LIBRAW_LINE.sub(b"", said).replace(b"\n\n", b"\n").lstrip(b"\n")
                if rest:
                    os.write(2, rest)


def _preview(raw: Any, flip: int, min_side: int) -> Image.Image | None:
    """The camera's embedded rendering, upright, if it is at least ``min_side`` on its
    shorter side; None where there is none that size."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except rawpy.LibRawError:  # none, of a kind LibRaw cannot give, or damaged
        return None  # the sensor data may still read
    image: Image.Image
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            jpeg = Image.open(io.BytesIO(thumb.data), formats=["JPEG"])
            if min(jpeg.size) < min_side:
                return None
            jpeg.draft("RGB", (min_side, min_side))
            jpeg.load()
            image = jpeg
        else:
            image = Image.fromarray(thumb.data)
            if min(image.size) < min_side:
                return None
    except Exception:  # a preview that does not decode: use the sensor data
        return None
    turn = _TURN.get(flip)
    return image.transpose(turn) if turn is not None else image
