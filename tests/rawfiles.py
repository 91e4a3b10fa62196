"""Camera RAW files for the tests: DNGs written from the format's public definition.

No camera's RAW file reaches this machine (no sample ships on a package registry),
so the tests write DNG, the one documented RAW format, and read it with the real
LibRaw (rawpy) as a camera's file would be read. The layout follows Adobe's DNG
specification 1.4 (chapter 3: a TIFF 6.0 file whose main IFD carries ``DNGVersion``,
``UniqueCameraModel`` and a ``ColorMatrix1``; the raw image as a ``CFA`` IFD, 16-bit,
``CFARepeatPatternDim`` 2x2 and ``CFAPattern`` RGGB) and what cameras and Adobe's
converter write: IFD 0 is the camera's rendering (``NewSubFileType`` 1, a baseline
JPEG, ``Compression`` 7) and the raw image is in a ``SubIFDs`` entry. Without a
preview the raw image is IFD 0, as ``pidng`` (a DNG writer on PyPI) writes it; the
tests check that both files read the same.

``compress=True`` stores the raw image as most cameras' DNGs do: tiles, each a lossless
JPEG (``Compression`` 7, DNG 1.4 section 6; ITU T.81 Annex H, process 14: one 16-bit
component, predictor 1, one Huffman table). ``lossless_jpeg`` encodes one tile.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

WHITE = 4095  # 12-bit sensor data in 16-bit samples
BLACK = 256  # what the sensor reads in the dark: no camera's black is 0 before subtraction
# TIFF field types
SHORT, LONG, RATIONAL, SRATIONAL, BYTE, ASCII = 3, 4, 5, 10, 1, 2


# The camera of these files sees linear sRGB: its ColorMatrix1 (XYZ to camera, D65) is
# the sRGB matrix of IEC 61966-2-1, so LibRaw's camera -> XYZ -> sRGB returns the
# picture's own colours.
XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))


def mosaic(rgb: np.ndarray) -> np.ndarray:
    """An sRGB picture (8 bits) as an RGGB Bayer mosaic of linear 12-bit values, black
    at ``BLACK``."""
    h, w, _ = rgb.shape
    v = rgb.astype(np.float64) / 255
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    values = np.round(BLACK + linear * (WHITE - BLACK)).astype(np.uint32)
    out = np.zeros((h, w), np.uint16)
    out[0::2, 0::2] = values[0::2, 0::2, 0]
    out[0::2, 1::2] = values[0::2, 1::2, 1]
    out[1::2, 0::2] = values[1::2, 0::2, 1]
    out[1::2, 1::2] = values[1::2, 1::2, 2]
    return out


def write_dng(
    path: Path,
    rgb: np.ndarray,
    *,
    preview: Image.Image | None = None,
    orientation: int = 1,
    taken: str | None = None,
    compress: bool = False,
    tile: int = 32,
) -> Path:
    """Write ``rgb`` (H x W x 3, uint8, even sides) as a DNG at ``path``.

    ``preview``: the camera's rendering, stored as a baseline JPEG in IFD 0.
    ``orientation``: the TIFF orientation of IFD 0 (1, 3, 6 or 8).
    ``taken``: EXIF ``DateTimeOriginal`` ("YYYY:MM:DD HH:MM:SS") in an EXIF IFD.
    ``compress``: the raw image as ``tile`` x ``tile`` lossless JPEG tiles, in raster
    order after every other blob (as cameras write it: the sensor data last).
    """
    h, w, _ = rgb.shape
    sensor = mosaic(rgb)
    blobs: dict[str, bytes] = {}
    camera = [
        (50706, BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50707, BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        (50708, ASCII, b"Test Bayer\0"),  # UniqueCameraModel
        (50721, SRATIONAL, [(round(x * 10000), 10000) for row in XYZ_TO_SRGB for x in row]),
        (50778, SHORT, [21]),  # CalibrationIlluminant1: D65
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral
        (274, SHORT, [orientation]),
        (271, ASCII, b"Test\0"),  # Make
        (272, ASCII, b"Bayer\0"),  # Model
    ]
    raw_ifd = [
        (254, LONG, [0]),  # NewSubFileType: the main image
        (256, LONG, [w]),
        (257, LONG, [h]),
        (258, SHORT, [16]),
        (262, SHORT, [32803]),  # PhotometricInterpretation: CFA
        (277, SHORT, [1]),
        (33421, SHORT, [2, 2]),  # CFARepeatPatternDim
        (33422, BYTE, [0, 1, 1, 2]),  # CFAPattern: RGGB
        (50714, LONG, [BLACK]),  # BlackLevel
        (50717, LONG, [WHITE]),  # WhiteLevel
    ]
    sensor_blobs: dict[str, bytes] = {}
    if compress:
        padded = np.pad(sensor, ((0, -h % tile), (0, -w % tile)), mode="edge")
        for y in range(0, padded.shape[0], tile):
            for x in range(0, padded.shape[1], tile):
                sensor_blobs[f"tile{len(sensor_blobs)}"] = lossless_jpeg(
                    padded[y : y + tile, x : x + tile]
                )
        raw_ifd += [
            (259, SHORT, [7]),  # lossless JPEG
            (322, LONG, [tile]),  # TileWidth
            (323, LONG, [tile]),  # TileLength
            (324, LONG, list(sensor_blobs)),  # TileOffsets (filled in below)
            (325, LONG, [len(b) for b in sensor_blobs.values()]),  # TileByteCounts
        ]
    else:
        sensor_blobs["cfa"] = sensor.astype("<u2").tobytes()
        raw_ifd += [
            (259, SHORT, [1]),  # uncompressed
            (273, LONG, ["cfa"]),  # StripOffsets (filled in below)
            (278, LONG, [h]),
            (279, LONG, [len(sensor_blobs["cfa"])]),
        ]
    exif = [(36867, ASCII, taken.encode() + b"\0")] if taken else None
    if preview is None:
        ifd0 = raw_ifd + camera
        subifds: list[list] = []
    else:
        jpeg = io.BytesIO()
        preview.convert("RGB").save(jpeg, "JPEG", quality=92)
        blobs["jpeg"] = jpeg.getvalue()
        pw, ph = preview.size
        ifd0 = [
            (254, LONG, [1]),  # NewSubFileType: a reduced-resolution image
            (256, LONG, [pw]),
            (257, LONG, [ph]),
            (258, SHORT, [8, 8, 8]),
            (259, SHORT, [7]),  # JPEG
            (262, SHORT, [6]),  # YCbCr
            (273, LONG, ["jpeg"]),
            (277, SHORT, [3]),
            (278, LONG, [ph]),
            (279, LONG, [len(blobs["jpeg"])]),
            (330, LONG, ["subifd0"]),  # SubIFDs
            *camera,
        ]
        subifds = [raw_ifd]
    if exif is not None:
        ifd0 = [*ifd0, (34665, LONG, ["exif"])]
    path.write_bytes(_tiff(ifd0, subifds, exif, {**blobs, **sensor_blobs}))
    return path


def lossless_jpeg(samples: np.ndarray) -> bytes:
    """One component of 16-bit samples (H x W) as a lossless JPEG (T.81 Annex H).

    Predictor 1 (the sample to the left; the first column from the one above, the very
    first sample from 2^15), each difference coded as its magnitude category (H.1.2.2,
    table H.2) in one Huffman table that gives each of the 17 categories a 5-bit code,
    then the difference's own bits; a 0xFF byte in the coded data is followed by 0x00.
    """
    h, w = samples.shape
    x = samples.astype(np.int64)
    predicted = np.empty_like(x)
    predicted[:, 1:] = x[:, :-1]
    predicted[1:, 0] = x[:-1, 0]
    predicted[0, 0] = 1 << 15
    diffs = ((x - predicted + (1 << 15)) % (1 << 16) - (1 << 15)).ravel()  # modulo 2^16
    bits = []
    for d in diffs.tolist():
        size = abs(d).bit_length()  # 0..16; 16 only for -32768, with no extra bits
        bits.append(format(size, "05b"))
        if 0 < size < 16:
            bits.append(format(d if d > 0 else d + (1 << size) - 1, f"0{size}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)  # padded with 1-bits (F.1.2.3)
    coded = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    coded = coded.replace(b"\xff", b"\xff\x00")
    table = bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))  # 17 codes of 5 bits
    return b"".join([
        b"\xff\xd8",  # SOI
        b"\xff\xc4" + struct.pack(">HB", 3 + len(table), 0x00) + table,  # DHT, table 0
        b"\xff\xc3" + struct.pack(">HBHHBBBB", 11, 16, h, w, 1, 1, 0x11, 0),  # SOF3
        b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, 1, 0, 0),  # SOS, predictor 1
        coded,
        b"\xff\xd9",  # EOI
    ])  # fmt: skip


def _tiff(ifd0: list, subifds: list[list], exif: list | None, blobs: dict[str, bytes]) -> bytes:
    """Lay out IFD 0, its SubIFDs and EXIF IFD, then the data blobs; resolve the named
    offsets ("cfa", "jpeg", "subifd0", "exif") once every position is known."""
    ifds = [("ifd0", ifd0), *((f"subifd{i}", s) for i, s in enumerate(subifds))]
    if exif is not None:
        ifds.append(("exif", exif))
    positions: dict[str, int] = {}
    offset = 8
    for name, entries in ifds:  # each IFD, then its values that do not fit in 4 bytes
        positions[name] = offset
        offset += 2 + 12 * len(entries) + 4
        offset += sum(_padded(len(_values(t, v, {}))) for _, t, v in entries
                      if len(_values(t, v, {})) > 4)  # fmt: skip
    for name, blob in blobs.items():
        positions[name] = offset
        offset += _padded(len(blob))
    out = bytearray(b"II*\0" + struct.pack("<I", 8))
    for _name, entries in ifds:
        start = len(out)
        extra_at = start + 2 + 12 * len(entries) + 4
        body, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag, kind, value in sorted(entries, key=lambda e: e[0]):
            data = _values(kind, value, positions)
            count = len(value)
            if len(data) <= 4:
                body += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0")
            else:
                body += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
                extra += data.ljust(_padded(len(data)), b"\0")
        body += struct.pack("<I", 0)  # no next IFD
        out += body + extra
    for blob in blobs.values():
        out += blob.ljust(_padded(len(blob)), b"\0")
    return bytes(out)


def _values(kind: int, value: object, positions: dict[str, int]) -> bytes:
    if kind == ASCII:
        assert isinstance(value, bytes)
        return value
    items = [positions.get(v, 0) if isinstance(v, str) else v for v in value]  # type: ignore[attr-defined]
    if kind == BYTE:
        return bytes(items)
    if kind == SHORT:
        return struct.pack(f"<{len(items)}H", *items)
    if kind == LONG:
        return struct.pack(f"<{len(items)}I", *items)
    pairs = [n for pair in items for n in pair]
    return struct.pack(f"<{len(pairs)}{'i' if kind == SRATIONAL else 'I'}", *pairs)


def _padded(n: int) -> int:
    return (n + 3) & ~3
