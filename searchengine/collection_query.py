"""The reading half of a collection: rank, search, similar, captions, reranking models.

``Collection`` is the composition root (opening, ingest, status); these methods are
the queries it answers, each handing its work to ``ranking`` or ``captions``. They
need only what the class below declares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from searchengine.captions import Captioner, cached_captions, load_captioner
from searchengine.catalog import OK, Catalog
from searchengine.config import Config
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.models.blip import DEFAULT_CAPTION_MODEL, parse_blip_model
from searchengine.progress import Progress
from searchengine.ranking import (
    Calibration,
    Filters,
    ImageVectors,
    Page,
    Query,
    Ranker,
    SearchResult,
    Term,
    query_terms,
)
from searchengine.vectors import FaissIndex

if TYPE_CHECKING:
    from searchengine.store import Store


class Searching:
    """Queries on a collection; mixed into ``Collection``, which provides the rest."""

    config: Config
    model: str
    store: Store
    _rerankers: dict[str, Encoder]
    _captioners: dict[str, Captioner]

    @property
    def catalog(self) -> Catalog:
        raise NotImplementedError

    @property
    def encoder(self) -> Encoder:
        raise NotImplementedError

    def vectors(self) -> FaissIndex:
        raise NotImplementedError

    def calibration(self) -> Calibration | None:
        raise NotImplementedError

    def precompute(self, model: str | Encoder, progress: Progress | None = None) -> int:
        """Compute and cache another model's vectors for every indexed image.

        Later ``search(..., rerank=model)`` calls then decode nothing. Images whose
        vectors are cached already are skipped. Returns how many were computed.
        """
        return self._scorer(model).precompute(list(self.catalog.records(OK)), progress)

    def rank(self, query: Query, rerank: str | bool | Encoder | None = None) -> Page:
        """One page of results for a prepared ``Query`` (the HTTP API's entry point).

        Args:
            query: terms, paging, filters, rescoring and sort.
            rerank: where CLIPScore comes from (see ``search``).
        """
        with self.store.reading():  # a refresh catches the index up before or after
            ranker = Ranker(
                self.catalog, self.vectors(), self.encoder, self._scorer(rerank), self.calibration()
            )
            return ranker.run(query)

    def search(
        self,
        query: str | Term,
        k: int = 10,
        *,
        plus: Sequence[str | Term] = (),
        minus: Sequence[str | Term] = (),
        rerank: str | bool | Encoder | None = None,
        candidates: int | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        sort: str = "relevance",
        caption: str | bool | Captioner | None = None,
    ) -> list[SearchResult]:
        """Images best matching a query, best first.

        Args:
            query: what the photo shows, in words (or a term).
            k: how many results.
            plus: more terms to add: terms, or strings of text or paths of example
                images; ``W:term`` weights a string term.
            minus: terms to subtract, in the same forms.
            rerank: rescore the candidates with CLIPScore and rank by it; ``True``
                uses the collection's own model, a spec string (or a loaded
                encoder) another model.
            candidates: first-stage candidates to rescore (default ``max(100, k)``
                when reranking or thresholding, else ``k``).
            min_score: drop results whose CLIPScore is below this.
            filters: metadata filters, applied inside the vector search.
            sort: ``relevance``, ``date`` (newest first) or ``date-asc``.
            caption: caption the results (see ``caption``): ``True`` with BLIP's
                default captioning model, a model name, or a loaded captioner.

        Every result carries the first-stage cosine and the CLIPScore.
        """
        prepared = Query(
            tuple(query_terms(query, plus, minus)),
            k,
            filters=filters,
            rerank=bool(rerank),
            candidates=candidates,
            min_score=min_score,
            sort=sort,
        )
        results = self.rank(prepared, rerank).results
        if caption:
            texts = self.caption(results, model=None if caption is True else caption)
            results = [replace(r, caption=texts.get(r.id)) for r in results]
        return results

    def similar(
        self,
        image: str | Path | Image.Image,
        k: int = 10,
        *,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> list[SearchResult]:
        """Images most like an example image (indexed or not); the image itself excluded.

        With ``region`` (``x0, y0, x1, y1`` in the upright image's pixels), images most
        like that part of it ("more like this part"): the query is the region's
        embedding (:func:`searchengine.region.region_term`, FALIP by default).
        """
        return self.similar_page(image, k, region=region, region_method=region_method).results

    def similar_page(
        self,
        image: str | Path | Image.Image,
        k: int = 10,
        offset: int = 0,
        *,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> Page:
        """A page of ``similar``'s ranking."""
        from searchengine.region import similar_term

        with self.store.reading():
            term, exclude = similar_term(
                image, region, region_method, self.catalog, self.vectors(), self.encoder
            )
            query = Query((term,), k, offset, exclude=exclude, clip_score=False)
            return self.rank(query)

    def caption(
        self,
        images: Sequence[SearchResult | int],
        model: str | Captioner | None = None,
    ) -> dict[int, str]:
        """Captions of indexed images by id, made once per (image, model) and stored.

        Args:
            images: search results or catalog image ids.
            model: a BLIP captioning repo id or folder (default
                ``Salesforce/blip-image-captioning-base``), or a loaded captioner.

        A stored caption is reused until the file's content changes (and is
        re-indexed). Ids not in the catalog, and files that can no longer be read,
        get no caption.
        """
        ids = [r.id if isinstance(r, SearchResult) else int(r) for r in images]
        records = self.catalog.get(ids)
        found = [records[i] for i in dict.fromkeys(ids) if i in records]
        return cached_captions(self.catalog, found, self._captioner(model))

    def _captioner(self, model: str | Captioner | None) -> Captioner:
        if model is not None and not isinstance(model, str):
            return model
        name = parse_blip_model(model or DEFAULT_CAPTION_MODEL).spec
        if name not in self._captioners:
            self._captioners[name] = load_captioner(name, self.config.device)
        return self._captioners[name]

    def _scorer(self, rerank: str | bool | Encoder | None) -> ImageVectors:
        """Where CLIPScore's image vectors come from: our index, or a cached model."""
        if isinstance(rerank, Encoder) and rerank.spec != self.model:
            return ImageVectors(self.catalog, rerank)
        spec = rerank if isinstance(rerank, str) else None
        if spec is None or parse_model_spec(spec).spec == self.model:
            return ImageVectors(self.catalog, self.encoder, index=self.vectors())
        canonical = parse_model_spec(spec).spec
        if canonical not in self._rerankers:
            self._rerankers[canonical] = load_encoder(
                canonical, self.config.device, self.config.runtime
            )
        return ImageVectors(self.catalog, self._rerankers[canonical])
