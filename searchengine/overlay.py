"""Pictures of where a phrase is: a heatmap over the photo, or the raw logit map.

Both are plain Pillow drawings (no plotting library), written as PNG. The heatmap blends
a colour scale of the probability over the photo, more opaque where the model is more
sure, and marks the box and the peak; the logit view shows the model's raw output on a
diverging scale centred on 0 (probability 0.5) with a labelled colour bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from searchengine.fsutil import atomic_write
from searchengine.where import Location

__all__ = ["heat_overlay", "logit_figure", "save_png", "write_pictures"]

# Anchors of a dark-purple -> red -> yellow scale (perceptually ordered like "inferno").
_HEAT = np.array(
    [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32
)
# Blue -> white -> red, for signed logits.
_SIGNED = np.array([(33, 102, 172), (247, 247, 247), (178, 24, 43)], dtype=np.float32)
_MAX_SIDE = 1600  # overlays of larger photos are drawn smaller; coordinates are scaled


def _colours(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to RGB by linear interpolation between ``anchors``."""
    pos = np.clip(values, 0.0, 1.0) * (len(anchors) - 1)
    low = np.minimum(pos.astype(int), len(anchors) - 2)
    frac = (pos - low)[..., None]
    return (anchors[low] * (1 - frac) + anchors[low + 1] * frac).astype(np.uint8)


def heat_overlay(photo: Image.Image, location: Location) -> Image.Image:
    """The photo with the phrase's probability map laid over it, box and peak marked.

    Args:
        photo: the upright photo (any size: the map and marks are scaled to it).
        location: what :func:`searchengine.where.locate` found.
    """
    base = photo.convert("RGB")
    scale = min(1.0, _MAX_SIDE / max(base.size))
    if scale < 1.0:
        base = base.resize((round(base.width * scale), round(base.height * scale)))
    prob = location.probabilities(base.size)
    heat = _colours(prob, _HEAT).astype(np.float32)
    alpha = (0.15 + 0.6 * prob)[..., None]
    pixels = np.asarray(base, dtype=np.float32) * (1 - alpha) + heat * alpha
    out = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    fx, fy = base.width / location.size[0], base.height / location.size[1]
    line = max(2, round(max(base.size) / 300))
    if location.box is not None:
        x0, y0, x1, y1 = location.box
        draw.rectangle(
            (x0 * fx, y0 * fy, x1 * fx - 1, y1 * fy - 1), outline=(0, 255, 120), width=line
        )
    px, py = location.peak[0] * fx, location.peak[1] * fy
    arm = 4 * line
    draw.line((px - arm, py, px + arm, py), fill=(255, 255, 255), width=line)
    draw.line((px, py - arm, px, py + arm), fill=(255, 255, 255), width=line)
    verdict = "found" if location.found else "not found"
    _label(draw, (6, 6), f"{location.text}: {verdict} (peak {location.score:.2f})")
    return out


def logit_figure(location: Location, side: int = 512) -> Image.Image:
    """The raw logit map (model resolution, scaled to ``side``) with a colour bar.

    White is logit 0 (probability 0.5); red is positive, blue negative, both scaled to
    the largest magnitude in the map, which the bar's labels give.
    """
    logits = location.logits
    span = max(float(np.abs(logits).max()), 1e-6)
    rgb = _colours((logits / span + 1.0) / 2.0, _SIGNED)
    width = side
    height = max(1, round(side * location.size[1] / location.size[0]))
    plot = Image.fromarray(rgb).resize((width, height), Image.Resampling.NEAREST)
    bar_w, margin, text_w = 18, 10, 70
    out = Image.new("RGB", (width + margin * 2 + bar_w + text_w, height + 40), (255, 255, 255))
    out.paste(plot, (margin, 30))
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    out.paste(Image.fromarray(_colours(ramp, _SIGNED)), (width + margin * 2, 30))
    draw = ImageDraw.Draw(out)
    x_text = width + margin * 2 + bar_w + 4
    for value, y in ((span, 30), (0.0, 30 + height // 2), (-span, 30 + height - 10)):
        draw.text((x_text, y), f"{value:+.1f}", fill=(0, 0, 0), font=ImageFont.load_default())
    lo, hi = float(logits.min()), float(logits.max())
    draw.text(
        (margin, 8),
        f"logits of '{location.text}' (min {lo:.1f}, max {hi:.1f})",
        fill=(0, 0, 0),
        font=ImageFont.load_default(),
    )
    return out


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write ``image`` as PNG atomically (temp file + rename), creating the folder."""
    target = Path(path)
    with atomic_write(target) as out:
        image.save(out, format="PNG")
    return target


def _label(draw: ImageDraw.ImageDraw, at: tuple[int, int], text: str) -> None:
    font = ImageFont.load_default()
    x0, y0, x1, y1 = draw.textbbox(at, text, font=font)
    draw.rectangle((x0 - 3, y0 - 3, x1 + 3, y1 + 3), fill=(0, 0, 0))
    draw.text(at, text, fill=(255, 255, 255), font=font)


def write_pictures(
    photo: Image.Image, locations: list[Location], out: str | Path, *, logits: bool = False
) -> list[Path]:
    """One PNG per location: ``out`` itself for one, ``<stem>-<n><suffix>`` for several.

    Args:
        photo: the upright photo the locations are in.
        locations: what :func:`searchengine.where.locate` returned.
        out: the file to write (``.png`` is added when it has no suffix).
        logits: write the raw logit map with a colour bar instead of the overlay.
    """
    target = Path(out)
    if not target.suffix:
        target = target.with_suffix(".png")
    written = []
    for n, location in enumerate(locations, start=1):
        path = target if len(locations) == 1 else target.with_stem(f"{target.stem}-{n}")
        picture = logit_figure(location) if logits else heat_overlay(photo, location)
        written.append(save_png(picture, path))
    return written
