"""Regions end to end: FALIP on the torch tower, ground, score --region, similar --region.

The shipped ``toy`` model (an open_clip ViT) and held-out toy scenes (seed 5151, never
used in training) make the answers checkable: the described object's box wins, and a
region query finds photos of that object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from searchengine.cli import main
from searchengine.errors import ConfigError
from searchengine.evaluation.toyscenes import grounding_cases
from searchengine.models import load_encoder
from searchengine.models.falip import FalipEncoder, unsupported_reason
from searchengine.region import RegionEmbedder, region_vectors
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow

TEST_SEED = toymasks.HELD_OUT_SEEDS[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("toy-held-out")
    toyworld.generate(folder, 80, TEST_SEED)
    return folder


@pytest.fixture(scope="module")
def toy() -> object:
    return load_encoder("toy", "cpu", "torch")


def _scene_photo(world: Path, index: int) -> tuple[Image.Image, toyworld.ToyItem]:
    item = toyworld.load_manifest(world)[index]
    return Image.open(world / item.path).convert("RGB"), item


def test_falip_changes_only_what_the_class_token_attends_to(toy: object) -> None:
    photo = toyworld.render(toyworld.sample_scene(np.random.default_rng((TEST_SEED, 1))))
    plain = toy.encode_images([photo])  # type: ignore[attr-defined]
    # No bump: exactly the plain embedding (the hooks add nothing else) ...
    zero = FalipEncoder(toy, strength=0.0).encode([photo], [(0.0, 0.0, 100.0, 100.0)])
    np.testing.assert_allclose(zero, plain, atol=1e-6)
    # ... a bump moves it, and the hooks are gone afterwards.
    focused = FalipEncoder(toy, strength=4.0).encode([photo], [(0.0, 0.0, 100.0, 100.0)])
    assert float(focused[0] @ plain[0]) < 0.999
    np.testing.assert_allclose(toy.encode_images([photo]), plain, atol=1e-6)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="strength"):
        FalipEncoder(toy, strength=-1.0)


def test_falip_batches_give_each_image_its_own_mask(toy: object) -> None:
    photos = [
        toyworld.render(toyworld.sample_scene(np.random.default_rng((TEST_SEED, i))))
        for i in range(3)
    ]
    boxes = [(10.0, 10.0, 200.0, 150.0), (300.0, 200.0, 640.0, 480.0), (200.0, 100.0, 400.0, 380.0)]
    falip = FalipEncoder(toy, strength=4.0)
    together = falip.encode(photos, boxes)
    alone = np.concatenate([falip.encode([p], [b]) for p, b in zip(photos, boxes, strict=True)])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_falip_on_the_onnx_runtime_uses_the_torch_tower_of_the_same_model(toy: object) -> None:
    onnx = load_encoder("toy", "cpu", "onnx")
    photo = toyworld.render(toyworld.sample_scene(np.random.default_rng((TEST_SEED, 2))))
    box = (40, 30, 300, 260)
    via_onnx = region_vectors(onnx, photo, [box], "falip")
    via_torch = region_vectors(toy, photo, [box], "falip")  # type: ignore[arg-type]
    assert float(via_onnx[0] @ via_torch[0]) > 0.9999
    onnx.close()


def test_falip_refuses_towers_without_a_class_token_vit() -> None:
    from open_clip.model import CLIP

    resnet = CLIP(
        embed_dim=16,
        vision_cfg={"layers": [1, 1, 1, 1], "width": 8, "image_size": 64, "head_width": 8},
        text_cfg={"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    )
    assert "not a ViT" in (unsupported_reason(resnet) or "")

    class Tower:
        spec = "RN-tiny:local"
        module = resnet

    with pytest.raises(ConfigError) as caught:
        FalipEncoder(Tower())
    assert "\n" not in str(caught.value) and "--region-method crop" in str(caught.value)


def test_falip_picks_the_described_box_more_often_than_no_prompt(world: Path, toy: object) -> None:
    cases = grounding_cases(world, toyworld.load_manifest(world))
    embedder = RegionEmbedder(toy)  # type: ignore[arg-type]
    texts = sorted({c.text for c in cases})
    text_vectors = toy.encode_texts(texts)  # type: ignore[attr-defined]
    hits = {"falip": 0, "none": 0}
    for case in cases:
        t = text_vectors[texts.index(case.text)]
        for method in hits:
            scores = embedder.vectors(case.load_image(), case.boxes, method) @ t
            hits[method] += int(np.argmax(scores)) == case.target
    # "none" sees the same photo for both boxes: it can only tie (argmax picks the first).
    assert hits["falip"] / len(cases) > 0.75 > hits["none"] / len(cases)


def test_ground_cli_names_the_described_box(world: Path) -> None:
    case = grounding_cases(world, toyworld.load_manifest(world))[0]
    boxes = [arg for b in case.boxes for arg in ("--box", ",".join(map(str, b)))]
    result = CliRunner().invoke(
        main, ["ground", case.path, case.text, *boxes, "-m", "toy", "--json"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["method"] == "falip" and body["subtract"] is True
    assert len(body["boxes"]) == 2
    assert sum(b["probability"] for b in body["boxes"]) == pytest.approx(1.0, abs=1e-3)
    assert body["best_box"] == body["boxes"][body["best"]]["box"]
    raw = CliRunner().invoke(
        main, ["ground", case.path, case.text, *boxes, "-m", "toy", "--no-subtract", "--json"]
    )
    for b in json.loads(raw.stdout)["boxes"]:
        assert b["score"] == b["cosine"]
    text = CliRunner().invoke(main, ["ground", case.path, case.text, *boxes, "-m", "toy"])
    assert text.exit_code == 0 and "<- best" in text.stdout


def test_ground_refuses_a_box_outside_the_photo(world: Path) -> None:
    case = grounding_cases(world, toyworld.load_manifest(world))[0]
    result = CliRunner().invoke(
        main, ["ground", case.path, case.text, "--box", "700,10,800,90", "-m", "toy"]
    )
    assert result.exit_code == 1 and "outside the 640x480 image" in result.output


def test_score_region_prefers_the_object_in_the_region(world: Path) -> None:
    case = grounding_cases(world, toyworld.load_manifest(world))[2]
    other = grounding_cases(world, toyworld.load_manifest(world))[3]
    box = ",".join(map(str, case.boxes[case.target]))
    result = CliRunner().invoke(
        main,
        ["score", case.path, case.text, other.text, "-m", "toy", "--region", box, "--json"],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["region"] == list(case.boxes[case.target]) and body["region_method"] == "falip"
    assert len(body["captions"]) == 2


def test_similar_region_finds_photos_of_that_object(world: Path, tmp_path: Path) -> None:
    home = tmp_path / "idx"
    done = CliRunner().invoke(main, ["index", str(world), "-m", "toy", "--index-dir", str(home)])
    assert done.exit_code == 0, done.output
    items = toyworld.load_manifest(world)
    kinds = {
        str((world / it.path).resolve()): {(o.shape, o.color) for o in it.scene.objects}
        for it in items
    }
    query = next(it for it in items if len({(o.shape, o.color) for o in it.scene.objects}) == 2)
    _, regions = toymasks.scene_regions(query.scene)
    wanted = (query.scene.objects[0].shape, query.scene.objects[0].color)
    box = ",".join(map(str, regions[0].box))
    result = CliRunner().invoke(
        main,
        ["similar", str(world / query.path), "--region", box, "-k", "80", "--json",
         "--index-dir", str(home)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    paths = [str(Path(r["path"]).resolve()) for r in json.loads(result.stdout)]
    assert str((world / query.path).resolve()) not in paths  # the example itself is left out
    ranked = [kinds[p] for p in paths]
    relevant = [i for i, k in enumerate(ranked) if wanted in k]
    assert relevant and relevant[0] < 5  # a photo with that object among the first five
