import io

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
        (b"", "empty file"),
        (b"hello, I am text", "not a recognised image format"),
    ],
)
def test_non_images_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_bytes(data)


def test_truncated_jpeg_is_refused(tmp_path):
    path = solid(tmp_path / "t.jpg", (200, 10, 10), size=(300, 300))
    data = path.read_bytes()
    with pytest.raises(ImageError, match="cannot decode"):
        decode_bytes(data[: len(data) // 3])


def test_decompression_bomb_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, format="PNG")
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_bytes(buf.getvalue(), max_pixels=1_000_000)


def test_modes_become_rgb():
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
