"""Query terms: weighted texts, example images and vectors, added and subtracted.

``search "a beach" --plus ./sunset.jpg --minus people`` is the terms
``TextTerm("a beach")``, ``ImageTerm("./sunset.jpg")``, ``TextTerm("people", -1)``
and embeds as ``normalise(E("a beach") + E(sunset.jpg) - E("people"))``.

Terms are typed: the library never guesses whether a string is a file. Strings
become terms in one place, ``parse_term``, for the command line and the Python
API's string form (``W:term``, a term naming an existing file is an image); the HTTP
API builds its terms itself, so no request can name a server file.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from searchengine.errors import ImageError, QueryError
from searchengine.ingest.decode import decode_file
from searchengine.ingest.entries import kind
from searchengine.models.base import Encoder, l2_normalize
from searchengine.ranking.results import check_query
from searchengine.rows import find_file
from searchengine.scoring import with_prefix
from searchengine.values import OK

if TYPE_CHECKING:
    from searchengine.rows import RowReader
    from searchengine.vectors import VectorIndex

WEIGHTED = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.DOTALL)
# A weight says how much a term counts next to the others; beyond a hundredfold it says
# nothing more, and huge values overflow the float32 sum into NaN scores.
MAX_WEIGHT = 100.0


def check_weight(weight: float) -> float:
    """A term weight as a float, refused unless finite and within ``±MAX_WEIGHT``."""
    value = float(weight)
    if not math.isfinite(value) or abs(value) > MAX_WEIGHT:
        raise QueryError(
            f"term weight {weight!r} is out of range; use a number from "
            f"-{MAX_WEIGHT:g} to {MAX_WEIGHT:g}, e.g. 0.5:sunset"
        )
    return value


@dataclass(frozen=True)
class TextTerm:
    """Words describing the photo."""

    text: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", check_query(self.text))
        object.__setattr__(self, "weight", check_weight(self.weight))


@dataclass(frozen=True)
class ImageTerm:
    """An example image: a file (indexed or not) or an image already in memory."""

    image: str | Image.Image = field(compare=False)
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_weight(self.weight))


@dataclass(frozen=True)
class VectorTerm:
    """A vector already in the collection model's space (e.g. a region of a photo)."""

    vector: np.ndarray = field(compare=False)
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_weight(self.weight))


Term = TextTerm | ImageTerm | VectorTerm


def parse_term(raw: str, sign: float = 1.0) -> Term:
    """``[WEIGHT:]TEXT_OR_IMAGE_PATH`` into a term; ``sign`` is -1 for ``--minus``.

    Raises:
        QueryError: the term looks like a path to a photo (it starts with ``/``,
            ``./``, ``../`` or ``~``, or ends in an image extension) but names no
            regular file: a path mistyped would otherwise be searched for as words.
    """
    weight = 1.0
    match = WEIGHTED.match(raw)
    if match and not os.path.isfile(raw):
        weight, raw = float(match.group(1)), match.group(2)
    path = os.path.expanduser(raw)
    if os.path.isfile(path):
        return ImageTerm(os.path.abspath(path), sign * weight)
    if _looks_like_a_path(raw):
        raise QueryError(f"cannot use {raw!r} as an example photo: {_not_a_photo(path)}")
    return TextTerm(raw, sign * weight)


def _looks_like_a_path(raw: str) -> bool:
    if raw.startswith(("/", "./", "../", "~")):
        return True
    dot = raw.rfind(".")
    if dot <= 0 or " " in raw[dot:]:
        return False
    from searchengine.ingest.scan import image_extensions  # only for a dotted term

    return raw[dot:].lower() in image_extensions()


