"""The int8 image tower: checked before use, refused when it fails, recorded per collection.

Models: the shipped ``toy`` (its int8 tower passes the check), and ``toy`` with
outlier activations (below), whose int8 tower really fails it. Every test builds the
real int8 tower with ONNX Runtime's quantizer and compares the real towers.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from fakehub import FakeHub
from safetensors.numpy import load_file, save_file
from sessions import record_opens

from searchengine import Collection, Config
from searchengine.cli import main
from searchengine.errors import CollectionError
from searchengine.ingest.decode import decode_file
from searchengine.models import Encoder, load_encoder
from searchengine.models.exports import read_export
from searchengine.models.onnx import INT8_IMAGE, OnnxClipEncoder
from searchengine.models.quantize import BUILD, MIN_COSINE, VERDICT_FILE, read_verdict
from searchengine.models.spec import parse_model_spec, shipped_model_dir
from searchengine.toy.world import render, sample_scene
from searchengine.warmup import ready_image_encoder, ready_query_encoder

pytestmark = pytest.mark.slow


def _photos(folder: Path, n: int, seed: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        render(sample_scene(rng), (320, 240)).save(folder / f"toy-{i:03d}.jpg", quality=92)
    return folder


def outlier_model(folder: Path) -> str:
    """``toy`` with one huge activation per MLP that its fp32 tower ignores.

    Transformers grow such outlier features when trained at scale (Bondarenko et al.
    2021, "Understanding and Overcoming the Challenges of Efficient Transformer
    Quantization"; Dettmers et al. 2022, "LLM.int8()"): a few hidden channels carry
    values far larger than the rest. Here channel 0 of every image block's MLP
    hidden layer is biased to 1000 and the next layer's weights for it are zeroed,
    so the fp32 tower is a normal model; but the int8 tower quantizes that layer's
    input with one scale per call, which the outlier sets, and the other channels
    round to almost nothing. A real model failing the real check, not a flag.
    """
    source = shipped_model_dir("toy")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "open_clip_config.json", folder)
    weights = {
        k: v.copy() for k, v in load_file(str(source / "open_clip_model.safetensors")).items()
    }
    blocks = {k.split(".mlp.")[0] for k in weights if k.startswith("visual.") and ".mlp." in k}
    for block in blocks:
        weights[f"{block}.mlp.c_fc.bias"][0] = 1000.0
        weights[f"{block}.mlp.c_proj.weight"][:, 0] = 0.0
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def _embed(encoder: Encoder, path: Path | str) -> np.ndarray:
    """One photo's vector, decoded as ingest decodes it."""
    image = decode_file(str(path), min_side=encoder.image_size).image
    return encoder.encode_pixels(encoder.preprocess(image)[None])[0]


def test_an_int8_collection_embeds_and_is_queried_with_its_checked_tower(
    offline_hub: FakeHub, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "photos", 40)
    config = Config(home=tmp_path / "idx", model="toy", precision="int8", device="cpu")
    with Collection.open("fast", config, create=True) as coll:
        report = coll.index([photos])
        status = coll.status()
    assert report.embedded == 40 and report.precision == "int8" and report.notes == []
    assert status.precision == "int8"
    # The check is made once per model: an earlier collection of the same model (another
    # test in this session) may have made it on its own sample.
    assert status.precision_check is not None
    assert re.search(r"checked on \d+ photos", status.precision_check)

    export = read_export(parse_model_spec("toy"))
    assert export is not None
    verdict = read_verdict(export.folder)
    assert verdict is not None and verdict.passed and verdict.min_cosine >= MIN_COSINE
    assert (export.folder / INT8_IMAGE).is_file()

    # Opened again with no precision asked: the collection's own tower is used, so a
    # copy of an indexed photo finds it with exactly its stored vector.
    outside = tmp_path / "copy.jpg"
    shutil.copy(photos / "toy-007.jpg", outside)
    plain = Config(home=tmp_path / "idx", device="cpu")
    with Collection.open("fast", plain) as coll:
        assert coll.precision == "int8"
        best = coll.similar(outside, k=1)[0]
        stored = coll.vectors().reconstruct(best.id)
    assert best.path == str(photos / "toy-007.jpg") and best.cosine >= 0.99999
    # The fp32 tower would have given another vector: the query really ran in int8.
    fp32 = load_encoder("toy", "cpu", "onnx")
    assert stored is not None and _cosine(_embed(fp32, outside), stored) < best.cosine
    fp32.close()

    # A photo's int8 vector does not depend on the photos embedded beside it.
    int8 = load_encoder("toy", "cpu", "onnx", precision="int8")
    batch = np.stack([int8.preprocess(decode_file(str(p)).image) for p in (outside, outside)])
    batch[1] = np.flip(batch[1], axis=2)  # another photo in the same call
    np.testing.assert_array_equal(int8.encode_pixels(batch)[0], int8.encode_pixels(batch[:1])[0])
    int8.close()

    # The one-shot search's warm-up opens the collection's own tower too.
    warmed = ready_query_encoder(plain, "fast")
    assert isinstance(warmed, OnnxClipEncoder) and warmed.precision == "int8"
    warmed.close()

    # fp32 vectors are never mixed into it.
    mixed = Config(home=tmp_path / "idx", precision="fp32", device="cpu")
    with pytest.raises(CollectionError, match="holds int8 image vectors"):
        Collection.open("fast", mixed)


def test_a_first_int8_index_opens_the_checked_int8_tower_while_the_catalog_loads(
    offline_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = f"local-dir:{tmp_path / 'model'}"  # an export of this test's own
    shutil.copytree(shipped_model_dir("toy"), tmp_path / "model")
    photos = _photos(tmp_path / "photos", 12)
    config = Config(home=tmp_path / "idx", model=model, precision="int8", device="cpu")
    # No verdict yet: the tower is built and checked with the catalog open, not early.
    assert ready_image_encoder(config, "first", model) is None
    events = record_opens(monkeypatch)
    base = ["index", str(photos), "--index-dir", str(config.home), "-m", model]
    base += ["--precision", "int8", "--device", "cpu", "--json"]
    first = CliRunner().invoke(main, [*base, "-c", "first"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["precision"] == "int8"
    assert ("image-int8", "opened", "image-warmup") not in events
    export = read_export(parse_model_spec(model))
    assert export is not None and read_verdict(export.folder) is not None

    # Checked once: the next new collection's warm-up opens the int8 tower, once, and
    # no fp32 image tower is opened at all.
    events.clear()
    second = CliRunner().invoke(main, [*base, "-c", "second"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["precision"] == "int8"
    assert [(tower, thread) for tower, _, thread in events if tower != "text"] == [
        ("image-int8", "image-warmup")
    ] * 2
    # Its vectors are those of the collection that opened the tower in its ingest.
    with Collection.open("first", config) as coll:
        plain = {Path(h.path).name: h.score for h in coll.search("a red circle", k=12)}
    with Collection.open("second", config) as coll:
        assert coll.precision == "int8"
        warmed = {Path(h.path).name: h.score for h in coll.search("a red circle", k=12)}
    assert warmed == plain

    # A tower that failed its check is never opened early: that collection is fp32.
    verdict = json.loads((export.folder / VERDICT_FILE).read_text())
    failed = {**verdict, "passed": False, "reason": "refused for this test"}
    (export.folder / VERDICT_FILE).write_text(json.dumps(failed))
    assert ready_image_encoder(config, "third", model) is None
    warm = ready_image_encoder(replace(config, precision=None), "third", model)
    assert isinstance(warm, OnnxClipEncoder) and warm.precision == "fp32"
    warm.close()


def test_a_model_whose_int8_tower_fails_the_check_is_refused(
    offline_hub: FakeHub, offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    model = outlier_model(tmp_path / "outlier")
    photos = _photos(tmp_path / "photos", 24)
    exe = [str(Path(sys.executable).with_name("searchengine"))]
    home = ["--index-dir", str(tmp_path / "idx"), "-c", "c"]
    env = {**offline_hub_env, "SEARCHENGINE_DEVICE": "cpu"}
    args = [*exe, "index", str(photos), *home, "-m", model, "--precision", "int8", "--json"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    refused = [line for line in done.stderr.splitlines() if "int8" in line]
    assert len(refused) == 1 and "was refused" in refused[0] and "embedding in fp32" in refused[0]
    assert json.loads(done.stdout)["precision"] == "fp32"

    status = subprocess.run(
        [*exe, "status", *home, "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    info = json.loads(status.stdout)
    assert info["precision"] == "fp32" and info["precision_check"].startswith("int8 tower refused")

    # Asked again, the same line, and the collection goes on in fp32.
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stderr.splitlines() if "int8" in line] == refused

    # Its vectors are the fp32 tower's, and no int8 tower is left to run.
    export = read_export(parse_model_spec(model))
    assert export is not None and export.verified
    assert not (export.folder / INT8_IMAGE).exists()
    verdict = json.loads((export.folder / VERDICT_FILE).read_text())
    assert verdict["passed"] is False and verdict["min_cosine"] < MIN_COSINE
    with Collection.open("c", Config(home=tmp_path / "idx", device="cpu")) as coll:
        first = coll.search("a red circle", k=1)[0]
        stored = coll.vectors().reconstruct(first.id)
        fp32 = coll.encoder
        assert getattr(fp32, "precision", "fp32") == "fp32"
        assert stored is not None and _cosine(_embed(fp32, first.path), stored) > 0.99999

    # An older build that had passed is checked again, and when the new build fails the
    # old tower is removed rather than run.
    _old_build(export.folder)
    other = [*exe, "index", str(photos), "--index-dir", str(tmp_path / "idx2"), "-c", "d"]
    redone = subprocess.run(
        [*other, "-m", model, "--precision", "int8", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert redone.returncode == 0, redone.stderr
    assert json.loads(redone.stdout)["precision"] == "fp32"
    assert not (export.folder / INT8_IMAGE).exists()
    assert json.loads((export.folder / VERDICT_FILE).read_text())["build"] == BUILD


# Products with int8 weights (the second input): ONNX's own, and the fused form ONNX
# Runtime's CPU kernels run (the saved, already optimized graph).
_INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def _weight_range(int8_tower: Path) -> tuple[int, int]:
    """The lowest and highest int8 weight of the tower's integer products."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8_tower)).graph
    weights = {init.name: init for init in graph.initializer}
    values = [
        numpy_helper.to_array(weights[node.input[1]])
        for node in graph.node
        if node.op_type in _INTEGER_OPS and node.input[1] in weights
    ]
    assert values  # the tower really computes in integers
    return min(int(v.min()) for v in values), max(int(v.max()) for v in values)


def _op_types(tower: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(tower)).graph.node}


def _old_build(folder: Path, verdict: dict[str, object] | None = None) -> None:
    """Put an int8 tower of the first build (8-bit weights, int8 patch convolution) and
    its verdict, as written before builds were noted, in the export ``folder``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    image = next(p for p in folder.glob("image*.onnx") if p.name != INT8_IMAGE)
    quantize_dynamic(str(image), str(folder / INT8_IMAGE), weight_type=QuantType.QInt8,
                     per_channel=True)  # fmt: skip
    old = verdict or {"passed": True, "images": 32, "mean_cosine": 0.9999,
                      "min_cosine": 0.9998, "overlap": 1.0}  # fmt: skip
    (folder / VERDICT_FILE).write_text(json.dumps(old))


def test_the_int8_tower_has_7_bit_weights_and_an_older_build_is_redone(
    offline_hub: FakeHub, tmp_path: Path
) -> None:
    # On x86 CPUs without VNNI, ONNX Runtime's uint8 x int8 products saturate with 8-bit
    # weights: random-weight ViT-B-32-256's int8 tower fell to cosine 0.986 of fp32 there
    # and was refused. 7-bit weights never saturate, so the tower is the same everywhere.
    model = f"local-dir:{tmp_path / 'model'}"
    shutil.copytree(shipped_model_dir("toy"), tmp_path / "model")
    photos = _photos(tmp_path / "photos", 24)
    config = Config(home=tmp_path / "idx", model=model, precision="int8", device="cpu")
    with Collection.open("a", config, create=True) as coll:
        assert coll.index([photos]).precision == "int8"
    export = read_export(parse_model_spec(model))
    assert export is not None
    low, high = _weight_range(export.folder / INT8_IMAGE)
    assert -64 <= low and high <= 64 and high - low > 64  # 7 bits (255 · 64 · 2 < 2¹⁵), all used
    ops = _op_types(export.folder / INT8_IMAGE)
    assert ops >= {"DynamicQuantizeMatMul", "Conv"}  # the patch convolution in fp32
    # Saved already optimized: no session has to fuse the quantized products again.
    assert "MatMulInteger" not in ops and "DynamicQuantizeLinear" not in ops
    assert json.loads((export.folder / VERDICT_FILE).read_text())["build"] == BUILD

    # An export checked by an older build (8-bit weights, no build noted) is built and
    # checked again before any photo is embedded with it.
    _old_build(export.folder)
    assert read_verdict(export.folder) is None
    assert max(np.abs(_weight_range(export.folder / INT8_IMAGE))) > 64
    assert "ConvInteger" in _op_types(export.folder / INT8_IMAGE)
    with Collection.open("b", config, create=True) as coll:
        report = coll.index([photos])
        assert report.precision == "int8" and report.notes == []
    low, high = _weight_range(export.folder / INT8_IMAGE)
    assert -64 <= low and high <= 64
    verdict = read_verdict(export.folder)
    assert verdict is not None and verdict.passed and verdict.build == BUILD
    # Collection "a" is queried with the rebuilt tower: a copy of one of its photos finds
    # it again (the two builds differ by far less than two photos do).
    outside = tmp_path / "copy.jpg"
    shutil.copy(photos / "toy-005.jpg", outside)
    with Collection.open("a", Config(home=tmp_path / "idx", device="cpu")) as coll:
        best = coll.similar(outside, k=1)[0]
    assert best.path == str(photos / "toy-005.jpg") and best.cosine >= 0.999


def test_a_tower_built_by_another_onnx_runtime_is_built_and_checked_again(
    offline_hub: FakeHub, tmp_path: Path
) -> None:
    # The saved int8 graph is one ONNX Runtime version's optimisation, and the check
    # measured that version's kernels: after an upgrade neither is known to hold.
    photos = _photos(tmp_path / "photos", 12)
    config = Config(home=tmp_path / "idx", model="toy", precision="int8", device="cpu")
    with Collection.open("a", config, create=True) as coll:
        assert coll.index([photos]).precision == "int8"
    export = read_export(parse_model_spec("toy"))
    assert export is not None
    stored = json.loads((export.folder / VERDICT_FILE).read_text())
    assert stored["onnxruntime"] == ort.__version__ and read_verdict(export.folder) is not None
    (export.folder / VERDICT_FILE).write_text(json.dumps({**stored, "onnxruntime": "1.0.0"}))
    (export.folder / INT8_IMAGE).write_bytes(b"a graph this version cannot open")
    assert read_verdict(export.folder) is None
    with Collection.open("b", config, create=True) as coll:
        report = coll.index([photos])
    assert report.precision == "int8" and report.notes == []
    verdict = read_verdict(export.folder)
    assert verdict is not None and verdict.passed and verdict.onnxruntime == ort.__version__
    assert "DynamicQuantizeMatMul" in _op_types(export.folder / INT8_IMAGE)  # a real graph
    # Both collections are queried with the rebuilt tower: a copy of a photo finds it.
    outside = tmp_path / "copy.jpg"
    shutil.copy(photos / "toy-003.jpg", outside)
    for name in ("a", "b"):
        with Collection.open(name, Config(home=tmp_path / "idx", device="cpu")) as coll:
            best = coll.similar(outside, k=1)[0]
        assert best.path == str(photos / "toy-003.jpg") and best.cosine >= 0.999


def test_int8_asked_where_torch_runs_the_model_is_refused_in_one_line(
    offline_hub: FakeHub, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "photos", 6)
    config = Config(
        home=tmp_path / "idx", model="toy", precision="int8", device="cpu", runtime="torch"
    )
    with Collection.open("t", config, create=True) as coll:
        report = coll.index([photos])
    assert report.precision == "fp32"
    assert len(report.notes) == 1 and "only ONNX Runtime runs it" in report.notes[0]
