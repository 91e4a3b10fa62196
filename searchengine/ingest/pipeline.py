"""The ingest pipeline: diff the disk against the catalog, embed what changed.

Files are read once: the bytes are hashed (to recognise moves and copies without
re-embedding) and decoded from memory. With ONNX on a multi-core CPU, lanes (one
per core) each decode a batch and encode it on one thread, side by side; otherwise
decode threads (Pillow releases the GIL) feed the main thread, which encodes one
batch at a time on every core or the GPU. Either way the main thread commits.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy.engine import Connection

from searchengine.catalog import (
    FAILED,
    OK,
    Catalog,
    ImageRecord,
    delete_images,
    insert_image,
    log_vectors,
    update_image,
    write_meta,
)
from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_bytes, decode_size
from searchengine.ingest.scan import FileEntry, scan
from searchengine.ingest.tensor_decode import (
    JPEG_MAGIC,
    TensorPreprocessor,
    read_header,
    tensor_decode_available,
)
from searchengine.models.base import Encoder, image_lanes
from searchengine.vectors import VectorIndex


def default_batch_size(device: str, lanes: int = 1) -> int:
    """Images per encoder call: large batches keep a GPU busy. On a CPU 32 is past the
    throughput knee; calls side by side in lanes (see ``Ingest``) are as fast at 8, and
    the lanes together hold 16 photos' activations (ViT-B-32: ~10 MB each), so memory
    does not grow with the number of cores."""
    if device == "cuda":
        return 256
    return max(2, 16 // lanes) if lanes > 1 else 32


class Progress(Protocol):
    """Where the pipeline reports progress (the CLI passes a progress bar)."""

    def start(self, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class IndexReport:
    """What one ``index`` run did."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def embedded(self) -> int:
        return self.added + self.updated


@dataclass
class _Pixels:
    entry: FileEntry
    digest: str
    pixels: np.ndarray
    width: int
    height: int
    taken_at: float | None


@dataclass
class _Jpeg:  # a JPEG left for the device to decode (see ``tensor_decode``)
    entry: FileEntry
    digest: str
    data: bytes
    width: int
    height: int
    taken_at: float | None
    orientation: int


@dataclass
class _Known:  # content already has a vector in the index
    entry: FileEntry
    digest: str


@dataclass
class _Failed:
    entry: FileEntry
    digest: str | None
    reason: str


_Item = _Pixels | _Jpeg | _Known | _Failed


@dataclass
class IngestPlan:
    """The diff between disk and catalog for the scanned roots."""

    candidates: list[FileEntry]  # new or changed on disk
    known: dict[str, tuple[int, int, int]]  # (id, size, mtime_ns) of the rows under the roots
    missing: dict[str, int]  # catalog ids of the rows whose file is gone, by path
    unchanged: int


def plan(catalog: Catalog, roots: Sequence[str]) -> IngestPlan:
    """Scan ``roots`` and compare with the catalog (stat only; no file is opened)."""
    prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    root_set = set(roots)
    states = {
        path: state
        for path, state in catalog.file_states().items()
        if path.startswith(prefixes) or path in root_set
    }
    candidates: list[FileEntry] = []
    unseen = dict(states)  # what is left when the walk ends is gone from disk
    nested = len(roots) > 1  # then a file may show up twice
    seen: set[str] = set()
    unchanged = 0
    for entry in scan(roots):
        state = unseen.pop(entry.path, None)
        if state is not None and state[1] == entry.size and state[2] == entry.mtime_ns:
            unchanged += 1
        elif state is not None or not nested or entry.path not in seen:
            candidates.append(entry)
        if nested:
            seen.add(entry.path)
    missing = {path: state[0] for path, state in unseen.items()}
    return IngestPlan(candidates, states, missing, unchanged)


