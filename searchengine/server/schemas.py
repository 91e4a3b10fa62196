"""The JSON the HTTP API speaks: response bodies, as pydantic models for the OpenAPI
schema, and the search request the routes hand to the service."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, Field, create_model

from searchengine.collection import CollectionStatus
from searchengine.fsutil import display_path
from searchengine.ranking import Filters, SearchResult


@dataclass(frozen=True)
class SearchRequest:
    """A text search as the API receives it (already bounded by the route)."""

    q: str
    k: int = 24
    offset: int = 0
    plus: Sequence[str] = ()
    minus: Sequence[str] = ()
    filters: Filters | None = None
    sort: str = "relevance"
    rerank: bool = False
    min_score: float | None = None
    caption: bool = False


class ErrorBody(BaseModel):
    """Every error response: one line saying what went wrong and what to do."""

    error: str = Field(description="What went wrong, and what to do about it.")


class Result(BaseModel):
    """One ranked image."""

    id: int = Field(description="Catalog id: the only way to ask for the image's files.")
    path: str = Field(description="Where the file is, as indexed (undecodable bytes as \\xNN).")
    name: str = Field(description="The file name.")
    score: float = Field(description="What results are ranked by: the page's `ranked_by`.")
    cosine: float = Field(description="First-stage cosine similarity, -1 to 1.")
    clip_score: float | None = Field(default=None, description="CLIPScore, 0 to 2.5.")
    width: int | None = None
    height: int | None = None
    taken_at: float | None = Field(default=None, description="EXIF date, POSIX seconds.")
    caption: str | None = Field(default=None, description="BLIP caption, when asked for.")
    weak: bool | None = Field(
        default=None,
        description="Whether nothing matches the query well: its best cosine is below what "
        "a real match scores in this collection (the page's `weak_below`); the same for "
        "every result. Null when not judged (image queries, tiny collections).",
    )
    copies: list[str] = Field(
        default_factory=list,
        description="Other paths of the same photo (the same bytes) in the collection, not "
        "listed as results of their own.",
    )
    thumbnail: str = Field(description="URL of a small JPEG thumbnail.")
    preview: str = Field(description="URL of a screen-sized JPEG.")
    file: str = Field(description="URL of the original file.")


class Page(BaseModel):
    """One page of results, best first."""

    results: list[Result]
    offset: int = Field(description="Index of the first result in the whole ranking.")
    k: int = Field(description="Page size asked for.")
    has_more: bool = Field(description="Whether asking with offset + k gives more.")
    seconds: float = Field(description="Time the server spent on the query.")
    ranked_by: Literal["cosine", "clip_score"] = Field(
        description="What `score` is: the first-stage cosine (-1 to 1), or CLIPScore "
        "(0 to 2.5) when reranked."
    )


class SearchPage(Page):
    """Results of a text search."""

    query: str
    weak_below: float | None = Field(
        default=None,
        description="The cosine a real match reaches in this collection (calibrated per "
        "collection and model); a query whose best result is below it is weak. Null when "
        "not judged.",
    )
    notice: str | None = Field(
        default=None, description="Something the results lack and why (e.g. no captions)."
    )


class SimilarPage(Page):
    """Results of an image-to-image search."""

    source: int | None = Field(description="The catalog id searched from; null for an upload.")


class ImageInfo(BaseModel):
    """One indexed image."""

    id: int
    path: str
    name: str
    size: int = Field(description="File size in bytes, as indexed.")
    width: int | None = None
    height: int | None = None
    taken_at: float | None = None
    modified: float = Field(description="File modification time, POSIX seconds, as indexed.")
    thumbnail: str
    preview: str
    file: str


class CaptionBody(BaseModel):
    """A generated caption."""

    id: int
    caption: str
    model: str = Field(description="The captioning model.")


class ModelStatus(BaseModel):
    """One model the server uses, and whether it can be used now."""

    role: Literal["search", "rerank", "caption", "where"] = Field(
        description="What it is used for."
    )
    model: str
    state: Literal["idle", "loading", "ready", "failed"] = Field(
        description="idle: not asked for yet (loads on first use); failed: see `error`."
    )
    since: float = Field(description="When it entered this state, POSIX seconds.")
    error: str | None = Field(default=None, description="Why the last load failed.")
    retry_in: float | None = Field(
        default=None, description="Seconds until a failed load is tried again."
    )


def _status_body() -> type[BaseModel]:
    """``CollectionStatus``'s fields, plus the models the server rescored and captions with.

    Derived, not retyped, so ``searchengine status --json`` and ``/api/status`` cannot
    drift apart.
    """
    hints = get_type_hints(CollectionStatus)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], _default(f)) for f in dataclasses.fields(CollectionStatus)
    }
    return create_model(
        "StatusBody",
        __doc__="The collection, as ``searchengine status`` shows it.",
        **fields,
        rerank_model=(str, Field(description="The model rerank=true rescores with.")),
        caption_model=(str, Field(description="The model captions come from.")),
        models=(list[ModelStatus], Field(description="The state of each model.")),
    )


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return Field(default_factory=field.default_factory)
    return ...  # required


StatusBody = _status_body()


class FoldersBody(BaseModel):
    """Folders holding indexed images, for the folder filter."""

    folders: list[str]
    truncated: bool = Field(description="Whether more folders exist than were listed.")


class SessionBody(BaseModel):
    """Whether a token cookie was set (only when the server has a token)."""

    cookie: bool


class HealthBody(BaseModel):
    """Liveness."""

    status: str = Field(description='Always "ok" when the server answers.')
    collection: str
    model: str
    images: int


def image_urls(image_id: int) -> dict[str, str]:
    """The URLs of an image's files: by catalog id only."""
    base = f"/api/images/{image_id}"
    return {
        "thumbnail": f"{base}/thumbnail",
        "preview": f"{base}/thumbnail?size=large",
        "file": f"{base}/file",
    }


def result_body(r: SearchResult) -> Result:
    """A ranked result as the API shows it."""
    return Result(
        id=r.id,
        path=display_path(r.path),
        name=display_path(os.path.basename(r.path)),
        score=r.score,
        cosine=r.cosine,
        clip_score=r.clip_score,
        width=r.width,
        height=r.height,
        taken_at=r.taken_at,
        caption=r.caption,
        weak=r.weak,
        copies=[display_path(c) for c in r.copies],
        **image_urls(r.id),
    )
