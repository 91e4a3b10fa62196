"""The JSON the HTTP API speaks: response bodies, as pydantic models for the OpenAPI schema."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING
from typing import Any, get_type_hints

from pydantic import BaseModel, Field, create_model

from searchengine.collection import CollectionStatus


class ErrorBody(BaseModel):
    """Every error response: one line saying what went wrong and what to do."""

    error: str = Field(description="What went wrong, and what to do about it.")


class Result(BaseModel):
    """One ranked image."""

    id: int = Field(description="Catalog id: the only way to ask for the image's files.")
    path: str = Field(description="Where the file is, as indexed (undecodable bytes as \\xNN).")
    name: str = Field(description="The file name.")
    score: float = Field(description="What results are ranked by (cosine, or CLIPScore).")
    cosine: float = Field(description="First-stage cosine similarity.")
    clip_score: float | None = Field(default=None, description="CLIPScore, 0 to 2.5.")
    width: int | None = None
    height: int | None = None
    taken_at: float | None = Field(default=None, description="EXIF date, POSIX seconds.")
    caption: str | None = Field(default=None, description="BLIP caption, when asked for.")
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


class SearchPage(Page):
    """Results of a text search."""

    query: str


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


def _status_body() -> type[BaseModel]:
    """``CollectionStatus``'s fields, plus the models the server rescored and captions with.

    Derived, not retyped, so ``searchengine status --json`` and ``/api/status`` cannot
    drift apart.
    """
    hints = get_type_hints(CollectionStatus)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.default is MISSING else f.default)
        for f in dataclasses.fields(CollectionStatus)
    }
    return create_model(
        "StatusBody",
        __doc__="The collection, as ``searchengine status`` shows it.",
        **fields,
        rerank_model=(str, Field(description="The model rerank=true rescores with.")),
        caption_model=(str, Field(description="The model captions come from.")),
    )


StatusBody = _status_body()


class FoldersBody(BaseModel):
    """Folders holding indexed images, for the folder filter."""

    folders: list[str]
    truncated: bool = Field(description="Whether more folders exist than were listed.")


class HealthBody(BaseModel):
    """Liveness."""

    status: str = Field(description='Always "ok" when the server answers.')
    collection: str
    model: str
    images: int
