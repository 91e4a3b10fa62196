"""The JSON API's routes: parse and bound the request, call one ``Service`` method.

Routes that need a model, a decode or the index are ``async``: they await the service's
workers, so they hold none of the web server's threads. Quick catalog reads are plain
``def`` (FastAPI runs them in its thread pool). Bounds on every parameter are part of
the OpenAPI schema, so a client learns them from ``/api/openapi.json``; integers are
plain decimals (``+1``, ``01``, ``1_0`` or ``1.0`` are refused, not read as numbers).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, StringConstraints

from searchengine.ranking import MAX_QUERY_CHARS, Filters
from searchengine.server.schemas import (
    CaptionBody,
    ErrorBody,
    FoldersBody,
    HealthBody,
    ImageInfo,
    SearchPage,
    SearchRequest,
    SessionBody,
    SimilarPage,
    StatusBody,
)
from searchengine.server.security import TOKEN_COOKIE, offered_token
from searchengine.server.service import Service
from searchengine.server.thumbnails import media_type
from searchengine.values import Orientation, Sort

MAX_K = 100
MAX_OFFSET = 1000
MAX_TERMS = 10
MAX_SIDE = 100_000
# SQLite integers are signed 64-bit; a larger id could only ever be "not found".
MAX_ID = 2**63 - 1
# Years 1800-2999, months 1-12, days 1-31: what the date filters can read (a day past
# the end of its month is still refused, with a 400 that says so).
_DATE = r"^(1[89]|2\d)\d\d(-(0?[1-9]|1[0-2])(-(0?[1-9]|[12]\d|3[01]))?)?$"
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")
_INTEGERS = ("image_id", "k", "offset", "min_width", "min_height")


def plain_integers(request: Request) -> None:
    """Refuse integers that Python or pydantic would read but a person would not write:
    ``+1``, ``01``, ``1_0``, ``1.0``, `` 1`` (all read as 1, or 10, before).

    A dependency of every route, checked on the raw text before the parameters are
    parsed (an annotation on each parameter would drop its bounds from the schema).
    """
    problems = [
        {
            "type": "value_error",
            "loc": (where, name),
            "msg": "must be a plain decimal integer, e.g. 42",
        }
        for where, values in (("path", request.path_params), ("query", request.query_params))
        for name in _INTEGERS
        if name in values and not _DECIMAL.fullmatch(str(values[name]))
    ]
    if problems:
        raise RequestValidationError(problems)


router = APIRouter(prefix="/api", dependencies=[Depends(plain_integers)])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    why = {
        400: "The request cannot be served as asked (bad query, date, term or upload).",
        401: "The server has a token and the request did not carry it.",
        404: "No such image, or its file is gone.",
        409: "The image's file changed since it was indexed; re-index.",
        403: "A request from another site's page (cross-site requests are refused).",
        413: "The upload is larger, or would take more memory to decode, than allowed.",
        422: "A parameter is missing, malformed or out of bounds.",
        503: "A model the request needs is loading or failed to load, or the server is "
        "busy; the Retry-After header says when to try again.",
    }
    return {c: {"model": ErrorBody, "description": why[c]} for c in (400, 401, 403, 422, *codes)}


# What an original can be served as; a camera RAW file, which no browser shows, as bytes.
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff",
                "image/avif", "image/heif", "application/octet-stream")  # fmt: skip

ImageId = Annotated[int, Path(ge=1, le=MAX_ID, description="Catalog id of an indexed image.")]
K = Annotated[int, Query(ge=1, le=MAX_K, description="Results per page.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Results to skip.")]
Term = Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)]
Terms = Annotated[list[Term], Query(max_length=MAX_TERMS)]
DateText = Annotated[
    str | None, Query(pattern=_DATE, description="YYYY, YYYY-MM or YYYY-MM-DD (local time).")
]


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


@router.get("/health", response_model=HealthBody, responses=_errors())
async def health(request: Request) -> HealthBody:
    """The server answers; which collection and model it serves (never waits for one)."""
    return await service(request).health()


@router.get("/status", response_model=StatusBody, responses=_errors(503))
async def status(request: Request) -> BaseModel:
    """The collection (model, counts, index type, size, folders) and each model's state."""
    return await service(request).status()


@router.get("/folders", response_model=FoldersBody, responses=_errors())
def folders(request: Request) -> FoldersBody:
    """Folders holding indexed images, for the search's folder filter."""
    return service(request).folders()


