"""Where in a photo is the thing a phrase describes? CLIPSeg heatmaps, boxes and "not found".

``locate(path, ["a walking dog"])`` runs CLIPSeg (:class:`searchengine.models.clipseg.ClipSeg`)
and reads each logit map the same way:

- ``score`` is the peak probability (sigmoid of the highest logit);
- ``found`` is ``score >= threshold``: a phrase for something absent gives a diffuse,
  low map whose peak stays under the threshold, and is reported as not found instead of
  as a confident box;
- ``peak`` is the pixel of that maximum and ``box`` the tight box around the connected
  region at or above the threshold that contains it (none when not found);

all in the pixels of the original image after EXIF orientation, whatever size the model
saw. The default threshold, 0.5, is where a sigmoid says "more likely than not"; on the
held-out toy scenes it gives the rates in ``docs/explain.md`` (the threshold sweep there
is measured on the tuning seed, never on the test seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from searchengine.errors import ImageError, QueryError
from searchengine.ingest.decode import decode_file
from searchengine.models.clipseg import DEFAULT_SEG_MODEL, ClipSeg
from searchengine.ranking.results import check_query

__all__ = [
    "DEFAULT_THRESHOLD",
    "Location",
    "locate",
    "locate_files",
    "locate_images",
    "read_map",
]

DEFAULT_THRESHOLD = 0.5
# The photo is decoded with its shorter side at least this long (JPEGs at a reduced DCT
# scale): enough for the model's input and for an overlay a person can read.
_DECODE_SIDE = 768


@dataclass(frozen=True)
class Location:
    """Where one phrase is in one image.

    Attributes:
        text: the phrase.
        found: whether the peak probability reaches the threshold.
        score: the peak probability, 0 to 1.
        box: ``(x0, y0, x1, y1)`` in original pixels (ends exclusive); ``None`` if not found.
        peak: ``(x, y)`` of the peak, in original pixels.
        size: the original image's upright ``(width, height)``.
        threshold: the probability ``found`` and ``box`` were cut at.
        logits: the raw logit map at the model's resolution, covering the whole image.
    """

    text: str
    found: bool
    score: float
    box: tuple[int, int, int, int] | None
    peak: tuple[int, int]
    size: tuple[int, int]
    threshold: float
    logits: np.ndarray = field(repr=False, compare=False)

    def probabilities(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The probability map, at the model's resolution or resized to ``size`` (w, h)."""
        logits = self.logits if size is None else _resize(self.logits, size)
        return 1.0 / (1.0 + np.exp(-logits))

    def mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Pixels at or above the threshold, at ``size`` (default: the original size)."""
        return self.probabilities(size or self.size) >= self.threshold

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: text, found, score, box, peak, threshold (not the map)."""
        return {
            "text": self.text,
            "found": self.found,
            "score": round(self.score, 4),
            "box": list(self.box) if self.box is not None else None,
            "peak": list(self.peak),
            "threshold": self.threshold,
        }


def read_map(
    text: str, logits: np.ndarray, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD
) -> Location:
    """Turn one logit map (covering an image of ``size``) into a :class:`Location`.

    Raises:
        QueryError: the threshold is not strictly between 0 and 1.
    """
    if not 0.0 < threshold < 1.0:
        raise QueryError(f"the threshold must be between 0 and 1 (got {threshold})")
    logits = np.asarray(logits, dtype=np.float32)
    rows, cols = logits.shape
    width, height = size
    flat = int(np.argmax(logits))
    py, px = divmod(flat, cols)
    score = float(1.0 / (1.0 + np.exp(-float(logits[py, px]))))
    peak = (
        min(int((px + 0.5) * width / cols), width - 1),
        min(int((py + 0.5) * height / rows), height - 1),
    )
    found = score >= threshold
    box = None
    if found:
        cut = float(np.log(threshold / (1.0 - threshold)))  # the threshold as a logit
        region = _component(logits >= cut, (py, px))
        ys, xs = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
        box = (
            int(np.floor(xs[0] * width / cols)),
            int(np.floor(ys[0] * height / rows)),
            int(np.ceil((xs[-1] + 1) * width / cols)),
            int(np.ceil((ys[-1] + 1) * height / rows)),
        )
    return Location(text, found, score, box, peak, (width, height), threshold, logits)


