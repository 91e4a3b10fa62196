"""Per-image data made by other models than the collection's own: reranker vectors
and BLIP captions, cached in the catalog's ``embeddings`` and ``captions`` tables.

Each row remembers the content hash it was computed from, and is served only while
that equals the image's current hash, so a changed file never gets a stale vector or
caption.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.engine import Connection

from searchengine.catalog import Catalog, blob
from searchengine.catalog_errors import refused
from searchengine.schema import captions_table, embeddings_table, images_table


class DerivedCache:
    """Reranker vectors and captions kept per (image, model) in the catalog.

    A row is served only while its content hash equals the image's current one.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.engine = catalog.engine
        # A collection this process may not write is served without caching: what is
        # made is used for this answer and made again for the next.
        self.keeps = not catalog.read_only

    def vectors(self, ids: Sequence[int], model: str) -> dict[int, np.ndarray]:
        table = embeddings_table
        found: dict[int, np.ndarray] = {}
        for chunk, conn in self._chunks(ids):
            query = (
                select(table.c.image_id, table.c.vector)
                .join(images_table, images_table.c.id == table.c.image_id)
                .where(table.c.model == model, table.c.image_id.in_(chunk))
                .where(table.c.content_hash == images_table.c.content_hash)
            )
            for image_id, data in conn.execute(query):
                found[int(image_id)] = np.frombuffer(data, dtype=np.float32).copy()
        return found

    def store_vectors(self, model: str, rows: Sequence[tuple[int, str, np.ndarray]]) -> None:
        values = [
            {"image_id": i, "model": model, "content_hash": h, "vector": blob(v)}
            for i, h, v in rows
        ]
        self._replace(embeddings_table, model, values)

    def captions(self, ids: Sequence[int], model: str) -> dict[int, str]:
        table = captions_table
        found: dict[int, str] = {}
        for chunk, conn in self._chunks(ids):
            query = (
                select(table.c.image_id, table.c.text)
                .join(images_table, images_table.c.id == table.c.image_id)
                .where(table.c.model == model, table.c.image_id.in_(chunk))
                .where(table.c.content_hash == images_table.c.content_hash)
            )
            found.update({int(i): str(t) for i, t in conn.execute(query)})
        return found

    def store_captions(self, model: str, rows: Sequence[tuple[int, str, str]]) -> None:
        now = time.time()
        values = [
            {"image_id": i, "model": model, "content_hash": h, "text": t, "created_at": now}
            for i, h, t in rows
        ]
        self._replace(captions_table, model, values)

    def _chunks(self, ids: Sequence[int]) -> Iterator[tuple[list[int], Connection]]:
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                yield [int(i) for i in ids[start : start + 500]], conn

    def _replace(self, table: Table, model: str, values: list[dict[str, Any]]) -> None:
        if not values or not self.keeps:
            return
        ids = [v["image_id"] for v in values]
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(table).where(table.c.model == model, table.c.image_id.in_(ids)))
                conn.execute(insert(table), values)
        except Exception as exc:
            if not refused(exc):
                raise
            self.keeps = False  # a read-only role on a server catalog: the same
