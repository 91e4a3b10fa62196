"""``searchengine score``: how each model rates a few captions of one image.

Per caption and model, three numbers, as the CLIP/CLIPS seeds print them:

- ``cos``: cosine of the caption (as written) and the image;
- ``logit``: ``logit_scale * cos``, the model's own similarity logit; ``prob`` is the
  softmax of the logits over the given captions (CLIP's zero-shot "label probs");
- ``CLIP-S``: CLIPScore, ``2.5 * max(cos, 0)`` of the caption prefixed
  "A photo depicts " (Hessel et al., 2021).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchengine.errors import ImageError, QueryError
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.region import clip_box, region_vectors
from searchengine.scoring import clip_score, with_prefix

__all__ = ["CaptionScore", "ScoreTable", "model_labels", "score_captions"]


@dataclass(frozen=True)
class CaptionScore:
    """One model's view of one caption."""

    caption: str
    model: str
    cosine: float
    logit: float
    prob: float
    clip_score: float


@dataclass(frozen=True)
class ScoreTable:
    """Every caption under every model, for one image (``scores`` model-major)."""

    image: str
    models: list[str]
    captions: list[str]
    logit_scales: dict[str, float]
    scores: list[CaptionScore]
    region: tuple[int, int, int, int] | None = None  # the part of the image scored
    region_method: str | None = None

    def get(self, caption: int, model: str) -> CaptionScore:
        """The score of caption number ``caption`` under ``model``."""
        return self.scores[self.models.index(model) * len(self.captions) + caption]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: one entry per caption with a block per model."""
        return {
            "image": self.image,
            **(
                {"region": list(self.region), "region_method": self.region_method}
                if self.region is not None
                else {}
            ),
            "models": self.models,
            "logit_scale": self.logit_scales,
            "captions": [
                {
                    "caption": text,
                    "scores": {
                        model: {
                            k: v
                            for k, v in asdict(self.get(i, model)).items()
                            if k not in ("caption", "model")
                        }
                        for model in self.models
                    },
                }
                for i, text in enumerate(self.captions)
            ],
        }

    def to_table(self) -> str:
        """Captions as rows, ``logit cos prob CLIP-S`` per model side by side."""
        labels = model_labels(self.models)
        lines = [f"image: {self.image}"]
        if self.region is not None:
            box = ",".join(map(str, self.region))
            lines.append(f"region: {box} ({self.region_method})")
        lines += [
            f"  [{labels[m]}] {m}  (logit scale {self.logit_scales[m]:.2f})" for m in self.models
        ]
        width = min(60, max(len("caption"), *(len(c) for c in self.captions)))
        metrics = ("logit", "cos", "prob", "CLIP-S")
        header = "caption".ljust(width) + "".join(
            f"  {labels[m] + ' ' + name:>9}" for m in self.models for name in metrics
        )
        lines += ["", header]
        for i, text in enumerate(self.captions):
            cells = []
            for model in self.models:
                s = self.get(i, model)
                cells += [f"{s.logit:9.2f}", f"{s.cosine:9.4f}", f"{s.prob:9.4f}"]
                cells.append(f"{s.clip_score:9.4f}")
            shown = text if len(text) <= width else text[: width - 1] + "…"
            lines.append(shown.ljust(width) + "".join(f"  {c}" for c in cells))
        return "\n".join(lines)


def model_labels(models: Sequence[str]) -> dict[str, str]:
    """Short column labels for models: ``A``, ``B``, ...; ``M1``, ... past 26."""
    if len(models) <= 26:
        return {m: chr(ord("A") + i) for i, m in enumerate(models)}
    return {m: f"M{i + 1}" for i, m in enumerate(models)}


def score_captions(
    image: str | Path,
    captions: Sequence[str],
    models: Sequence[str],
    *,
    device: str = "auto",
    load: Callable[[str, str], Encoder] = load_encoder,
    region: tuple[int, int, int, int] | None = None,
    region_method: str = "falip",
) -> ScoreTable:
    """Score captions of one image under each model.

    Args:
        image: an image file (decoded upright, as for indexing).
        captions: the captions to compare.
        models: model spec strings.
        device: where models run.
        load: loads a model from a spec (tests pass fakes).
        region: score this part of the image (``x0, y0, x1, y1``, upright pixels).
        region_method: how the part is shown to each model (see ``searchengine.region``).

    Raises:
        QueryError: no captions, an empty caption, the image cannot be decoded, or the
            region lies outside it.
        ConfigError: an unknown region method, or FALIP on a model it cannot run on.
        UnknownModelError, WeightsUnavailableError: a model cannot be loaded.
    """
    from searchengine.ingest.decode import decode_file

    texts = [" ".join(c.split()) for c in captions]
    if not texts or not all(texts):
        raise QueryError('give one or more non-empty captions, e.g. "a dog on a beach"')
    if not models:
        raise QueryError("name at least one model")
    path = os.path.abspath(image)
    try:
        picture = decode_file(path).image
    except ImageError as exc:
        raise QueryError(f"cannot score {path}: {exc}") from exc
    specs = list(dict.fromkeys(parse_model_spec(m).spec for m in models))
    scores: list[CaptionScore] = []
    scales: dict[str, float] = {}
    # FALIP hooks into the torch tower; loading it directly skips an unused ONNX session.
    runtime = "torch" if region is not None and region_method == "falip" else "auto"
    for spec in specs:
        encoder = (
            load_encoder(spec, device, runtime) if load is load_encoder else load(spec, device)
        )
        try:
            if region is None:
                vector = encoder.encode_images([picture])[0]
            else:
                vector = region_vectors(encoder, picture, [region], region_method)[0]
            cosines = encoder.encode_texts(texts) @ vector
            prefixed = encoder.encode_texts([with_prefix(t) for t in texts]) @ vector
            scale = float(encoder.logit_scale)
        finally:
            encoder.close()
        logits = scale * cosines.astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        scales[spec] = scale
        scores += [
            CaptionScore(t, spec, float(c), float(lg), float(p), float(clip_score(pc)))
            for t, c, lg, p, pc in zip(texts, cosines, logits, probs, prefixed, strict=True)
        ]
    if region is not None:
        region = clip_box(region, picture.size)
    return ScoreTable(path, specs, texts, scales, scores, region, region_method if region else None)
