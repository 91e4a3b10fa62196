"""Grounding a description to one of several boxes: the referring-expression protocol.

As in ReCLIP and the FALIP paper (Zhuang et al. 2024, Sec. 4.1): every candidate box is
embedded as a region of the photo (:func:`searchengine.region.region_vectors`, by one
of the five region methods), each is scored by its cosine with the description, and the
best box wins. The *subtract* step (from "What does CLIP know about a red circle?",
used by the FALIP authors): from each box's score, subtract that box's mean score over
a bank of other descriptions. A box that scores high whatever the text (a large or
salient region, or the mark a visual prompt drew) then stops winning by default; what
is left is how much better *this* description fits it than descriptions in general.

:func:`ground` is one question (``searchengine ground``); :func:`bench_grounding` asks
it of every two-object scene of a held-out toy world and reports accuracy per method,
side by side, with and without the subtract step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from searchengine.evaluation.toyscenes import ToyCase
from searchengine.models.base import Encoder
from searchengine.ranking.results import check_query
from searchengine.region import Box, RegionEmbedder, clip_box, region_vectors

__all__ = [
    "DEFAULT_NEGATIVES",
    "Grounding",
    "GroundingBench",
    "GroundingRow",
    "bench_grounding",
    "ground",
    "ground_file",
]

# The bank ``ground`` subtracts when no other descriptions are given: short everyday
# referring expressions, in the style of RefCOCO's, plus the toy world's vocabulary.
DEFAULT_NEGATIVES = (
    "a person", "a man", "a woman", "a child", "a dog", "a cat", "a car", "a bicycle",
    "a tree", "a building", "a table", "a chair", "a cup", "a bottle", "a plate", "a book",
    "the sky", "the ground", "a window", "a door", "a red circle", "a blue square",
    "a green triangle", "a yellow star", "a purple diamond", "an orange cross",
    "a pink circle", "a black square", "the thing on the left", "the thing on the right",
)  # fmt: skip


@dataclass(frozen=True)
class Grounding:
    """How well a description fits each box, and the best box.

    Attributes:
        text: the description.
        method: the region method the boxes were embedded with.
        boxes: the boxes, clipped to the photo.
        cosines: each box's cosine with the description.
        scores: what the boxes are ranked by: cosine minus the box's mean cosine over
            the negative bank (the subtract step), or the cosine without it.
        probabilities: softmax of ``logit_scale * scores`` over the boxes.
        best: index of the winning box.
    """

    text: str
    method: str
    boxes: tuple[Box, ...]
    cosines: tuple[float, ...]
    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    best: int
    subtract: bool = True

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: every box with its scores, and the best one."""
        return {
            "text": self.text,
            "method": self.method,
            "subtract": self.subtract,
            "best": self.best,
            "best_box": list(self.boxes[self.best]),
            "boxes": [
                {
                    "box": list(b),
                    "cosine": round(c, 4),
                    "score": round(s, 4),
                    "probability": round(p, 4),
                }
                for b, c, s, p in zip(
                    self.boxes, self.cosines, self.scores, self.probabilities, strict=True
                )
            ],
        }


