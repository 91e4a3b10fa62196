"""A corpus of broken and hostile files, generated on the fly, with what each should give.

It covers the classes the third-party corpora (``thirdparty.py``) lack or cannot ship:
special files (FIFOs, device links, sockets, link loops), unreadable files, odd names,
crafted bombs, files under the wrong extension, every Pillow mode the indexer must
convert, EXIF-rotated JPEGs and TIFFs (with their upright size), and broken files of
the common photo formats.

``make_hostile_corpus(folder)`` returns ``{path: Expect}``. ``Expect.verdict`` is
``"ok"`` for files that must be indexed, or a regular expression the recorded failure
reason must match; ``Expect.size`` is the upright (width, height) an indexed file
must be recorded with, where the case is about size; ``Expect.group`` names its class
for the verdict table in ``docs/reliability.md``. Paths are ``str`` as ``os.scandir``
yields them.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

OK = "ok"


class Expect(NamedTuple):
    verdict: str  # "ok" or a pattern the failure reason must match
    group: str  # the class of file, for the verdict table
    size: tuple[int, int] | None = None  # upright (width, height) when it matters
    oracle: bool = True  # a plain file Pillow can be asked about (not special, readable)
    unread: bool = False  # not read (a permission): no verdict, read again by the next run


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _photo(size: tuple[int, int] = (300, 200), seed: int = 0) -> Image.Image:
    """Smooth random colour blobs: compresses like a photo, differs per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims another size."""
    data = bytearray(_save(_photo((16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _broken_idat_png() -> bytes:
    """A PNG whose pixel stream is damaged midway, with its EXIF chunk after the pixels."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    good = _save(_photo((64, 64), 3), "PNG")
    idat = good.index(b"IDAT") - 4
    length = int.from_bytes(good[idat : idat + 4], "big")
    stream = bytearray(good[idat + 8 : idat + 8 + length])
    stream[length // 2 : length // 2 + 16] = b"\xff" * 16
    iend = good.index(b"IEND") - 4
    after = good[idat + 12 + length : iend]
    late = _chunk(b"eXIf", exif.tobytes())
    return good[:idat] + _chunk(b"IDAT", bytes(stream)) + after + late + good[iend:]


def _bad_crc_png() -> bytes:
    data = bytearray(_save(_photo((32, 32), 4), "PNG"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    return bytes(data)


def _dds(fourcc: bytes) -> bytes:
    """A DDS texture header with a compressed pixel format Pillow does not implement."""
    header = struct.pack("<7I", 124, 0x1007, 16, 16, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I", 32, 0x4) + fourcc + b"\0" * 20
    caps = struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + pixel_format + caps + b"\0" * 256


def _grey16(mode: str, value: int) -> Image.Image:
    dtype = ">u2" if mode == "I;16B" else "<u2"
    return Image.frombytes(mode, (40, 30), np.full((30, 40), value, dtype=dtype).tobytes())


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
    return _save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)


def _rotated(orientation: int, fmt: str, **kwargs: object) -> bytes:
    """A 60x40 picture (red top half) stored sideways, with EXIF saying how to turn it."""
    image = Image.new("RGB", (60, 40), (0, 0, 240))
    image.paste(Image.new("RGB", (60, 20), (240, 0, 0)), (0, 0))
    if fmt == "TIFF":
        return _save(image, fmt, tiffinfo={0x0112: orientation}, **kwargs)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(image, fmt, exif=exif.tobytes(), **kwargs)


def _corrupt_exif_jpeg() -> bytes:
    data = _save(_photo((48, 32), 5), "JPEG")
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x0f\x00\x02\x00\x00\x00\x40"
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return data[:2] + segment + data[2:]


def _palette_transparent() -> Image.Image:
    image = Image.new("P", (40, 30), 1)
    image.putpalette([0, 0, 0, 250, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 20, 30))
    return image


def make_hostile_corpus(folder: Path) -> dict[str, Expect]:
    """Write the corpus under ``folder``; returns path -> what indexing it must give."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Expect] = {}
    seed = iter(range(100, 10_000))

    def put(name: str, data: bytes, verdict: str, group: str, **kw: object) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[str(path)] = Expect(verdict, group, **kw)  # type: ignore[arg-type]
        return path

    def photo(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
        return _save(_photo(size, next(seed)), fmt)

    # Truncated and corrupt files of the common photo formats.
    for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("TIFF", "tif")]:
        full = photo(fmt, (300, 200))
        put(
            f"broken/truncated.{ext}",
            full[: len(full) // 2],
            rf"^truncated {fmt} file: ",
            "truncated",
        )
    full = _save(_photo((300, 200), 9), "WEBP")
    put("broken/truncated.webp", full[: len(full) // 2], r"^(truncated|corrupt) WEBP ", "truncated")
    put("broken/broken-pixels.png", _broken_idat_png(), r"^(corrupt|truncated) PNG ", "corrupt")
    put("broken/bad-crc.png", _bad_crc_png(), r"^corrupt PNG data: ", "corrupt")
    put("broken/texture.jpg", _dds(b"ZZZZ"), r"^unsupported DDS feature: ", "unsupported")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    put("broken/phone.heic.jpg", heic, r"HEIF", "unsupported")

    # Camera RAW (read with rawpy): DNGs as cameras write them (``rawfiles``), good and
    # broken, and something else under a RAW name. Pillow is no oracle for these.
    from rawfiles import write_dng

    scene = np.asarray(_photo((300, 200), next(seed)))
    dng = folder / "raw" / "camera.dng"
    dng.parent.mkdir(parents=True, exist_ok=True)
    write_dng(dng, scene, preview=Image.fromarray(scene))
    expected[str(dng)] = Expect(OK, "camera RAW", size=(300, 200), oracle=False)
    turned = write_dng(folder / "raw" / "turned-sensor-only.dng", scene, orientation=6)
    expected[str(turned)] = Expect(OK, "camera RAW", size=(200, 300), oracle=False)
    data = dng.read_bytes()
    # The sensor data comes last, as cameras write it: a cut in the preview loses both;
    # a cut in the sensor data leaves the preview, and the photo is indexed from it, with
    # a warning that the file is cut short (docs/reliability.md, "Real cameras' files").
    in_preview = data.index(b"\xff\xd8\xff") + 1000
    put("raw/cut.cr2", data[:in_preview], r"^truncated or corrupt RAW file", "camera RAW",
        oracle=False)  # fmt: skip
    cut = folder / "raw" / "cut-in-sensor-data.cr2"
    cut.write_bytes(data[: len(data) - 4000])
    expected[str(cut)] = Expect(OK, "camera RAW", size=(300, 200), oracle=False)
    put("raw/notes.nef", b"not a raw file\n" * 40, r"^unsupported or corrupt RAW file",
        "camera RAW", oracle=False)  # fmt: skip

    # Bombs: refused from the header, before any pixel is decoded, with our limit.
    put(
        "large/bomb.png",
        png_header(40000, 40000),
        r"^too large: .*1,600,000,000 pixels, over the limit of 100,000,000 pixels",
        "too large",
    )
    put(
        "large/just-over.png",
        png_header(10001, 10001),
        r"10001x10001, 100,020,001 pixels, over the limit of 100,000,000",
        "too large",
    )
    put(
        "large/huge.png",
        _save(Image.new("1", (12000, 9000)), "PNG"),
        r"^too large: this PNG image is 12000x9000, 108,000,000 pixels",
        "too large",
    )
    put(
        "large/huge.jpg",
        _jpeg_claiming(60000, 50000),
        r"^too large: this JPEG image is 60000x50000",
        "too large",
    )
    put(
        "large/thin.png",
        _save(Image.new("RGB", (6000, 2), (9, 9, 9)), "PNG"),
        OK,
        "plain",
        size=(6000, 2),
    )

    # Not images at all.
    put("not-images/zero.jpg", b"", r"^empty file \(0 bytes\)$", "not an image")
    put(
        "not-images/text.png",
        b"just some notes, not a picture\n" * 20,
        r"^not an image: it is text$",
        "not an image",
    )
    put(
        "not-images/page.webp",
        b"<!DOCTYPE html><html><body>hello</body></html>",
        r"^not an image: it looks like an HTML page$",
        "not an image",
    )
    put(
        "not-images/invoice.jpg",
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
        r"PDF document$",
        "not an image",
    )
    put("not-images/archive.png", b"PK\x03\x04" + b"\x00" * 60, r"ZIP archive", "not an image")
    put(
        "not-images/drawing.png",
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        r"SVG drawing",
        "not an image",
    )
    put(
        "not-images/nuls.jpg",
        bytes(4096),
        r"^not an image: its content matches no image",
        "not an image",
    )

    # Right content, wrong extension: content decides.
    put("wrong-extension/png.jpg", photo("PNG"), OK, "wrong extension")
    put("wrong-extension/jpeg.png", photo("JPEG"), OK, "wrong extension")
    put("wrong-extension/gif.tiff", photo("GIF"), OK, "wrong extension")
    put("wrong-extension/webp.bmp", photo("WEBP"), OK, "wrong extension")
    put("wrong-extension/bmp.webp", photo("BMP"), OK, "wrong extension")

    # Every mode the indexer has to bring to 8-bit RGB.
    modes = [
        ("sixteen-le.tif", _save(_grey16("I;16", 40000), "TIFF")),
        ("sixteen-be.tif", _save(_grey16("I;16B", 40000), "TIFF")),
        ("sixteen.png", _save(_grey16("I;16", 40000), "PNG")),
        ("float.tif", _save(Image.new("F", (40, 30), 0.25), "TIFF")),
        ("int32.tif", _save(Image.new("I", (40, 30), 30000), "TIFF")),
        ("cmyk.jpg", _save(Image.new("CMYK", (40, 30), (0, 200, 200, 0)), "JPEG")),
        ("cmyk.tif", _save(Image.new("CMYK", (40, 30), (200, 0, 200, 0)), "TIFF")),
        ("grey-alpha.png", _save(Image.new("LA", (40, 30), (90, 128)), "PNG")),
        ("rgba.png", _save(Image.new("RGBA", (40, 30), (0, 0, 250, 128)), "PNG")),
        ("rgba.webp", _save(Image.new("RGBA", (40, 30), (0, 250, 0, 64)), "WEBP")),
        ("palette.png", _save(_photo((40, 30), 7).convert("P"), "PNG")),
        ("palette-transparent.png", _save(_palette_transparent(), "PNG", transparency=1)),
        ("palette-transparent.gif", _save(_palette_transparent(), "GIF", transparency=1)),
        ("bilevel.bmp", _save(Image.new("1", (40, 30), 1), "BMP")),
        ("lab.tif", _save(Image.new("LAB", (40, 30), (50, 10, 10)), "TIFF")),
    ]
    for name, data in modes:
        put(f"modes/{name}", data, OK, "modes")
    for fmt, name in [("GIF", "animated.gif"), ("WEBP", "animated.webp"), ("PNG", "animated.png")]:
        put(f"frames/{name}", _animated(fmt), OK, "multi-frame")
    pages = [Image.new("RGB", (30, 20), c) for c in [(250, 0, 0), (0, 250, 0)]]
    put(
        "frames/pages.tif",
        _save(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
        OK,
        "multi-frame",
    )

    # EXIF orientation: recorded upright, once (Pillow turns TIFFs itself).
    for o in range(1, 9):
        upright = (40, 60) if o >= 5 else (60, 40)
        put(f"rotated/jpeg-{o}.jpg", _rotated(o, "JPEG"), OK, "EXIF-rotated", size=upright)
        if o in (3, 6, 8):
            put(f"rotated/tiff-{o}.tif", _rotated(o, "TIFF"), OK, "EXIF-rotated", size=upright)
            lzw = _rotated(o, "TIFF", compression="tiff_lzw")
            put(f"rotated/tiff-lzw-{o}.tif", lzw, OK, "EXIF-rotated", size=upright)
    put("rotated/corrupt-exif.jpg", _corrupt_exif_jpeg(), OK, "EXIF-rotated")
    put("rotated/exif-after-pixels.png", _exif_after_pixels(), OK, "EXIF-rotated")

    # Special files: never opened (reading a FIFO or a device would block or never end).
    specials = folder / "special"
    specials.mkdir()

    def special(name: str, verdict: str) -> None:
        expected[str(specials / name)] = Expect(verdict, "special files", oracle=False)

    os.mkfifo(specials / "pipe.jpg")
    special("pipe.jpg", r"^not a regular file \(a FIFO\)$")
    os.symlink("/dev/zero", specials / "endless.jpg")
    special("endless.jpg", r"^not a regular file \(a character device\)$")
    if _make_socket(specials / "s.png"):
        special("s.png", r"^not a regular file \(a socket\)$")
    os.symlink(specials / "nowhere.jpg", specials / "dangling.jpg")
    special("dangling.jpg", r"^broken symbolic link$")
    os.symlink(specials / "loop-b.png", specials / "loop-a.png")
    os.symlink(specials / "loop-a.png", specials / "loop-b.png")
    special("loop-a.png", r"^symbolic link loop$")
    special("loop-b.png", r"^symbolic link loop$")
    os.symlink(folder, specials / "cycle")  # a directory loop: not followed, not a file
    locked = put(
        "special/locked.jpg",
        photo(),
        r"^cannot read: Permission denied$",
        "unreadable",
        oracle=False,
        unread=True,
    )
    os.chmod(locked, 0)

    # Odd names: every one indexed, found at its exact path.
    odd = [
        "new\nline.jpg",
        "carriage\rreturn.png",
        "tab\there.jpg",
        "escape-\x1b[31mred.jpg",
        "-leading-dash.jpg",
        " spaced out .png",
        "glob*?[x].jpg",
        "back\\slash.png",
        ".hidden.jpg",
        os.fsdecode(b"caf\xe9-\xff.jpg"),  # not UTF-8
        "\u5199\u771f-\U0001f4f7-\u0444\u043e\u0442\u043e.png",
        "x" * 250 + ".png",
        "deep/" * 40 + "nested.jpg",
    ]
    for name in odd:
        put(f"names/{name}", photo("PNG" if name.endswith(".png") else "JPEG"), OK, "odd names")
    put("plain/normal.jpg", photo(), OK, "plain")
    put("plain/one-pixel.png", _save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), OK, "plain")
    return expected


def _exif_after_pixels() -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2020:01:02 03:04:05"
    good = _save(_photo((40, 30), 8), "PNG")
    iend = good.index(b"IEND") - 4
    return good[:iend] + _chunk(b"eXIf", exif.tobytes()) + good[iend:]


def _make_socket(path: Path) -> bool:
    """A Unix socket file (False where the path is too long for one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True
