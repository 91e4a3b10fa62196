"""One ingest batch's writes: catalog rows in the open transaction, vectors for the index.

``Store.batch()`` makes a ``Batch`` inside a catalog transaction; the vectors reach the
in-memory index only after that transaction commits (``store.py`` explains why).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Connection

from searchengine.catalog import (
    delete_images,
    delete_roots,
    insert_image,
    log_vectors,
    update_image,
)
from searchengine.values import FAILED
from searchengine.vectors import FaissIndex

if TYPE_CHECKING:
    from searchengine.store import Store

__all__ = ["Batch"]


class Batch:
    """What one batch writes: rows in the open transaction, vectors for the index.

    Made by ``Store.batch()``; the index changes only after the transaction commits.
    """

    def __init__(self, store: Store, conn: Connection, number: int) -> None:
        self.number = number
        self._store = store
        self._conn = conn
        self._add_ids: list[int] = []
        self._add_vectors: list[np.ndarray] = []
        self._drop_ids: list[int] = []

    def put(
        self, image_id: int | None, values: dict[str, Any], vector: np.ndarray | None = None
    ) -> int:
        """Insert a row (``image_id`` None) or update one; returns its id.

        A row written with a vector is (re)indexed with it and stamped with this
        batch; a failed row leaves the index.
        """
        if vector is not None or image_id is None:
            values = {**values, "batch": self.number}
        if image_id is None:
            image_id = insert_image(self._conn, values)
        else:
            update_image(self._conn, image_id, values)
        if vector is not None:
            self._add_ids.append(image_id)
            self._add_vectors.append(vector)
        elif values.get("status") == FAILED:
            self._drop_ids.append(image_id)
        return image_id

    def touch(self, image_id: int, values: dict[str, Any]) -> None:
        """Update a row's file facts (path, size, mtime); its vector stays as it is."""
        update_image(self._conn, image_id, values)

    def remove(self, ids: Sequence[int]) -> None:
        """Forget images: their rows, cached data and vectors."""
        delete_images(self._conn, ids)
        self._drop_ids.extend(int(i) for i in ids)

    def drop_roots(self, paths: Sequence[str]) -> None:
        """Take folders off the collection's list, in the same transaction as its rows."""
        delete_roots(self._conn, paths)

    def vector_of(self, image_id: int) -> np.ndarray | None:
        """The stored vector of an indexed image (for a copy of its content)."""
        return self._store.vectors().reconstruct(image_id)

    def log(self) -> None:
        if self._add_ids:
            log_vectors(self._conn, self.number, self._add_ids, np.stack(self._add_vectors))

    def apply(self, index: FaissIndex) -> None:
        index.remove(np.asarray(self._drop_ids + self._add_ids, dtype=np.int64))
        if self._add_ids:
            index.add(np.asarray(self._add_ids, dtype=np.int64), np.stack(self._add_vectors))