def _scores(
    vectors: np.ndarray, text_vectors: np.ndarray, subtract: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Cosines with the first text, and those minus each box's mean over the rest."""
    cos = vectors @ text_vectors.T
    raw = cos[:, 0]
    if subtract and cos.shape[1] > 1:
        return raw, raw - cos[:, 1:].mean(axis=1)
    return raw, raw


def ground(
    encoder: Encoder,
    image: Image.Image,
    text: str,
    boxes: Sequence[Box],
    method: str = "falip",
    *,
    negatives: Sequence[str] = DEFAULT_NEGATIVES,
    subtract: bool = True,
    strength: float | None = None,
) -> Grounding:
    """Score each box of ``image`` for ``text`` and name the best one.

    Args:
        encoder: the CLIP model.
        image: the upright photo; boxes are in its pixels.
        text: the description.
        boxes: candidate regions (two or more make a choice; one is scored alone).
        method: region method (``falip``, ``crop``, ``circle``, ``blur``, ``none``).
        negatives: the bank of other descriptions for the subtract step.
        subtract: apply the subtract step.
        strength: FALIP's bias on a patch wholly inside a box (default: the tuned value).

    Raises:
        QueryError: an empty description, no boxes, or a box outside the photo.
        ConfigError: an unknown method, or FALIP on a model it cannot run on.
    """
    from searchengine.errors import QueryError

    text = check_query(text)
    if not boxes:
        raise QueryError("give at least one --box x0,y0,x1,y1 to score")
    clipped = tuple(clip_box(b, image.size) for b in boxes)
    vectors = region_vectors(encoder, image, clipped, method, strength=strength)
    bank = [n for n in negatives if n != text] if subtract else []
    text_vectors = encoder.encode_texts([text, *bank])
    raw, scores = _scores(vectors, text_vectors, subtract)
    logits = encoder.logit_scale * scores
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return Grounding(
        text,
        method,
        clipped,
        tuple(float(c) for c in raw),
        tuple(float(s) for s in scores),
        tuple(float(p) for p in probs),
        int(np.argmax(scores)),
        subtract and bool(bank),
    )


def ground_file(
    image: str | Path,
    text: str,
    boxes: Sequence[Box],
    model: str,
    method: str = "falip",
    *,
    negatives: Sequence[str] = DEFAULT_NEGATIVES,
    subtract: bool = True,
    device: str = "auto",
) -> Grounding:
    """:func:`ground` for an image file and a model spec (loaded and closed here).

    Raises:
        QueryError: the image cannot be decoded, or as :func:`ground`.
        UnknownModelError, WeightsUnavailableError: the model cannot be loaded.
    """
    from searchengine.errors import ImageError, QueryError
    from searchengine.ingest.decode import decode_file
    from searchengine.models import load_encoder

    try:
        picture = decode_file(str(image)).image
    except ImageError as exc:
        raise QueryError(f"cannot ground in {image}: {exc}") from exc
    # FALIP hooks into the torch tower; loading it directly skips an unused ONNX session.
    encoder = load_encoder(model, device, "torch" if method == "falip" else "auto")
    try:
        return ground(encoder, picture, text, boxes, method, negatives=negatives, subtract=subtract)
    finally:
        encoder.close()


@dataclass
class GroundingRow:
    """One (model, method) line of the grounding table."""

    model: str
    method: str
    accuracy: float  # with the subtract step: the paper's protocol
    accuracy_raw: float  # without it
    cases: int
    misses: list[str] = field(default_factory=list)  # "photo: description", subtract step


@dataclass
class GroundingBench:
    """Accuracy of picking the described object's box, per model and region method."""

    dataset: str
    rows: list[GroundingRow] = field(default_factory=list)
    boxes: str = "exact"  # how the candidate boxes were placed (``bench --boxes``)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (accuracies as fractions)."""
        rows = [r.__dict__ for r in self.rows]
        return {"task": "ground", "dataset": self.dataset, "boxes": self.boxes, "rows": rows}

    def to_table(self) -> str:
        """A plain-text table, percent, one row per model and method."""
        cases = self.rows[0].cases if self.rows else 0
        placed = "" if self.boxes == "exact" else f", boxes {self.boxes}"
        lines = [
            f"grounding on {self.dataset}: {cases} descriptions{placed}",
            f"{'model':<24} {'method':<8} {'acc %':>7} {'acc % (no subtract)':>20}",
        ]
        for r in self.rows:
            acc, raw = 100 * r.accuracy, 100 * r.accuracy_raw
            lines.append(f"{r.model:<24} {r.method:<8} {acc:>7.1f} {raw:>20.1f}")
        return "\n".join(lines)


def bench_grounding(
    cases: Sequence[ToyCase] | None,
    models: Sequence[str],
    methods: Sequence[str],
    *,
    dataset: str = "",
    device: str = "auto",
    strength: float | None = None,
    load: Callable[[str, str], Encoder] | None = None,
) -> GroundingBench:
    """REC accuracy on toy cases for each model and region method.

    The negative bank for each description is every other case's description, as the
    FALIP authors build theirs from the dataset's expressions.
    """
    from searchengine.models import load_encoder

    cases = list(cases) if cases is not None else []
    load = load or (lambda spec, where: load_encoder(spec, where))
    report = GroundingBench(dataset)
    texts = sorted({c.text for c in cases})
    for spec in models:
        encoder = load(spec, device)
        embedder = RegionEmbedder(encoder, strength)
        try:
            text_vectors = encoder.encode_texts(texts)
            row_of = {t: i for i, t in enumerate(texts)}
            for method in methods:
                hits = hits_raw = 0
                misses: list[str] = []
                for case in cases:
                    vectors = embedder.vectors(case.load_image(), case.boxes, method)
                    own = row_of[case.text]
                    others = [i for i, t in enumerate(texts) if t != case.text]
                    ordered = text_vectors[[own, *others]]
                    raw, scores = _scores(vectors, ordered, subtract=True)
                    hit = int(np.argmax(scores)) == case.target
                    hits += hit
                    hits_raw += int(np.argmax(raw)) == case.target
                    if not hit:
                        misses.append(f"{Path(case.path).stem}: {case.text}")
                n = max(len(cases), 1)
                report.rows.append(
                    GroundingRow(spec, method, hits / n, hits_raw / n, len(cases), misses)
                )
        finally:
            embedder.close()
            encoder.close()
    return report
