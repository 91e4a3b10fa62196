"""What the HTTP API does, without HTTP: one open collection, its models, bounded work.

Routes (``api.py``) parse requests and call one method here; this module turns
library results into the API's JSON models. Everything a request names is checked
against the catalog: images by id only, example-image terms by id only, models never
(the server's operator picks them when starting it).

Who runs what (``workers.py``): the collection's model, index and catalog queries run
on one ``search`` worker; BLIP on a ``caption`` worker; decoding uploads, query images
and thumbnails on two ``decode`` threads within a memory budget, the originals they
need read on their mount's readers first (``originals.py``). Each model is a
``ModelSlot`` loaded once, off the request path; a request that needs one that is not
ready is answered 503 at once. So a caption never delays a search, and nothing a
request does can hold the web server's own threads for long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from searchengine.catalog import OK, ImageRecord
from searchengine.errors import ImageError, QueryError
from searchengine.fsutil import display_path
from searchengine.ingest.decode import decode_bytes, decode_memory
from searchengine.ingest.raw import is_raw
from searchengine.models.blip import DEFAULT_CAPTION_MODEL
from searchengine.ranking import ImageTerm, Page, Query, Term, TextTerm
from searchengine.ranking.terms import WEIGHTED
from searchengine.server.captioning import caption_page
from searchengine.server.originals import Originals
from searchengine.server.schemas import (
    CaptionBody,
    FoldersBody,
    HealthBody,
    ImageInfo,
    ModelStatus,
    SearchPage,
    SearchRequest,
    SimilarPage,
    StatusBody,
    image_urls,
    result_body,
)
from searchengine.server.thumbnails import (
    FileUnavailable,
    ThumbnailCache,
    decode_indexed,
)
from searchengine.server.workers import MemoryBudget, ModelSlot, OverBudget, Worker
from searchengine.values import MetaKey

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image
    from pydantic import BaseModel

    from searchengine.captions import Captioner
    from searchengine.collection import Collection, CollectionStatus
    from searchengine.models import Encoder

log = logging.getLogger("searchengine.server")
MAX_FOLDERS = 2000
HEALTH_COUNT_SECONDS = 2.0  # how stale /api/health's image count may be
# Decoded pixels held at once. A 100 MP RGBA PNG takes ~900 MB at its peak; the server
# and its model take ~300 MB more with the shipped models: 1.5 GB in all, at most.
DECODE_BUDGET = 1_000_000_000
_IMAGE_TERM = re.compile(r"^image:(\d{1,18})$")


class Service:
    """The API's operations on one open collection.

    Args:
        collection: an open collection; the caller keeps ownership and closes it.
        rerank_model: the model ``rerank=true`` rescores with (a spec or a loaded
            encoder); ``None`` uses the collection's own model.
        caption_model: the BLIP model captions come from (a name or a loaded
            captioner); ``None`` uses the default.
        decode_budget: bytes of decoded pixels held at once.
    """

    def __init__(
        self,
        collection: Collection,
        *,
        rerank_model: str | Encoder | None = None,
        caption_model: str | Captioner | None = None,
        decode_budget: int = DECODE_BUDGET,
    ) -> None:
        from searchengine.server.models import caption_slot, rerank_slot, search_slot

        self.collection = collection
        self.budget = MemoryBudget(decode_budget)
        self.thumbnails = ThumbnailCache(collection.folder, self.budget)
        self.search_model: ModelSlot[Encoder] = search_slot(collection)
        self.rerank_model: ModelSlot[Encoder] | None = rerank_slot(collection, rerank_model)
        self.caption_model: ModelSlot[Captioner] = caption_slot(collection, caption_model)
        self.more_slots: list[ModelSlot[Any]] = []  # other routes' models, for status
        # One search at a time: each takes a few ms, mostly Python, and a second thread
        # only competes for the interpreter lock with the event loop (measured with 20
        # concurrent searches: the same throughput, /api/health's p90 8 ms against 53).
        self.searches = Worker("search", threads=1, depth=64, retry_after=2)
        self.captions = Worker("caption", threads=1, depth=24, retry_after=30)
        self.decodes = Worker("decode", threads=2, depth=32, retry_after=10)
        # Originals are read apart, a pool a mount, and waited for at most FILE_SECONDS:
        # a photo on a network share whose server went away blocks its reader in the
        # kernel for ever. Read on the shared thread pool, 40 such requests held every
        # thread, and every route that needs one (the health probe's and the token
        # check's among them) stalled with them; read on the decode threads, two held
        # every thumbnail still to make.
        self.originals = Originals()
        self._folders: tuple[object, FoldersBody] | None = None
        self._images: tuple[float | None, int] = (None, 0)  # (when counted, ok images)
        self._counting: asyncio.Future[int] | None = None

    # -- start-up and shut-down -----------------------------------------------------
    def warm_up(self) -> None:
        """Load the collection's model and index now (errors surface here), start the
        rerank model loading, and drop thumbnails of images no longer indexed."""
        self.search_model.load_now()
        if self.rerank_model is not None:
            self.rerank_model.start()
        self.thumbnails.prune(self.collection.catalog)

    def close(self) -> None:
        """Stop the workers and release the models this service loaded."""
        for worker in (self.searches, self.captions, self.decodes):
            worker.stop()
        self.originals.stop()
        for slot in (self.rerank_model, self.caption_model, *self.more_slots):
            if slot is not None:
                slot.close()

    # -- queries ----------------------------------------------------------------------
    async def search(self, request: SearchRequest) -> SearchPage:
        """One page of a text search (the ranking is the CLI's for the same query)."""
        started = time.perf_counter()
        encoder = await self._ready(self.search_model)
        rerank: bool | Encoder | None = None
        if request.rerank:
            rerank = self.rerank_model.get() if self.rerank_model is not None else True
        terms = [
            TextTerm(request.q),
            *[await self._term(t, encoder) for t in request.plus],
            *[await self._term(t, encoder, -1.0) for t in request.minus],
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
        ranked = await self.searches.run(self._rank, query, rerank)
        page, notice = ranked.results, None
        if request.caption:
            page, notice = await caption_page(self, page)
        return SearchPage(
            query=request.q,
            results=[result_body(r) for r in page],
            offset=request.offset,
            k=request.k,
            has_more=ranked.has_more,
            seconds=round(time.perf_counter() - started, 4),
            ranked_by="clip_score" if request.rerank else "cosine",
            weak_below=ranked.weak_below,
            notice=notice,
        )

    async def similar_to_image(
        self,
        image_id: int,
        k: int,
        offset: int,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> SimilarPage:
        """Images most like an indexed one (itself left out), or like a ``region`` of it
        (``Collection.similar_page``)."""
        record = self.record(image_id)
        await self._ready(self.search_model)
        return await self._similar(record.path, k, offset, image_id, region, region_method)

    async def similar_to_upload(
        self, data: bytes, k: int, offset: int, name: str | None = None
    ) -> SimilarPage:
        """Images most like uploaded image bytes (decoded as safely as at ingest, at the
        model's input size, within the memory budget); ``name``, the upload's file name,
        tells a camera RAW file."""
        encoder = await self._ready(self.search_model)
        image = await self.decodes.run(self._decode_upload, data, encoder.image_size, name)
        return await self._similar(image, k, offset, None)

    async def caption(self, image_id: int) -> CaptionBody:
        """The BLIP caption of an indexed image (made once, then read from the catalog)."""
        record = self.record(image_id)
        await self.read_file(record)  # only what was indexed is described
        captioner = self.caption_model.get()
        texts = await self.captions.run(self.collection.caption, [image_id], captioner)
        if image_id not in texts:
            raise FileUnavailable(f"image {image_id} could not be read for captioning", 409)
        return CaptionBody(id=image_id, caption=texts[image_id], model=captioner.model)

    async def thumbnail(self, image_id: int, size: str) -> Path | bytes:
        """The thumbnail file, made now if missing (its bytes, where it cannot be
        kept: ``ThumbnailCache.make``): the original read on the file worker, then
        decoded on a decode thread."""
        record = await self.record_of(image_id)
        cached = self.thumbnails.path(record, size)
        if cached.is_file():
            return cached
        data = await self.read_file(record)
        return await self.decodes.run(self.thumbnails.make, record, size, data)

    async def read_file(self, record: ImageRecord) -> bytes:
        """The indexed file's bytes, read on its mount's reader (``Originals.read``)."""
        return await self.originals.read(record)

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

    async def record_of(self, image_id: int) -> ImageRecord:
        """``record``, looked up off the event loop (a server catalog may be slow)."""
        return await run_in_threadpool(self.record, image_id)

    def image(self, image_id: int) -> ImageInfo:
        r = self.record(image_id)
        return ImageInfo(
            id=r.id,
            path=display_path(r.path),
            name=display_path(os.path.basename(r.path)),
            size=r.size,
            width=r.width,
            height=r.height,
            taken_at=r.taken_at,
            modified=r.mtime_ns / 1e9,
            **image_urls(r.id),
        )

    async def status(self) -> BaseModel:
        """The collection as ``searchengine status`` shows it, and each model's state."""
        models = [s.state() for s in self._slots()]
        info = (await self.searches.run(self._status)).to_dict()
        return StatusBody.model_validate(
            info
            | {
                "rerank_model": self.rerank_name,
                "caption_model": self.caption_name,
                "models": [ModelStatus.model_validate(m.__dict__) for m in models],
            }
        )

    async def health(self) -> HealthBody:
        """Liveness: answered on the event loop from a count at most a few seconds old
        (counting a large catalog takes a while; a probe must not wait for it)."""
        counted_at, images = self._images
        if counted_at is None:
            images = await run_in_threadpool(self._count_images)
        elif time.monotonic() - counted_at > HEALTH_COUNT_SECONDS and self._counting is None:
            self._counting = asyncio.ensure_future(run_in_threadpool(self._count_images))
            self._counting.add_done_callback(self._counted)
        return HealthBody(
            status="ok", collection=self.collection.name, model=self.collection.model, images=images
        )

    def _count_images(self) -> int:
        images = self.collection.catalog.counts().get(OK, 0)
        self._images = (time.monotonic(), images)
        return images

    def _counted(self, _task: asyncio.Future[int]) -> None:
        self._counting = None

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
        return self.rerank_model.model if self.rerank_model else self.collection.model

    @property
    def caption_name(self) -> str:
        return self.caption_model.model or DEFAULT_CAPTION_MODEL

    # -- on the workers -------------------------------------------------------------
    def _rank(self, query: Query, rerank: bool | Encoder | None) -> Page:
        self.collection.store.refresh()
        return self.collection.rank(query, rerank)

    def _similar_page(
        self,
        example: str | Image.Image,
        k: int,
        offset: int,
        region: tuple[int, int, int, int] | None,
        region_method: str,
    ) -> Page:
        self.collection.store.refresh()
        return self.collection.similar_page(
            example, k, offset, region=region, region_method=region_method
        )

    def _status(self) -> CollectionStatus:
        self.collection.store.refresh()
        return self.collection.status()

    def _decode_upload(self, data: bytes, side: int, name: str | None = None) -> Image.Image:
        try:
            if is_raw(name):
                try:
                    return self._decode(data, side, name)
                except OverBudget:
                    raise
                except ImageError:
                    pass  # the name says RAW, the bytes may not: as any other upload
            return self._decode(data, side)
        except OverBudget as exc:
            raise OverBudget(f"cannot use the uploaded file: {exc}") from exc
        except ImageError as exc:
            raise QueryError(f"cannot use the uploaded file as an image: {exc}") from exc

    def _decode(self, data: bytes, side: int, name: str | None = None) -> Image.Image:
        """Image bytes decoded at ``side``, within the memory budget (``name``, where
        known, tells a camera RAW file)."""
        with self.budget.hold(decode_memory(data, min_side=side, name=name)):
            return decode_bytes(data, min_side=side, name=name).image

    # -- helpers -------------------------------------------------------------------
    async def _ready(self, slot: ModelSlot[Encoder]) -> Encoder:
        """A model slot's model; a short wait for a load under way runs off the loop."""
        model = slot.ready
        return model if model is not None else await run_in_threadpool(slot.get)

    async def _similar(
        self,
        example: str | Image.Image,
        k: int,
        offset: int,
        source: int | None,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> SimilarPage:
        started = time.perf_counter()
        ranked = await self.searches.run(
            self._similar_page, example, k, offset, region, region_method
        )
        return SimilarPage(
            source=source,
            results=[result_body(r) for r in ranked.results],
            offset=offset,
            k=k,
            has_more=ranked.has_more,
            seconds=round(time.perf_counter() - started, 4),
            ranked_by="cosine",
        )

    async def _term(self, raw: str, encoder: Encoder, sign: float = 1.0) -> Term:
        """A request's ``[W:]text`` or ``[W:]image:ID`` term.

        A request must not name server files: image terms are catalog ids, verified
        like any served file and decoded within the memory budget, and everything
        else is text.
        """
        match = WEIGHTED.match(raw)
        weight, body = (float(match.group(1)), match.group(2)) if match else (1.0, raw)
        weight *= sign
        image = _IMAGE_TERM.match(body.strip())
        if image is None:
            if body.strip().startswith("image:"):
                raise QueryError(f"cannot read term {raw!r}: name an image as image:ID")
            return TextTerm(body, weight)
        record = self.record(int(image.group(1)))
        data = await self.read_file(record)
        decoded = await self.decodes.run(
            decode_indexed, record, data, encoder.image_size, self.budget
        )
        return ImageTerm(decoded.image, weight)

    def _slots(self) -> list[ModelSlot]:
        slots: list[ModelSlot] = [self.search_model]
        if self.rerank_model is not None:
            slots.append(self.rerank_model)
        return [*slots, self.caption_model, *self.more_slots]
