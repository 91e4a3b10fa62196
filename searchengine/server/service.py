"""What the HTTP API does, without HTTP: one open collection, one model, one lock.

Routes (``api.py``) parse requests and call one method here; this module turns
library results into the API's JSON models. Everything a request names is checked
against the catalog: images by id only, example-image terms by id only, models never
(the server's operator picks them when starting it).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from searchengine.catalog import OK, ImageRecord
from searchengine.errors import ImageError, QueryError
from searchengine.fsutil import display_path
from searchengine.ingest.decode import decode_bytes
from searchengine.models.blip import DEFAULT_CAPTION_MODEL
from searchengine.ranking import (
    Filters,
    ImageTerm,
    Query,
    SearchResult,
    Term,
    TextTerm,
)
from searchengine.ranking.terms import WEIGHTED
from searchengine.server.schemas import (
    CaptionBody,
    FoldersBody,
    HealthBody,
    ImageInfo,
    Result,
    SearchPage,
    SimilarPage,
    StatusBody,
)
from searchengine.server.thumbnails import FileUnavailable, ThumbnailCache, read_indexed
from searchengine.values import MetaKey

if TYPE_CHECKING:
    from PIL import Image
    from pydantic import BaseModel

    from searchengine.captions import Captioner
    from searchengine.collection import Collection
    from searchengine.models import Encoder

MAX_FOLDERS = 2000
_IMAGE_TERM = re.compile(r"^image:(\d{1,18})$")


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


class Service:
    """The API's operations on one open collection.

    Args:
        collection: an open collection; the caller keeps ownership and closes it.
        rerank_model: the model ``rerank=true`` rescores with (a spec or a loaded
            encoder); ``None`` uses the collection's own model.
        caption_model: the BLIP model captions come from (a name or a loaded
            captioner); ``None`` uses the default.
    """

    def __init__(
        self,
        collection: Collection,
        *,
        rerank_model: str | Encoder | None = None,
        caption_model: str | Captioner | None = None,
    ) -> None:
        self.collection = collection
        self.rerank_model = rerank_model
        self.caption_model = caption_model
        self.thumbnails = ThumbnailCache(collection.folder)
        # One model, and CPU inference gains nothing from running twice at once: model
        # calls take turns. Catalog reads and file serving do not wait for them.
        self._model_lock = threading.Lock()
        self._folders: tuple[object, FoldersBody] | None = None

    # -- start-up -----------------------------------------------------------------
    def warm_up(self) -> None:
        """Load the model and the index now, so that the first query is as fast as any."""
        with self._model_lock:
            self.collection.store.refresh()
            self.collection.search("a photo", 1)
        self.thumbnails.prune(self.collection.catalog)

    # -- queries ------------------------------------------------------------------
    def search(self, request: SearchRequest) -> SearchPage:
        """One page of a text search (the ranking is the CLI's for the same query)."""
        started = time.perf_counter()
        terms = [
            TextTerm(request.q),
            *(self._term(t) for t in request.plus),
            *(self._term(t, -1.0) for t in request.minus),
        ]
        # Each page is a slice of the relevance ranking, ordered by date within the
        # page: paging stays consistent, and page one equals `search --sort`.
        query = Query(
            tuple(terms),
            request.k,
            request.offset,
            filters=request.filters,
            rerank=request.rerank,
            min_score=request.min_score,
            sort=request.sort,
        )
        with self._model_lock:
            self.collection.store.refresh()
            ranked = self.collection.rank(
                query, (self.rerank_model or True) if request.rerank else None
            )
        page = ranked.results
        if request.caption:
            page = self._captioned(page)
        return SearchPage(
            query=request.q,
            results=[_result(r) for r in page],
            offset=request.offset,
            k=request.k,
            has_more=ranked.has_more,
            seconds=round(time.perf_counter() - started, 4),
        )

    def similar_to_image(self, image_id: int, k: int, offset: int) -> SimilarPage:
        """Images most like an indexed one (itself left out)."""
        record = self.record(image_id)
        return self._similar(record.path, k, offset, image_id)

    def similar_to_upload(self, data: bytes, k: int, offset: int) -> SimilarPage:
        """Images most like uploaded image bytes (decoded as safely as at ingest)."""
        try:
            image = decode_bytes(data).image
        except ImageError as exc:
            raise QueryError(f"cannot use the uploaded file as an image: {exc}") from exc
        return self._similar(image, k, offset, None)

    def _similar(
        self, example: str | Image.Image, k: int, offset: int, source: int | None
    ) -> SimilarPage:
        started = time.perf_counter()
        with self._model_lock:
            self.collection.store.refresh()
            ranked = self.collection.similar_page(example, k, offset)
        return SimilarPage(
            source=source,
            results=[_result(r) for r in ranked.results],
            offset=offset,
            k=k,
            has_more=ranked.has_more,
            seconds=round(time.perf_counter() - started, 4),
        )

    def caption(self, image_id: int) -> CaptionBody:
        """The BLIP caption of an indexed image (made once, then read from the catalog)."""
        record = self.record(image_id)
        read_indexed(record)  # only what was indexed gets described
        with self._model_lock:
            texts = self.collection.caption([image_id], model=self.caption_model)
        if image_id not in texts:
            raise FileUnavailable(f"image {image_id} could not be read for captioning", 409)
        return CaptionBody(id=image_id, caption=texts[image_id], model=self.caption_name)

    # -- catalog --------------------------------------------------------------------
    def record(self, image_id: int) -> ImageRecord:
        """The catalog row of an indexed image.

        Raises:
            FileUnavailable: no such id, or the file failed to index (404 either way,
                so ids of failed files reveal nothing more than unknown ones).
        """
        record = self.collection.catalog.get([image_id]).get(image_id)
        if record is None or record.status != OK:
            raise FileUnavailable(f"no image with id {image_id}", 404)
        return record

    def image(self, image_id: int) -> ImageInfo:
        r = self.record(image_id)
        urls = _urls(r.id)
        return ImageInfo(
            id=r.id,
            path=display_path(r.path),
            name=display_path(os.path.basename(r.path)),
            size=r.size,
            width=r.width,
            height=r.height,
            taken_at=r.taken_at,
            modified=r.mtime_ns / 1e9,
            **urls,
        )

    def status(self) -> BaseModel:
        with self._model_lock:
            self.collection.store.refresh()
            info = self.collection.status()
        return StatusBody.model_validate(
            info.to_dict() | {"rerank_model": self.rerank_name, "caption_model": self.caption_name}
        )

    def health(self) -> HealthBody:
        counts = self.collection.catalog.counts()
        return HealthBody(
            status="ok",
            collection=self.collection.name,
            model=self.collection.model,
            images=counts.get(OK, 0),
        )

    def folders(self) -> FoldersBody:
        """Folders holding indexed images (recomputed only after the catalog changed)."""
        catalog = self.collection.catalog
        key = (catalog.get_meta(MetaKey.LAST_BATCH), catalog.counts().get(OK, 0))
        if self._folders is None or self._folders[0] != key:
            found = sorted({os.path.dirname(r.path) for r in catalog.records(OK)})
            body = FoldersBody(
                folders=[display_path(f) for f in found[:MAX_FOLDERS]],
                truncated=len(found) > MAX_FOLDERS,
            )
            self._folders = (key, body)
        return self._folders[1]

    @property
    def rerank_name(self) -> str:
        model = self.rerank_model
        if model is None:
            return self.collection.model
        return model if isinstance(model, str) else model.spec

    @property
    def caption_name(self) -> str:
        model = self.caption_model
        if model is None:
            return DEFAULT_CAPTION_MODEL
        return model if isinstance(model, str) else model.model

    # -- helpers -------------------------------------------------------------------
    def _term(self, raw: str, sign: float = 1.0) -> Term:
        """A request's ``[W:]text`` or ``[W:]image:ID`` term.

        A request must not name server files: image terms are catalog ids, verified
        like any served file, and everything else is text.
        """
        match = WEIGHTED.match(raw)
        weight, body = (sign * float(match.group(1)), match.group(2)) if match else (sign, raw)
        image = _IMAGE_TERM.match(body.strip())
        if image is None:
            if body.strip().startswith("image:"):
                raise QueryError(f"cannot read term {raw!r}: name an image as image:ID")
            return TextTerm(body, weight)
        record = self.record(int(image.group(1)))
        read_indexed(record)
        return ImageTerm(record.path, weight)

    def _captioned(self, page: list[SearchResult]) -> list[SearchResult]:
        for r in page:
            read_indexed(self.record(r.id))
        with self._model_lock:
            texts = self.collection.caption(page, model=self.caption_model)
        return [replace(r, caption=texts.get(r.id)) for r in page]


def _urls(image_id: int) -> dict[str, str]:
    base = f"/api/images/{image_id}"
    return {
        "thumbnail": f"{base}/thumbnail",
        "preview": f"{base}/thumbnail?size=large",
        "file": f"{base}/file",
    }


def _result(r: SearchResult) -> Result:
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
        **_urls(r.id),
    )
