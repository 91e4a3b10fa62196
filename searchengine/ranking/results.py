"""What a query returns: ranked results and pages of them, and the checks on a query."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from searchengine.errors import QueryError

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
        weak: whether nothing matches the query well: its best first-stage cosine is
            below what a real match scores in this collection (``ranking.calibration``);
            the same for every result of a query. ``None`` when not judged (an image
            query, or a collection too small to calibrate).
        copies: the other paths of this photo in the collection (the same bytes), which
            are not listed as results of their own.
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
    weak: bool | None = None
    copies: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Page:
    """One page of a ranking, and whether the ranking goes on past it.

    ``weak_below`` is the cosine under which its results count as weak, when judged.
    """

    results: list[SearchResult]
    has_more: bool = False
    weak_below: float | None = None


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
