"""Camera RAW photos read with the real LibRaw (rawpy), from DNGs written to the
format's definition (``tests/rawfiles.py``), good ones and broken ones."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from rawfiles import BLACK, WHITE, XYZ_TO_SRGB, mosaic, write_dng

from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_bytes, decode_file, decode_memory
from searchengine.ingest.scan import BASE_EXTENSIONS, missing_codecs_note, scan

RED, GREEN = (220, 20, 20), (20, 220, 20)


def picture(h: int = 64, w: int = 96) -> np.ndarray:
    """A red field with a green box in its top-left quarter."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[...] = RED
    rgb[4 : h // 2 - 4, 4 : w // 2 - 4] = GREEN
    return rgb


def colour(image: Image.Image, x: float, y: float) -> str:
    """ "red" or "green": the stronger channel at a fraction (x, y) of the picture."""
    r, g, _ = image.convert("RGB").getpixel((int(x * image.width), int(y * image.height)))
    return "red" if r > g else "green"


def test_the_sensor_data_is_demosaiced_at_half_size_when_there_is_no_preview(tmp_path):
    path = write_dng(tmp_path / "a.dng", picture())
    decoded = decode_file(str(path), min_side=16)
    assert (decoded.format, decoded.width, decoded.height) == ("RAW", 96, 64)
    assert decoded.image.size == (48, 32)  # half size: LibRaw's cheap demosaic
    assert colour(decoded.image, 0.25, 0.25) == "green"
    assert colour(decoded.image, 0.75, 0.75) == "red"
    full = decode_file(str(path))  # no min_side: every sensor pixel
    assert full.image.size == (96, 64)


def test_a_dng_as_pidng_writes_it_reads_the_same(tmp_path):
    """The same sensor data through another public DNG writer."""
    import pidng.core as pidng
    from pidng.defs import CFAPattern, DNGVersion, PhotometricInterpretation

    rgb = picture()
    tags = pidng.DNGTags()
    for tag, value in [
        (pidng.Tag.ImageWidth, 96), (pidng.Tag.ImageLength, 64), (pidng.Tag.TileWidth, 96),
        (pidng.Tag.TileLength, 64), (pidng.Tag.SamplesPerPixel, 1),
        (pidng.Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array),
        (pidng.Tag.BitsPerSample, 16), (pidng.Tag.CFARepeatPatternDim, [2, 2]),
        (pidng.Tag.CFAPattern, CFAPattern.RGGB), (pidng.Tag.BlackLevel, BLACK),
        (pidng.Tag.WhiteLevel, WHITE), (pidng.Tag.CalibrationIlluminant1, 21),
        (pidng.Tag.ColorMatrix1, [[round(x * 10000), 10000] for row in XYZ_TO_SRGB for x in row]),
        (pidng.Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]]),
        (pidng.Tag.DNGVersion, DNGVersion.V1_4), (pidng.Tag.Make, "Test"),
        (pidng.Tag.Model, "Bayer"),
    ]:  # fmt: skip
        tags.set(tag, value)
    writer = pidng.RAW2DNG()
    writer.options(tags, path=str(tmp_path), compress=False)
    theirs = writer.convert(mosaic(rgb), filename="theirs")
    ours = write_dng(tmp_path / "ours.dng", rgb)
    a, b = (np.asarray(decode_file(str(p), min_side=16).image) for p in (theirs, ours))
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_the_cameras_preview_is_used_when_it_is_large_enough(tmp_path):
    rgb = picture()
    # The preview says "all red": which picture came back tells which was read.
    preview = Image.new("RGB", (96, 64), RED)
    path = write_dng(tmp_path / "p.dng", rgb, preview=preview)
    decoded = decode_file(str(path), min_side=32)
    assert colour(decoded.image, 0.25, 0.25) == "red"  # the preview
    assert (decoded.width, decoded.height) == (96, 64)
    # Smaller than the model's input: the sensor data instead.
    small = write_dng(tmp_path / "s.dng", rgb, preview=preview.resize((24, 16)))
    assert colour(decode_file(str(small), min_side=32).image, 0.25, 0.25) == "green"


@pytest.mark.parametrize("with_preview", [False, True])
def test_a_turned_photo_comes_back_upright(tmp_path, with_preview):
    rgb = picture()
    preview = Image.fromarray(rgb) if with_preview else None
    path = write_dng(tmp_path / "r.dng", rgb, preview=preview, orientation=6)
    decoded = decode_file(str(path), min_side=16)
    assert (decoded.width, decoded.height) == (64, 96)  # turned 90° clockwise
    assert decoded.image.width < decoded.image.height
    # The green top-left quarter is now the top-right one.
    assert colour(decoded.image, 0.75, 0.25) == "green"
    assert colour(decoded.image, 0.25, 0.25) == "red"


def test_the_date_taken_is_read_from_the_exif(tmp_path):
    path = write_dng(tmp_path / "d.dng", picture(), taken="2021:06:05 10:20:30")
    decoded = decode_file(str(path), min_side=16)
    assert decoded.taken_at is not None
    assert decoded.taken_at == pytest.approx(datetime(2021, 6, 5, 10, 20, 30).timestamp())
    assert decode_file(str(write_dng(tmp_path / "n.dng", picture())), min_side=16).taken_at is None


