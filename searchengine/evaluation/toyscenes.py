"""Questions about held-out toy scenes, with their exact answers, for ``bench --task``.

A toy world (``toy:N:SEED`` or a folder the generator wrote) is read from disk as a
user's photos would be; each scene's object masks and boxes are recomputed from its
manifest record (:mod:`searchengine.toy.masks`), so the answers are exact.

- grounding cases: every two-object scene, one description that fits exactly one of
  its objects (colour and shape, plus size, then position, when needed to tell the two
  apart), the two true boxes as candidates, alternating which object is described;
- localisation cases: per scene, a phrase true of an object (shape and colour of one of
  them) with the mask of every object it fits, and a phrase true of none (a real
  object's shape or colour changed, or another shape altogether).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from searchengine.errors import DatasetError, ImageError
from searchengine.ingest.decode import decode_file
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

__all__ = [
    "ToyCase",
    "grounding_cases",
    "load_toy_items",
    "localisation_cases",
]


@dataclass(frozen=True)
class ToyCase:
    """One question about one toy photo.

    Attributes:
        path: the image file.
        text: the phrase.
        boxes: every object's true box, in scene order.
        target: index of the object the phrase describes (-1: none).
        mask: union of the masks of the objects the phrase is true of (all False: none).
    """

    path: str
    text: str
    boxes: tuple[tuple[int, int, int, int], ...]
    target: int
    mask: np.ndarray

    @property
    def present(self) -> bool:
        """Whether the phrase is true of some object."""
        return bool(self.mask.any())

    def load_image(self) -> Image.Image:
        """The photo from disk, upright, full size."""
        try:
            return decode_file(self.path).image
        except ImageError as exc:
            raise DatasetError(f"cannot read {self.path}: {exc}") from exc


def load_toy_items(
    source: str, data_dir: str | Path | None = None
) -> tuple[Path, list[toyworld.ToyItem]]:
    """The folder and manifest items of ``toy:N:SEED`` (generated once) or a toy folder.

    Raises:
        DatasetError: not a toy world.
    """
    from searchengine.evaluation.datasets import toy_world

    if source.startswith("toy:"):
        if data_dir is None:
            from searchengine.evaluation.bench import default_cache_dir

            data_dir = default_cache_dir() / "datasets"
        dataset = toy_world(source, data_dir)
        folder = Path(dataset.images[0]).parent
        while not (folder / toyworld.MANIFEST_NAME).exists() and folder != folder.parent:
            folder = folder.parent
    else:
        folder = Path(source).expanduser()
    try:
        return folder, toyworld.load_manifest(folder)
    except FileNotFoundError:
        raise DatasetError(
            f"{source}: --task ground/where needs a toy world (toy:N:SEED or a folder "
            f"holding {toyworld.MANIFEST_NAME}); they know where every object is"
        ) from None


def _describe(obj: toyworld.ToyObject, other: toyworld.ToyObject) -> toyworld.Mention:
    """The shortest of colour+shape, +size, +position that fits ``obj`` and not ``other``."""
    for mention in (
        toyworld.Mention(obj.shape, obj.color),
        toyworld.Mention(obj.shape, obj.color, obj.size),
        toyworld.Mention(obj.shape, obj.color, obj.size, obj.position),
    ):
        if not mention.matches(other):
            return mention
    raise AssertionError("two objects at one position")  # the world never makes these


def grounding_cases(folder: Path, items: list[toyworld.ToyItem]) -> list[ToyCase]:
    """One description per two-object scene; the target alternates between the objects."""
    cases: list[ToyCase] = []
    for item in items:
        scene = item.scene
        if len(scene.objects) != 2:
            continue
        target = len(cases) % 2
        mention = _describe(scene.objects[target], scene.objects[1 - target])
        size = _size_of(folder / item.path)
        _, regions = toymasks.scene_regions(scene, size)
        cases.append(
            ToyCase(
                str(folder / item.path),
                mention.text(),
                tuple(r.box for r in regions),
                target,
                regions[target].mask,
            )
        )
    return cases


def localisation_cases(folder: Path, items: list[toyworld.ToyItem]) -> list[ToyCase]:
    """Two phrases per scene: one true of an object, one true of none."""
    cases = []
    for index, item in enumerate(items):
        scene = item.scene
        size = _size_of(folder / item.path)
        _, regions = toymasks.scene_regions(scene, size)
        boxes = tuple(r.box for r in regions)
        k = index % len(scene.objects)
        true = toyworld.Mention(scene.objects[k].shape, scene.objects[k].color)
        mask = toymasks.matching_mask(regions, true, size)
        cases.append(ToyCase(str(folder / item.path), true.text(), boxes, k, mask))
        absent = _absent(scene, np.random.default_rng(index))
        cases.append(
            ToyCase(str(folder / item.path), absent.text(), boxes, -1, np.zeros_like(mask))
        )
    return cases


def _absent(scene: toyworld.Scene, rng: np.random.Generator) -> toyworld.Mention:
    """Colour + shape true of no object: mostly one attribute of a real object changed."""
    while True:
        base = scene.objects[rng.integers(len(scene.objects))]
        roll = rng.random()
        if roll < 0.4:
            colours = [c for c in toyworld.COLORS if c != base.color]
            mention = toyworld.Mention(base.shape, colours[rng.integers(len(colours))])
        elif roll < 0.8:
            shapes = [s for s in toyworld.SHAPES if s != base.shape]
            mention = toyworld.Mention(shapes[rng.integers(len(shapes))], base.color)
        else:
            colour = list(toyworld.COLORS)[rng.integers(len(toyworld.COLORS))]
            mention = toyworld.Mention(toyworld.SHAPES[rng.integers(len(toyworld.SHAPES))], colour)
        if not any(mention.matches(o) for o in scene.objects):
            return mention


def _size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size
