"""A synthetic "toy world" of captioned images whose meaning we control.

Each scene holds one or two flat objects (a shape in a colour, small or large, at one of
five positions) on a light, neutral background. Because we draw the pictures ourselves,
every caption is true by construction, so tests can assert ranking quality ("the red
circle is found first") without a network or a real photo collection.

Everything is deterministic: ``generate(out_dir, n, seed)`` writes the same bytes for the
same arguments, and item ``i`` depends only on ``(seed, i)``, so a smaller ``n`` gives a
prefix of a larger one. ``scripts/toy_world.py`` is the command-line wrapper and
``docs/toy-world.md`` describes the world and the tiny models trained on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from searchengine.toy.shapes import SHAPES, draw_shape

# Saturated hues (plus black) that no background can be mistaken for.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "orange": (250, 130, 0),
    "yellow": (250, 215, 0),
    "green": (25, 150, 45),
    "blue": (25, 70, 215),
    "purple": (125, 35, 165),
    "pink": (250, 100, 185),
    "black": (20, 20, 20),
}
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("plain", "gradient", "noise")
MANIFEST_NAME = "manifest.jsonl"

# Light, low-saturation tones: white-ish, greys and beiges, far from every object colour.
_BACKGROUND_TONES = (
    (245, 245, 242),
    (225, 225, 225),
    (200, 200, 198),
    (178, 178, 180),
    (236, 226, 206),
    (222, 212, 192),
    (240, 236, 226),
)
# Object centres as fractions of (width, height).
_ANCHORS = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
# Radii and jitter as fractions of the layout unit (see ``_layout_unit``). Two large objects
# never touch: the centre-to-quadrant distance is at least 0.417 units, while two radii
# (x1.08 size jitter, x1.07 for the pointiest outline) plus the worst position jitter come
# to at most 0.413, so no object hides another and captions stay true.
_RADIUS = {"small": 0.095, "large": 0.155}
_JITTER = 0.02
_SUPERSAMPLE = 4  # anti-aliasing: draw each object mask 4x larger, then box-downsample
_SUBFOLDERS = ("album-a", "album-b/nested")


@dataclass(frozen=True)
class ToyObject:
    """One object in a scene: what a caption can say about it."""

    shape: str
    color: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """What to draw: the objects, the background kind and a seed for cosmetic randomness.

    ``render_seed`` drives everything a caption does not mention (exact placement, tilt,
    shade, background tones and texture), so ``render`` is a pure function of the scene.
    """

    objects: tuple[ToyObject, ...]
    background: str
    render_seed: int


@dataclass(frozen=True)
class Mention:
    """A possibly partial description of one object; ``None`` means "not said"."""

    shape: str
    color: str | None = None
    size: str | None = None
    position: str | None = None

    def text(self) -> str:
        """The English noun phrase, e.g. ``"a small red circle at the top left"``."""
        words = [w for w in ("a", self.size, self.color, self.shape) if w]
        if self.position is not None:
            words.append(
                "in the center" if self.position == "center" else f"at the {self.position}"
            )
        return " ".join(words)

    def matches(self, obj: ToyObject) -> bool:
        """Whether this description is true of ``obj``."""
        return (
            self.shape == obj.shape
            and self.color in (None, obj.color)
            and self.size in (None, obj.size)
            and self.position in (None, obj.position)
        )


@dataclass(frozen=True)
class ToyItem:
    """One generated image: its path relative to the output folder, captions and scene."""

    path: str
    captions: tuple[str, ...]
    scene: Scene

    def to_json(self) -> dict[str, Any]:
        """The manifest record for this item."""
        return {
            "path": self.path,
            "captions": list(self.captions),
            "attributes": {
                "objects": [vars(o) for o in self.scene.objects],
                "background": self.scene.background,
                "render_seed": self.scene.render_seed,
            },
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ToyItem:
        """Inverse of ``to_json``."""
        attrs = record["attributes"]
        objects = tuple(ToyObject(**o) for o in attrs["objects"])
        scene = Scene(objects, attrs["background"], attrs["render_seed"])
        return cls(record["path"], tuple(record["captions"]), scene)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random scene: one object (30%) or two at different positions (70%).

    Two-object scenes are the majority so that full captions rarely repeat.
    """
    count = 1 if rng.random() < 0.3 else 2
    positions = rng.choice(len(POSITIONS), size=count, replace=False)
    objects = tuple(
        ToyObject(
            shape=SHAPES[rng.integers(len(SHAPES))],
            color=list(COLORS)[rng.integers(len(COLORS))],
            size=SIZES[rng.integers(len(SIZES))],
            position=POSITIONS[p],
        )
        for p in positions
    )
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    return Scene(objects, background, int(rng.integers(2**31)))