def _not_a_photo(path: str) -> str:
    """Why ``path``, which is no regular file, cannot be an example photo."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{exc.strerror or exc} (a term that looks like a path must name a photo)"
    if stat.S_ISDIR(mode):
        return "it is a folder (name a photo in it)"
    return f"not a regular file ({kind(mode)})"


def query_terms(
    query: str | Term, plus: Iterable[str | Term] = (), minus: Iterable[str | Term] = ()
) -> list[Term]:
    """The main query followed by the ``plus`` and ``minus`` terms (strings parsed)."""
    main = TextTerm(query) if isinstance(query, str) else query
    terms: list[Term] = [main]
    terms += [parse_term(p, 1.0) if isinstance(p, str) else p for p in plus]
    terms += [_negated(parse_term(m, 1.0) if isinstance(m, str) else m) for m in minus]
    return terms


def _negated(term: Term) -> Term:
    if isinstance(term, TextTerm):
        return TextTerm(term.text, -term.weight)
    if isinstance(term, ImageTerm):
        return ImageTerm(term.image, -term.weight)
    return VectorTerm(term.vector, -term.weight)


def embed_forms(
    terms: Sequence[Term], encoder: Encoder, forms: Sequence[bool], *, own_space: bool = True
) -> list[np.ndarray]:
    """The query's unit vector once per form (``True``: with CLIPScore's text prefix).

    All texts of all forms go to the encoder in one batch and example images are
    decoded and encoded once, shared by every form: a search that shows first-stage
    cosines and CLIPScores under one model pays for one text-tower call, not two.

    Args:
        terms: the query's terms.
        encoder: the model whose space the vectors are in.
        forms: one entry per vector wanted.
        own_space: whether ``encoder`` is the collection's model, the space of
            ``VectorTerm`` vectors; under another model they cannot be used.
    """
    base = np.zeros(encoder.dim, dtype=np.float64)
    images = [t for t in terms if isinstance(t, ImageTerm)]
    if images:
        decoded = [_example(t.image, encoder) for t in images]
        base += np.asarray([t.weight for t in images]) @ encoder.encode_images(decoded)
    for term in terms:
        if isinstance(term, VectorTerm):
            if not own_space:
                raise QueryError(
                    "a region or vector term is in the collection's model space and cannot "
                    "be rescored under another model; leave out --rerank MODEL"
                )
            base += term.weight * np.asarray(term.vector, dtype=np.float64)
    texts = [t for t in terms if isinstance(t, TextTerm)]
    weights = np.asarray([t.weight for t in texts])
    vectors = np.zeros((len(forms), len(texts), encoder.dim))
    if texts:
        strings = [with_prefix(t.text) if prefixed else t.text for prefixed in forms for t in texts]
        vectors = encoder.encode_texts(strings).reshape(len(forms), len(texts), -1)
    out = []
    for per_form in vectors:
        total = base + weights @ per_form if texts else base
        if np.linalg.norm(total) < 1e-6:
            raise QueryError("the query terms cancel out; change the weights or the terms")
        out.append(l2_normalize(total[None, :])[0])
    return out


def embed_terms(
    terms: Sequence[Term], encoder: Encoder, *, clipscore: bool = False, own_space: bool = True
) -> np.ndarray:
    """One unit vector for the whole query in ``encoder``'s space.

    With ``clipscore``, text terms get CLIPScore's "A photo depicts " prefix.
    """
    return embed_forms(terms, encoder, (clipscore,), own_space=own_space)[0]


def example_term(
    image: str | Path | Image.Image, catalog: RowReader, index: VectorIndex, encoder: Encoder
) -> tuple[Term, frozenset[int]]:
    """An example image as a term, and the ids to leave out of its results.

    An indexed file is its stored vector (and is left out of the results), any other
    file is decoded, an image in memory is used as it is.

    Raises:
        QueryError: the file cannot be read as an image.
    """
    if isinstance(image, Image.Image):
        return ImageTerm(image), frozenset()
    path = os.path.abspath(image)
    record = find_file(catalog, path)
    indexed = record is not None and record.status == OK
    exclude = frozenset({record.id}) if record is not None and indexed else frozenset()
    if record is not None and indexed:
        vector = index.reconstruct(record.id)
        if vector is not None:
            return VectorTerm(vector), exclude
    try:
        decoded = decode_file(path, min_side=encoder.image_size).image
    except ImageError as exc:
        raise QueryError(f"cannot use {path} as an example image: {exc}") from exc
    return ImageTerm(decoded), exclude


def _example(image: str | Image.Image, encoder: Encoder) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    try:
        return decode_file(str(image), min_side=encoder.image_size).image
    except ImageError as exc:
        raise QueryError(f"cannot use {image} as a query image: {exc}") from exc
