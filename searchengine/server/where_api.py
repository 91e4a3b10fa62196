"""The JSON API's "where" routes: a phrase's heatmap over an indexed photo, and region search.

- ``GET /api/images/{id}/where?q=...``: found, score, box and peak (CLIPSeg), in the
  photo's upright pixels, with the URL of the overlay;
- ``GET /api/images/{id}/where.png?q=...``: the heatmap over the photo (``view=logits``:
  the raw logit map with a colour bar);
- ``GET /api/images/{id}/similar-part?box=x0,y0,x1,y1``: photos most like that part of
  the photo ("more like this part", FALIP by default), the photo itself left out.

Like every route, these name images by catalog id only and serve only files that still
hold what was indexed. The CLIPSeg model is the operator's choice (``serve
--where-model``), loaded on first use, off the request path (503 with Retry-After
until it is ready), and kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from searchengine.models.clipseg import DEFAULT_SEG_MODEL
from searchengine.ranking import MAX_QUERY_CHARS
from searchengine.server.schemas import ErrorBody, SimilarPage
from searchengine.server.thumbnails import decode_indexed
from searchengine.server.workers import ModelSlot, Worker

if TYPE_CHECKING:
    from PIL import Image

    from searchengine.models.clipseg import ClipSeg
    from searchengine.server.service import Service
    from searchengine.where import Location

MAX_ID = 2**63 - 1
_BOX = r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$"
_CACHED = 16  # (image, phrase) answers kept: the page asks for the JSON, then the picture
_SIDE = 768  # decoded at least this short side: the heatmap is drawn over it

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
        413: "The photo needs more memory to decode than the server allows.",
        422: "A parameter is missing, malformed or out of bounds.",
        503: "A model the request needs is loading or cannot be loaded (see Retry-After).",
    }
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 422, *codes)}


class WhereService:
    """CLIPSeg answers and region searches over the service's collection.

    The CLIPSeg model is a ``ModelSlot`` (role ``where``, in ``/api/status``): loaded on
    first use, off the request path; until it is ready a request is answered 503 with
    Retry-After. Its calls run on a ``where`` worker of their own, so a heatmap never
    delays a search; decoding runs on the service's decode threads, within its memory
    budget; "more like this part" runs on the search worker with the search model.

    Args:
        service: the API's service (collection, catalog checks, workers, budget).
        model: the CLIPSeg model's name (default ``CIDAS/clipseg-rd64-refined``) or a
            loaded one (it stays the caller's to close).
    """

    def __init__(self, service: Service, model: str | ClipSeg = DEFAULT_SEG_MODEL) -> None:
        from searchengine.server.models import where_slot

        self.service = service
        self.slot: ModelSlot[ClipSeg] = where_slot(service.collection, model)
        self.model = self.slot.model
        service.more_slots.append(self.slot)
        self.worker = Worker("where", threads=1, depth=16, retry_after=5)
        self._lock = threading.Lock()
        self._answers: OrderedDict[tuple[int, str, str], tuple[Image.Image, Location]] = (
            OrderedDict()
        )

    def close(self) -> None:
        """Stop the worker (the slot is closed with the service's)."""
        self.worker.stop()

    async def locate(self, image_id: int, text: str) -> tuple[Image.Image, Location]:
        """The photo and where ``text`` is in it (cached for the page's follow-up call)."""
        from searchengine.ranking import check_query
        from searchengine.where import locate_images

        phrase = check_query(text)
        record = self.service.record(image_id)
        # The file is checked on every call, also when the answer is cached: a photo
        # changed or gone since indexing is a 409 or 404, never the old heatmap.
        key = (image_id, record.content_hash or "", phrase)
        with self._lock:
            cached = self._answers.get(key)
            if cached is not None:
                self._answers.move_to_end(key)
        if cached is not None:
            await self.service.read_file(record)
            return cached
        seg = self.slot.ready or await run_in_threadpool(self.slot.get)
        data = await self.service.read_file(record)
        decoded = await self.service.decodes.run(
            decode_indexed, record, data, _SIDE, self.service.budget
        )
        size = (decoded.width, decoded.height)
        found = await self.worker.run(locate_images, seg, [decoded.image], [phrase], [size])
        with self._lock:
            self._answers[key] = (decoded.image, found[0])
            while len(self._answers) > _CACHED:
                self._answers.popitem(last=False)
        return decoded.image, found[0]

    async def where(self, image_id: int, text: str) -> WhereBody:
        _, loc = await self.locate(image_id, text)
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

    async def picture(self, image_id: int, text: str, view: str) -> bytes:
        photo, loc = await self.locate(image_id, text)
        return await self.service.decodes.run(_png, photo, loc, view)

    async def similar_part(
        self, image_id: int, box: str, method: str, k: int, offset: int
    ) -> SimilarPage:
        """Photos most like a part of an indexed photo (itself left out)."""
        from searchengine.region import parse_box

        record = self.service.record(image_id)
        await self.service.read_file(record)  # only what was indexed is searched from
        return await self.service.similar_to_image(
            image_id, k, offset, region=parse_box(box), region_method=method
        )


def _png(photo: Image.Image, loc: Location, view: str) -> bytes:
    """The heatmap over the photo, or the logit map with its colour bar, as PNG bytes."""
    import io

    from searchengine.overlay import heat_overlay, logit_figure

    picture = logit_figure(loc) if view == "logits" else heat_overlay(photo, loc)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _where(request: Request) -> WhereService:
    svc: WhereService = request.app.state.where
    return svc


@where_router.get(
    "/images/{image_id}/where", response_model=WhereBody, responses=_errors(404, 409, 413, 503)
)
async def where(request: Request, image_id: ImageId, q: Phrase) -> WhereBody:
    """Where the phrase ``q`` is in an indexed photo (CLIPSeg), or that it is not there.

    While the CLIPSeg model loads, or after it failed to, the answer is 503 at once,
    with Retry-After.
    """
    return await _where(request).where(image_id, q)


@where_router.get(
    "/images/{image_id}/where.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The heatmap over the photo."},
        **_errors(404, 409, 413, 503),
    },
)
async def where_png(
    request: Request,
    image_id: ImageId,
    q: Phrase,
    view: Annotated[
        Literal["heat", "logits"],
        Query(description="heat: over the photo; logits: the raw map with a colour bar."),
    ] = "heat",
) -> Response:
    """The phrase's heatmap over an indexed photo, as PNG."""
    data = await _where(request).picture(image_id, q, view)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private"})


@where_router.get(
    "/images/{image_id}/similar-part",
    response_model=SimilarPage,
    responses=_errors(404, 409, 413, 503),
)
async def similar_part(
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
    return await _where(request).similar_part(image_id, box, method, k, offset)
