"""The FAISS vector index: ids are catalog image ids, writes are atomic."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from searchengine.accel_file import read_accelerator, read_main_index, write_accelerator
from searchengine.fsutil import atomic_write

EXACT = "Flat"
# Candidates an accelerator finds per result kept, re-scored on SQ8: the first is
# tried first; ``index_choice.build_index`` moves on while the recall falls short.
REFINE_FACTORS = (16, 32, 64)
# Filters narrower than this skip the accelerator: SQ8 lists test the filter before
# scoring a code, fast-scan scores every code first (1M vectors, 1000 ids allowed:
# 3.9 ms SQ8, 4.8 ms accelerated; 10% allowed: 40 ms SQ8, 28 ms accelerated).
ACCEL_FILTER_SHARE = 0.05
REFILL_SHARE = 0.05  # removed ids an accelerator may still hold before it is refilled
CHUNK = 8_192  # vectors per step when an index's contents are copied out (16 MB at 512-d)


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
    """Inner-product (cosine on unit vectors) FAISS index with stable 64-bit ids.

    Two families, chosen by ``searchengine.index_choice`` from the collection's size:

    - ``Flat``: exact search; ``IndexIDMap2`` over ``IndexFlatIP`` (4 bytes a
      dimension). Removal compacts the flat storage, which IDMap2 mirrors.
    - ``IVF<nlist>,SQ8`` / ``IVF<nlist>,PQ<m>``: approximate; an ``IndexIVF`` that
      stores the catalog ids itself, with a hash-table direct map so ``remove`` and
      ``reconstruct`` work by id. IVF is not wrapped in IDMap2 on purpose: IDMap2's
      removal assumes the inner index renumbers like a flat one, which IVF does
      not (the ids returned after a removal would be shifted). HNSW is not offered
      for the same reason: it cannot remove at all, so every deleted photo would
      need a tombstone filter and periodic rebuilds. IVF needs training, so it is
      only ever built by ``index_choice.build_index`` from existing vectors;
      ``reconstruct`` returns the decoded (approximate) vector.

    An IVF index may carry an *accelerator*: a second IVF index over the same ids
    with 4-bit fast-scan PQ codes (``PQ<dim/2>x4fs``, a quarter of SQ8's bytes,
    scanned with SIMD table lookups). A query then takes ``refine_factor`` times
    more candidates from it than it returns and re-scores them on the main
    index's SQ8 vectors. Where the vectors are spread out and a query must visit
    many lists, this answers at the same recall in about a third of the time.
    Filtered searches pass their id selector to it the same way (unless the
    filter is narrow, see ``ACCEL_FILTER_SHARE``). Fast-scan lists
    cannot remove single ids, so removed ids are remembered and dropped from the
    candidates (a re-added id is re-scored on its new vector); once they pass
    ``REFILL_SHARE`` of the accelerator, it is emptied and the next ``save``
    refills it from the main index (until then queries use the main index
    alone). Everything is written to one file: the main index, then the
    accelerator, the removed ids and a trailer, so a reader that knows nothing
    of accelerators reads the main index.
    """

    def __init__(self, dim: int, index_type: str = EXACT, index: Any = None) -> None:
        import faiss

        self._faiss: Any = faiss
        self.dim = dim
        if index is None:
            index = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
            if isinstance(index, faiss.IndexIVFPQ):
                # Polysemous codes (Hamming pre-filtering) are never searched with here,
                # and training them takes minutes.
                index.do_polysemous_training = False  # type: ignore[attr-defined]
            if isinstance(index, faiss.IndexIVF):
                index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
            else:
                index = faiss.IndexIDMap2(index)
        self._index = index
        self._ivf = faiss.try_extract_index_ivf(index)
        self.index_type = describe_index(index)
        self._accel: Any = None  # fast-scan IVF over the same ids, or None
        self._accel_stale = False  # emptied after many removals: refill before use
        self._gone = np.zeros(0, dtype=np.int64)  # removed ids the accelerator still holds
        self.refine_factor = REFINE_FACTORS[0]  # accelerator candidates per result

    @property
    def accelerator(self) -> str | None:
        """The accelerator's type (``IVF1024,PQ256x4fs``), or None without one."""
        return None if self._accel is None else describe_index(self._accel)

    @property
    def accelerator_nprobe(self) -> int | None:
        return None if self._accel is None else int(self._accel.nprobe)

    @accelerator_nprobe.setter
    def accelerator_nprobe(self, value: int) -> None:
        if self._accel is not None:
            self._accel.nprobe = _clamped_nprobe(self._accel, value)

    def build_accelerator(self, train_ids: np.ndarray) -> None:
        """Train an accelerator on the vectors of ``train_ids`` and fill it with all ids."""
        faiss = self._faiss
        if self._ivf is None or self.dim % 2:
            raise ValueError(f"no accelerator for a {self.index_type} index of {self.dim}-d")
        factory = f"IVF{self._ivf.nlist},PQ{self.dim // 2}x4fs"
        accel = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        accel.train(self.reconstruct_batch(train_ids))
        accel.nprobe = self._ivf.nprobe
        self._accel = accel
        self._refill_accelerator()

    def _read_accelerator(self, path: Path) -> None:
        """Read the accelerator that follows the main index in ``path``, if one does."""
        found = read_accelerator(path, self._faiss, self.dim)
        if found is None:
            return
        self._accel, self._gone, self.refine_factor, complete = found
        # Written together with the main index, so it holds every id and the removed
        # ids; if not, it is refilled from the main index on the next save.
        self._accel_stale = int(self._accel.ntotal) < len(self) or not complete
        if self._accel_stale:
            self._accel.reset()

    def drop_accelerator(self) -> None:
        self._accel, self._accel_stale = None, False
        self._gone = np.zeros(0, dtype=np.int64)

    def _refill_accelerator(self) -> None:
        self._accel.reset()
        self._gone = np.zeros(0, dtype=np.int64)
        for part, vectors in self.chunks():
            self._accel.add_with_ids(vectors, part)
        self._accel_stale = False

    @classmethod
    def load(cls, path: Path, index_type: str | None = None, dim: int | None = None) -> FaissIndex:
        """Read an index file; its type is read from the file itself. ``dim``: the
        collection's vector size, where it is known.

        Raises:
            DamagedIndexError: the file is not a whole index (cut short, overwritten),
                its parts disagree on the vector size (a damaged header), or its
                vectors are not ``dim``-d (another collection's file).
        """
        index = read_main_index(path, dim)
        loaded = cls(index.d, index_type or EXACT, index)
        if loaded._ivf is not None:
            loaded._read_accelerator(path)
        return loaded

    def copy(self) -> FaissIndex:
        """An independent copy (accelerator included), to change while this one answers."""
        faiss = self._faiss
        copied = FaissIndex(self.dim, self.index_type, faiss.clone_index(self._index))
        if self._accel is not None:
            copied._accel = faiss.clone_index(self._accel)
            copied._accel_stale = self._accel_stale
            copied._gone = self._gone.copy()
        copied.refine_factor = self.refine_factor
        return copied

    @property
    def exact(self) -> bool:
        return self._ivf is None

    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per query (IVF only; saved with the index)."""
        return None if self._ivf is None else int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._ivf is not None:
            self._ivf.nprobe = _clamped_nprobe(self._ivf, value)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        self._index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self._index.add_with_ids(vectors, ids)
        if self._accel is not None and not self._accel_stale:
            self._accel.add_with_ids(vectors, ids)
            if len(self._gone):  # back again: its old code stays, scored on the new vector
                self._gone = np.setdiff1d(self._gone, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # The hash-table direct map of IVF only removes by an explicit id array.
        selector = (
            self._faiss.IDSelectorBatch(ids) if self.exact else self._faiss.IDSelectorArray(ids)
        )
        removed = int(self._index.remove_ids(selector))
        # Ingest "removes" every new id before adding it (replacing a changed file's
        # vector); only ids that were there need remembering.
        if removed and self._accel is not None and not self._accel_stale:
            self._gone = np.union1d(self._gone, ids)
            if len(self._gone) > REFILL_SHARE * int(self._accel.ntotal):
                self._accel.reset()  # free it now; ``save`` refills it
                self._accel_stale = True

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query row: (scores, ids), ids ``-1`` where fewer exist.

        ``allowed`` restricts the search to those ids inside FAISS, so a filter never
        costs results that a search-then-filter would have truncated away. On IVF the
        lists visited grow as the allowed share shrinks, so a narrow filter still
        finds its matches (down to a scan of every list for a handful of ids).
        """
        k = max(1, min(k, len(self)))
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(self) == 0 or (allowed is not None and len(allowed) == 0):
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        accelerated = self._accel is not None and not self._accel_stale
        if allowed is None:
            with _threads_for(len(queries)):
                if accelerated:
                    return self._refined_search(queries, k)
                return self._index.search(queries, k)
        selector = self._faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        share = min(1.0, len(allowed) / max(1, len(self)))
        accelerated = accelerated and share >= ACCEL_FILTER_SHARE
        if self._ivf is None:
            params = self._faiss.SearchParameters()
        else:
            params = self._faiss.SearchParametersIVF()
            nprobe = (self._accel if accelerated else self._ivf).nprobe
            params.nprobe = min(int(self._ivf.nlist), int(np.ceil(nprobe / share)))
        params.sel = selector
        k = min(k, len(allowed))
        with _threads_for(len(queries)):
            if accelerated:
                return self._refined_search(queries, k, params)
            return self._index.search(queries, k, params=params)

    def _refined_search(
        self, queries: np.ndarray, k: int, params: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the accelerator (within ``params``), ranked by their SQ8 vectors."""
        wanted = min(len(self), k * self.refine_factor)
        _, candidates = self._accel.search(queries, wanted, params=params)
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates, strict=True)):
            found = np.unique(found[found >= 0])  # a re-added id may come twice
            if len(self._gone):
                found = found[~np.isin(found, self._gone, assume_unique=True)]
            exact = self.reconstruct_batch(found) @ query
            top = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(top)] = exact[top]
            ids[row, : len(top)] = found[top]
        return scores, ids

    def reconstruct(self, image_id: int) -> np.ndarray | None:
        try:
            return np.asarray(self._index.reconstruct(int(image_id)), dtype=np.float32)
        except RuntimeError:  # faiss raises RuntimeError for an unknown id
            return None

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        """Vectors of known ids, (len(ids), dim); decoded approximations on IVF."""
        if len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32)

    def chunks(self, ids: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of ``ids`` (default: all), ``CHUNK`` at a time, so a copy
        of a large index never holds all its vectors decoded at once."""
        ids = self.ids() if ids is None else ids
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            yield part, self.reconstruct_batch(part)

    def ids(self) -> np.ndarray:
        faiss = self._faiss
        if self._ivf is None:
            return np.asarray(faiss.vector_to_array(self._index.id_map), dtype=np.int64)
        lists = self._ivf.invlists
        assert lists is not None
        parts = [np.zeros(0, dtype=np.int64)]
        for no in range(int(lists.nlist)):
            size = int(lists.list_size(no))
            if size:
                parts.append(np.array(faiss.rev_swig_ptr(lists.get_ids(no), size), np.int64))
        return np.concatenate(parts)

    def save(self, path: Path) -> None:
        """Write atomically and durably: a reader sees the old file or the new one."""
        if self._accel is not None and self._accel_stale:
            self._refill_accelerator()
        faiss = self._faiss
        # Temporary files are named after the index, so the store can clear any that a
        # killed writer left behind.
        with atomic_write(path, durable=True, prefix=path.name + ".") as handle:
            faiss.write_index(self._index, faiss.PyCallbackIOWriter(handle.write))
            if self._accel is not None:
                write_accelerator(handle, faiss, self._accel, self._gone, self.refine_factor)


@contextlib.contextmanager
def _threads_for(queries: int) -> Iterator[None]:
    """One OpenMP thread for a single query.

    A lone query splits a flat scan across threads that must all meet at a barrier;
    on a busy machine (an ingest, a training run) the slowest thread sets the pace
    and a 50k-vector scan measured 76 ms with two threads against 8 ms with one.
    Batches of queries keep every thread.
    """
    import faiss

    if queries > 1:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _clamped_nprobe(ivf: Any, value: int) -> int:
    return max(1, min(int(value), int(ivf.nlist)))


def describe_index(index: Any) -> str:
    """The factory string of an index this module builds (``Flat``, ``IVF1024,SQ8``...)."""
    import faiss

    found = faiss.try_extract_index_ivf(index)
    if found is None:
        return EXACT
    ivf: Any = faiss.downcast_index(found)
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        names = {
            faiss.ScalarQuantizer.QT_8bit: "SQ8",
            faiss.ScalarQuantizer.QT_4bit: "SQ4",
            faiss.ScalarQuantizer.QT_fp16: "SQfp16",
        }
        code = names.get(ivf.sq.qtype, "SQ")
    elif isinstance(ivf, faiss.IndexIVFPQFastScan):
        code = f"PQ{ivf.pq.M}x{int(ivf.pq.nbits)}fs"
    elif isinstance(ivf, faiss.IndexIVFPQ):
        bits = int(ivf.pq.nbits)
        code = f"PQ{ivf.pq.M}" + ("" if bits == 8 else f"x{bits}")
    else:
        code = "Flat"
    return f"IVF{ivf.nlist},{code}"
