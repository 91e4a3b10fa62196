"""Second stage: CLIPScore the first-stage candidates, optionally under another model.

Image vectors of a reranking model are computed once per (image, model) and cached
in the catalog, so a repeated query neither decodes nor encodes those images again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_file
from searchengine.models.base import Encoder
from searchengine.progress import NoProgress, Progress
from searchengine.rows import ImageRecord
from searchengine.scoring import clip_score
from searchengine.vectors import VectorIndex

if TYPE_CHECKING:
    from searchengine.catalog import Catalog
    from searchengine.derived import DerivedCache


class ImageVectors:
    """Image vectors of one model for catalog images: from the index, cache or files.

    Args:
        catalog: the collection's catalog (its cache tables store new vectors); None
            with ``index``, whose vectors need no catalog.
        encoder: the model whose vectors are wanted.
        index: the collection's own index when ``encoder`` is the collection's model,
            so vectors are read back instead of recomputed.
        batch_size: images per encoder call when computing.
    """

    def __init__(
        self,
        catalog: Catalog | None,
        encoder: Encoder,
        index: VectorIndex | None = None,
        batch_size: int = 32,
    ) -> None:
        self.catalog = catalog
        self._cache: DerivedCache | None = None
        self.encoder = encoder
        self.index = index
        self.batch_size = batch_size
        self.decoded = 0  # images decoded (and encoded) by this object

    @property
    def cache(self) -> DerivedCache:
        """The catalog's cache of other models' vectors (the SQL layer, on first use)."""
        if self._cache is None:
            from searchengine.derived import DerivedCache

            if self.catalog is None:
                raise ValueError("vectors of another model than the index's need a catalog")
            self._cache = DerivedCache(self.catalog)
        return self._cache

    def get(self, records: Sequence[ImageRecord]) -> np.ndarray:
        """(len(records), dim) vectors; zeros for a file that can no longer be read."""
        out = np.zeros((len(records), self.encoder.dim), dtype=np.float32)
        if self.index is not None:
            for row, record in enumerate(records):
                vector = self.index.reconstruct(record.id)
                if vector is not None:
                    out[row] = vector
            return out
        cached = self.cache.vectors([r.id for r in records], self.encoder.spec)
        missing = []
        for row, record in enumerate(records):
            if record.id in cached:
                out[row] = cached[record.id]
            else:
                missing.append(row)
        for start in range(0, len(missing), self.batch_size):
            rows = missing[start : start + self.batch_size]
            self._compute([records[r] for r in rows], out, rows)
        return out

    def precompute(self, records: Sequence[ImageRecord], progress: Progress | None = None) -> int:
        """Compute and cache the vectors ``records`` lack; returns how many were computed.

        Nothing to do under the collection's own model: its vectors are the index.
        """
        if self.index is not None:
            return 0
        progress = progress or NoProgress()
        progress.start(len(records))
        chunk = 256
        try:
            for start in range(0, len(records), chunk):
                part = records[start : start + chunk]
                self.get(part)
                progress.advance(len(part))
        finally:
            progress.close()
        return self.decoded

    def _compute(self, records: list[ImageRecord], out: np.ndarray, rows: list[int]) -> None:
        images, keep = [], []
        for record, row in zip(records, rows, strict=True):
            try:
                images.append(decode_file(record.path, min_side=self.encoder.image_size).image)
            except ImageError:
                continue  # gone or changed since indexing: scores 0 until re-indexed
            keep.append((record, row))
        self.decoded += len(images)
        if not images:
            return
        vectors = self.encoder.encode_images(images)
        stored = []
        for (record, row), vector in zip(keep, vectors, strict=True):
            out[row] = vector
            if record.content_hash:
                stored.append((record.id, record.content_hash, vector))
        self.cache.store_vectors(self.encoder.spec, stored)


def clip_scores(image_vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """CLIPScore of each image row against a (prefixed) query vector."""
    return clip_score(image_vectors @ query)
