"""Why a file could not be indexed, in one sentence a person can act on.

Every reason names the cause first (truncated, corrupt data, unsupported feature, too
large, not an image, ...) and the format when it is known, then the library's own
words: ``truncated PNG file: image file is truncated``, ``unsupported DDS feature:
Unimplemented pixel format b'ATI1'``, ``not an image: it looks like a PDF document``.
Pillow's messages alone are often not enough: a libtiff failure reads "decoder error
-2" while the cause went to stderr (``capture`` keeps it), and a known format whose
header is corrupt comes back as "cannot identify image file", the same as a text file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

TRUNCATED = "truncated"
UNSUPPORTED = "unsupported"
CORRUPT = "corrupt"

# Formats Pillow reads by running another program: EPS goes to Ghostscript, which has
# a long record of exploitable bugs. A photo folder or an upload can hold any file
# under a photo's name, so these are never opened (``decode.open_image``).
EXTERNAL_FORMATS = frozenset({"EPS"})

_TRUNCATED_RE = re.compile(
    r"truncat|end of (file|stream|data)|premature end|not enough (data|image data)|"
    r"buffer is not large enough|ran out of data|unexpected end|short read|"
    r"no more data|\beof\b|read past end|insufficient data|missing data|requires a buffer",
    re.IGNORECASE,
)
_UNSUPPORTED_RE = re.compile(
    r"unsupported|not supported|unimplemented|not implemented|not available|"
    r"unknown (compression|pixel|mode|format|raw ?mode|colou?r)|cannot handle|"
    r"no decoder|not configured|ghostscript|cannot find loader",
    re.IGNORECASE,
)
# Pillow's decoders report only a number; the cause, if any, is in the captured messages.
_OPAQUE_RE = re.compile(r"^(decoder|encoder) error -?\d+$|^-?\d+$|^$", re.IGNORECASE)

# A few kinds of file that are often met under an image extension, by their first bytes.
_MAGIC: Sequence[tuple[bytes, int, str]] = (
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive (or an Office document)"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"7z\xbc\xaf", 0, "a 7-Zip archive"),
    (b"Rar!", 0, "a RAR archive"),
    (b"ustar", 257, "a tar archive"),
    (b"\xd0\xcf\x11\xe0", 0, "an old Microsoft Office document"),
    (b"\x7fELF", 0, "a program (ELF)"),
    (b"ID3", 0, "an MP3 audio file"),
    (b"OggS", 0, "an Ogg media file"),
    (b"RIFF", 0, "a RIFF media file (audio or video)"),
    (b"\x1aE\xdf\xa3", 0, "a Matroska or WebM video"),
    (b"(\xb5/\xfd", 0, "a Zstandard archive"),
)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def one_sentence(text: str, limit: int = 200) -> str:
    """Library text as one clause: whitespace collapsed, sentence breaks made ';'."""
    text = " ".join(str(text).split()).strip(" .")
    text = re.sub(r"([.!?])\s+(?=\S)", "; ", text)
    text = text.replace('"', "'")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# Pillow's codec status codes (libImaging/Imaging.h), for decoders that report only one.
_CODEC_ERRORS = {
    -1: "the image data overran its buffer",
    -2: "the image data is broken",
    -3: "the image data is not what its header announced",
    -8: "the decoder was given a bad configuration",
    -9: "out of memory while decoding",
}


def _codec_error(detail: str) -> str:
    found = re.search(r"-?\d+", detail)
    code = int(found.group()) if found else 0
    text = _CODEC_ERRORS.get(code, "the decoder stopped")
    return f"{text} (decoder error {code})" if found else text


def cause_of(exc: BaseException, detail: str) -> str:
    """``TRUNCATED``, ``UNSUPPORTED`` or ``CORRUPT`` for an exception raised while decoding."""
    if isinstance(exc, EOFError) or _TRUNCATED_RE.search(detail):
        return TRUNCATED
    if isinstance(exc, NotImplementedError) or _UNSUPPORTED_RE.search(detail):
        return UNSUPPORTED
    return CORRUPT


def decode_failure(exc: BaseException, fmt: str | None, messages: Sequence[str] = ()) -> str:
    """The reason for a file whose decoding raised ``exc`` (format ``fmt`` when known)."""
    detail = one_sentence(str(exc))
    if _OPAQUE_RE.match(detail):
        detail = one_sentence(messages[-1]) if messages else _codec_error(detail)
    if not detail:
        detail = type(exc).__name__
    cause = cause_of(exc, detail)
    what = fmt or "image"
    if isinstance(exc, MemoryError):
        return f"too large: not enough memory to decode this {what} file"
    if cause == TRUNCATED:
        return f"truncated {what} file: {detail}"
    if cause == UNSUPPORTED:
        return f"unsupported {what} feature: {detail}"
    if not isinstance(exc, (OSError, SyntaxError, ValueError)):
        detail = f"{type(exc).__name__}: {detail}"  # an odd type says where it broke
    return f"corrupt {what} data: {detail}"


def unexpected(exc: BaseException) -> str:
    """The reason for an exception no stage expected (a bug, or an odd file)."""
    detail = one_sentence(str(exc)) or "no message"
    return f"could not be loaded: {type(exc).__name__}: {detail}"


def preprocess_failure(exc: BaseException, fmt: str | None) -> str:
    """The reason for a decoded image the model's preprocessing could not take."""
    detail = one_sentence(str(exc)) or "no message"
    what = f"{fmt} image" if fmt else "image"
    return (
        f"unsupported {what} shape: the model's preprocessing failed "
        f"({type(exc).__name__}: {detail})"
    )


