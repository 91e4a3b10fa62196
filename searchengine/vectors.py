"""The FAISS vector index: ids are catalog image ids, writes are atomic."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

EXACT = "Flat"


class VectorIndex(Protocol):
    """What the rest of the engine needs from a vector index."""

    dim: int
    index_type: str

    def __len__(self) -> int: ...
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, ids: np.ndarray) -> None: ...
    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def reconstruct(self, image_id: int) -> np.ndarray | None: ...
    def ids(self) -> np.ndarray: ...
    def save(self, path: Path) -> None: ...


class FaissIndex:
    """Inner-product (cosine on unit vectors) FAISS index with stable 64-bit ids."""

    def __init__(self, dim: int, index_type: str = EXACT, index: Any = None) -> None:
        import faiss

        self._faiss = faiss
        self.dim = dim
        self.index_type = index_type
        if index is None:
            base = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
            index = faiss.IndexIDMap2(base)
        self._index = index

    @classmethod
    def load(cls, path: Path, index_type: str = EXACT) -> FaissIndex:
        import faiss

        index = faiss.read_index(str(path))
        return cls(index.d, index_type, index)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        selector = self._faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        self._index.remove_ids(selector)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query row: (scores, ids), ids ``-1`` where fewer exist.

        ``allowed`` restricts the search to those ids inside FAISS, so a filter never
        costs results that a search-then-filter would have truncated away.
        """
        k = max(1, min(k, len(self)))
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if allowed is None:
            return self._index.search(queries, k)
        selector = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        params = self._faiss.SearchParameters()
        params.sel = selector
        return self._index.search(queries, min(k, len(allowed)), params=params)

    def reconstruct(self, image_id: int) -> np.ndarray | None:
        try:
            return np.asarray(self._index.reconstruct(int(image_id)), dtype=np.float32)
        except RuntimeError:  # faiss raises RuntimeError for an unknown id
            return None

    def ids(self) -> np.ndarray:
        return np.asarray(self._faiss.vector_to_array(self._index.id_map), dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            self._faiss.write_index(self._index, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
