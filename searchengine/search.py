"""Query → ranked results: encode, search the vector index, join the catalog."""

from __future__ import annotations

from collections.abc import Collection as Container
from dataclasses import asdict, dataclass

import numpy as np

from searchengine.catalog import Catalog
from searchengine.errors import QueryError
from searchengine.vectors import VectorIndex

MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class SearchResult:
    """One ranked image.

    Attributes:
        score: what the results are ranked by: the CLIPScore when reranked,
            else the first-stage cosine.
        cosine: first-stage cosine similarity in the collection model's space.
        clip_score: CLIPScore (``2.5 * max(cos, 0)``, prefixed query) under the
            reranking model, or under the collection's model without ``--rerank``.
        caption: a generated caption, when asked for.
    """

    id: int
    path: str
    score: float
    cosine: float
    width: int | None = None
    height: int | None = None
    taken_at: float | None = None
    clip_score: float | None = None
    caption: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_query(text: str) -> str:
    """Normalise a text query or raise ``QueryError`` saying what to do instead."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text)
    cleaned = " ".join(cleaned.split())
    if not cleaned:
        raise QueryError('the query is empty; describe the photo, e.g. "a dog on a beach"')
    if len(cleaned) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query is {len(cleaned)} characters long; keep it under {MAX_QUERY_CHARS}"
        )
    return cleaned


def check_k(k: int) -> int:
    if k < 1:
        raise QueryError(f"k must be at least 1 (got {k})")
    return k


def rank(
    index: VectorIndex,
    catalog: Catalog,
    query: np.ndarray,
    k: int,
    exclude: Container[int] = (),
    allowed: np.ndarray | None = None,
) -> list[SearchResult]:
    """The ``k`` catalog images nearest to ``query`` (a unit vector), best first.

    Ids the catalog no longer knows (removed since the index was saved) are skipped,
    and more are fetched so that ``k`` results still come back when they exist.
    ``allowed`` (ids passing the filters) is applied inside the vector search.
    """
    check_k(k)
    total = len(index) if allowed is None else min(len(index), len(allowed))
    fetch = min(total, k + len(exclude))
    while True:
        scores, ids = index.search(query.reshape(1, -1), max(fetch, 1), allowed)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        hits = [(i, s) for i, s in hits if i not in exclude]
        records = catalog.get([i for i, _ in hits])
        results = [
            SearchResult(i, r.path, s, s, r.width, r.height, r.taken_at)
            for i, s in hits
            if (r := records.get(i)) is not None
        ]
        if len(results) >= k or fetch >= total:
            return results[:k]
        fetch = min(total, fetch * 2 + k)
