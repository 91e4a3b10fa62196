"""A shared catalog's logged vectors, read the way ``index_choice.build_index`` reads an index.

A host with no index file of its own builds one from the catalog's vector log (the
log of a shared catalog is never trimmed, see ``store.py``). Replayed into an exact
index first and compressed afterwards, that build would hold every vector at full
size once: 206 GB at 10^8 512-d vectors, where the collection's ``IVF…,SQ8`` index
is 54 GB. ``LoggedVectors`` lets ``build_index`` train the recorded type on a sample
read by id and fill it from the streamed log, one chunk at a time, instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sqlalchemy import select

from searchengine.catalog import Catalog, logged_ids, members, pending_vectors
from searchengine.schema import pending_table

READ_BY_ID = 1_000  # ids per ``IN (...)`` list when reading a sample


class LoggedVectors:
    """The logged vectors of a catalog's ok images (the same calls as ``FaissIndex``).

    Args:
        catalog: a catalog whose log holds every vector (a shared one).
        dim: the collection's vector size.
        ok: the ids of its indexed (ok) images; vectors of other ids are left out.
    """

    def __init__(self, catalog: Catalog, dim: int, ok: np.ndarray) -> None:
        self.catalog = catalog
        self.dim = dim
        with catalog.transaction() as conn:
            logged = logged_ids(conn)
        self._ids = logged[members(logged, ok)]  # sorted, 8 bytes an id

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of these ids, in their order, (len(ids), dim): a sample, read by id."""
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        row = {int(image_id): no for no, image_id in enumerate(ids)}
        column = pending_table.c.image_id
        with self.catalog.transaction() as conn:
            for start in range(0, len(ids), READ_BY_ID):
                part = [int(i) for i in ids[start : start + READ_BY_ID]]
                query = select(column, pending_table.c.vector).where(column.in_(part))
                for image_id, data in conn.execute(query):
                    out[row[int(image_id)]] = np.frombuffer(data, dtype=np.float32)
        return out

    def chunks(self, ids: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of ``ids`` (default: all), streamed from the log a chunk
        at a time, in the log's order."""
        wanted = self._ids if ids is None else ids
        with self.catalog.transaction() as conn:
            for part, vectors in pending_vectors(conn, 0):
                keep = members(part, wanted)
                if keep.any():
                    yield part[keep], vectors[keep]
