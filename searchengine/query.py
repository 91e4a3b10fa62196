"""Combined queries: weighted text and example-image terms, added and subtracted.

``search "a beach" --plus ./sunset.jpg --minus people`` becomes
``normalise(E("a beach") + E(sunset.jpg) - E("people"))``. A term may carry a weight,
``2:red`` or ``0.5:./photo.jpg``; a term naming an existing file is an image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from searchengine.errors import ImageError, QueryError
from searchengine.ingest.decode import decode_file, decode_size
from searchengine.models.base import Encoder, l2_normalize
from searchengine.scoring import with_prefix
from searchengine.search import check_query

_WEIGHT = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    """One part of a query: text or an example image, with a signed weight."""

    weight: float
    text: str | None = None
    image: str | None = None  # a file path


def parse_term(raw: str, sign: float = 1.0) -> Term:
    """``[WEIGHT:]TEXT_OR_IMAGE_PATH`` into a term; ``sign`` is -1 for ``--minus``."""
    weight = 1.0
    match = _WEIGHT.match(raw)
    if match and not os.path.isfile(raw):
        weight, raw = float(match.group(1)), match.group(2)
    if os.path.isfile(os.path.expanduser(raw)):
        return Term(sign * weight, image=os.path.abspath(os.path.expanduser(raw)))
    return Term(sign * weight, text=check_query(raw))


def build_terms(query: str, plus: Iterable[str] = (), minus: Iterable[str] = ()) -> list[Term]:
    """The main text query followed by the ``plus`` and ``minus`` terms."""
    terms = [Term(1.0, text=check_query(query))]
    terms += [parse_term(p, 1.0) for p in plus]
    terms += [parse_term(m, -1.0) for m in minus]
    return terms


def embed_terms(terms: Sequence[Term], encoder: Encoder, *, clipscore: bool = False) -> np.ndarray:
    """One unit vector for the whole query in ``encoder``'s space.

    With ``clipscore``, text terms get CLIPScore's "A photo depicts " prefix.
    """
    return embed_forms(terms, encoder, (clipscore,))[0]


def embed_forms(terms: Sequence[Term], encoder: Encoder, forms: Sequence[bool]) -> list[np.ndarray]:
    """The query's unit vector once per form (``True``: with CLIPScore's text prefix).

    All texts of all forms go to the encoder in one batch and example images are
    decoded and encoded once, shared by every form: a search that shows first-stage
    cosines and CLIPScores under one model pays for one text-tower call, not two.
    """
    base = np.zeros(encoder.dim, dtype=np.float64)
    images = [t for t in terms if t.image is not None]
    if images:
        decoded = []
        for term in images:
            try:
                size = decode_size(encoder.image_size)
                decoded.append(decode_file(str(term.image), min_side=size).image)
            except ImageError as exc:
                raise QueryError(f"cannot use {term.image} as a query image: {exc}") from exc
        base += np.asarray([t.weight for t in images]) @ encoder.encode_images(decoded)
    texts = [t.text for t in terms if t.text is not None]
    weights = np.asarray([t.weight for t in terms if t.text is not None])
    vectors = np.zeros((len(forms), len(texts), encoder.dim))
    if texts:
        strings = [with_prefix(text) if prefixed else text for prefixed in forms for text in texts]
        vectors = encoder.encode_texts(strings).reshape(len(forms), len(texts), -1)
    out = []
    for per_form in vectors:
        total = base + weights @ per_form if texts else base
        if np.linalg.norm(total) < 1e-6:
            raise QueryError("the query terms cancel out; change the weights or the terms")
        out.append(l2_normalize(total[None, :])[0])
    return out
