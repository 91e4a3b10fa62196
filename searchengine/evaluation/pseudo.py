"""Recall@K on your own collection, with BLIP captions as queries.

A collection has no human captions, so each image is captioned by BLIP and that caption
becomes a query whose one right answer is the image it was made from. The numbers say
how well a model finds a photo from a plain description of it, on *your* photos.
Captions are stored in the catalog per (image, captioning model), so they are made once.

The collection's own model reads image vectors back from the index; other models get
theirs computed once and cached in the catalog (as ``index -m A -m B`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from searchengine.errors import CollectionError
from searchengine.evaluation.bench import BenchReport, ModelResult, recall_curves
from searchengine.evaluation.metrics import DEFAULT_KS, retrieval_metrics
from searchengine.models import Encoder, load_encoder, parse_model_spec
from searchengine.progress import NoProgress, Progress
from searchengine.values import OK

if TYPE_CHECKING:
    from searchengine.captions import Captioner
    from searchengine.catalog import ImageRecord
    from searchengine.collection import Collection

__all__ = ["bench_collection"]

_CHUNK = 32


def bench_collection(
    collection: Collection,
    models: Sequence[str] = (),
    *,
    ks: Sequence[int] = DEFAULT_KS,
    captioner: str | Captioner | None = None,
    captions: Mapping[str, Sequence[str]] | None = None,
    curves: bool = False,
    progress: Callable[[str], Progress] | None = None,
    load: Callable[[str, str], Encoder] = load_encoder,
) -> BenchReport:
    """Recall@K and MRR of each model, with one caption per image as its query.

    Args:
        collection: an indexed collection.
        models: model specs to compare (default: the collection's own model).
        ks: the cut-offs K.
        captioner: BLIP model name or a loaded captioner (default: BLIP base).
        captions: pre-computed captions per absolute image path, used instead of BLIP;
            images without one are left out.
        curves: also compute R@K at many K for plots.
        progress: makes a progress bar for a named phase.
        load: loads an encoder from a spec (tests pass fakes).

    Raises:
        CollectionError: the collection has no images, or none got a caption.
        WeightsUnavailableError: a model is not cached and cannot be downloaded.
    """
    make_bar = progress or (lambda _name: NoProgress())
    records = sorted(collection.catalog.records(OK), key=lambda r: r.id)
    if not records:
        raise CollectionError(f"collection {collection.name!r} has no indexed images")
    if captions is not None:
        pairs = [(r, t) for r in records for t in captions.get(r.path, ())]
        source = "captions file"
    else:
        texts, source = _blip_captions(collection, records, captioner, make_bar)
        pairs = [(r, texts[r.id]) for r in records if r.id in texts]
    if not pairs:
        raise CollectionError(f"no image of collection {collection.name!r} has a caption")
    kept = list({r.id: r for r, _ in pairs}.values())
    specs = list(dict.fromkeys(parse_model_spec(m).spec for m in models)) or [collection.model]
    embedded = {}
    for spec in specs:
        started = time.monotonic()
        images, text_vectors = _embed(collection, spec, kept, [t for _, t in pairs], load, make_bar)
        embedded[spec] = (images, text_vectors, time.monotonic() - started)
    # An image whose file vanished since indexing has no vector under some model: leave it
    # out for every model, so all rows of the table rank the same candidates.
    usable = np.all([~np.all(v[0] == 0, axis=1) for v in embedded.values()], axis=0)
    position = {r.id: i for i, r in enumerate(kept)}
    new_index = np.cumsum(usable) - 1
    rows = [i for i, (r, _) in enumerate(pairs) if usable[position[r.id]]]
    owners = [int(new_index[position[pairs[i][0].id]]) for i in rows]
    results = []
    for spec, (images, text_vectors, seconds) in embedded.items():
        started = time.monotonic()
        metrics = retrieval_metrics(text_vectors[rows], images[usable], owners, ks)
        curve = recall_curves(text_vectors[rows], images[usable], owners, ks) if curves else {}
        spent = seconds + time.monotonic() - started
        results.append(ModelResult(spec, metrics, spent, False, curve))
    return BenchReport(
        f"{collection.name} (pseudo-captions)",
        f"collection {collection.name!r}, captions by {source}",
        int(usable.sum()),
        len(rows),
        tuple(ks),
        results,
    )


def _blip_captions(
    collection: Collection,
    records: list[ImageRecord],
    captioner: str | Captioner | None,
    make_bar: Callable[[str], Progress],
) -> tuple[dict[int, str], str]:
    from searchengine.models.blip import DEFAULT_CAPTION_MODEL, parse_blip_model

    if captioner is None or isinstance(captioner, str):
        label = parse_blip_model(captioner or DEFAULT_CAPTION_MODEL).spec
    else:
        label = captioner.model
    texts: dict[int, str] = {}
    bar = make_bar(f"captioning with {label}")
    bar.start(len(records))
    try:
        for start in range(0, len(records), _CHUNK):
            chunk = [r.id for r in records[start : start + _CHUNK]]
            texts.update(collection.caption(chunk, model=captioner))
            bar.advance(len(chunk))
    finally:
        bar.close()
    return {i: " ".join(t.split()) for i, t in texts.items() if t.strip()}, label


def _embed(
    collection: Collection,
    spec: str,
    records: list[ImageRecord],
    texts: list[str],
    load: Callable[[str, str], Encoder],
    make_bar: Callable[[str], Progress],
) -> tuple[np.ndarray, np.ndarray]:
    """Image vectors (zeros where none exists) and caption vectors under one model."""
    own = spec == collection.model
    encoder = collection.encoder if own else load(spec, collection.config.device)
    try:
        images = np.zeros((len(records), encoder.dim), dtype=np.float32)
        if own:
            index = collection.vectors()
            for row, record in enumerate(records):
                vector = index.reconstruct(record.id)
                if vector is not None:
                    images[row] = vector
        else:
            collection.precompute(encoder, progress=make_bar(f"images {spec}"))
            from searchengine.derived import DerivedCache  # the collection has it loaded

            found = DerivedCache(collection.catalog).vectors([r.id for r in records], encoder.spec)
            for row, record in enumerate(records):
                if record.id in found:
                    images[row] = found[record.id]
        parts = [encoder.encode_texts(texts[s : s + 256]) for s in range(0, len(texts), 256)]
        return images, np.concatenate(parts)
    finally:
        if not own:
            encoder.close()
