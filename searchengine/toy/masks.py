"""Exact object masks and boxes of toy scenes: the ground truth for "where is it?".

The renderer paints each object through an anti-aliased coverage mask
(:func:`searchengine.toy.world.render_layers`); an object's mask here is every pixel at
least half covered by it and not at least half covered by an object painted later (the
world keeps objects apart, so that second rule only matters if a layout ever changes).
Its box is the tight box around that mask, ``(x0, y0, x1, y1)`` with exclusive ends, in
the pixels of the rendered image. Everything is a pure function of the scene and the
size, like the image itself, so masks need no storage: re-render from the manifest.

Seeds: evaluation of localisation and grounding uses worlds whose seeds no training
script has used (see ``docs/explain.md``); :data:`HELD_OUT_SEEDS` lists them, and the
training scripts refuse to train on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from searchengine.toy.world import Mention, Scene, ToyObject, render_layers

__all__ = [
    "HELD_OUT_SEEDS",
    "ObjectRegion",
    "matching_mask",
    "scene_regions",
]

# World seeds kept for measuring `where`, `ground` and "more like this part": the toy
# CLIPs trained on seed 1, toy-seg on its own seeds (scripts/train_toy_seg.py), and the
# retrieval checks use 999, 1000, 4242 and 4343. 5151 is the test set, 5252 is where
# thresholds are chosen, so that the test set is never looked at while tuning; 5353 is
# a larger second test set (2,000 photos), measured once the methods were fixed; 5454
# tuned how FALIP weighs partly covered patches (scripts/tune_falip_cover.py: no
# variant beat the mask as it is, so none was adopted).
HELD_OUT_SEEDS = (5151, 5252, 5353, 5454)


@dataclass(frozen=True)
class ObjectRegion:
    """Where one object of a scene is, exactly.

    Attributes:
        object: the object (shape, colour, size, position).
        mask: ``(height, width)`` bool array, True where the object is.
        box: ``(x0, y0, x1, y1)``, the tight box around ``mask``, ends exclusive.
    """

    object: ToyObject
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        """Pixels in the mask."""
        return int(self.mask.sum())


def scene_regions(
    scene: Scene, size: tuple[int, int] = (640, 480)
) -> tuple[Image.Image, tuple[ObjectRegion, ...]]:
    """Render ``scene`` and return each object's exact mask and box, in scene order.

    Args:
        scene: the scene to draw.
        size: image size (width, height), as for ``render``.

    Returns:
        The rendered image (identical to ``render(scene, size)``) and one region per object.
    """
    image, layers = render_layers(scene, size)
    width, height = size
    covered = []
    for layer in layers:
        full = np.zeros((height, width), dtype=bool)
        alpha = np.asarray(layer.coverage) >= 128
        # Clip the layer's box to the frame: objects near an edge may reach past it.
        x0, y0 = max(layer.left, 0), max(layer.top, 0)
        x1 = min(layer.left + alpha.shape[1], width)
        y1 = min(layer.top + alpha.shape[0], height)
        if x1 > x0 and y1 > y0:
            dx, dy = layer.left, layer.top
            full[y0:y1, x0:x1] = alpha[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
        covered.append(full)
    regions = []
    for i, (obj, mask) in enumerate(zip(scene.objects, covered, strict=True)):
        for later in covered[i + 1 :]:
            mask = mask & ~later
        regions.append(ObjectRegion(obj, mask, _tight_box(mask)))
    return image, tuple(regions)


def matching_mask(
    regions: Sequence[ObjectRegion], mention: Mention, size: tuple[int, int]
) -> np.ndarray:
    """The union of the masks of every object ``mention`` is true of (all False if none)."""
    width, height = size
    union = np.zeros((height, width), dtype=bool)
    for region in regions:
        if mention.matches(region.object):
            union |= region.mask
    return union


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