def locate_images(
    model: ClipSeg,
    images: Sequence[Image.Image],
    texts: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    threshold: float = DEFAULT_THRESHOLD,
) -> list[Location]:
    """One :class:`Location` per (image, phrase, original size) triple, in one batched run."""
    phrases = [check_query(t) for t in texts]
    maps = model.logits(images, phrases)
    return [
        read_map(text, m, size, threshold)
        for text, m, size in zip(phrases, maps, sizes, strict=True)
    ]


def locate(
    image: str | Path,
    texts: Sequence[str],
    model: ClipSeg | str = DEFAULT_SEG_MODEL,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    device: str = "auto",
) -> tuple[Image.Image, list[Location]]:
    """Where each phrase is in the image file ``image`` (indexed or not).

    Args:
        image: an image file; EXIF orientation is applied.
        texts: one or more phrases.
        model: a loaded :class:`ClipSeg` or a CLIPSeg model name (loaded and closed here).
        threshold: peak probability from which a phrase counts as found.
        device: where to run a model loaded here.

    Returns:
        The upright image as decoded (possibly reduced in size, for overlays) and one
        location per phrase, in order.

    Raises:
        QueryError: no phrase, an empty phrase, a bad threshold, or an unusable image.
        ModelError: the model cannot be loaded.
    """
    if not texts:
        raise QueryError('give at least one phrase to look for, e.g. "a dog"')
    try:
        decoded = decode_file(str(image), min_side=_DECODE_SIDE)
    except ImageError as exc:
        raise QueryError(f"cannot look inside {image}: {exc}") from exc
    owned = isinstance(model, str)
    seg = ClipSeg(model, device=device) if isinstance(model, str) else model
    try:
        size = (decoded.width, decoded.height)
        locations = locate_images(
            seg, [decoded.image] * len(texts), list(texts), [size] * len(texts), threshold
        )
    finally:
        if owned:
            seg.close()
    return decoded.image, locations


def locate_files(
    paths: Sequence[str],
    text: str,
    model: ClipSeg | str = DEFAULT_SEG_MODEL,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    device: str = "auto",
) -> list[tuple[Image.Image, Location] | None]:
    """Where one phrase is in each of several image files (``search --where``).

    Returns, per path in order, the decoded photo and its location, or ``None`` for a
    file that can no longer be read (moved or deleted since it was indexed).
    """
    phrase = check_query(text)
    decoded: list[tuple[int, Image.Image, tuple[int, int]]] = []
    for n, path in enumerate(paths):
        try:
            d = decode_file(str(path), min_side=_DECODE_SIDE)
        except ImageError:
            continue
        decoded.append((n, d.image, (d.width, d.height)))
    out: list[tuple[Image.Image, Location] | None] = [None] * len(paths)
    if not decoded:
        return out
    owned = isinstance(model, str)
    seg = ClipSeg(model, device=device) if isinstance(model, str) else model
    try:
        locations = locate_images(
            seg,
            [im for _, im, _ in decoded],
            [phrase] * len(decoded),
            [size for _, _, size in decoded],
            threshold,
        )
    finally:
        if owned:
            seg.close()
    for (n, image, _), location in zip(decoded, locations, strict=True):
        out[n] = (image, location)
    return out


def _component(mask: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected region of ``mask`` containing ``seed``, by repeated dilation.

    Maps are at most a few hundred pixels a side, so whole-array steps beat a Python
    flood fill and need no image library.
    """
    region = np.zeros_like(mask)
    region[seed] = True
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= mask
        if np.array_equal(grown, region):
            return region
        region = grown


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``size`` (width, height)."""
    image = Image.fromarray(np.asarray(values, dtype=np.float32), mode="F")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