def test_broken_raw_files_fail_with_one_sentence(tmp_path, capfd):
    good = write_dng(tmp_path / "g.dng", picture()).read_bytes()
    cases = {
        "cut.dng": good[: len(good) // 2],
        "text.nef": b"this is not a raw file at all\n" * 20,
        "empty.cr2": b"",
        "jpeg.arw": (tmp_path / "g.dng").read_bytes()[:8] + b"\xff\xd8\xff" * 100,
    }
    reasons = {}
    for name, data in cases.items():
        with pytest.raises(ImageError) as caught:
            decode_bytes(data, min_side=16, name=name)
        reasons[name] = str(caught.value)
    assert reasons["cut.dng"] == "truncated or corrupt RAW file: its image data cannot be read"
    import rawpy

    version = ".".join(map(str, rawpy.libraw_version))
    assert reasons["text.nef"] == (
        f"unsupported or corrupt RAW file: LibRaw {version} finds no image it reads in it "
        "(a damaged file, or a camera newer than this LibRaw: a newer rawpy may read it)"
    )
    assert reasons["empty.cr2"] == "empty file (0 bytes)"
    assert reasons["jpeg.arw"].startswith(
        ("unsupported or corrupt RAW", "truncated or corrupt RAW")
    )
    # LibRaw writes what it meets in a cut file ("unknown file: Unexpected end of file")
    # to stderr itself: it does not reach the terminal.
    assert capfd.readouterr().err == ""


def gradient(h: int = 192, w: int = 256) -> np.ndarray:
    """A picture with a different colour at every pixel: one decoded in the wrong
    place, or from another photo, shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def test_a_dng_of_lossless_jpeg_tiles_reads_as_the_uncompressed_one(tmp_path):
    """The compressed layout most cameras' DNGs use (``rawfiles.lossless_jpeg``)."""
    plain = write_dng(tmp_path / "plain.dng", gradient())
    tiled = write_dng(tmp_path / "tiled.dng", gradient(), compress=True, tile=64)
    assert tiled.stat().st_size < plain.stat().st_size
    a, b = (np.asarray(decode_file(str(p)).image) for p in (plain, tiled))
    assert a.shape == (192, 256, 3) and np.array_equal(a, b)


def damaged(good: bytes, keep: float) -> bytes:
    """The file with everything after ``keep`` of it overwritten by 0 bytes, its length
    kept: a copy that stopped on a disk that had set the file's size aside, or a card
    whose last blocks were lost."""
    cut = int(len(good) * keep)
    return good[:cut] + bytes(len(good) - cut)


@pytest.mark.parametrize(
    ("compress", "keep"),
    [(False, 0.95), (False, 0.5), (True, 0.8), (True, 0.5)],
    ids=["strip-95%", "strip-50%", "tiles-80%", "tiles-50%"],
)
def test_a_file_whose_sensor_data_lacks_its_end_is_refused(tmp_path, compress, keep):
    """LibRaw reads such a file without a word: a strip of zeros is sensor data to it,
    and a tile that is not lossless JPEG it skips. The photo would be indexed with a
    black bottom (or worse: see the next test)."""
    good = write_dng(tmp_path / "g.dng", gradient(), compress=compress, tile=64).read_bytes()
    for min_side in (16, None):  # as ingest reads it, and at full size
        with pytest.raises(ImageError) as caught:
            decode_bytes(damaged(good, keep), min_side=min_side, name="d.dng")
        assert str(caught.value).startswith(
            "truncated or corrupt RAW file: its sensor data is missing from the bottom right ("
        ), caught.value
    decoded = decode_bytes(good, min_side=16, name="g.dng")  # undamaged, it reads
    assert (decoded.width, decoded.height) == (256, 192)
    assert colour(decoded.image, 0.9, 0.1) == "red"


def test_a_damaged_file_read_after_another_photo_shows_none_of_it(tmp_path):
    """LibRaw allocates the sensor data with malloc and writes only what it reads: in a
    run of many RAW files, the part of a damaged one it skipped held the previous
    photo's sensor data, and the damaged photo was indexed as a patchwork of both."""
    other = write_dng(tmp_path / "other.dng", gradient()[::-1], compress=True, tile=64)
    good = write_dng(tmp_path / "g.dng", gradient(), compress=True, tile=64).read_bytes()
    for _ in range(3):
        decode_file(str(other))  # at full size: every buffer LibRaw has is full of it
        with pytest.raises(ImageError, match="sensor data is missing from the bottom right"):
            decode_bytes(damaged(good, 0.8), name="d.dng")


def test_a_dark_photo_is_not_taken_for_missing_data(tmp_path):
    """A black frame still reads the sensor's black level (no camera's raw black is 0)."""
    black = write_dng(tmp_path / "black.dng", np.zeros((64, 96, 3), np.uint8), compress=True)
    decoded = decode_file(str(black), min_side=16)
    assert np.asarray(decoded.image).max() <= 2


def test_a_file_cut_in_its_sensor_data_is_read_from_its_preview_and_says_so(tmp_path):
    """Cameras write the sensor data last: a copy that stopped there keeps the preview,
    which reads without an error. The photo is indexed from it, with a warning that
    names where the file ends and where its image data should (``tiff_layout``)."""
    good = write_dng(tmp_path / "g.dng", gradient(), preview=Image.fromarray(gradient()))
    data = good.read_bytes()
    intact = decode_bytes(data, min_side=16, name="g.dng")
    assert intact.warnings == []
    cut = data[: len(data) - 4000]
    decoded = decode_bytes(cut, min_side=16, name="cut.dng")
    assert (decoded.width, decoded.height) == (256, 192)
    [warning] = decoded.warnings
    end = int(warning.split("runs to byte ")[1].split(";")[0].replace(",", ""))
    assert len(data) - 4 < end <= len(data)  # the sensor data's end, before the padding
    assert warning == (
        f"the file is cut short: it ends at byte {len(cut):,} and its image data runs to "
        f"byte {end:,}; indexed from the camera's preview in it"
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_reading_where_the_image_data_ends_survives_any_damage(data):
    """The IFDs are untrusted: bytes overwritten anywhere in a real layout, or cut
    anywhere, give a number or None, never an error."""
    from searchengine.ingest.tiff_layout import data_end

    blob = bytearray(_LAYOUT)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, 600))
        blob[at : at + 4] = data.draw(st.binary(min_size=4, max_size=4))
    cut = data.draw(st.integers(0, len(blob)))
    end = data_end(bytes(blob[:cut]))
    assert end is None or end >= 0


