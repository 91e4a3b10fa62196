"""The store: a collection's catalog and vector index, kept consistent.

This module is the only one that writes either. Everything else reads through it
(``store.catalog`` for rows, ``store.vectors()`` for the index) and writes through a
``Batch``.

How the two stay consistent
---------------------------
- **The catalog is the commit point.** A batch writes its rows, logs its vectors
  (``pending_vectors``) and bumps ``last_batch`` in one catalog transaction; only
  then are the vectors put into the in-memory index.
- **The index file is a checkpoint.** ``checkpoint()`` saves the file atomically,
  then records the batch and vector count it holds (``index_batch``,
  ``index_vectors``) and the file as written, and trims the log up to that batch
  (``saved_index.py``). A file that is not the one recorded is read in full by the
  next writer; a damaged one is set aside and built again. A crash between any two
  steps leaves a state ``reconcile()`` repairs without re-embedding anything:
  logged vectors newer than the saved file are replayed, index ids without an ok
  row are removed.
- **One writer.** ``writing()`` holds the collection's write lock, clears what a
  killed writer left, and reconciles before any batch. With a SQLite catalog the
  lock is a ``flock`` on a file in the folder; with a catalog on a server it is an
  advisory lock in that database, so it covers every host. Either is released
  however the holder dies (by the kernel, or by the server with the session).
- **Readers never lock.** The database gives a search a consistent snapshot of the
  catalog while a run writes; a reader's index is the last saved file, and
  ``refresh()`` picks up a newer one.

Equal ``index_batch`` and ``last_batch`` plus a matching vector count mean the last
run ended cleanly: an unchanged re-run then never loads the index at all.

A shared catalog (on a server, written from several hosts)
-----------------------------------------------------------
Each host keeps its own ``vectors.faiss``; the catalog is the one truth. So:

- **The catalog keeps every vector** (the log is never trimmed): any host can build
  its index file from the catalog, or bring an old one up to date, without
  embedding anything.
- **What a file holds is recorded beside it** (``vectors.state.json``: the batch and
  vector count), not in the shared catalog, since each host's file differs. It is
  written after the file, so it never claims more than the file holds.
- **Catching up** is the same replay as crash recovery, and **a host with no file**
  builds its whole index from the log (``catch_up.py``).
- **A file of another history is not used**: one whose newest batch the catalog no
  longer has as it was (a restored backup; ``history.py``) is built again.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from searchengine import index_choice
from searchengine.backends import read_location, write_location
from searchengine.batch import Batch
from searchengine.catalog import Catalog, delete_images, members, write_meta
from searchengine.catch_up import backfill, build_from_log, replay_log, slow_build_note
from searchengine.config import INDEX_FILE
from searchengine.errors import CollectionLockedError, DamagedIndexError, ModelMismatchError
from searchengine.fsutil import FileLock
from searchengine.history import mark_batch, prepare_marks, still_held
from searchengine.index_choice import DEFAULT_POLICY, IndexPolicy
from searchengine.progress import Progress
from searchengine.saved_index import SavedIndex, catalog_version
from searchengine.server_catalog import DatabaseLock
from searchengine.values import MetaKey
from searchengine.vectors import EXACT, FaissIndex
from searchengine.writable import refuse_read_only

LOCK_FILE = "write.lock"


class Store:
    """One collection's catalog and vector index.

    Args:
        folder: the collection's folder (index file, lock file, caches).
        catalog: its catalog, on any backend.
        name: the collection's name, for messages.
        default_dim: the vector size of a new collection's first, empty index (the
            encoder's), asked only when neither a file nor the catalog says it.
        policy: the index-choice thresholds (the build of a host's index from a
            shared catalog uses them).
    """

    def __init__(
        self,
        folder: Path,
        catalog: Catalog,
        name: str,
        default_dim: Callable[[], int] | None = None,
        policy: IndexPolicy = DEFAULT_POLICY,
    ) -> None:
        self.folder = folder
        self.catalog = catalog
        self.name = name
        self._default_dim = default_dim
        self.policy = policy
        self.saved = SavedIndex(folder, catalog)
        self._index: FaissIndex | None = None
        self._version: tuple[int, int, int] | None = None  # of the index file last read
        self._last_batch = 0
        self._dirty = False  # batches committed since the last checkpoint
        self._held = 0  # the newest batch the in-memory index holds (shared catalogs)
        self._held_catalog: str | None = None  # the catalog it was built from (shared)
        self._held_mark: str | None = None  # the mark of batch ``_held`` (``history.py``)
        self._marking = False  # this writer marks its batches (a shared catalog)
        self._lock: FileLock | DatabaseLock | None = None
        self.repairs: list[str] = []  # what the last ``writing()`` mended, for the report
        self.notes: list[str] = []  # what a reader should be told (a slow build from the log)
        self._reading = threading.RLock()  # see ``reading``

    def close(self) -> None:
        self.catalog.close()

    # -- identity -------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        return self.catalog.get_meta(MetaKey.MODEL)

    @property
    def dim(self) -> int | None:
        dim = self.catalog.get_meta(MetaKey.DIM)
        return int(dim) if dim else None

    def claim_dim(self, dim: int, spec: str) -> None:
        """Record the vector size on first use; refuse a model that makes another size."""
        stored = self.dim
        if stored is None:
            self.catalog.set_meta({MetaKey.DIM: str(dim)})
        elif stored != dim:
            raise ModelMismatchError(
                f"collection {self.name!r} stores {stored}-d vectors but {spec} "
                f"makes {dim}-d ones; use a new collection for this model"
            )

    def record_precision(self, precision: str, check: dict[str, Any] | None) -> None:
        """Record which image tower the collection embeds with (and the int8 check)."""
        values = {MetaKey.PRECISION: precision}
        if check is not None:
            values[MetaKey.PRECISION_CHECK] = json.dumps(check)
        self.catalog.set_meta(values)

    @property
    def index_path(self) -> Path:
        return self.saved.path

    def index_type(self) -> str:
        # The saved file is the truth (a crash may fall between saving a rebuilt
        # index and recording its type); the catalog's note serves before it exists.
        if self._index is not None or self.index_path.exists():
            return self.vectors().index_type
        return self.catalog.get_meta(MetaKey.INDEX_TYPE) or EXACT

    # -- the vector index -----------------------------------------------------------
    def vectors(self) -> FaissIndex:
        """The vector index, read on first use (empty until the first batch is saved); a
        reader's is caught up in memory with what other hosts committed (shared catalog)."""
        if self._index is None:
            self._index = self._load(catch_up=self._lock is None)
        return self._index

    def _load(self, catch_up: bool) -> FaissIndex:
        if self.catalog.shared:
            self._held_catalog, last, self._held_mark = catalog_version(self.catalog, self.name)
            saved, count, usable = self.saved.host_state(self._held_catalog)
            self.notes += self.saved.rejected if catch_up else []  # a writer's: ``repairs``
        else:
            usable = self.index_path.exists()
        if usable:
            self._version = self.saved.version()
            index = FaissIndex.load(self.index_path, dim=self.dim)
        else:
            index = self._empty_index()
        if self.catalog.shared:
            self._held = saved
            if catch_up and not self.saved.matches(saved, last, count):
                start = saved if saved <= last else 0
                whole = start == 0 and not len(index)
                began = time.perf_counter()
                index, _ = self._brought_up(index, start, reader=True)
                self._held = last
                if whole:
                    took = time.perf_counter() - began
                    self.notes += slow_build_note(self.name, self.folder, len(index), took)
        return index

    def reading(self) -> AbstractContextManager[Any]:
        """Held while a query reads the index; a refresh that changes it waits for it."""
        return self._reading

    @property
    def loaded(self) -> bool:
        """Whether the index is in memory (an unchanged re-run never reads it)."""
        return self._index is not None

    def refresh(self) -> bool:
        """Bring the index in memory up to what other processes have written since.

        A long-lived reader (the web server) calls this before each query, so images
        indexed meanwhile are found without a restart. A SQLite catalog's index is
        dropped and the newer file read on next use. A shared catalog's is caught up
        from the log in place (newer batches, ids no longer ok) once no query reads it
        (``reading``): never built again at each change, never held twice (a copy cost
        194 ms and 453 MB at 10^6 vectors: ``bench_refresh.py``). Returns whether newer.
        """
        if self._index is None:
            return False
        if self.catalog.shared:  # other hosts' writes show in the catalog, not in our file
            catalog_id, last, mark = catalog_version(self.catalog, self.name)
            held = still_held(self.catalog, self._held, self._held_mark, last, mark)
            same = held and catalog_id == self._held_catalog
            if same and last > self._held and self._lock is None:
                with self._reading:  # a partial replay is redone by the next refresh
                    replay_log(self.catalog, self._index, self._held)
                    self._held, self._held_mark = last, mark
                return True
            newer = last != self._held or not same
        else:
            version = self.saved.version()
            newer = version is not None and version != self._version
        if newer:
            self._index = None
        return newer

    def check_writable(self) -> None:
        """Refuse, before any work, to change a collection this process may not write
        (``ReadOnlyCollectionError``)."""
        refuse_read_only(self.catalog.read_only, self.name)

    @contextmanager
    def writing(self, progress: Progress | None = None) -> Iterator[None]:
        """Hold the collection's write lock; start from the saved state, reconciled.

        ``progress`` counts the vectors of an index built whole from a shared catalog
        (a host's first run), the one part of reconciling that can take minutes.

        Raises:
            CollectionLockedError: another process (on any host sharing the catalog)
                is writing.
            ReadOnlyCollectionError: this process may not write the collection.
        """
        self.check_writable()
        lock: FileLock | DatabaseLock
        if self.catalog.shared:
            lock = DatabaseLock(self.catalog.engine, self.catalog.location)
        else:
            lock = FileLock(self.folder / LOCK_FILE, blocking=False)
        if not lock.acquire():
            holder = lock.holder()
            who = f"process {holder}" if holder.isdigit() else holder
            raise CollectionLockedError(
                f"collection {self.name!r} is being indexed by {who}; wait for it to "
                "finish (searching works meanwhile), or stop it and run again"
            )
        self._lock = lock
        self.repairs = []
        try:
            self._index = None  # another process may have written it since we read it
            for stale in self.folder.glob(f"{INDEX_FILE}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a writer killed mid-save
            if self.catalog.shared:
                if read_location(self.folder) is None:  # a host's first write: its folder
                    self.folder.mkdir(parents=True, exist_ok=True)  # says where the catalog is
                    write_location(self.folder, self.catalog.location)
                if self.catalog.get_meta(MetaKey.CATALOG_ID) is None:
                    self.catalog.set_meta({MetaKey.CATALOG_ID: uuid.uuid4().hex})
                self._marking = prepare_marks(self.catalog)
            self._last_batch = int(self.catalog.get_meta(MetaKey.LAST_BATCH) or 0)
            self._dirty = False
            self.reconcile(progress)
            yield
        finally:
            self._lock = None
            lock.release()

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """One ingest batch: catalog rows in one transaction, then the index.

        On an error nothing of the batch is kept, in the catalog or the index.
        """
        assert self._lock is not None, "batches are written inside store.writing()"
        number = self._last_batch + 1
        with self.catalog.transaction() as conn:
            batch = Batch(self, conn, number)
            yield batch
            batch.log()
            self._lock.check()  # a writer whose lock is gone must not commit: another may
            write_meta(conn, MetaKey.LAST_BATCH, str(number))
            mark = mark_batch(conn, number) if self._marking else None
        self._last_batch = number
        self._held, self._held_mark = number, mark
        self._dirty = True
        batch.apply(self.vectors())

    @property
    def dirty(self) -> bool:
        """Whether batches were committed since the index file was last saved."""
        return self._dirty

    def checkpoint(self) -> None:
        """Save the index file and record what it holds (see the module docstring)."""
        if self._index is None:
            return
        self._index.save(self.index_path)
        self._version = self.saved.version()
        self.saved.record(self._last_batch, len(self._index))
        self._dirty = False

    def reconcile(self, progress: Progress | None = None) -> int:
        """Make the index agree with the catalog after an interrupted run.

        Vectors of batches committed after the index file was last saved are
        replayed from the catalog's vector log, and index ids without an ok catalog
        row are removed. With a shared catalog this also brings this host's file up
        to date with what other hosts wrote. Returns how many ids were fixed.
        """
        saved, count = self.saved.state()
        last = int(self.catalog.get_meta(MetaKey.LAST_BATCH) or saved)
        if self.catalog.shared and saved > last:  # a file of an earlier catalog: rebuild
            self._index, saved = self._empty_index(), 0
        self.repairs.extend(self.saved.rejected)
        self._last_batch = max(self._last_batch, last)
        if self._index is None and self.saved.matches(saved, last, count) and self.saved.as_saved():
            return 0
        if self._index is None:
            try:
                self._index = self._load(catch_up=False)
            except DamagedIndexError as exc:
                self.repairs.append(self.saved.set_aside(exc.reason))
                self._index, saved = self._empty_index(), 0
        index, fixed = self._brought_up(self._index, saved, progress=progress)
        if index is not self._index:  # built whole from the log: it lacks nothing the log has
            self._index = index
        elif self.catalog.shared:
            backfill(self.catalog, index, self._last_batch)
        ok = self.catalog.ok_id_array()
        missing = ok[~members(ok, index.ids())]
        if len(missing):  # no vector anywhere (cannot happen unless files were edited by hand)
            with self.catalog.transaction() as conn:
                delete_images(conn, missing.tolist())
        fixed += len(missing)
        self._held = self._last_batch
        if fixed:
            self.checkpoint()
        else:  # the saved index is right as it is: say so, for the next run's check
            self.saved.record(self._last_batch, len(index))
        return fixed

    def _brought_up(
        self,
        index: FaissIndex,
        saved: int,
        reader: bool = False,
        progress: Progress | None = None,
    ) -> tuple[FaissIndex, int]:
        """``index`` (saved at batch ``saved``) brought up to the catalog, and how many
        ids that fixed: an empty one under a shared catalog is built whole from the log
        (``catch_up.build_from_log``) where that applies, anything else is caught up in place."""
        if self.catalog.shared and not saved and not len(index):
            built = build_from_log(self.catalog, self.dim, self.policy, reader, progress)
            if built is not None:
                return built, len(built)
        return index, replay_log(self.catalog, index, saved)

    def _empty_index(self) -> FaissIndex:
        size = self.dim or (self._default_dim() if self._default_dim else None)
        if size is None:
            raise ValueError("the collection has no vector size yet")
        return FaissIndex(size)

    def adapt(self, policy: IndexPolicy, memory_mb: float | None = None) -> None:
        """Rebuild the index as the type its size (and memory budget) now calls for.

        Runs at the end of an ingest, while writing. The rebuilt index holds the same
        ids and vectors, so it is saved like a checkpoint of the last batch.
        """
        if self._index is None and memory_mb is None:
            return  # not loaded: nothing changed, and without a budget nothing will
        wanted = index_choice.wanted_type(self.vectors(), memory_mb, policy)
        if wanted is None:
            return
        rebuilt, report = index_choice.build_index(
            self.vectors(), wanted, memory_mb=memory_mb, policy=policy
        )
        self._index = rebuilt
        self.checkpoint()
        self.catalog.set_meta(
            {
                MetaKey.INDEX_TYPE: rebuilt.index_type,
                MetaKey.INDEX_PARAMS: json.dumps(report.to_dict()),
            }
        )
