"""Query scoring: typed terms, first stage, filters, rescoring, sort and paging.

- ``terms``: what a query is made of, and how it embeds.
- ``filters``: metadata filters, applied inside the vector search.
- ``rescore``: CLIPScore's image vectors, from the index or a cached reranking model.
- ``rank``: the one path from a ``Query`` to a ``Page`` of ``SearchResult``.
- ``calibration``: what a real match scores per collection and model (weak results).
"""

from searchengine.ranking.calibration import Calibration, calibrate
from searchengine.ranking.filters import Filters, parse_date
from searchengine.ranking.rank import Query, Ranker, by_date, nearest
from searchengine.ranking.rescore import ImageVectors, clip_scores
from searchengine.ranking.results import (
    MAX_QUERY_CHARS,
    Page,
    SearchResult,
    check_k,
    check_query,
)
from searchengine.ranking.terms import (
    MAX_WEIGHT,
    ImageTerm,
    Term,
    TextTerm,
    VectorTerm,
    embed_forms,
    embed_terms,
    example_term,
    parse_term,
    query_terms,
)

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_WEIGHT",
    "Calibration",
    "Filters",
    "ImageTerm",
    "ImageVectors",
    "Page",
    "Query",
    "Ranker",
    "SearchResult",
    "Term",
    "TextTerm",
    "VectorTerm",
    "by_date",
    "calibrate",
    "check_k",
    "check_query",
    "clip_scores",
    "embed_forms",
    "embed_terms",
    "example_term",
    "nearest",
    "parse_date",
    "parse_term",
    "query_terms",
]
