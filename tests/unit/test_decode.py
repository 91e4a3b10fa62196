import io
import os
import subprocess
import sys

import pytest
from imagegen import half_and_half, solid
from PIL import Image

from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_bytes, decode_file


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6 means "rotate 90° clockwise to view": a 60x40 file shows as 40x60,
    # and its red top edge ends up on the right.
    path = half_and_half(tmp_path / "r.jpg", (255, 0, 0), (0, 0, 255), orientation=6)
    decoded = decode_file(str(path))
    assert decoded.image.size == (40, 60)
    assert (decoded.width, decoded.height) == (40, 60)
    right = decoded.image.getpixel((35, 30))
    left = decoded.image.getpixel((4, 30))
    assert right[0] > 200 and right[2] < 60
    assert left[2] > 200 and left[0] < 60


def test_exif_date_is_read(tmp_path):
    path = solid(tmp_path / "d.jpg", (9, 9, 9), taken="2021:07:04 12:30:00")
    decoded = decode_file(str(path))
    assert decoded.taken_at is not None
    import datetime as dt

    assert dt.datetime.fromtimestamp(decoded.taken_at) == dt.datetime(2021, 7, 4, 12, 30)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "^empty file"),
        (b"hello, I am text", "^not an image: it is text$"),
        (b"%PDF-1.4\n%\xe2\xe3", "^not an image: it looks like a PDF document$"),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "^not an image: .*HTML page$"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG drawing"),
    ],
)
def test_non_images_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_bytes(data)


def test_a_heif_header_alone_is_refused_by_pillow_heif_or_names_it(monkeypatch, request):
    """A HEIF header and nothing else: pillow-heif says what is wrong with it; where
    pillow-heif is missing, the reason says to install it."""
    import sys

    from searchengine.ingest.decode import heif_available

    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00"
    with pytest.raises(ImageError, match=r"^corrupt HEIF data: .*File size too small"):
        decode_bytes(data)
    request.addfinalizer(heif_available.cache_clear)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed
    heif_available.cache_clear()
    with pytest.raises(ImageError, match=r"^unsupported HEIF file: .*pillow-heif"):
        decode_bytes(data)


