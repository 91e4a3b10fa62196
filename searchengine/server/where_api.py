"""The JSON API's "where" routes: a phrase's heatmap over an indexed photo, and region search.

- ``GET /api/images/{id}/where?q=...``: found, score, box and peak (CLIPSeg), in the
  photo's upright pixels, with the URL of the overlay;
- ``GET /api/images/{id}/where.png?q=...``: the heatmap over the photo (``view=logits``:
  the raw logit map with a colour bar);
- ``GET /api/images/{id}/similar-part?box=x0,y0,x1,y1``: photos most like that part of
  the photo ("more like this part", FALIP by default), the photo itself left out.

Like every route, these name images by catalog id only and serve only files that still
hold what was indexed. The CLIPSeg model is the operator's choice (``serve
--where-model``), loaded on first use and kept; calls take turns with the search model.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from searchengine.models.clipseg import DEFAULT_SEG_MODEL
from searchengine.ranking import MAX_QUERY_CHARS
from searchengine.server.schemas import ErrorBody, SimilarPage
from searchengine.server.thumbnails import read_indexed

if TYPE_CHECKING:
    from PIL import Image

    from searchengine.models.clipseg import ClipSeg
    from searchengine.server.service import Service
    from searchengine.where import Location

MAX_ID = 2**63 - 1
_BOX = r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$"
_CACHED = 16  # (image, phrase) answers kept: the page asks for the JSON, then the picture

where_router = APIRouter(prefix="/api")

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of an indexed image.")]
Phrase = Annotated[
    str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")
]


class WhereBody(BaseModel):
    """Where a phrase is in one indexed photo."""

    id: int
    text: str
    found: bool = Field(description="Whether the peak probability reaches the threshold.")
    score: float = Field(description="The peak probability, 0 to 1.")
    box: list[int] | None = Field(
        description="x0, y0, x1, y1 in upright pixels; null if not found."
    )
    peak: list[int] = Field(description="x, y of the peak, in upright pixels.")
    width: int = Field(description="The photo's upright width.")
    height: int = Field(description="The photo's upright height.")
    threshold: float
    model: str = Field(description="The CLIPSeg model.")
    overlay: str = Field(description="URL of the heatmap over the photo (PNG).")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    why = {
        400: "The request cannot be served as asked (bad phrase or box).",
        401: "The server has a token and the request did not carry it.",
        404: "No such image, or its file is gone.",
        409: "The image's file changed since it was indexed; re-index.",
        422: "A parameter is missing, malformed or out of bounds.",
        503: "A model the request needs cannot be loaded.",
    }
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 422, *codes)}


class WhereService:
    """CLIPSeg answers and region searches over the service's collection.

    Args:
        service: the API's service (collection, catalog checks, model lock).
        model: the CLIPSeg model name (default ``CIDAS/clipseg-rd64-refined``).
    """

    def __init__(self, service: Service, model: str = DEFAULT_SEG_MODEL) -> None:
        self.service = service
        self.model = model
        self._seg: ClipSeg | None = None
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[int, str], tuple[Image.Image, Location]] = OrderedDict()

    def locate(self, image_id: int, text: str) -> tuple[Image.Image, Location]:
        """The photo and where ``text`` is in it (cached for the page's follow-up call)."""
        from searchengine.ingest.decode import decode_bytes
        from searchengine.models.clipseg import ClipSeg
        from searchengine.ranking import check_query
        from searchengine.where import locate_images

        phrase = check_query(text)
        key = (image_id, phrase)
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
        data = read_indexed(self.service.record(image_id))
        decoded = decode_bytes(data, min_side=768)
        with self.service._model_lock:  # one model call at a time, as for searches
            if self._seg is None:
                self._seg = ClipSeg(self.model, device=self.service.collection.config.device)
            size = (decoded.width, decoded.height)
            location = locate_images(self._seg, [decoded.image], [phrase], [size])[0]
        with self._lock:
            self._answers[key] = (decoded.image, location)
            while len(self._answers) > _CACHED:
                self._answers.popitem(last=False)
        return decoded.image, location

    def where(self, image_id: int, text: str) -> WhereBody:
        _, loc = self.locate(image_id, text)
        return WhereBody(
            id=image_id,
            text=loc.text,
            found=loc.found,
            score=round(loc.score, 4),
            box=list(loc.box) if loc.box is not None else None,
            peak=list(loc.peak),
            width=loc.size[0],
            height=loc.size[1],
            threshold=loc.threshold,
            model=self.model,
            overlay=f"/api/images/{image_id}/where.png?q={quote(loc.text)}",
        )

    def picture(self, image_id: int, text: str, view: str) -> bytes:
        import io

        from searchengine.overlay import heat_overlay, logit_figure

        photo, loc = self.locate(image_id, text)
        picture = logit_figure(loc) if view == "logits" else heat_overlay(photo, loc)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def similar_part(
        self, image_id: int, box: str, method: str, k: int, offset: int
    ) -> SimilarPage:
        """Photos most like a part of an indexed photo (itself left out)."""
        from searchengine.region import parse_box
        from searchengine.server.service import _result

        record = self.service.record(image_id)
        read_indexed(record)  # only what was indexed is searched from
        region = parse_box(box)
        started = time.perf_counter()
        with self.service._model_lock:
            self.service.collection.store.refresh()
            ranked = self.service.collection.similar_page(
                record.path, k, offset, region=region, region_method=method
            )
        return SimilarPage(
            source=image_id,
            results=[_result(r) for r in ranked.results],
            offset=offset,
            k=k,
            has_more=ranked.has_more,
            seconds=round(time.perf_counter() - started, 4),
        )


def _where(request: Request) -> WhereService:
    svc: WhereService = request.app.state.where
    return svc


@where_router.get(
    "/images/{image_id}/where", response_model=WhereBody, responses=_errors(404, 409, 503)
)
def where(request: Request, image_id: ImageId, q: Phrase) -> WhereBody:
    """Where the phrase ``q`` is in an indexed photo (CLIPSeg), or that it is not there."""
    return _where(request).where(image_id, q)


@where_router.get(
    "/images/{image_id}/where.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The heatmap over the photo."},
        **_errors(404, 409, 503),
    },
)
def where_png(
    request: Request,
    image_id: ImageId,
    q: Phrase,
    view: Annotated[
        Literal["heat", "logits"],
        Query(description="heat: over the photo; logits: the raw map with a colour bar."),
    ] = "heat",
) -> Response:
    """The phrase's heatmap over an indexed photo, as PNG."""
    data = _where(request).picture(image_id, q, view)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private"})


@where_router.get(
    "/images/{image_id}/similar-part",
    response_model=SimilarPage,
    responses=_errors(404, 409, 503),
)
def similar_part(
    request: Request,
    image_id: ImageId,
    box: Annotated[
        str, Query(pattern=_BOX, description="x0,y0,x1,y1 in the photo's upright pixels.")
    ],
    method: Annotated[
        Literal["falip", "crop", "circle", "blur", "none"],
        Query(description="How the part is shown to the model."),
    ] = "falip",
    k: Annotated[int, Query(ge=1, le=100, description="Results per page.")] = 24,
    offset: Annotated[int, Query(ge=0, le=1000, description="Results to skip.")] = 0,
) -> SimilarPage:
    """Photos most like a part of an indexed photo ("more like this part")."""
    return _where(request).similar_part(image_id, box, method, k, offset)
