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

Grounding and "more like this part" can also be asked with boxes that miss their
object a little (:func:`loosen_boxes`, :func:`move_boxes`), as a detector's proposals
or a hand-drawn selection do: a box shifted off the object, a box drawn inside it, or
random proposals that a detector would still be credited for (IoU >= 0.5 with the
true box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from searchengine.errors import ConfigError, DatasetError, ImageError
from searchengine.ingest.decode import decode_file
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

__all__ = [
    "BOX_KINDS",
    "ToyCase",
    "grounding_cases",
    "load_toy_items",
    "localisation_cases",
    "loosen_boxes",
    "move_boxes",
    "parse_boxes",
]

# How boxes may miss their object (``bench --task ground|part --boxes KIND:F``).
BOX_KINDS = {
    "exact": "the objects' true boxes",
    "shifted": "each box moved by F of its width and height, in a random direction",
    "inside": "each edge moved inward by F of the box's side: a box drawn inside the object",
    "proposals": "each edge moved at random by up to F of the side, kept where IoU >= 0.5",
}


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


def parse_boxes(spec: str) -> tuple[str, float]:
    """``exact``, ``shifted:F``, ``inside:F`` or ``proposals:F`` as (kind, F).

    Raises:
        ConfigError: an unknown kind, or F outside its range.
    """
    kind, _, amount = spec.strip().partition(":")
    if kind == "exact" and not amount:
        return kind, 0.0
    usage = "use exact, shifted:F, inside:F (F < 0.5) or proposals:F, e.g. shifted:0.3"
    if kind not in BOX_KINDS or kind == "exact":
        raise ConfigError(f"unknown --boxes {spec!r}; {usage}")
    try:
        value = float(amount)
    except ValueError:
        raise ConfigError(f"--boxes {spec!r} needs a fraction after the colon; {usage}") from None
    limit = 0.5 if kind == "inside" else 1.0
    if not 0.0 < value < limit:
        raise ConfigError(f"--boxes {spec!r}: F must be above 0 and below {limit}; {usage}")
    return kind, value


def loosen_boxes(cases: Sequence[ToyCase], kind: str, amount: float) -> list[ToyCase]:
    """``cases`` with every candidate box moved as ``kind`` says (see :data:`BOX_KINDS`).

    Deterministic: case ``i``'s boxes depend on ``(i, kind, amount)`` only, so every
    region method and model is asked about the same boxes. Boxes are kept inside the
    photo; the true answer (``target``) and the object masks are unchanged.
    """
    if kind == "exact":
        return list(cases)
    return [
        replace(case, boxes=move_boxes(case.boxes, kind, amount, _size_of(Path(case.path)), i))
        for i, case in enumerate(cases)
    ]


def move_boxes(
    boxes: Sequence[tuple[int, int, int, int]],
    kind: str,
    amount: float,
    size: tuple[int, int],
    key: int,
) -> tuple[tuple[int, int, int, int], ...]:
    """``boxes`` of one photo of ``size`` moved as ``kind`` says, inside the photo.

    The same ``key`` (the question's number in its set) gives the same boxes.
    """
    if kind == "exact":
        return tuple(boxes)
    rng = np.random.default_rng([key, list(BOX_KINDS).index(kind), round(amount * 1e6)])
    return tuple(_clip(_moved(box, kind, amount, rng), size) for box in boxes)


def _moved(
    box: tuple[int, int, int, int], kind: str, amount: float, rng: np.random.Generator
) -> np.ndarray:
    x0, y0, x1, y1 = box
    sides = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dtype=np.float64)
    true = np.array(box, dtype=np.float64)
    if kind == "shifted":
        angle = rng.uniform(0.0, 2 * np.pi)
        step = amount * sides[:2] * (np.cos(angle), np.sin(angle))
        return true + np.concatenate([step, step])
    if kind == "inside":
        return true + amount * sides * (1, 1, -1, -1)
    for _ in range(10_000):  # proposals: what a detector would still be credited for
        moved = true + rng.uniform(-amount, amount, 4) * sides
        if _iou(moved, true) >= 0.5:
            return moved
    return true  # a box too thin to move (no area): as it is


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if a[2] <= a[0] or a[3] <= a[1] or width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _clip(box: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    width, height = size
    x0, x1 = min(max(x0, 0), width - 1), min(max(x1, 1), width)
    y0, y1 = min(max(y0, 0), height - 1), min(max(y1, 1), height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


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
