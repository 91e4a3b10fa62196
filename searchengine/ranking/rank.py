"""The one path from a query to a page of results.

    terms ──embed──▶ query vector ──first stage (FAISS, filters inside)──▶ candidates
          ──rescore (CLIPScore, own model or another)──▶ min_score ──▶ sort ──▶ page

The command line, the HTTP API, ``similar`` and the Python API all build a ``Query``
and call ``Ranker.run``; only how their terms are made differs.
"""

from __future__ import annotations

from collections.abc import Collection as Container
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

import numpy as np

from searchengine.errors import QueryError
from searchengine.models.base import Encoder
from searchengine.ranking.calibration import Calibration
from searchengine.ranking.filters import Filters, matching_ids
from searchengine.ranking.rescore import ImageVectors, clip_scores
from searchengine.ranking.results import Page, SearchResult, check_k
from searchengine.ranking.terms import Term, TextTerm, embed_forms, embed_terms
from searchengine.rows import ImageRecord, RowReader
from searchengine.values import SORTS
from searchengine.vectors import VectorIndex

if TYPE_CHECKING:
    from searchengine.catalog import Catalog


@dataclass(frozen=True)
class Query:
    """Everything that decides a ranking.

    Attributes:
        terms: what to look for (their weighted sum, normalised).
        k: results per page.
        offset: results to skip (pages after the first).
        filters: metadata filters, applied inside the vector search.
        rerank: rank by CLIPScore instead of the first-stage cosine.
        candidates: first-stage candidates to rescore (default ``max(100, offset+k)``
            when reranking or thresholding, else what the page needs).
        min_score: drop results whose CLIPScore is below this.
        sort: ``relevance``; ``date`` (newest first) or ``date-asc`` order each page
            of the relevance ranking by date.
        exclude: ids never returned (the example image itself).
        clip_score: give each result its CLIPScore (texts; ``similar`` does not).
    """

    terms: tuple[Term, ...]
    k: int = 10
    offset: int = 0
    filters: Filters | None = None
    rerank: bool = False
    candidates: int | None = None
    min_score: float | None = None
    sort: str = "relevance"
    exclude: frozenset[int] = frozenset()
    clip_score: bool = True

    def __post_init__(self) -> None:
        check_k(self.k)
        if self.sort not in SORTS:
            raise QueryError(f"unknown sort {self.sort!r}; use one of {', '.join(SORTS)}")
        if self.offset < 0:
            raise QueryError(f"offset must be 0 or more (got {self.offset})")

    @property
    def rescoring(self) -> bool:
        return self.rerank or self.min_score is not None


class Ranker:
    """Runs queries on one collection.

    Args:
        catalog: the collection's catalog (rows of the results; filters need a
            ``Catalog``, rows alone a ``RowReader``).
        index: its vector index.
        encoder: its model (the space of the index).
        scorer: where CLIPScore's image vectors come from: the index itself, or a
            reranking model's cached vectors.
        calibration: the collection's weak-match line; results of text queries are
            marked weak below it.
    """

    def __init__(
        self,
        catalog: RowReader,
        index: VectorIndex,
        encoder: Encoder,
        scorer: ImageVectors,
        calibration: Calibration | None = None,
    ) -> None:
        self.catalog = catalog
        self.index = index
        self.encoder = encoder
        self.scorer = scorer
        self.calibration = calibration

    def run(self, query: Query) -> Page:
        """One page of results for ``query``, best first (or by date within the page)."""
        wanted = query.offset + query.k
        allowed = None
        if query.filters is not None and query.filters.active:
            # Filters run SQL: only a full ``Catalog`` is handed over with them.
            allowed = matching_ids(cast("Catalog", self.catalog), query.filters)
        if len(self.index) == 0:
            return Page([])
        vectors = self._query_vectors(query)
        pool = query.candidates or (max(100, wanted) if query.rescoring else wanted)
        # One more than the page needs tells whether another page follows.
        fetch = max(pool, wanted + 1)
        ranked, records = nearest(
            self.index, self.catalog, vectors[0], fetch, query.exclude, allowed
        )
        if len(vectors) > 1:
            ranked = self._rescored(ranked, records, vectors[1], query)
        page = ranked[query.offset : wanted]
        if query.sort != "relevance":
            page = _by_date(page, records, newest_first=query.sort == "date")
        line = self._weak_line(query)
        if line is not None and ranked:
            # The line is what the *best* of this collection reaches by chance: it judges
            # the query (did anything match?), not each result, so every result carries
            # the verdict on the best one.
            weak = max(r.cosine for r in ranked) < line
            page = [replace(r, weak=weak) for r in page]
        return Page(page, has_more=len(ranked) > wanted, weak_below=line)

    def _weak_line(self, query: Query) -> float | None:
        """The calibrated cosine a real match reaches, for queries made only of text
        (an example image's cosines are on another scale)."""
        calibration = self.calibration
        if calibration is None or calibration.model != self.encoder.spec:
            return None
        if not all(isinstance(t, TextTerm) for t in query.terms):
            return None
        return calibration.threshold

    def _query_vectors(self, query: Query) -> list[np.ndarray]:
        """The first-stage vector and, for CLIPScore, the prefixed one under the scorer."""
        if not query.clip_score:
            return [embed_terms(query.terms, self.encoder)]
        if self.scorer.encoder is self.encoder:  # one text batch for both forms
            return embed_forms(query.terms, self.encoder, (False, True))
        first = embed_terms(query.terms, self.encoder)
        scored = embed_terms(query.terms, self.scorer.encoder, clipscore=True, own_space=False)
        return [first, scored]

    def _rescored(
        self,
        ranked: list[SearchResult],
        records: dict[int, ImageRecord],
        vector: np.ndarray,
        query: Query,
    ) -> list[SearchResult]:
        scores = clip_scores(self.scorer.get([records[r.id] for r in ranked]), vector)
        results = [
            replace(r, clip_score=float(s), score=float(s) if query.rerank else r.score)
            for r, s in zip(ranked, scores, strict=True)
        ]
        if query.rerank:
            results.sort(key=lambda r: (-r.score, -r.cosine))
        if query.min_score is not None:
            results = [r for r in results if (r.clip_score or 0.0) >= query.min_score]
        return results


