"""The models the server uses, each in a ``ModelSlot``: how each one is loaded.

- ``search``: the collection's own model (and, with it, its index and calibration).
  ``serve`` loads it before it starts listening; otherwise the first request starts it.
- ``rerank``: ``--rerank-model``, when it is not the collection's model; loading starts
  with the server, in the background.
- ``caption``: BLIP, loaded in the background when first asked for (~1 GB that a
  server nobody asks for captions never needs).
- ``where``: CLIPSeg (``--where-model``), likewise loaded when first asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from searchengine.errors import CatalogUnavailableError
from searchengine.models import load_encoder, parse_model_spec
from searchengine.models.blip import DEFAULT_CAPTION_MODEL, parse_blip_model
from searchengine.server.workers import ModelSlot

if TYPE_CHECKING:
    from searchengine.captions import Captioner
    from searchengine.collection import Collection
    from searchengine.models import Encoder
    from searchengine.models.clipseg import ClipSeg

# A request waits this long for a search model whose load is under way (one already in
# memory, or cached and small, is ready in time) before it is told to come back.
SEARCH_PATIENCE = 2.0
CATALOG_RETRY_S = 5  # Retry-After while the catalog's database cannot be reached


def search_slot(collection: Collection) -> ModelSlot[Encoder]:
    """The collection's model; loading it also reads the index and its calibration. A
    catalog database out of reach then is not the model's failure: the load is tried
    again after ``CATALOG_RETRY_S``, not after the model back-off (a minute, doubling)."""
    from sqlalchemy.exc import DBAPIError

    from searchengine.catalog_errors import command_problem

    def load() -> Encoder:
        encoder = collection.encoder
        try:
            collection.store.refresh()
            collection.search("a photo", 1)  # the index, the calibration, a warm session
        except DBAPIError as exc:
            if (line := command_problem(exc)) is None:
                raise
            raise CatalogUnavailableError(line) from exc
        return encoder

    def transient(exc: BaseException) -> float | None:
        return CATALOG_RETRY_S if isinstance(exc, CatalogUnavailableError) else None

    return ModelSlot(
        "search", collection.model, load, patience=SEARCH_PATIENCE, transient=transient
    )


def rerank_slot(collection: Collection, model: str | Encoder | None) -> ModelSlot[Encoder] | None:
    """The reranking model, or ``None`` when reranking uses the collection's own.

    Raises:
        UnknownModelError: ``model`` is a spec that names no model.
    """
    if model is None:
        return None
    if not isinstance(model, str):
        if model.spec == collection.model:
            return None
        return ModelSlot("rerank", model.spec, lambda: model, loaded=model)
    spec = parse_model_spec(model).spec
    if spec == collection.model:
        return None
    config = collection.config
    return ModelSlot("rerank", spec, lambda: load_encoder(spec, config.device, config.runtime))


def caption_slot(collection: Collection, model: str | Captioner | None) -> ModelSlot[Captioner]:
    """The BLIP captioner.

    Raises:
        UnknownModelError: ``model`` is neither a folder nor a hub repo id.
    """
    if model is not None and not isinstance(model, str):
        return ModelSlot("caption", model.model, lambda: model, loaded=model)
    name = parse_blip_model(model or DEFAULT_CAPTION_MODEL).spec
    device = collection.config.device

    def load() -> Captioner:
        from searchengine.captions import load_captioner

        return load_captioner(name, device)

    return ModelSlot("caption", name, load)


def where_slot(collection: Collection, model: str | ClipSeg) -> ModelSlot[ClipSeg]:
    """The CLIPSeg model of "where is it?" (a hub repo id, a folder, ``toy-seg``, or a
    loaded model)."""
    if not isinstance(model, str):
        return ModelSlot("where", model.model, lambda: model, loaded=model)
    device = collection.config.device

    def load() -> ClipSeg:
        from searchengine.models.clipseg import ClipSeg

        return ClipSeg(name, device=device)

    # As for the search model: a small model answers its first request, not a 503.
    name = model
    return ModelSlot("where", name, load, patience=SEARCH_PATIENCE)
