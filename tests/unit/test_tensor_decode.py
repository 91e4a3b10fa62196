"""JPEG decode and preprocess as tensors (the CUDA ingest path), checked on CPU tensors
against the Pillow path every other ingest uses."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from searchengine import Collection, Config
from searchengine.errors import ImageError
from searchengine.ingest import run as ingest_run
from searchengine.ingest.decode import decode_bytes
from searchengine.ingest.tensor_decode import TensorPreprocessor, read_header, upright
from searchengine.models.lite import Preprocess, preprocess_image
from searchengine.toy import world as toyworld

pytest.importorskip("torchvision")


def quadrants(orientation: int) -> bytes:
    """A 60x40 JPEG whose four quadrants differ, so every flip and turn shows."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:20, :30], pixels[:20, 30:] = (255, 0, 0), (0, 255, 0)
    pixels[20:, :30], pixels[20:, 30:] = (0, 0, 255), (255, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def photo(seed: int, size=(1600, 1200)) -> bytes:
    scene = toyworld.sample_scene(np.random.default_rng((5, seed)))
    buf = io.BytesIO()
    toyworld.render(scene, size).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_upright_as_pillow_does(orientation):
    data = quadrants(orientation)
    expected = np.asarray(decode_bytes(data).image)
    head = read_header(data)
    assert (head.width, head.height) == (expected.shape[1], expected.shape[0])
    tensors = TensorPreprocessor(Preprocess((8, 8), (0, 0, 0), (1, 1, 1)), "cpu")
    turned = upright(tensors.decode([data])[0], head.orientation).permute(1, 2, 0).numpy()
    assert np.array_equal(turned, expected)


@pytest.mark.parametrize(("mode", "size"), [("shortest", 224), ("squash", 96), ("longest", 224)])
def test_preprocess_matches_the_pillow_transform(mode, size):
    cfg = Preprocess((size, size), (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), "bicubic", mode)
    tensors = TensorPreprocessor(cfg, "cpu")
    data = photo(1)
    ours = tensors(tensors.decode([data]), [1])[0].numpy()
    pillow = preprocess_image(decode_bytes(data).image, cfg)
    assert ours.shape == pillow.shape == (3, size, size)
    # Measured: mean 0.001, max 0.044 (normalised units; one 8-bit step is ~0.015).
    assert np.abs(ours - pillow).mean() < 0.005


def test_headers_refuse_bombs_and_non_jpegs():
    with pytest.raises(ImageError, match="limit"):
        read_header(photo(2, (400, 300)), max_pixels=100_000)
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, format="PNG")
    with pytest.raises(ImageError):
        read_header(buf.getvalue())


def test_a_batch_with_a_broken_file_still_decodes_the_others():
    tensors = TensorPreprocessor(Preprocess((8, 8), (0, 0, 0), (1, 1, 1)), "cpu")
    good = photo(3, (64, 48))
    images = tensors.decode_each([good, good[: len(good) // 3], good])
    assert images[1] is None and images[0] is not None and images[2] is not None


def make_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        (photos / f"p{i}.jpg").write_bytes(photo(10 + i))
    (photos / "turned.jpg").write_bytes(quadrants(6))
    Image.new("RGB", (320, 240), (200, 30, 30)).save(photos / "flat.png")
    (photos / "cut.jpg").write_bytes(photo(20)[:5000])  # header fine, data cut short
    return photos


def index(photos, home, device: str) -> dict[str, np.ndarray]:
    """Index ``photos`` with toy-large (torch) on ``device``: file name -> vector."""
    config = Config(home=home, model="toy-large", device=device, runtime="torch")
    with Collection.open("c", config, create=True) as coll:
        report = coll.index([photos])
        assert (report.added, report.failed) == (8, 1)
        records = {r.id: os.path.basename(r.path) for r in coll.catalog.records()}
        vectors = coll.vectors()
        return {records[int(i)]: vectors.reconstruct(int(i)) for i in vectors.ids()}


def spy_on_decoding(monkeypatch) -> list[tuple[str, int]]:
    """Record (device, files) of every tensor decode the pipeline asks for."""
    calls: list[tuple[str, int]] = []
    real = ingest_run.TensorPreprocessor.decode_each

    def spy(self, datas):
        calls.append((self.device, len(datas)))
        return real(self, datas)

    monkeypatch.setattr(ingest_run.TensorPreprocessor, "decode_each", spy)
    return calls


@pytest.mark.slow
def test_ingest_through_tensors_embeds_as_the_pillow_path(tmp_path, monkeypatch):
    """The whole device path of the pipeline, run with CPU tensors: same vectors (to
    0.999 cosine), same failures, PNGs and undecodable JPEGs through Pillow."""
    photos = make_photos(tmp_path)
    pillow = index(photos, tmp_path / "pillow", "cpu")
    monkeypatch.setattr(ingest_run, "tensor_decode_available", lambda encoder: True)
    calls = spy_on_decoding(monkeypatch)
    tensors = index(photos, tmp_path / "tensors", "cpu")
    assert sum(n for _, n in calls) == 8  # every JPEG went to the tensor path; the PNG did not
    assert sorted(tensors) == sorted(pillow)
    for name, vector in pillow.items():
        assert float(vector @ tensors[name]) > 0.999, name


@pytest.mark.gpu
def test_ingest_on_cuda_decodes_jpegs_on_the_gpu_and_embeds_as_the_cpu(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    photos = make_photos(tmp_path)
    cpu = index(photos, tmp_path / "cpu", "cpu")
    calls = spy_on_decoding(monkeypatch)
    cuda = index(photos, tmp_path / "cuda", "cuda")
    assert calls and {device for device, _ in calls} == {"cuda"}
    for name, vector in cpu.items():  # fp16 autocast on the GPU: a looser bound
        assert float(vector @ cuda[name]) > 0.995, name