def test_truncated_jpeg_is_refused(tmp_path):
    path = solid(tmp_path / "t.jpg", (200, 10, 10), size=(300, 300))
    data = path.read_bytes()
    with pytest.raises(ImageError, match=r"^truncated JPEG file: "):
        decode_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match=r"^truncated JPEG file: "):  # also at reduced scale
        decode_bytes(data[: len(data) // 3], min_side=32)


def test_decompression_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, format="PNG")
    with pytest.raises(ImageError) as caught:
        decode_bytes(buf.getvalue(), max_pixels=1_000_000)
    assert str(caught.value) == (
        "too large: this PNG image is 4000x3000, 12,000,000 pixels, over the limit of "
        "1,000,000 pixels (a possible decompression bomb)"
    )


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature, IHDR and an empty IDAT: enough for Pillow to read the size."""
    import struct

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"") + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        # Pillow refuses this one itself (over twice its own limit): the message is ours.
        ((50_000, 50_000), "this PNG image is 50000x50000, 2,500,000,000 pixels, over the limit"),
        # Just over our limit: no rounding makes it read as "100 MP, over the 100 MP limit".
        ((10_001, 10_001), "10001x10001, 100,020,001 pixels, over the limit of 100,000,000"),
    ],
)
def test_bombs_are_refused_with_our_limit_in_the_reason(size, expected):
    with pytest.raises(ImageError) as caught:
        decode_bytes(_png_header(*size))
    reason = str(caught.value)
    assert reason.startswith("too large: ") and expected in reason
    assert "178,956,970" not in reason and "178956970" not in reason


def test_modes_become_rgb_legacy_cases():
    cases = {
        "RGBA": Image.new("RGBA", (8, 8), (255, 0, 0, 0)),  # fully transparent: white
        "CMYK": Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
        "I;16": Image.new("I;16", (8, 8), 65535),
        "P": Image.new("RGB", (8, 8), (0, 0, 255)).convert("P"),
    }
    expected = {"RGBA": (255, 255, 255), "I;16": (255, 255, 255)}
    for mode, image in cases.items():
        buf = io.BytesIO()
        image.save(buf, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
        decoded = decode_bytes(buf.getvalue())
        assert decoded.image.mode == "RGB", mode
        if mode in expected:
            assert decoded.image.getpixel((0, 0)) == expected[mode], mode


def test_gif_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    pixel = decode_bytes(buf.getvalue()).image.getpixel((5, 5))
    assert pixel[0] > 200 and pixel[1] < 50


def _photo(size=(4000, 3000), orientation=None) -> bytes:
    import numpy as np

    rng = np.random.default_rng(1)
    small = Image.fromarray(rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8))
    big = small.resize(size, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def test_reduced_decode_keeps_the_true_size_and_enough_pixels():
    data = _photo(orientation=6)
    full = decode_bytes(data)
    fast = decode_bytes(data, min_side=448)
    assert (full.width, full.height) == (fast.width, fast.height) == (3000, 4000)
    assert min(fast.image.size) >= 448 and min(fast.image.size) < 1500
    # Same picture: upright the same way, close once both are brought to one size.
    import numpy as np

    a = np.asarray(full.image.resize((150, 200), Image.Resampling.BOX), dtype=float)
    b = np.asarray(fast.image.resize((150, 200), Image.Resampling.BOX), dtype=float)
    assert np.abs(a - b).mean() < 3.0


def test_reduction_applies_to_png_too_and_never_below_min_side():
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(buf, format="PNG")
    fast = decode_bytes(buf.getvalue(), min_side=224)
    assert (fast.width, fast.height) == (2000, 1000)
    # A box filter aliases, so box-reduced images keep twice the asked-for side.
    assert fast.image.size == (1000, 500)


@pytest.mark.slow  # loads a model and decodes 7 MP photos twice
@pytest.mark.parametrize("name", ["toy", "toy-large"])
def test_reduced_decode_embeds_like_a_full_decode(name):
    """What ingest, queries and reranking decode (DCT-scaled to the model's input size)
    gives the embedding a full-size decode gives, on 7 MP photos of the toy world."""
    import numpy as np

    from searchengine.models import load_encoder
    from searchengine.toy import world as toyworld

    encoder = load_encoder(name, "cpu", "torch")
    full, fast = [], []
    for i in range(6):
        scene = toyworld.sample_scene(np.random.default_rng((77, i)))
        buf = io.BytesIO()
        toyworld.render(scene, (3072, 2304)).save(buf, format="JPEG", quality=90)
        full.append(decode_bytes(buf.getvalue()).image)
        fast.append(decode_bytes(buf.getvalue(), min_side=encoder.image_size).image)
    assert max(fast[0].size) <= 3072 // 8 * 2  # the cheap path was taken
    cosines = (encoder.encode_images(full) * encoder.encode_images(fast)).sum(axis=1)
    assert cosines.min() >= 0.9999  # measured: 0.99998 (toy), 0.999996 (toy-large)


# A fresh interpreter decodes one file and reports its peak memory above where it
# started: VmHWM, the high-water mark of this process's own memory (ru_maxrss would
# start from the parent's, which it keeps across fork and exec).
_PEAK = """
import sys
from searchengine.ingest.decode import decode_bytes
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
data = open(sys.argv[1], "rb").read()
side = None if sys.argv[2] == "none" else int(sys.argv[2])
# What a process pays once, not each photo: the optional decoders' libraries, loaded
# by the first decode (pillow-heif's libheif, libde265 and x265: ~10 MB).
from searchengine.ingest.decode import avif_available, heif_available
heif_available(), avif_available()
before = peak()
decode_bytes(data, min_side=side)
print(peak() - before)
"""


@pytest.mark.parametrize(
    ("mode", "fmt", "side"),
    [
        ("RGBA", "PNG", 64),  # premultiplied for the box reduction: a second full copy
        ("RGB", "PNG", 64),
        ("P", "PNG", 224),  # palette with transparency: RGBA, then RGB, at full size
        ("RGB", "JPEG", 64),  # DCT-scaled: an eighth of each side
        ("RGB", "JPEG", None),
        ("RGBA", "PNG", None),
        ("RGB", "WEBP", 64),
        ("I;16", "PNG", 64),  # 16-bit grey: scaled to 8 bits through numpy, full size
        ("F", "TIFF", None),  # float grey: through float64 arrays
        ("RGB", "HEIF", 64),  # pillow-heif: libheif's planes, then its RGB buffer
        ("RGB;16", "HEIF", 64),  # 10-bit: a 16-bit RGB buffer before Pillow's 8 bits
        ("RGB", "AVIF", None),
    ],
)
@pytest.mark.slow  # a fresh interpreter per case
@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak from /proc")
def test_the_memory_estimate_covers_the_measured_peak(tmp_path, mode, fmt, side):
    from searchengine.ingest.decode import avif_available, decode_memory, heif_available

    if (fmt == "HEIF" and not heif_available()) or (fmt == "AVIF" and not avif_available()):
        pytest.skip(f"no {fmt} decoder here")
    path = tmp_path / f"big.{fmt.lower()}"
    if fmt in ("HEIF", "AVIF"):  # what these decoders hold grows with the detail coded
        import numpy as np

        noise = np.random.default_rng(5).integers(0, 256, (1500, 2000, 3), np.uint16)
        if mode == "RGB;16":
            import pillow_heif

            pixels = (noise * 257).tobytes()
            pillow_heif.from_bytes(mode=mode, size=(2000, 1500), data=pixels).save(path)
        else:
            Image.fromarray(noise.astype(np.uint8)).save(path, fmt, quality=80)
    else:
        fill = 7 if mode in ("P", "I;16", "F") else (90,) * len(mode)
        image = Image.new(mode, (2000, 1500), fill)
        if mode == "P":
            image.info["transparency"] = 0
        image.save(path, fmt)
    data = path.read_bytes()
    estimate = decode_memory(data, min_side=side)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), str(side).lower()],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(out.stdout)
    assert peak <= estimate, (peak, estimate)
    assert estimate <= 2.5 * peak + 10_000_000  # an estimate, not a refusal of everything


def test_a_jpeg_costs_a_fraction_when_decoded_for_a_model(tmp_path):
    from searchengine.ingest.decode import decode_memory

    path = solid(tmp_path / "j.jpg", (10, 20, 30), (4000, 3000))
    full, for_model = (decode_memory(path.read_bytes(), min_side=s) for s in (None, 224))
    assert full > 4000 * 3000 * 4  # RGB is 4 bytes a pixel in Pillow, plus copies
    assert for_model < full / 15  # 1/8 of each side: 500 x 375, plus the decoder's state
    with pytest.raises(ImageError, match="over the limit of 100,000,000 pixels"):
        decode_memory(png_header_only(12000, 9000))


def png_header_only(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _grey16(mode: str, value: int) -> Image.Image:
    """A 16-bit greyscale image in ``mode`` (byte order included) holding ``value``."""
    import numpy as np

    dtype = ">u2" if mode == "I;16B" else "<u2"
    data = np.full((6, 8), value, dtype=dtype).tobytes()
    return Image.frombytes(mode, (8, 6), data)


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "TIFF"), ("I;16B", "TIFF"), ("I;16", "PNG")])
def test_sixteen_bit_greyscale_of_either_byte_order_is_scaled(mode, fmt):
    data = _save(_grey16(mode, 40000), fmt)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode.startswith("I;16")
    decoded = decode_bytes(data)
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((3, 3)) == (156, 156, 156)  # 40000 >> 8, not clipped


def test_big_endian_sixteen_bit_tiff_from_disk_decodes():
    """A big-endian 16-bit TIFF as cameras and scanners write it (Pillow opens it as I;16B)."""
    import struct

    width, height, value = 4, 2, 0x1234
    pixels = struct.pack(">" + "H" * width * height, *([value] * width * height))
    entries = [
        (256, 3, 1, width), (257, 3, 1, height), (258, 3, 1, 16), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1),
        (278, 3, 1, height), (279, 4, 1, len(pixels)),
    ]  # fmt: skip
    ifd = struct.pack(">H", len(entries))
    for tag, kind, count, value_ in entries:
        packed = struct.pack(">H", value_) + b"\0\0" if kind == 3 else struct.pack(">I", value_)
        ifd += struct.pack(">HHI", tag, kind, count) + packed
    data = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + b"\0\0\0\0" + pixels
    assert Image.open(io.BytesIO(data)).mode == "I;16B"
    decoded = decode_bytes(data)
    assert decoded.image.getpixel((0, 0)) == (0x12, 0x12, 0x12)


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("F", (8, 6), 0.5), "TIFF", (128, 128, 128)),  # 0..1 floats
        (Image.new("I", (8, 6), 65535), "TIFF", (255, 255, 255)),  # 32-bit holding 16-bit
        (Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (Image.new("CMYK", (8, 6), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
        (Image.new("LA", (8, 6), (0, 0)), "PNG", (255, 255, 255)),  # transparent: white
        (Image.new("LA", (8, 6), (0, 255)), "PNG", (0, 0, 0)),
        (Image.new("1", (8, 6), 1), "BMP", (255, 255, 255)),
        (Image.new("RGBA", (8, 6), (255, 0, 0, 0)), "WEBP", (255, 255, 255)),
    ],
)
def test_every_mode_becomes_rgb(image, fmt, expected):
    decoded = decode_bytes(_save(image, fmt))
    assert decoded.image.mode == "RGB"
    got = decoded.image.getpixel((3, 3))
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 3, (got, expected)


def test_palette_with_a_transparent_index_is_composited_on_white():
    image = Image.new("P", (8, 6), 1)
    image.putpalette([0, 0, 0, 250, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    decoded = decode_bytes(_save(image, "PNG", transparency=1))
    assert decoded.image.getpixel((3, 3)) == (255, 255, 255)  # index 1: transparent
    assert decoded.image.getpixel((0, 0)) == (0, 0, 0)
    gif = decode_bytes(_save(image, "GIF", transparency=1))
    assert gif.image.getpixel((3, 3)) == (255, 255, 255)


def test_multi_page_tiff_gives_its_first_page():
    pages = [Image.new("RGB", (10, 8), c) for c in [(250, 0, 0), (0, 250, 0)]]
    data = _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert decode_bytes(data).image.getpixel((5, 5)) == (250, 0, 0)


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 7, 8])
def test_tiff_orientation_gives_upright_size_and_pixels(orientation, compression):
    """Pillow reports a rotated TIFF's size upright already and turns it while loading:
    the size must not be swapped a second time, nor the pixels turned twice."""
    image = Image.new("RGB", (60, 40), (0, 0, 250))
    image.paste(Image.new("RGB", (60, 20), (250, 0, 0)), (0, 0))  # red top half
    kwargs = {"tiffinfo": {0x0112: orientation}}
    if compression:
        kwargs["compression"] = compression
    decoded = decode_bytes(_save(image, "TIFF", **kwargs))
    jpeg = _save(image, "JPEG", exif=_exif(orientation))
    reference = decode_bytes(jpeg)  # the same picture, oriented by its EXIF
    assert (decoded.width, decoded.height) == (reference.width, reference.height)
    assert decoded.image.size == reference.image.size
    assert (decoded.width > decoded.height) == (orientation < 5)
    for xy in [(2, 2), (decoded.width - 3, 2), (2, decoded.height - 3)]:
        a, b = decoded.image.getpixel(xy), reference.image.getpixel(xy)
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 40, (xy, a, b)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_png_with_a_broken_pixel_stream_is_refused_not_padded():
    """Its EXIF chunk comes after the pixels, so reading the date once decoded the pixels,
    swallowed the error and indexed a partly black image."""
    import datetime as dt

    from imagegen import DATETIME_ORIGINAL, EXIF_IFD

    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = "2020:01:02 03:04:05"
    late_exif = _chunk(b"eXIf", exif.tobytes())
    good = _save(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    idat = good.index(b"IDAT") - 4
    length = int.from_bytes(good[idat : idat + 4], "big")
    stream = bytearray(good[idat + 8 : idat + 8 + length])
    stream[length // 2 : length // 2 + 16] = b"\xff" * 16
    iend = good.index(b"IEND") - 4
    after = good[idat + 12 + length : iend]
    broken = good[:idat] + _chunk(b"IDAT", bytes(stream)) + after + late_exif + good[iend:]
    with pytest.raises(ImageError, match=r"^(corrupt|truncated) PNG (data|file): "):
        decode_bytes(broken)
    # The same file with its pixels intact is indexed, with the date from that late chunk.
    decoded = decode_bytes(good[:iend] + late_exif + good[iend:])
    assert decoded.taken_at is not None
    assert dt.datetime.fromtimestamp(decoded.taken_at) == dt.datetime(2020, 1, 2, 3, 4, 5)


def _dds(fourcc: bytes) -> bytes:
    """A DDS header with a compressed pixel format Pillow does not implement."""
    import struct

    header = struct.pack("<7I", 124, 0x1007, 16, 16, 0, 0, 0) + b"\0" * 44
    pixel_format = struct.pack("<2I", 32, 0x4) + fourcc + b"\0" * 20
    caps = struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + pixel_format + caps + b"\0" * 256


def test_a_texture_under_a_jpeg_name_fails_alone_with_its_format_named(tmp_path):
    """NotImplementedError from a plugin used to escape and stop the run."""
    path = tmp_path / "texture.jpg"
    path.write_bytes(_dds(b"ZZZZ"))
    with pytest.raises(ImageError, match=r"^unsupported DDS feature: "):
        decode_file(str(path))


def test_any_exception_a_plugin_raises_becomes_a_reason(monkeypatch):
    from PIL import PngImagePlugin

    def explode(self):
        raise RuntimeError("something odd\nin two lines")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", explode)
    with pytest.raises(ImageError) as caught:
        decode_bytes(_save(Image.new("RGB", (4, 4)), "PNG"))
    assert str(caught.value) == "corrupt PNG data: RuntimeError: something odd in two lines"


def test_library_warnings_are_kept_with_the_file_and_not_printed(capfd):
    """Pillow warns about a corrupt EXIF block; the image itself is fine."""
    data = _save(Image.new("RGB", (16, 16), (9, 99, 199)), "JPEG")
    bad_exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x0f\x00\x02\x00\x00\x00\x40"
    segment = b"\xff\xe1" + (len(bad_exif) + 2).to_bytes(2, "big") + bad_exif
    with_exif = data[:2] + segment + data[2:]
    decoded = decode_bytes(with_exif)  # under pytest's filterwarnings=error, too
    assert decoded.image.getpixel((8, 8))[2] > 150
    assert any("EXIF" in w for w in decoded.warnings), decoded.warnings
    out, err = capfd.readouterr()
    assert out == err == ""


def test_warnings_stay_with_their_own_file_across_threads(capfd):
    from concurrent.futures import ThreadPoolExecutor

    from searchengine.ingest.capture import captured

    def work(i: int) -> list[str]:
        import warnings as w

        with captured() as messages:
            for _ in range(50):
                w.warn_explicit(f"file {i}", UserWarning, "x.py", 1, module="PIL.Fake")
        return messages

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(16)))
    assert results == [[f"file {i}"] for i in range(16)]
    assert capfd.readouterr().err == ""


def test_libtiff_errors_name_the_cause_instead_of_a_number(capfd):
    """libtiff prints why it failed to stderr; the reason used to be 'decoder error -2'."""
    good = _save(Image.effect_noise((64, 64), 40).convert("L"), "TIFF", compression="tiff_lzw")
    data = bytearray(good)
    data[8 : len(good) // 2] = bytes(len(good) // 2 - 8)  # zero the LZW stream
    with pytest.raises(ImageError, match=r"^corrupt TIFF data: ") as caught:
        decode_bytes(bytes(data))
    assert "decoder error" not in str(caught.value)
    assert "tempfile" not in str(caught.value)  # Pillow's name for the file, not the user's
    assert capfd.readouterr().err == ""


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)
GHOSTSCRIPT_PROBE = """
import sys
from PIL import Image
import io
from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_bytes
data = open(sys.argv[1], "rb").read()
if sys.argv[2] == "pillow":
    Image.open(io.BytesIO(data)).load()
else:
    try:
        decode_bytes(data)
    except ImageError as exc:
        print(exc)
"""


@pytest.mark.parametrize("reader", ["pillow", "ours"])
def test_an_eps_file_under_a_photo_name_never_starts_ghostscript(tmp_path, reader):
    # Pillow hands EPS to Ghostscript when one is installed: a `gs` on PATH that notes
    # each start shows whether a reader would run it (Pillow itself does: the control).
    marker = tmp_path / "gs-ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f'#!/bin/sh\necho "$@" >> {marker}\n')
    gs.chmod(0o755)
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(EPS)
    env = {**os.environ, "PATH": f"{gs.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [sys.executable, "-c", GHOSTSCRIPT_PROBE, str(photo), reader],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if reader == "pillow":
        assert marker.exists()  # the control: Pillow would have run it
        return
    assert out.returncode == 0, out.stderr
    assert not marker.exists()
    assert out.stdout.startswith("unsupported EPS file") and "Ghostscript" in out.stdout
