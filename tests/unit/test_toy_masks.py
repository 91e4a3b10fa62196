"""Exact masks and boxes of toy scenes: they cover the painted object and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld


def _scene(seed: int, index: int) -> toyworld.Scene:
    return toyworld.sample_scene(np.random.default_rng((seed, index)))


@pytest.mark.parametrize("size", [(640, 480), (300, 400)])
def test_masks_cover_exactly_the_objects_colour(size: tuple[int, int]) -> None:
    for index in range(6):
        scene = _scene(31, index)
        image, regions = toymasks.scene_regions(scene, size)
        assert image.tobytes() == toyworld.render(scene, size).tobytes()
        pixels = np.asarray(image).astype(int)
        for region in regions:
            colour = np.array(toyworld.COLORS[region.object.color])
            inside = pixels[region.mask]
            # Shade jitter is +-12 a channel; anti-aliased edges blend a little more.
            assert np.abs(inside - colour).mean() < 16
            x0, y0, x1, y1 = region.box
            assert region.mask[y0:y1, x0:x1].sum() == region.area > 0
            assert not region.mask[:y0].any() and not region.mask[y1:].any()
        # Far from every object, no pixel has an object's colour: masks miss nothing.
        grown = np.zeros(size[::-1], dtype=bool)
        for region in regions:
            x0, y0, x1, y1 = region.box
            grown[max(y0 - 3, 0) : y1 + 3, max(x0 - 3, 0) : x1 + 3] = True
        far = pixels[~grown]
        for colour in toyworld.COLORS.values():
            assert not (np.abs(far - np.array(colour)).max(axis=1) < 20).any()


def test_objects_are_where_the_caption_says() -> None:
    for index in range(20):
        scene = _scene(32, index)
        _, regions = toymasks.scene_regions(scene)
        for region in regions:
            x0, y0, x1, y1 = region.box
            cx, cy = (x0 + x1) / 2 / 640, (y0 + y1) / 2 / 480
            fx, fy = {
                "top left": (0.25, 0.25),
                "top right": (0.75, 0.25),
                "bottom left": (0.25, 0.75),
                "bottom right": (0.75, 0.75),
                "center": (0.5, 0.5),
            }[region.object.position]
            assert abs(cx - fx) < 0.08 and abs(cy - fy) < 0.1


def test_same_scene_same_masks_and_matching_union() -> None:
    scene = _scene(33, 3)
    _, first = toymasks.scene_regions(scene)
    _, second = toymasks.scene_regions(scene)
    for a, b in zip(first, second, strict=True):
        assert a.box == b.box and np.array_equal(a.mask, b.mask)
    obj = first[0].object
    union = toymasks.matching_mask(first, toyworld.Mention(obj.shape, obj.color), (640, 480))
    assert union[first[0].mask].all()
    absent = toyworld.Mention("circle" if obj.shape != "circle" else "star", "red")
    if not any(absent.matches(r.object) for r in first):
        assert not toymasks.matching_mask(first, absent, (640, 480)).any()