def too_large(width: int, height: int, limit: int, fmt: str | None = None) -> str:
    """The reason for an image over the pixel limit."""
    what = f"this {fmt} image" if fmt else "this image"
    return (
        f"too large: {what} is {width}x{height}, {width * height:,} pixels, over the "
        f"limit of {limit:,} pixels (a possible decompression bomb)"
    )


def file_too_large(size: int, limit: int) -> str:
    """The reason for a file over the size read as an image (``decode.MAX_FILE_BYTES``)."""
    return (
        f"too large: this file is {size / 1e9:,.1f} GB, over the limit of {limit / 1e9:.1f} GB "
        "for an image file (something else under an image's name?)"
    )


def too_large_for_pillow(exc: BaseException, data: bytes, limit: int, fmt: str | None) -> str:
    """The reason for Pillow's own ``DecompressionBombError`` (its limit is above ours).

    Its message gives a pixel count only; the plugin, asked directly (no pixel is
    decoded), gives the size.
    """
    from PIL import Image

    if fmt in Image.OPEN:
        try:
            width, height = Image.OPEN[fmt][0](io.BytesIO(data), "").size
            return too_large(width, height, limit, fmt)
        except Exception:
            pass
    found = re.search(r"\((\d+) pixels\)", str(exc))
    what = f"this {fmt} image" if fmt else "this image"
    size = f" is {int(found.group(1)):,} pixels," if found else " is"
    return (
        f"too large: {what}{size} over the limit of {limit:,} pixels "
        "(a possible decompression bomb)"
    )


def unidentified(data: bytes, heif_installed: bool) -> str:
    """The reason for bytes no Pillow plugin would open.

    A format whose plugin recognises the first bytes but fails on the header is
    corrupt (or uses a feature Pillow lacks); anything else is not an image, and a
    few common kinds of file are named.
    """
    needs_heif = heif_needed(data, heif_installed)
    if needs_heif is not None:
        return needs_heif
    fmt = guess_format(data)
    if fmt in EXTERNAL_FORMATS:
        return (
            f"unsupported {fmt} file: reading it would start Ghostscript, which is never "
            "run on a file's behalf; convert it to PNG or JPEG to index it"
        )
    failed = _known_format_failure(data)
    if failed is not None:
        return failed
    head = data[:512]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "unsupported AVIF file: this Pillow was built without AVIF support"
        return "not an image: it looks like an MP4 or QuickTime video"
    for magic, offset, what in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return f"not an image: it looks like {what}"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
        return "not an image: it is an SVG drawing (vector images are not indexed)"
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "not an image: it looks like an HTML page"
    if _is_text(head):
        return "not an image: it is text"
    return "not an image: its content matches no image format Pillow reads"


def heif_needed(data: bytes, heif_installed: bool) -> str | None:
    """The reason for a HEIC/HEIF photo met without pillow-heif (None for anything else).

    Pillow's AVIF plugin claims these files too and then fails on them, which would
    read as a corrupt AVIF file.
    """
    if heif_installed or data[4:8] != b"ftyp" or data[8:12] not in _HEIF_BRANDS:
        return None
    return NEEDS_PILLOW_HEIF


# The reason of a HEIC/HEIF photo met without pillow-heif (under another extension:
# ``.heic`` files are not listed then): ``ingest.run`` tries it again once it is there.
NEEDS_PILLOW_HEIF = (
    "unsupported HEIF file: reading HEIC/HEIF photos needs pillow-heif "
    "(pip install 'searchengine[heif]')"
)


def guess_format(data: bytes) -> str | None:
    """The format whose Pillow plugin recognises ``data``'s first bytes, if one does."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        _factory, accept = Image.OPEN[fmt]
        try:
            if accept and accept(prefix) is True:
                return fmt
        except Exception:
            continue
    return None


def _known_format_failure(data: bytes) -> str | None:
    """Why the plugin that recognises ``data``'s first bytes could not open it, if any."""
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for fmt, (factory, accept) in list(Image.OPEN.items()):
        try:
            verdict = accept(prefix) if accept else False
        except Exception:
            continue
        if isinstance(verdict, str):  # the plugin knows the file but cannot read it
            return f"unsupported {fmt} feature: {one_sentence(verdict)}"
        if not verdict:
            continue
        try:
            factory(io.BytesIO(data), "")
        except Exception as exc:
            return decode_failure(exc, fmt)
    return None


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut off at the end
            return False
    return True
