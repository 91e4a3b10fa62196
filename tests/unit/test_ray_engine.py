"""The Ray engine's parts that need no cluster: the actor pool's shape, addresses,
errors, what travels to the workers, and the CLI's one-line refusals.

The end-to-end runs on a real Ray cluster are ``tests/e2e/test_ray_ingest.py``.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from searchengine import Config
from searchengine.cli import main
from searchengine.errors import ClusterError, ConfigError, ImageError
from searchengine.ingest.load import Failed, Known, Pixels, load
from searchengine.ingest.ray_cluster import split_address
from searchengine.ingest.ray_run import (
    Embedder,
    library_error,
    load_rows,
    pool_shape,
    unpack,
)
from searchengine.ingest.scan import FileEntry
from searchengine.models import load_encoder
from searchengine.models.fake import FakeEncoder
from searchengine.models.portable import PortablePreprocessor


def test_one_actor_per_cpu_without_gpus_each_on_one_thread():
    assert pool_shape({"CPU": 2.0}, "auto", None) == pool_shape({"CPU": 2.0}, "cpu", None)
    shape = pool_shape({"CPU": 2.0, "memory": 1e9}, "auto", None)
    assert (shape.actors, shape.gpus, shape.device, shape.threads) == (2, 0, "cpu", 1)
    fewer = pool_shape({"CPU": 8.0}, "auto", 2)  # --workers 2: the cores are shared out
    assert (fewer.actors, fewer.threads) == (2, 4)


def test_one_actor_per_gpu_when_the_cluster_has_gpus():
    shape = pool_shape({"CPU": 64.0, "GPU": 4.0}, "auto", None)
    assert (shape.actors, shape.gpus, shape.device) == (4, 1, "cuda")
    assert pool_shape({"CPU": 64.0, "GPU": 4.0}, "cuda", 9).actors == 4
    on_cpus = pool_shape({"CPU": 64.0, "GPU": 4.0}, "cpu", None)
    assert (on_cpus.actors, on_cpus.gpus, on_cpus.device) == (64, 0, "cpu")
    with pytest.raises(ClusterError, match="no GPU"):
        pool_shape({"CPU": 8.0}, "cuda", None)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("10.0.0.1:6379", ("10.0.0.1", 6379)),
        ("head.example:6380", ("head.example", 6380)),
        ("ray://head.example", ("head.example", 10001)),
        ("ray://10.0.0.1:10002", ("10.0.0.1", 10002)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_cluster_addresses(address, parsed):
    assert split_address(address) == parsed


@pytest.mark.parametrize("address", ["head", "head:port", ":6379", "ray://"])
def test_malformed_addresses_say_the_two_forms(address):
    with pytest.raises(ClusterError, match="HOST:PORT"):
        split_address(address)


def test_a_library_error_raised_in_a_worker_comes_back_as_itself():
    cause = ImageError("weights missing on the worker")
    wrapped = RuntimeError("RayTaskError(ImageError): Traceback ...\nmore lines")
    wrapped.__cause__ = cause
    assert library_error(wrapped) is cause
    other = library_error(RuntimeError("ActorDiedError: the actor died\ntraceback"))
    assert isinstance(other, ClusterError)
    assert str(other) == "the Ray run failed: ActorDiedError: the actor died"


def test_the_fake_models_preprocessing_travels_and_gives_the_same_pixels():
    encoder = FakeEncoder(image_size=12)
    shipped = pickle.loads(pickle.dumps(encoder.portable_preprocessor()))
    image = Image.effect_noise((40, 30), 60).convert("RGB")
    assert shipped.image_size == 12
    assert np.array_equal(shipped.preprocess(image), encoder.preprocess(image))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_real_models_preprocessing_travels_small_and_gives_the_same_pixels(runtime):
    encoder = load_encoder("toy", "cpu", runtime)
    shipped = pickle.dumps(encoder.portable_preprocessor())  # type: ignore[attr-defined]
    assert len(shipped) < 4000  # a few numbers and a transform, never the weights
    portable: PortablePreprocessor = pickle.loads(shipped)
    image = Image.effect_noise((97, 61), 80).convert("RGB")
    assert portable.image_size == encoder.image_size
    assert np.array_equal(portable.preprocess(image), encoder.preprocess(image))


def entry(path, size=0) -> FileEntry:
    return FileEntry(str(path), size, 1, None)


@pytest.mark.slow
def test_load_then_embed_then_unpack_gives_what_a_local_batch_commits(tmp_path):
    """The two Ray stages and the driver's unpacking, run here without Ray."""
    encoder = load_encoder("toy", "cpu", "onnx")
    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (50, 40), colour).save(paths[-1])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff cut")
    entries = [entry(p, p.stat().st_size) for p in [*paths, tmp_path / "broken.jpg"]]
    known = frozenset({load(entries[1], encoder, frozenset()).digest})  # type: ignore[union-attr]
    batch = {"entry": np.array([pickle.dumps(e) for e in entries], dtype=object)}

    loaded = load_rows(batch, encoder.portable_preprocessor(), known)  # type: ignore[attr-defined]
    embedded = Embedder("toy", "cpu", "onnx", threads=1)(loaded)
    items, vectors = unpack(embedded)

    assert [type(i) for i in items] == [Pixels, Known, Pixels, Failed]
    assert [i.entry for i in items] == entries
    assert all(i.pixels.size == 0 for i in items if isinstance(i, Pixels))  # not sent back
    local = [load(e, encoder, known) for e in entries]
    expected = encoder.encode_pixels(np.stack([local[0].pixels, local[2].pixels]))  # type: ignore[union-attr]
    assert vectors is not None and vectors.shape == (2, encoder.dim)
    assert np.allclose(vectors, expected, atol=1e-6)
    assert items[3].reason == local[3].reason  # type: ignore[union-attr]


def test_engine_comes_from_the_environment_and_is_checked():
    config = Config.from_env({"SEARCHENGINE_ENGINE": "ray", "SEARCHENGINE_RAY_ADDRESS": "h:1"})
    assert (config.engine, config.ray_address) == ("ray", "h:1")
    assert Config.from_env({}).engine == "local"
    with pytest.raises(ConfigError, match="local, ray"):
        Config.from_env({"SEARCHENGINE_ENGINE": "spark"})


def test_without_ray_installed_the_cli_says_which_extra_to_install(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets without it
    result = CliRunner().invoke(
        main,
        ["index", str(photos), "--index-dir", str(tmp_path / "idx"), "--engine", "ray"],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: --engine ray needs Ray, which is not installed (import of ray halted; None in "
        "sys.modules); install it with pip install 'searchengine[ray]', or use --engine local"
    )


def test_a_malformed_address_is_refused_before_anything_runs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    result = CliRunner().invoke(
        main,
        ["index", str(photos), "--index-dir", str(tmp_path / "idx"), "--engine", "ray",
         "--ray-address", "headnode"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--ray-address 'headnode': use HOST:PORT" in result.output
