"""The toy world's shapes as polygons: outlines of unit radius, drawn into a mask.

Kept apart from :mod:`searchengine.toy.world` so that scene sampling, rendering and
geometry each stay small; nothing here draws colour, only coverage.
"""

from __future__ import annotations

import math

from PIL import ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, center: tuple[float, float], r: float, tilt: float
) -> None:
    """Fill ``shape`` of radius ``r`` around ``center``, tilted by ``tilt`` degrees, with 255."""
    cx, cy = center
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        return
    draw.polygon(
        [(cx + x * r, cy + y * r) for x, y in _outline(shape, math.radians(tilt))], fill=255
    )


def _outline(shape: str, tilt: float) -> list[tuple[float, float]]:
    """Unit-radius polygon for ``shape`` (y grows downwards), rotated by ``tilt`` radians."""
    if shape == "square":
        points = [(0.88 * math.cos(a), 0.88 * math.sin(a)) for a in _angles(4, math.pi / 4)]
    elif shape == "diamond":
        # Taller than wide, so a diamond never looks like a square.
        points = [(0.7 * math.cos(a), math.sin(a)) for a in _angles(4, 0.0)]
    elif shape == "triangle":
        points = [(math.cos(a), 0.12 + math.sin(a)) for a in _angles(3, -math.pi / 2)]
    elif shape == "star":
        points = [
            (rad * math.cos(a), 0.05 + rad * math.sin(a))
            for k, a in enumerate(_angles(10, -math.pi / 2))
            for rad in [1.0 if k % 2 == 0 else 0.42]
        ]
    elif shape == "cross":
        arm, half = 0.95, 0.32
        points = [
            (half, -arm), (half, -half), (arm, -half), (arm, half), (half, half), (half, arm),
            (-half, arm), (-half, half), (-arm, half), (-arm, -half), (-half, -half), (-half, -arm),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {shape!r}; use one of {SHAPES}")
    cos, sin = math.cos(tilt), math.sin(tilt)
    return [(x * cos - y * sin, x * sin + y * cos) for x, y in points]


def _angles(count: int, start: float) -> list[float]:
    return [start + 2 * math.pi * k / count for k in range(count)]
