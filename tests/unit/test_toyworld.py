"""The toy world: deterministic files, truthful captions, a readable manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchengine.toy import world as toyworld
from searchengine.toy.world import Mention, Scene, ToyObject


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    toyworld.generate(tmp_path / "a", 9, seed=3)
    toyworld.generate(tmp_path / "b", 9, seed=3)
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(first) == 10  # nine images and the manifest
    assert first == second


def test_different_seed_writes_different_images(tmp_path: Path) -> None:
    toyworld.generate(tmp_path / "a", 6, seed=3)
    toyworld.generate(tmp_path / "b", 6, seed=4)
    first, second = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert first.keys() == second.keys()
    assert all(first[name] != second[name] for name in first)


def test_smaller_n_is_a_prefix(tmp_path: Path) -> None:
    small = toyworld.generate(tmp_path / "a", 3, seed=5)
    large = toyworld.generate(tmp_path / "b", 6, seed=5)
    assert large[:3] == small


def test_formats_and_subfolders_cycle(tmp_path: Path) -> None:
    items = toyworld.generate(tmp_path, 6, seed=1, size=(320, 240))
    assert [Path(i.path).suffix for i in items] == [".jpg", ".png", ".webp"] * 2
    assert len({Path(i.path).parent for i in items}) == 2
    for item, expected in zip(items, ["JPEG", "PNG", "WEBP"] * 2, strict=True):
        with Image.open(tmp_path / item.path) as image:
            assert (image.format, image.size, image.mode) == (expected, (320, 240), "RGB")


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gif"):
        toyworld.generate(tmp_path, 2, seed=1, formats=("gif",))


def test_manifest_round_trips_and_captions_match_attributes(tmp_path: Path) -> None:
    written = toyworld.generate(tmp_path, 40, seed=11)
    lines = (tmp_path / toyworld.MANIFEST_NAME).read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [i.path for i in written]
    loaded = toyworld.load_manifest(tmp_path)
    assert loaded == written
    for item in loaded:
        objects = json.loads(lines[loaded.index(item)])["attributes"]["objects"]
        expected = " and ".join(
            f"a {o['size']} {o['color']} {o['shape']} "
            + ("in the center" if o["position"] == "center" else f"at the {o['position']}")
            for o in objects
        )
        assert item.captions == (expected,)
        positions = [o["position"] for o in objects]
        assert 1 <= len(objects) <= 2 and len(set(positions)) == len(positions)


def test_render_draws_objects_in_their_colour_at_their_position() -> None:
    scene = Scene(
        (
            ToyObject("circle", "red", "large", "top left"),
            ToyObject("square", "blue", "small", "bottom right"),
        ),
        background="noise",
        render_seed=5,
    )
    pixels = np.asarray(toyworld.render(scene, (640, 480))).astype(int)
    red, blue = np.array(toyworld.COLORS["red"]), np.array(toyworld.COLORS["blue"])
    assert np.abs(pixels[120, 160] - red).max() < 30
    assert np.abs(pixels[360, 480] - blue).max() < 30
    # The other quadrants are background: light and nearly grey.
    for y, x in [(120, 480), (360, 160)]:
        assert pixels[y, x].min() > 140 and np.ptp(pixels[y, x]) < 40


def test_mentions_describe_true_partial_captions() -> None:
    scene = Scene(
        (
            ToyObject("triangle", "green", "small", "center"),
            ToyObject("star", "pink", "large", "top right"),
        ),
        background="plain",
        render_seed=0,
    )
    assert toyworld.caption(scene) == (
        "a small green triangle in the center and a large pink star at the top right"
    )
    assert toyworld.scene_matches(scene, [Mention("triangle", color="green")])
    assert toyworld.scene_matches(scene, [Mention("star"), Mention("triangle", size="small")])
    assert not toyworld.scene_matches(scene, [Mention("triangle", color="pink")])
    assert not toyworld.scene_matches(scene, [Mention("star"), Mention("star")])
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert toyworld.scene_matches(scene, toyworld.random_mentions(scene, rng))
