"""What a real match scores in one collection under one model, so that a search can say
"nothing matches well" instead of showing its closest misses as if they were answers.

A first-stage cosine means nothing on its own: its scale differs by model (CLIP ViT-B/32
puts real matches near 0.3, the shipped ``toy`` model near 0.65), and the best of *n*
images scores higher the larger *n* is, whether or not any of them shows the query. So
the line is drawn per collection and model, from the collection itself: queries that
name nothing (``NULL_QUERIES``: "a photo", "something", "zzzz", ...) are searched, and
the median of their best scores is what a query that matches nothing still reaches in
this collection. A query whose best result is below it found nothing better than a
query that says nothing: its results are *weak*. The line judges the best result, the
one an extreme over the collection is compared with; a single lower result is not
judged on its own (under the toy model real matches and near misses overlap there).

Measured on the toy world with the ``toy`` model (``scripts/eval_weak.py``; the table is
in ``docs/web.md``): in collections of ~270 photos, queries for colour-and-shape objects
no photo shows are flagged 44 % of the time, objects photos show 0.8 %, off-world
queries ("a dog on a beach") 79 %; at ~44 photos 73 %, 20 % and 90 %. A line from the
nulls' maximum instead flagged ~80 % of absent objects but ~20 % of present ones at
300 photos and ~50 % at 60 (an exploration on random subsets of a 1,000-photo world).

The calibration is stored in the catalog at the end of each ingest
(``Collection.index``) and re-made in memory when the index has changed since.
Only text queries are judged: an example image's cosines are on another scale.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from searchengine.models.base import Encoder, StoredTextEncoder
from searchengine.vectors import VectorIndex

# Queries that describe nothing: generic words and letters that are no words. Their
# best scores are what any query reaches in a collection by chance.
NULL_QUERIES = (
    "a photo",
    "an image",
    "a picture",
    "something",
    "a thing",
    "anything",
    "a photo of it",
    "zzzz",
    "qwerty",
    "asdf",
    "xyzzy plugh",
    "lorem ipsum dolor",
)
# Below this many images the best of the nulls says little; no result is judged.
MIN_IMAGES = 10
METHOD = "null-queries-median-v1"


@dataclass(frozen=True)
class Calibration:
    """The cosine below which a result of a text search is weak.

    Attributes:
        model: the model spec whose first-stage cosines this applies to.
        threshold: the median best score of ``NULL_QUERIES`` in the collection.
        images: how many vectors the index held when it was measured.
        method: how it was measured (a change of method invalidates stored ones).
    """

    model: str
    threshold: float
    images: int
    method: str = METHOD

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> Calibration | None:
        """A stored calibration, or ``None`` when absent, unreadable or of another method."""
        if not text:
            return None
        try:
            data = json.loads(text)
            found = cls(str(data["model"]), float(data["threshold"]), int(data["images"]))
            method = str(data.get("method", ""))
        except (ValueError, KeyError, TypeError):
            return None
        return found if method == METHOD else None

    def fits(self, model: str, images: int) -> bool:
        """Whether this was measured for ``model`` on an index of ``images`` vectors."""
        return self.model == model and self.images == images

    def is_weak(self, cosine: float) -> bool:
        return cosine < self.threshold


def null_query_vectors(encoder: Encoder) -> np.ndarray:
    """``NULL_QUERIES`` embedded by ``encoder``: from its stored copy where it keeps one."""
    if isinstance(encoder, StoredTextEncoder):
        return encoder.stored_text_vectors(NULL_QUERIES)
    return encoder.encode_texts(list(NULL_QUERIES))


def needs_text_tower(encoder: Encoder, images: int) -> bool:
    """Whether calibrating an index of ``images`` vectors will run ``encoder``'s text
    tower (an ingest then opens it while it works, instead of after)."""
    if images < MIN_IMAGES:
        return False
    if isinstance(encoder, StoredTextEncoder):
        return not encoder.has_stored_text_vectors(NULL_QUERIES)
    return True


def calibrate(index: VectorIndex, encoder: Encoder) -> Calibration | None:
    """Measure the weak-match line of ``index`` under ``encoder`` (its own model).

    Returns ``None`` for collections under ``MIN_IMAGES`` images.
    """
    size = len(index)
    if size < MIN_IMAGES:
        return None
    queries = null_query_vectors(encoder)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    best = [float(s[0]) for s, i in zip(scores, ids, strict=True) if i[0] >= 0]
    if not best:
        return None
    return Calibration(encoder.spec, round(float(np.median(best)), 6), size)
