"""Files ``caption-eval`` reads: candidate captions, references, human ratings.

CSV files need a header row; image paths in them are relative to the file's folder
(or to an explicit image root):

- captions and references: ``image,caption`` (several rows per image allowed);
- ratings: ``image,caption,rating``.

JSON alternatives, as the CLIPScore authors' scripts use them:

- references: ``{"image.jpg": ["ref 1", "ref 2"], ...}`` (a single string allowed);
- ratings: the Flickr8k-Expert / CrowdFlower file of ``jmhessel/clipscore``::

      {"ID": {"image_path": "Flicker8k_Dataset/x.jpg", "ground_truth": ["..."],
              "human_judgement": [{"caption": "...", "rating": 3.0}, ...]}, ...}

  Its ``ground_truth`` captions double as references; NaN ratings are skipped, as the
  authors' script does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from searchengine.errors import DatasetError
from searchengine.evaluation.datasets import load_captions_csv, read_json

__all__ = ["RatedCaption", "Ratings", "load_captions", "load_ratings", "load_references"]


@dataclass(frozen=True)
class RatedCaption:
    """One human judgement of one caption of one image."""

    image: str
    caption: str
    rating: float


@dataclass(frozen=True)
class Ratings:
    """Human judgements, and the references a ratings file carries (may be empty)."""

    judgements: list[RatedCaption]
    references: dict[str, list[str]] = field(default_factory=dict)


def normalize_caption(text: str) -> str:
    """Whitespace collapsed, so ``"a  dog"`` and ``"a dog "`` are the same caption."""
    return " ".join(text.split())


def load_captions(path: str | Path, image_root: str | Path | None = None) -> list[tuple[str, str]]:
    """``(image, caption)`` pairs from an ``image,caption`` CSV.

    Raises:
        DatasetError: unreadable file, missing columns or empty cells.
    """
    rows = load_captions_csv(path, image_root)
    return [(row[0], normalize_caption(row[1])) for row in rows]


def load_references(path: str | Path, image_root: str | Path | None = None) -> dict[str, list[str]]:
    """Reference captions per absolute image path, from a CSV or JSON file.

    Raises:
        DatasetError: unreadable or malformed file.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        refs: dict[str, list[str]] = {}
        for image, text in load_captions(path, image_root):
            refs.setdefault(image, []).append(text)
        return refs
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: references JSON must map image file to captions")
    root = Path(image_root) if image_root is not None else path.parent
    out = {}
    for image, texts in data.items():
        items = [texts] if isinstance(texts, str) else texts
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise DatasetError(f"{path}: references of {image!r} must be strings")
        out[os.path.abspath(root / image)] = [normalize_caption(t) for t in items if t.strip()]
    return out


def load_ratings(path: str | Path, image_root: str | Path | None = None) -> Ratings:
    """Human ratings from an ``image,caption,rating`` CSV or a clipscore-format JSON.

    Raises:
        DatasetError: unreadable or malformed file, or a rating that is not a number.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _ratings_json(path, image_root)
    judgements = []
    for image, text, raw in load_captions_csv(path, image_root, extra=("rating",)):
        judgements.append(RatedCaption(image, normalize_caption(text), _number(raw, path)))
    return Ratings(judgements)


def _ratings_json(path: Path, image_root: str | Path | None) -> Ratings:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected the clipscore ratings format (an object of images)")
    root = Path(image_root) if image_root is not None else path.parent
    judgements, references = [], {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or "image_path" not in entry:
            raise DatasetError(f"{path}: entry {key!r} has no 'image_path'")
        image = os.path.abspath(root / str(entry["image_path"]))
        truths = [normalize_caption(t) for t in entry.get("ground_truth") or [] if str(t).strip()]
        if truths:
            references[image] = truths
        for judgement in entry.get("human_judgement") or []:
            rating = _number(judgement.get("rating"), path)
            if math.isnan(rating):
                continue
            text = normalize_caption(str(judgement.get("caption", "")))
            if not text:
                raise DatasetError(f"{path}: entry {key!r} has a judgement without a caption")
            judgements.append(RatedCaption(image, text, rating))
    if not judgements:
        raise DatasetError(f"{path}: no human judgements found")
    return Ratings(judgements, references)


def _number(raw: object, path: Path) -> float:
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: rating {raw!r} is not a number") from None
