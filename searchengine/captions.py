"""Captions and answers: image files or catalog images in, text out.

Two small protocols (``Captioner``, ``QuestionAnswerer``) with BLIP behind them
(``searchengine.models.blip``). Captions of catalog images are kept per
(image, captioning model, content hash) in the catalog, so each image is captioned
once per model, and again only after its file changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from searchengine.catalog import Catalog, ImageRecord
from searchengine.derived import DerivedCache
from searchengine.errors import ImageError, QueryError
from searchengine.ingest.decode import decode_file
from searchengine.models.blip import DEFAULT_CAPTION_MODEL, DEFAULT_VQA_MODEL

# Images decoded and captioned at a time: bounds memory for large requests, and each
# chunk's captions are stored before the next starts, so an interrupted run keeps them.
CHUNK = 32
# BLIP sees 384x384 pixels: images are decoded at a reduced size that still covers it
# (a 12 MP JPEG at 1/4 scale), not at full size only to be shrunk.
CAPTION_SIDE = 384


@runtime_checkable
class Captioner(Protocol):
    """An image-to-text model."""

    model: str  # canonical model name; cached captions are filed under it
    device: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, in order; the same image always gets the same text."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


@runtime_checkable
class QuestionAnswerer(Protocol):
    """A visual question answering model."""

    model: str
    device: str

    def answer(self, image: Image.Image, question: str) -> str:
        """A short answer to ``question`` about ``image``."""
        ...

    def close(self) -> None:
        """Release the model's memory."""
        ...


def load_captioner(model: str = DEFAULT_CAPTION_MODEL, device: str = "auto") -> Captioner:
    """Load a BLIP captioning model (hub repo id or local folder).

    Raises:
        UnknownModelError: the name is neither a folder nor a repo id.
        WeightsUnavailableError: weights are not cached and cannot be downloaded.
    """
    from searchengine.models.blip import parse_blip_model
    from searchengine.models.loading import check_hub

    check_hub(parse_blip_model(model))  # before torch is imported: fails in seconds
    from searchengine.models.blip import BlipCaptioner

    return BlipCaptioner(model, device)


def load_answerer(model: str = DEFAULT_VQA_MODEL, device: str = "auto") -> QuestionAnswerer:
    """Load a BLIP visual question answering model (hub repo id or local folder).

    Raises:
        UnknownModelError: the name is neither a folder nor a repo id.
        WeightsUnavailableError: weights are not cached and cannot be downloaded.
    """
    from searchengine.models.blip import parse_blip_model
    from searchengine.models.loading import check_hub

    check_hub(parse_blip_model(model))
    from searchengine.models.blip import BlipQuestionAnswerer

    return BlipQuestionAnswerer(model, device)


@dataclass(frozen=True)
class FileCaption:
    """A caption of one image file."""

    path: str
    caption: str
    model: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """An answer to a question about one image file."""

    path: str
    question: str
    answer: str
    model: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def caption_files(
    paths: Iterable[str | Path],
    model: str | Captioner = DEFAULT_CAPTION_MODEL,
    device: str = "auto",
) -> list[FileCaption]:
    """Caption image files (upright, as decoded for indexing); nothing is stored.

    Args:
        paths: image files.
        model: a BLIP captioning repo id or folder, or a loaded captioner (kept open).
        device: where to load the model, when ``model`` is a name.

    Raises:
        QueryError: a file cannot be decoded (checked before the model is loaded).
        WeightsUnavailableError: the model is not cached and cannot be downloaded.
    """
    names = [os.path.abspath(p) for p in paths]
    images = [_decode(path, "caption") for path in names]
    captioner = load_captioner(model, device) if isinstance(model, str) else model
    try:
        texts = captioner.caption(images) if images else []
    finally:
        if isinstance(model, str):
            captioner.close()
    return [FileCaption(p, t, captioner.model) for p, t in zip(names, texts, strict=True)]


def answer_question(
    path: str | Path,
    question: str,
    model: str | QuestionAnswerer = DEFAULT_VQA_MODEL,
    device: str = "auto",
) -> Answer:
    """Answer a question about one image file with a VQA model.

    Raises:
        QueryError: the file cannot be decoded, or the question is empty.
        WeightsUnavailableError: the model is not cached and cannot be downloaded.
    """
    from searchengine.models.blip import check_question

    name = os.path.abspath(path)
    question = check_question(question)
    image = _decode(name, "ask about")
    answerer = load_answerer(model, device) if isinstance(model, str) else model
    try:
        text = answerer.answer(image, question)
    finally:
        if isinstance(model, str):
            answerer.close()
    return Answer(name, question, text, answerer.model)


def cached_captions(
    catalog: Catalog, records: Sequence[ImageRecord], captioner: Captioner
) -> dict[int, str]:
    """Captions of catalog images by id, from the cache or made and stored now.

    A stored caption is used while the image's content hash is the one it was made
    from. Files that can no longer be read get no caption (until re-indexed).
    """
    cache = DerivedCache(catalog)
    found = cache.captions([r.id for r in records], captioner.model)
    missing = [r for r in records if r.id not in found]
    for start in range(0, len(missing), CHUNK):
        images, keep = [], []
        for record in missing[start : start + CHUNK]:
            try:
                images.append(decode_file(record.path, min_side=CAPTION_SIDE).image)
            except ImageError:
                continue  # gone or changed since indexing
            keep.append(record)
        if not images:
            continue
        texts = captioner.caption(images)
        found.update({r.id: t for r, t in zip(keep, texts, strict=True)})
        cache.store_captions(
            captioner.model,
            [(r.id, r.content_hash, t) for r, t in zip(keep, texts, strict=True) if r.content_hash],
        )
    return found


def _decode(path: str, verb: str) -> Image.Image:
    try:
        return decode_file(path, min_side=CAPTION_SIDE).image
    except ImageError as exc:
        raise QueryError(f"cannot {verb} {path}: {exc}") from exc
