"""The web app: the JSON API, the page, error mapping and the guard, around one collection.

``create_app`` takes an already-open ``Collection`` (the composition root, the
``serve`` command or a test, opens and closes it) and returns a FastAPI app to run
under any ASGI server (``http.uvicorn_config`` has the settings ``serve`` uses).
Errors, whatever raised them, reach clients as ``{"error": "one line"}`` with a 4xx
status, or 503 and ``Retry-After`` when a model is not ready, a queue is full or the
catalog's database cannot be reached (a shared catalog's server down or restarting:
the next request reconnects); only a bug gives a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from collections.abc import Collection as Container
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from searchengine.catalog_errors import connection_problem, damaged_catalog, lock_timed_out
from searchengine.errors import (
    CollectionError,
    CollectionNotFoundError,
    ModelError,
    SearchEngineError,
)
from searchengine.models.clipseg import DEFAULT_SEG_MODEL
from searchengine.server.api import router
from searchengine.server.models import CATALOG_RETRY_S
from searchengine.server.security import LOOPBACK_NAMES, Guard, check_binding, is_loopback
from searchengine.server.service import DECODE_BUDGET, Service
from searchengine.server.thumbnails import FileUnavailable
from searchengine.server.where_api import WhereService, where_router
from searchengine.server.workers import OverBudget, Unavailable

if TYPE_CHECKING:
    from searchengine.captions import Captioner
    from searchengine.collection import Collection
    from searchengine.models import Encoder
    from searchengine.models.clipseg import ClipSeg

STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 20_000_000
log = logging.getLogger("searchengine.server")


def create_app(
    collection: Collection,
    *,
    token: str | None = None,
    host: str = "127.0.0.1",
    allowed_hosts: Container[str] | None = None,
    rerank_model: str | Encoder | None = None,
    caption_model: str | Captioner | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    decode_budget: int = DECODE_BUDGET,
    warm_up: bool = False,
    where_model: str | ClipSeg = DEFAULT_SEG_MODEL,
) -> FastAPI:
    """The app serving one open collection (run it with ``http.uvicorn_config``).

    Args:
        collection: an open collection; it stays the caller's to close.
        token: when set, every API request must carry it (see ``security.py``).
        host: the address the server will listen on; without a token it must be a
            loopback address.
        allowed_hosts: host names requests may be addressed to. Default: loopback
            names (and ``host``) without a token; any name with one.
        rerank_model: what ``rerank=true`` rescores with; default the collection's model.
        caption_model: the BLIP captioning model; default the package default.
        max_upload_bytes: the largest request body accepted.
        decode_budget: bytes of decoded pixels held at once (uploads, query images,
            thumbnails); an image that needs more alone is refused with 413.
        warm_up: load the model and index now (errors surface here, not at the
            first query), start loading the rerank model, and drop thumbnails of
            images no longer indexed. Otherwise the first request starts loading.
        where_model: the CLIPSeg model of the "where is it?" routes (a name: loaded on
            first use; or a loaded model, which stays the caller's to close).

    Raises:
        ConfigError: a non-loopback ``host`` without a token, or a weak token.
    """
    check_binding(host, token)
    service = Service(
        collection,
        rerank_model=rerank_model,
        caption_model=caption_model,
        decode_budget=decode_budget,
    )
    if warm_up:
        service.warm_up()

    where = WhereService(service, where_model)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        where.close()
        service.close()

    app = FastAPI(
        title="searchengine",
        summary=f"Search the photo collection {collection.name!r} by describing photos.",
        version=_version(),
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads its scripts from a CDN; the page must work offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.token = token is not None
    app.include_router(router)
    app.state.where = where
    app.include_router(where_router)
    _add_error_handlers(app, collection.catalog.location.shown)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    if allowed_hosts is None and token is None:
        allowed_hosts = {*LOOPBACK_NAMES, host.strip("[]").lower()} if is_loopback(host) else None
    app.add_middleware(
        Guard,
        token=token,
        allowed_hosts=allowed_hosts,
        max_body=max_upload_bytes,
    )
    return app


def _add_error_handlers(app: FastAPI, catalog_shown: str | None) -> None:
    def error(status: int, message: str, **extra: object) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: echoing the input back could be megabytes, or bytes
        # that are not text.
        problems = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        message = "invalid request"
        if problems:
            loc, msg = problems[0]["loc"], str(problems[0]["msg"])
            where = ".".join(p for p in loc if p not in ("query", "path", "body"))
            message = f"{where}: {msg}" if where else msg
        return error(422, message, detail=problems)

    @app.exception_handler(SearchEngineError)
    async def library_error(_request: Request, exc: SearchEngineError) -> JSONResponse:
        response = error(_status(exc), str(exc))
        if isinstance(exc, Unavailable):
            response.headers["retry-after"] = str(exc.retry_after)
        return response

    @app.exception_handler(DBAPIError)
    async def catalog_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # The details (the database's address, a file's path) go to the server's log,
        # not to every client.
        if (damaged := damaged_catalog(None, exc)) is not None:
            log.error("serving %s: %s", request.url.path, damaged)
            return error(
                503, "the collection's catalog is damaged; the server log says how to mend it"
            )
        if not isinstance(exc, (OperationalError, InterfaceError)):
            return await bug(request, exc)
        log.warning("serving %s: %s", request.url.path, connection_problem(catalog_shown, exc))
        if lock_timed_out(exc):
            said = "the collection's catalog is locked by another session now; try again shortly"
        else:
            said = "the collection's catalog database cannot be reached now; try again shortly"
        response = error(503, said)
        response.headers["retry-after"] = str(CATALOG_RETRY_S)
        return response

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path, exc_info=exc)
        return error(500, "internal error; the server log has the details")


def _status(exc: SearchEngineError) -> int:
    if isinstance(exc, FileUnavailable):
        return exc.status
    if isinstance(exc, Unavailable):
        return 503  # loading, failed a while ago, or busy: Retry-After says when
    if isinstance(exc, OverBudget):
        return 413
    if isinstance(exc, CollectionNotFoundError):
        return 404
    if isinstance(exc, CollectionError):
        return 409
    if isinstance(exc, ModelError):
        return 503  # the server's own model set-up, not the request, is at fault
    return 400  # QueryError, ImageError, ConfigError, DatasetError: the input


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("searchengine")
    except PackageNotFoundError:
        return "0"