def full_mentions(scene: Scene) -> tuple[Mention, ...]:
    """Complete descriptions of every object, in scene order."""
    return tuple(Mention(o.shape, o.color, o.size, o.position) for o in scene.objects)


def describe(mentions: Sequence[Mention]) -> str:
    """Join object descriptions into one caption."""
    return " and ".join(m.text() for m in mentions)


def caption(scene: Scene) -> str:
    """The full caption, e.g. ``"a large red circle at the top left and a small ..."``."""
    return describe(full_mentions(scene))


def random_mentions(scene: Scene, rng: np.random.Generator) -> tuple[Mention, ...]:
    """A random true description of ``scene``, for caption augmentation in training.

    Half the time the full caption (objects in either order); otherwise one or both
    objects described by their shape plus a random subset of colour, size and position,
    so that short queries such as "a green triangle" are learned too.
    """
    full = list(full_mentions(scene))
    if rng.random() < 0.5:
        order = rng.permutation(len(full))
        return tuple(full[i] for i in order)
    picked = full if len(full) > 1 and rng.random() < 0.3 else [full[rng.integers(len(full))]]
    order = rng.permutation(len(picked))
    partial = []
    for i in order:
        m = picked[i]
        keep = rng.random(3) < 0.5
        partial.append(
            Mention(
                m.shape,
                m.color if keep[0] else None,
                m.size if keep[1] else None,
                m.position if keep[2] else None,
            )
        )
    return tuple(partial)


def scene_matches(scene: Scene, mentions: Sequence[Mention]) -> bool:
    """Whether every mention is true of a distinct object of ``scene``."""
    return _assign(list(mentions), list(scene.objects))


def _assign(mentions: list[Mention], objects: list[ToyObject]) -> bool:
    if not mentions:
        return True
    head, rest = mentions[0], mentions[1:]
    return any(
        head.matches(obj) and _assign(rest, objects[:i] + objects[i + 1 :])
        for i, obj in enumerate(objects)
    )