@router.get("/search", response_model=SearchPage, responses=_errors(404, 409, 413, 503))
async def search(
    request: Request,
    q: Annotated[
        str,
        Query(min_length=1, max_length=MAX_QUERY_CHARS, description="What the photo shows."),
    ],
    k: K = 24,
    offset: Offset = 0,
    plus: Annotated[
        Terms | None,
        Query(
            description="Terms to add: `[W:]text` or `[W:]image:ID` (an indexed image); "
            "W from -100 to 100."
        ),
    ] = None,
    minus: Annotated[Terms | None, Query(description="Terms to subtract, same form.")] = None,
    folder: Annotated[
        str | None,
        Query(max_length=4096, description="A folder (images below it) or a path glob."),
    ] = None,
    after: DateText = None,
    before: DateText = None,
    min_width: Annotated[int | None, Query(ge=1, le=MAX_SIDE)] = None,
    min_height: Annotated[int | None, Query(ge=1, le=MAX_SIDE)] = None,
    orientation: Orientation | None = None,
    sort: Annotated[
        Sort,
        Query(description="Order within each page of the relevance ranking."),
    ] = "relevance",
    rerank: Annotated[bool, Query(description="Rank by CLIPScore (the server's model).")] = False,
    min_score: Annotated[float | None, Query(ge=0.0, le=2.5)] = None,
    caption: Annotated[bool, Query(description="Caption each result with BLIP.")] = False,
) -> SearchPage:
    """Images best matching a text query, best first; pages by ``offset``.

    Results below what a real match scores in this collection are marked ``weak``.
    """
    return await service(request).search(
        SearchRequest(
            q=q,
            k=k,
            offset=offset,
            plus=plus or (),
            minus=minus or (),
            filters=Filters.parse(
                path=folder,
                after=after,
                before=before,
                min_width=min_width,
                min_height=min_height,
                orientation=orientation,
            ),
            sort=sort,
            rerank=rerank,
            min_score=min_score,
            caption=caption,
        )
    )


@router.get("/images/{image_id}", response_model=ImageInfo, responses=_errors(404))
def image(request: Request, image_id: ImageId) -> ImageInfo:
    """What the catalog knows about one image, and the URLs of its files."""
    return service(request).image(image_id)


@router.get(
    "/images/{image_id}/file",
    response_class=Response,
    responses={
        200: {"content": {t: {} for t in _IMAGE_TYPES}, "description": "The original file."},
        **_errors(404, 409),
    },
)
async def image_file(request: Request, image_id: ImageId) -> Response:
    """The original file, byte for byte, provided it still holds what was indexed."""
    served = service(request)
    # The catalog off the event loop (a server catalog may be slow to answer), the
    # file on the file worker (a share may not answer at all).
    record = await served.record_of(image_id)
    data = await served.read_file(record)
    kind = media_type(data, record.path)
    return Response(data, media_type=kind, headers={"Cache-Control": "private"})


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."},
        **_errors(404, 409),
    },
)
async def thumbnail(
    request: Request,
    image_id: ImageId,
    size: Annotated[
        Literal["small", "large"],
        Query(description="small: longest side 384 px; large: 1280 px."),
    ] = "small",
) -> Response:
    """A JPEG thumbnail, made on first request and cached in the collection folder."""
    made = await service(request).thumbnail(image_id, size)
    headers = {"Cache-Control": "private, max-age=3600"}
    if isinstance(made, bytes):  # not cached (a full disk): made for this answer
        return Response(made, media_type="image/jpeg", headers=headers)
    return FileResponse(made, media_type="image/jpeg", headers=headers)


@router.get(
    "/images/{image_id}/caption", response_model=CaptionBody, responses=_errors(404, 409, 503)
)
async def caption(request: Request, image_id: ImageId) -> CaptionBody:
    """A BLIP caption of the image, generated on first request and stored.

    While the captioning model loads, or after it failed to, the answer is 503 at once,
    with Retry-After.
    """
    return await service(request).caption(image_id)


@router.get("/images/{image_id}/similar", response_model=SimilarPage, responses=_errors(404, 503))
async def similar_to_image(
    request: Request, image_id: ImageId, k: K = 24, offset: Offset = 0
) -> SimilarPage:
    """Images most like an indexed one ("more like this"); the image itself is left out."""
    return await service(request).similar_to_image(image_id, k, offset)


@router.post("/similar", response_model=SimilarPage, responses=_errors(413, 503))
async def similar_to_upload(
    request: Request,
    file: Annotated[
        UploadFile,
        # The schema says what the decoder checks (an empty file is refused with 400).
        File(
            description="An image file, not empty (size- and memory-limited).",
            json_schema_extra={"minLength": 1},
        ),
    ],
    k: K = 24,
    offset: Offset = 0,
) -> SimilarPage:
    """Images most like an uploaded one; it is decoded as safely as an indexed file."""
    data = await file.read()
    return await service(request).similar_to_upload(data, k, offset, file.filename)


@router.post("/session", response_model=SessionBody, responses=_errors())
def session(request: Request) -> Response:
    """Keep the token the request carried in an HttpOnly, SameSite=Strict cookie.

    The page calls this once with ``Authorization: Bearer TOKEN``; its later requests,
    image URLs included, then carry the cookie, which its scripts cannot read and other
    sites' pages cannot make the browser send.

    The cookie has no ``Path``: the browser then sends it to this route's folder alone
    (``/api``, or ``/photos/api`` behind a proxy serving the page under ``/photos/``),
    so servers under one host each keep their own token. One an earlier release set
    for the whole host (``Path=/``) is removed.
    """
    token = offered_token(request.headers) if request.app.state.token else None
    response = JSONResponse(SessionBody(cookie=token is not None).model_dump())
    if token is not None:
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="strict", path=None, max_age=30 * 86400
        )
        response.delete_cookie(TOKEN_COOKIE, path="/", httponly=True, samesite="strict")
    return response