class Ingest:
    """One ingest run over a catalog and its vector index."""

    def __init__(
        self,
        catalog: Catalog,
        get_index: Callable[[], VectorIndex],
        get_encoder: Callable[[], Encoder],
        save_index: Callable[[int], None],
        *,
        batch_size: int | None,
        workers: int,
        progress: Progress | None = None,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.catalog = catalog
        self.get_index = get_index
        self.get_encoder = get_encoder
        self.save_index = save_index
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress or NoProgress()
        self.checkpoint_seconds = checkpoint_seconds
        self.report = IndexReport()
        self._batch_no = int(catalog.get_meta("last_batch") or 0)
        self._by_hash: dict[str, ImageRecord] = {}
        self._claimed: set[int] = set()
        self._changed = False  # anything committed to catalog or index this run
        self._tensors: TensorPreprocessor | None = None  # JPEGs decoded on the device
        self._last_save = 0.0  # when the index was last saved (monotonic)
        self._early_save = False  # save after the first batch (a new collection)

    @property
    def index(self) -> VectorIndex:
        """The vector index, loaded on first use: an unchanged re-run never needs it."""
        return self.get_index()

    def run(self, roots: Sequence[str]) -> IndexReport:
        """Index ``roots``: embed new and changed files, drop deleted ones."""
        started = time.monotonic()
        diff = plan(self.catalog, roots)
        self.report.unchanged = diff.unchanged
        self._missing = dict(diff.missing)
        self._known = diff.known
        encoder = None
        if diff.candidates:  # an unchanged re-run reads no more of the catalog
            self._by_hash = {
                r.content_hash: r for r in self.catalog.records(OK) if r.content_hash is not None
            }
            encoder = self.get_encoder()
            if tensor_decode_available(encoder):
                cfg = encoder.preprocess_cfg  # type: ignore[attr-defined]
                self._tensors = TensorPreprocessor(cfg, encoder.device)
        lanes = 1
        if encoder is not None and self._tensors is None:
            lanes = image_lanes(encoder, self.workers)
        if encoder is not None and self.batch_size is None:
            self.batch_size = default_batch_size(encoder.device, lanes)
        self.progress.start(len(diff.candidates))
        # A first run saves right after its first batch, so searches started meanwhile
        # see results at once; later runs keep to the checkpoint interval.
        self._early_save = bool(diff.candidates) and len(self.index) == 0
        self._last_save = time.monotonic()
        try:
            with _stop_on_interrupt() as stop:
                if lanes > 1:
                    self._run_in_lanes(diff.candidates, encoder, lanes, stop)
                else:
                    self._run_in_batches(diff.candidates, encoder, stop)
                if not stop.requested:
                    self._remove_missing()
        finally:
            if lanes > 1 and encoder is not None:
                image_lanes(encoder, 1)  # back to all cores a call, for query images
            # Whatever was committed is saved, also on Ctrl-C or an error mid-run; an
            # unchanged re-run leaves the index file alone.
            if self._changed:
                self.save_index(self._batch_no)
            self.progress.close()
        self.report.seconds = time.monotonic() - started
        if stop.requested:
            raise KeyboardInterrupt
        return self.report

    def _checkpoint(self) -> None:
        due = time.monotonic() - self._last_save > self.checkpoint_seconds
        if due or (self._early_save and len(self.index) > 0):
            self.save_index(self._batch_no)
            self._last_save, self._early_save = time.monotonic(), False

    def _run_in_batches(
        self, entries: list[FileEntry], encoder: Encoder | None, stop: _StopFlag
    ) -> None:
        """Decode threads feed the main thread, which encodes a batch at a time."""
        pending: list[_Pixels | _Jpeg] = []
        for item in self._decoded(entries, encoder):
            if isinstance(item, (_Pixels, _Jpeg)):
                pending.append(item)
            else:
                self._commit([item], None)
            if len(pending) >= (self.batch_size or 1):
                self._embed_and_commit(pending, encoder)
                pending = []
            if stop.requested:
                break
            self._checkpoint()
            self.progress.advance(1)
        if pending:
            self._embed_and_commit(pending, encoder)

    def _run_in_lanes(
        self, entries: list[FileEntry], encoder: Encoder | None, lanes: int, stop: _StopFlag
    ) -> None:
        """Each lane reads, decodes and encodes a batch of its own; lanes run side by
        side and the main thread commits their batches in order.

        On a CPU this keeps every core busy without the model's threads waiting on
        each other (see ``OnnxClipEncoder.image_lanes``). A stop drops the batches
        still in the lanes; the next run embeds those files.
        """
        assert encoder is not None and self.batch_size is not None
        known_hashes = frozenset(self._by_hash)
        size = self.batch_size
        pool = ThreadPoolExecutor(lanes, thread_name_prefix="lane")
        window: deque[Future[tuple[list[_Item], np.ndarray | None]]] = deque()
        starts = iter(range(0, len(entries), size))
        try:
            while True:
                # Two batches queued per lane, so none idles while the main thread commits.
                while len(window) < 2 * lanes and (start := next(starts, None)) is not None:
                    chunk = entries[start : start + size]
                    window.append(pool.submit(_load_and_encode, chunk, encoder, known_hashes))
                if not window:
                    break
                items, vectors = window.popleft().result()
                embedded = [it for it in items if isinstance(it, _Pixels)]
                rest = [it for it in items if not isinstance(it, _Pixels)]
                if rest:
                    self._commit(rest, None)
                if embedded:
                    self._commit(embedded, vectors)
                self.progress.advance(len(items))
                if stop.requested:
                    break
                self._checkpoint()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _decoded(self, entries: list[FileEntry], encoder: Encoder | None) -> Iterator[_Item]:
        if not entries:
            return
        assert encoder is not None
        known_hashes = frozenset(self._by_hash)
        on_device = self._tensors is not None
        assert self.batch_size is not None
        lookahead = max(self.batch_size * 2, self.workers * 4)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        window: deque[Future[_Item]] = deque()
        try:
            for entry in entries:
                window.append(pool.submit(_load, entry, encoder, known_hashes, on_device))
                if len(window) >= lookahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            # Stopping early (Ctrl-C, an error) must not wait for the look-ahead.
            pool.shutdown(wait=True, cancel_futures=True)

    def _embed_and_commit(self, items: list[_Pixels | _Jpeg], encoder: Encoder | None) -> None:
        assert encoder is not None
        if self._tensors is None:
            pixels = [it.pixels for it in items if isinstance(it, _Pixels)]
            self._commit(list(items), encoder.encode_pixels(np.stack(pixels)))
            return
        self._embed_on_device(items, encoder)

    def _embed_on_device(self, items: list[_Pixels | _Jpeg], encoder: Encoder) -> None:
        """Decode the batch's JPEGs on the device, embed them with the rest in one call.

        A JPEG the device cannot decode goes through Pillow instead (and fails there
        like any broken file).
        """
        import torch

        tensors = self._tensors
        assert tensors is not None
        jpegs = [it for it in items if isinstance(it, _Jpeg)]
        pixels = [it for it in items if isinstance(it, _Pixels)]
        decoded = tensors.decode_each([it.data for it in jpegs])
        ready: list[_Item] = []
        images, orientations = [], []
        for item, image in zip(jpegs, decoded, strict=True):
            if image is None:
                redone = _decode_with_pillow(item.entry, item.digest, item.data, encoder)
                if isinstance(redone, _Pixels):
                    pixels.append(redone)
                else:
                    self._commit([redone], None)
                continue
            images.append(image)
            orientations.append(item.orientation)
            ready.append(item)
        batch: list[Any] = [tensors(images, orientations)] if images else []
        if pixels:
            stacked = np.stack([it.pixels for it in pixels])
            batch.append(torch.from_numpy(stacked).to(tensors.device))
            ready.extend(pixels)
        if ready:
            vectors = encoder.encode_tensor(torch.cat(batch))  # type: ignore[attr-defined]
            self._commit(ready, vectors)

    def _commit(self, items: Sequence[_Item], vectors: np.ndarray | None) -> None:
        """Write one batch to the catalog (one transaction), then to the index."""
        self._batch_no += 1
        self._changed = True
        add_ids: list[int] = []
        add_vecs: list[np.ndarray] = []
        drop_ids: list[int] = []
        with self.catalog.transaction() as conn:
            for pos, item in enumerate(items):
                vec = vectors[pos] if vectors is not None else None
                self._apply(conn, item, vec, add_ids, add_vecs, drop_ids)
            if add_ids:
                log_vectors(conn, self._batch_no, add_ids, np.stack(add_vecs))
            write_meta(conn, "last_batch", str(self._batch_no))
        self.index.remove(np.asarray(drop_ids + add_ids, dtype=np.int64))
        if add_ids:
            self.index.add(np.asarray(add_ids, dtype=np.int64), np.stack(add_vecs))

    def _apply(
        self,
        conn: Connection,
        item: _Item,
        vec: np.ndarray | None,
        add_ids: list[int],
        add_vecs: list[np.ndarray],
        drop_ids: list[int],
    ) -> None:
        entry = item.entry
        state = self._known.get(entry.path)
        known_id = None if state is None else state[0]
        base = {"path": entry.path, "size": entry.size, "mtime_ns": entry.mtime_ns}
        if isinstance(item, _Failed):
            values = {**base, "content_hash": item.digest, "status": FAILED, "error": item.reason}
            self.report.failed += 1
            self.report.failures.append((entry.path, item.reason))
            if known_id is None:
                insert_image(conn, {**values, "batch": self._batch_no})
            else:
                update_image(conn, known_id, values)
                drop_ids.append(known_id)
            return
        if isinstance(item, _Known):
            self._apply_known(conn, item, known_id, base, add_ids, add_vecs)
            return
        values = {
            **base,
            "content_hash": item.digest,
            "width": item.width,
            "height": item.height,
            "taken_at": item.taken_at,
            "status": OK,
            "error": None,
            "batch": self._batch_no,
        }
        if known_id is None:
            image_id = insert_image(conn, values)
            self.report.added += 1
        else:
            image_id = known_id
            update_image(conn, image_id, values)
            self.report.updated += 1
        assert vec is not None, "decoded images are committed with their vectors"
        add_ids.append(image_id)
        add_vecs.append(vec)
        self._by_hash.setdefault(item.digest, _record(image_id, values))

    def _apply_known(
        self,
        conn: Connection,
        item: _Known,
        known_id: int | None,
        base: dict[str, Any],
        add_ids: list[int],
        add_vecs: list[np.ndarray],
    ) -> None:
        source = self._by_hash[item.digest]
        if known_id == source.id:
            update_image(conn, known_id, base)  # touched, same content
            self.report.unchanged += 1
            return
        gone = self._missing.get(source.path)
        if known_id is None and gone is not None and source.id not in self._claimed:
            # Renamed or moved: the row (and its vector) follows the file.
            self._claimed.add(source.id)
            del self._missing[source.path]
            update_image(conn, source.id, base)
            self.report.moved += 1
            return
        vector = self.index.reconstruct(source.id)
        if vector is None:  # vector lost; cannot happen after reconcile, but be safe
            raise ImageError(f"no stored vector for content of {source.path}")
        meta = {"width": source.width, "height": source.height, "taken_at": source.taken_at}
        values = {**base, **meta, "content_hash": item.digest, "status": OK, "error": None}
        values["batch"] = self._batch_no
        if known_id is None:
            image_id = insert_image(conn, values)
            self.report.added += 1
        else:
            image_id = known_id
            update_image(conn, image_id, values)
            self.report.updated += 1
        add_ids.append(image_id)
        add_vecs.append(vector)

    def _remove_missing(self) -> None:
        ids = list(self._missing.values())
        if not ids:
            return
        self._changed = True
        self._batch_no += 1  # every change to the images table is a batch
        with self.catalog.transaction() as conn:
            delete_images(conn, ids)
            write_meta(conn, "last_batch", str(self._batch_no))
        self.index.remove(np.asarray(ids, dtype=np.int64))
        self.report.removed += len(ids)


class _StopFlag:
    requested = False


@contextmanager
def _stop_on_interrupt() -> Iterator[_StopFlag]:
    """First Ctrl-C: finish the current batch, save, stop. A second one stops at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, frame: object) -> None:
        flag.requested = True
        signal.signal(signal.SIGINT, previous)
        print("\nstopping after the current batch (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _record(image_id: int, values: dict[str, Any]) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        path=values["path"],
        size=values["size"],
        mtime_ns=values["mtime_ns"],
        content_hash=values["content_hash"],
        width=values["width"],
        height=values["height"],
        taken_at=values["taken_at"],
        status=values["status"],
        error=values["error"],
        batch=values["batch"],
    )


def _load(
    entry: FileEntry, encoder: Encoder, known_hashes: frozenset[str], on_device: bool = False
) -> _Item:
    """Worker: read, hash, and (for unseen content) decode and preprocess one file.

    With ``on_device``, a JPEG is only checked (header, size limit, orientation, date)
    and handed on as bytes for the device to decode.
    """
    if entry.error is not None:
        return _Failed(entry, None, entry.error)
    try:
        with open(entry.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return _Failed(entry, None, f"cannot read: {exc.strerror or exc}")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if digest in known_hashes:
        return _Known(entry, digest)
    if on_device and data.startswith(JPEG_MAGIC):
        try:
            head = read_header(data)
        except ImageError:
            pass  # Pillow below says what is wrong with it
        else:
            return _Jpeg(entry, digest, data, head.width, head.height, head.taken_at,
                         head.orientation)  # fmt: skip
    return _decode_with_pillow(entry, digest, data, encoder)


def _load_and_encode(
    entries: list[FileEntry], encoder: Encoder, known_hashes: frozenset[str]
) -> tuple[list[_Item], np.ndarray | None]:
    """Lane: load each file, encode the decoded ones in one call (vectors in their order)."""
    items = [_load(entry, encoder, known_hashes) for entry in entries]
    pixels = [it.pixels for it in items if isinstance(it, _Pixels)]
    return items, encoder.encode_pixels(np.stack(pixels)) if pixels else None


def _decode_with_pillow(entry: FileEntry, digest: str, data: bytes, encoder: Encoder) -> _Item:
    try:
        decoded = decode_bytes(data, min_side=decode_size(encoder.image_size))
        pixels = encoder.preprocess(decoded.image)
    except ImageError as exc:
        return _Failed(entry, digest, str(exc))
    return _Pixels(entry, digest, pixels, decoded.width, decoded.height, decoded.taken_at)