def _dng_bytes() -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        preview = Image.fromarray(picture())
        return write_dng(Path(folder) / "l.dng", picture(), preview=preview).read_bytes()


_LAYOUT = _dng_bytes()


def test_what_other_threads_write_to_stderr_meanwhile_still_gets_there(tmp_path, capfd):
    """stderr goes to a temporary file while LibRaw reads; a progress bar drawn by
    another thread in that time is written out after, not lost."""
    import threading

    path = write_dng(tmp_path / "big.dng", picture(1200, 1800))
    cut = path.read_bytes()[:-5000]
    started, done = threading.Event(), threading.Event()

    def progress() -> None:
        started.set()
        while not done.is_set():
            os.write(2, b"progress\n")
            done.wait(0.001)

    thread = threading.Thread(target=progress)
    thread.start()
    started.wait()
    with pytest.raises(ImageError):
        for _ in range(5):
            decode_bytes(path.read_bytes(), min_side=16, name="big.dng")
            decode_bytes(cut, min_side=16, name="cut.dng")
    done.set()
    thread.join()
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "Unexpected end of file" not in err and "unknown file" not in err
    lines = err.splitlines()
    assert lines[-1] == "after" and set(lines) == {"progress", "after"}


def test_a_raw_file_over_the_pixel_limit_is_refused_by_its_header(tmp_path):
    path = write_dng(tmp_path / "big.dng", picture(200, 300))
    with pytest.raises(ImageError, match="too large"):
        decode_file(str(path), max_pixels=300 * 200 - 1, min_side=16)
    with pytest.raises(ImageError, match="too large"):
        decode_memory(path.read_bytes(), max_pixels=300 * 200 - 1, name=str(path))
    estimate = decode_memory(path.read_bytes(), min_side=16, name=str(path))
    assert estimate >= 300 * 200 * 3  # at least the decoded picture


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_a_raw_file_beside_a_photo_of_the_same_name_is_left_to_that_photo(tmp_path):
    """A camera set to RAW+JPEG writes both; the JPEG is its rendering of the shot."""
    touch(tmp_path, "IMG_1.CR2", "IMG_1.JPG", "IMG_2.NEF", "sub/IMG_3.dng", "sub/img_3.heic",
          "other/IMG_1.jpg", "IMG_4.arw", "IMG_4.txt")  # fmt: skip
    exts = BASE_EXTENSIONS | {".cr2", ".nef", ".dng", ".arw"}
    found = sorted(os.path.relpath(e.path, tmp_path) for e in scan([tmp_path], exts))
    # sub/img_3.heic is not readable here (no .heic in exts): its RAW twin is indexed.
    assert found == ["IMG_1.JPG", "IMG_2.NEF", "IMG_4.arw", "other/IMG_1.jpg", "sub/IMG_3.dng"]
    # Without rawpy: counted, but not the ones a JPEG stands for.
    left: list[str] = []
    plain = sorted(os.path.relpath(e.path, tmp_path)
                   for e in scan([tmp_path], BASE_EXTENSIONS, unreadable=left))  # fmt: skip
    assert plain == ["IMG_1.JPG", "other/IMG_1.jpg"]
    assert sorted(os.path.relpath(p, tmp_path) for p in left) == [
        "IMG_2.NEF", "IMG_4.arw", "sub/IMG_3.dng", "sub/img_3.heic"]  # fmt: skip
    assert "3 camera RAW photos left out: reading them needs rawpy" in str(
        missing_codecs_note(left)
    )