def nearest(
    index: VectorIndex,
    catalog: RowReader,
    query: np.ndarray,
    k: int,
    exclude: Container[int] = (),
    allowed: np.ndarray | None = None,
) -> tuple[list[SearchResult], dict[int, ImageRecord]]:
    """First stage: the ``k`` catalog images nearest to ``query`` (a unit vector),
    with their catalog rows (rescoring and the date sort need them too).

    Ids the catalog no longer knows (removed since the index was saved) are skipped,
    and more are fetched so that ``k`` results still come back when they exist.
    ``allowed`` (ids passing the filters) is applied inside the vector search. A photo
    at several paths (the same bytes: a backup copy) is one result, at its best-ranked
    path, with the others in ``copies``; the copies of an excluded image (the example
    of ``similar``) are excluded with it.
    """
    check_k(k)
    total = len(index) if allowed is None else min(len(index), len(allowed))
    fetch = min(total, k + len(exclude))
    left_out = set()
    if exclude:  # (one row; a text query reads no more than its candidates')
        left_out = {r.content_hash for r in catalog.get(list(exclude)).values() if r.content_hash}
    while True:
        scores, ids = index.search(query.reshape(1, -1), max(fetch, 1), allowed)
        hits = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        # Ties (copies of one photo score the same) in id order: the path indexed first
        # stands for the photo, the same on every run and page.
        hits = sorted(((i, s) for i, s in hits if i not in exclude), key=lambda h: (-h[1], h[0]))
        records = catalog.get([i for i, _ in hits])
        results = _one_per_photo(hits, records, left_out)
        if len(results) >= k or fetch >= total:
            return results[:k], records
        fetch = min(total, fetch * 2 + k)


def _one_per_photo(
    hits: list[tuple[int, float]], records: dict[int, ImageRecord], left_out: set[str]
) -> list[SearchResult]:
    """A result per photo, best first: a copy of one already listed joins its ``copies``."""
    results: list[SearchResult] = []
    first: dict[str, int] = {}  # content hash -> the index of its result
    for i, s in hits:
        r = records.get(i)
        if r is None or (r.content_hash is not None and r.content_hash in left_out):
            continue
        if r.content_hash is not None and (at := first.get(r.content_hash)) is not None:
            results[at] = replace(results[at], copies=(*results[at].copies, r.path))
            continue
        if r.content_hash is not None:
            first[r.content_hash] = len(results)
        results.append(SearchResult(i, r.path, s, s, r.width, r.height, r.taken_at))
    return results


def by_date(
    results: list[SearchResult], catalog: RowReader, *, newest_first: bool
) -> list[SearchResult]:
    """``results`` ordered by date: EXIF date, else file modification time (as the
    date filters use)."""
    return _by_date(results, catalog.get([r.id for r in results]), newest_first=newest_first)


def _by_date(
    results: list[SearchResult], records: dict[int, ImageRecord], *, newest_first: bool
) -> list[SearchResult]:
    return sorted(results, key=lambda r: _date(r, records), reverse=newest_first)


def _date(result: SearchResult, records: dict[int, ImageRecord]) -> float:
    if result.taken_at is not None:
        return result.taken_at
    found = records.get(result.id)
    return found.mtime_ns / 1e9 if found else 0.0