def render(scene: Scene, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` (width, height)."""
    return render_layers(scene, size)[0]


@dataclass(frozen=True)
class Layer:
    """Where one object was painted: its anti-aliased coverage over a box of the frame.

    ``coverage`` is an 8-bit alpha image (255 = fully covered) whose top-left corner sits
    at ``(left, top)`` of the frame; it may reach past the frame's edges.
    """

    left: int
    top: int
    coverage: Image.Image


def render_layers(
    scene: Scene, size: tuple[int, int] = (640, 480)
) -> tuple[Image.Image, tuple[Layer, ...]]:
    """Draw ``scene`` and say where each object went, in ``scene.objects`` order.

    The image is exactly ``render``'s; the layers are what ``searchengine.toy.masks``
    turns into exact object masks and boxes.
    """
    rng = np.random.default_rng(scene.render_seed)
    image = _background(scene.background, size, rng)
    layers = tuple(_draw_object(image, obj, rng) for obj in scene.objects)
    return image, layers


def _background(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    width, height = size
    tones = np.array(_BACKGROUND_TONES, dtype=np.float32)
    first, second = tones[rng.choice(len(tones), size=2, replace=False)]
    if kind == "plain":
        return Image.new("RGB", size, tuple(int(v) for v in first))
    # Smooth variation is computed on a coarse grid and upsampled: ~10x cheaper than
    # full-resolution float maths, and invisible once upsampled bilinearly.
    coarse_w, coarse_h = max(width // 16, 2), max(height // 16, 2)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        xs = np.linspace(-0.5, 0.5, coarse_w, dtype=np.float32)[None, :]
        ys = np.linspace(-0.5, 0.5, coarse_h, dtype=np.float32)[:, None]
        t = np.clip(math.cos(angle) * xs + math.sin(angle) * ys + 0.5, 0.0, 1.0)[..., None]
        coarse = first * (1 - t) + second * t
    elif kind == "noise":
        blotches = rng.normal(0.0, 10.0, (coarse_h, coarse_w, 1)).astype(np.float32)
        coarse = first[None, None, :] + blotches
    else:
        raise ValueError(f"unknown background {kind!r}; use one of {BACKGROUNDS}")
    smooth = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
    smooth = smooth.resize(size, Image.Resampling.BILINEAR)
    if kind == "gradient":
        return smooth
    # Fine grey grain on top of the blotches reads as paper or concrete.
    pixels = np.asarray(smooth).astype(np.int16)
    pixels += rng.integers(-8, 9, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_object(image: Image.Image, obj: ToyObject, rng: np.random.Generator) -> Layer:
    width, height = image.size
    unit = _layout_unit(width, height)
    radius = _RADIUS[obj.size] * unit * rng.uniform(0.92, 1.08)
    fx, fy = _ANCHORS[obj.position]
    cx = fx * width + rng.uniform(-_JITTER, _JITTER) * unit
    cy = fy * height + rng.uniform(-_JITTER, _JITTER) * unit
    tilt = rng.uniform(-12.0, 12.0)
    shade = rng.integers(-12, 13, size=3)
    color = tuple(
        int(np.clip(c + s, 0, 255)) for c, s in zip(COLORS[obj.color], shade, strict=True)
    )

    # Draw a supersampled mask of the object's box only, so cost scales with object size.
    left, top = int(cx - radius) - 1, int(cy - radius) - 1
    box_w, box_h = int(cx + radius) + 2 - left, int(cy + radius) + 2 - top
    mask = Image.new("L", (box_w * _SUPERSAMPLE, box_h * _SUPERSAMPLE), 0)
    local = ((cx - left) * _SUPERSAMPLE, (cy - top) * _SUPERSAMPLE)
    draw_shape(ImageDraw.Draw(mask), obj.shape, local, radius * _SUPERSAMPLE, tilt)
    coverage = mask.reduce(_SUPERSAMPLE)
    image.paste(color, (left, top, left + box_w, top + box_h), coverage)
    return Layer(left, top, coverage)


def _layout_unit(width: int, height: int) -> float:
    """The short side, shrunk for near-square images where quadrant centres come closer.

    ``0.6 * hypot`` equals the short side at 4:3, so 640x480 uses its full height.
    """
    return min(width, height, 0.6 * math.hypot(width, height))


def generate(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    size: tuple[int, int] = (640, 480),
    formats: Sequence[str] = ("jpg", "png", "webp"),
) -> list[ToyItem]:
    """Write ``n`` captioned toy images and their ``manifest.jsonl`` under ``out_dir``.

    Files cycle through ``formats`` and two subfolders (one nested), like a small photo
    library. Item ``i`` depends only on ``(seed, i)``, so equal arguments give equal bytes.

    Args:
        out_dir: folder to write into; created if missing. Existing files are overwritten.
        n: number of images.
        seed: world seed; use seeds never used in training for held-out sets.
        size: image size (width, height) in pixels.
        formats: file formats to cycle through, any of ``jpg``, ``png``, ``webp``.

    Returns:
        The items written, in manifest order.

    Raises:
        ValueError: ``n`` is negative or a format is not supported.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    unknown = [f for f in formats if f not in _SAVE_OPTIONS]
    if unknown or not formats:
        raise ValueError(f"unsupported formats {unknown}; use some of {sorted(_SAVE_OPTIONS)}")
    root = Path(out_dir)
    items = []
    for index in range(n):
        scene = sample_scene(np.random.default_rng((seed, index)))
        fmt = formats[index % len(formats)]
        rel = f"{_SUBFOLDERS[index % len(_SUBFOLDERS)]}/toy-{index:05d}.{fmt}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        render(scene, size).save(root / rel, **_SAVE_OPTIONS[fmt])
        items.append(ToyItem(rel, (caption(scene),), scene))
    with open(root / MANIFEST_NAME, "w", encoding="utf-8") as manifest:
        for item in items:
            manifest.write(json.dumps(item.to_json(), sort_keys=True) + "\n")
    return items


# Photo-like lossy settings for jpg/webp; fast lossless compression for png.
_SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "jpg": {"format": "JPEG", "quality": 90},
    "png": {"format": "PNG", "compress_level": 1},
    "webp": {"format": "WEBP", "quality": 90, "method": 2},
}


def load_manifest(out_dir: str | Path) -> list[ToyItem]:
    """Read the items that ``generate`` wrote under ``out_dir``.

    Raises:
        FileNotFoundError: ``out_dir`` holds no ``manifest.jsonl``.
    """
    path = Path(out_dir) / MANIFEST_NAME
    with open(path, encoding="utf-8") as manifest:
        return [ToyItem.from_json(json.loads(line)) for line in manifest if line.strip()]
