"""Captions for a page of search results, within a time bound.

BLIP takes about a second an image on a CPU. A search with ``caption=true`` captions at
most ``MAX_CAPTIONED`` results, in chunks of ``CAPTION_CHUNK`` on the service's caption
worker, and answers after ``CAPTION_WAIT`` seconds with what is done and a notice of
what is not. Chunks still running are stored when done (``Collection.caption`` caches
per image and model), so asking again finds them. A file that no longer holds what was
indexed gets no caption: only what was indexed is described. Each file is checked on
its mount's readers first (``Service.read_file``), so a photo on a share that stopped
answering costs its own caption, not the caption worker, which it would hold for as
long as the share is away.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from searchengine.server.thumbnails import FileUnavailable
from searchengine.server.workers import Unavailable

if TYPE_CHECKING:
    from searchengine.captions import Captioner
    from searchengine.ranking import SearchResult
    from searchengine.server.service import Service

log = logging.getLogger("searchengine.server")
MAX_CAPTIONED = 24
CAPTION_CHUNK = 4
CAPTION_WAIT = 8.0


async def caption_page(
    service: Service, page: list[SearchResult]
) -> tuple[list[SearchResult], str | None]:
    """``page`` with the captions made in time, and a notice of any missing (or why
    there are none: the captioning model is not ready)."""
    wanted = page[:MAX_CAPTIONED]
    try:
        captioner = service.caption_model.get()
    except Unavailable as exc:
        return page, f"no captions: {exc}"
    jobs = []
    for start in range(0, len(wanted), CAPTION_CHUNK):
        chunk = wanted[start : start + CAPTION_CHUNK]
        job = asyncio.ensure_future(_caption(service, chunk, captioner))
        job.add_done_callback(_consume)  # one that ends after the answer: logged, not lost
        jobs.append(job)
    done = (await asyncio.wait(jobs, timeout=CAPTION_WAIT))[0] if jobs else set()
    texts: dict[int, str] = {}
    for job in done:
        texts.update(job.result())
    missing = sum(1 for r in wanted if r.id not in texts)
    notice = None
    if missing:
        notice = (
            f"captions for {missing} of {len(wanted)} results are not ready "
            "(BLIP is busy or slow); search again in a moment for more"
        )
    elif len(page) > len(wanted):
        notice = f"captions for the first {MAX_CAPTIONED} results only"
    return [replace(r, caption=texts.get(r.id)) for r in page], notice


async def _caption(
    service: Service, chunk: list[SearchResult], captioner: Captioner
) -> dict[int, str]:
    """Captions of the results whose files still hold what was indexed: checked on
    the file worker, captioned on the caption worker (none if it is busy)."""
    checks = await asyncio.gather(*(_readable(service, r.id) for r in chunk))
    verified = [result for result, ok in zip(chunk, checks, strict=True) if ok]
    if not verified:
        return {}
    try:
        return await service.captions.run(service.collection.caption, verified, captioner)
    except Unavailable:
        return {}  # the captioner is busy: these go without


async def _readable(service: Service, image_id: int) -> bool:
    try:
        await service.read_file(await service.record_of(image_id))
    except (FileUnavailable, Unavailable):
        return False
    return True


def _consume(job: asyncio.Future[dict[int, str]]) -> None:
    if not job.cancelled() and job.exception() is not None:
        log.warning("captioning failed: %s", job.exception())
