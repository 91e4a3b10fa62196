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
    """One ranked image."""

    id: int
    path: str
    score: float  # cosine similarity in the collection model's space
    width: int | None = None
    height: int | None = None
    taken_at: float | None = None

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
) -> list[SearchResult]:
    """The ``k`` catalog images nearest to ``query`` (a unit vector), best first.

    Ids the catalog no longer knows (removed since the index was saved) are skipped,
    and more are fetched so that ``k`` results still come back when they exist.
    """
    check_k(k)
    total = len(index)
    fetch = min(total, k + len(exclude))
    while True:
        scores, ids = index.search(query.reshape(1, -1), max(fetch, 1))
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        hits = [(i, s) for i, s in hits if i not in exclude]
        records = catalog.get([i for i, _ in hits])
        results = [
            SearchResult(i, r.path, s, r.width, r.height, r.taken_at)
            for i, s in hits
            if (r := records.get(i)) is not None
        ]
        if len(results) >= k or fetch >= total:
            return results[:k]
        fetch = min(total, fetch * 2 + k)
