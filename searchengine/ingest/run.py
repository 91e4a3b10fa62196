"""Ingest stage 3, run: batches through the model on this machine, written in order.

With ONNX on a multi-core CPU, lanes (one per core) each load a batch and encode it
on one thread, side by side; otherwise load threads (Pillow releases the GIL) feed
the main thread, which encodes one batch at a time on every core or the GPU (where
JPEGs are decoded on the device). Either way the main thread writes, through the
store, in the order the files were planned, and checkpoints the index now and then.
Ctrl-C finishes the current batch and saves.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from searchengine.config import DEFAULT_LOAD_SECONDS, default_workers
from searchengine.ingest import inflight
from searchengine.ingest.awaiting import record_awaiting, retry_awaiting
from searchengine.ingest.exclude import saved_exclusions
from searchengine.ingest.load import (
    Item,
    Jpeg,
    Loader,
    Pixels,
    decode_with_pillow,
    stack_pixels,
)
from searchengine.ingest.plan import plan
from searchengine.ingest.scan import FileEntry, missing_codecs_note
from searchengine.ingest.tensor_decode import TensorPreprocessor, tensor_decode_available
from searchengine.ingest.write import IndexReport, Writer
from searchengine.models.base import Encoder, TensorEncoder, image_lanes
from searchengine.progress import NoProgress, Progress
from searchengine.store import Store


def default_batch_size(device: str, lanes: int = 1) -> int:
    """Images per encoder call: large batches keep a GPU busy. On a CPU 32 is past the
    throughput knee; calls side by side in lanes (see ``Ingest``) are as fast at 8, and
    the lanes together hold 16 photos' activations (ViT-B-32: ~10 MB each), so memory
    does not grow with the number of cores."""
    if device == "cuda":
        return 256
    return max(2, 16 // lanes) if lanes > 1 else 32


class Ingest:
    """One ingest run of a store, with the model on this machine.

    Args:
        store: the collection's store, held for writing (``store.writing()``).
        get_encoder: the model, loaded only when a file needs embedding.
        batch_size: images per model call; None picks one for the device.
        workers: load threads or lanes.
        progress: where files done are reported.
        checkpoint_seconds: how often a long run saves the index file.
        load_seconds: how long reading and decoding one file may take before it is
            failed as hung.
        adapt: called after each checkpoint to change the index type if the
            collection's size now calls for another (``Store.adapt``), so a large first
            run holds compressed codes from the threshold on, not every vector exactly.
        text_after: asked with the encoder and how many images the collection will
            hold after the run, whether the text tower is needed right after it (the
            collection's calibration): the run then opens it while it works. None:
            it is not opened.
    """

    def __init__(
        self,
        store: Store,
        get_encoder: Callable[[], Encoder],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: Progress | None = None,
        checkpoint_seconds: float = 60.0,
        load_seconds: float = DEFAULT_LOAD_SECONDS,
        adapt: Callable[[], None] | None = None,
        text_after: Callable[[Encoder, int], bool] | None = None,
    ) -> None:
        self.store = store
        self.text_after = text_after
        self.get_encoder = get_encoder
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self.progress = progress or NoProgress()
        self.checkpoint_seconds = checkpoint_seconds
        self.load_seconds = load_seconds
        self.adapt = adapt
        self._loader = Loader(load_seconds)
        self._tensors: TensorPreprocessor | None = None  # JPEGs decoded on the device
        self._last_save = 0.0  # when the index was last saved (monotonic)
        self._early_save = False  # save after the first batch (a new collection)

    def run(self, roots: Sequence[str]) -> IndexReport:
        """Index ``roots``: embed new and changed files, drop deleted ones."""
        started = time.monotonic()
        catalog = self.store.catalog
        exclusions = saved_exclusions(catalog.get_meta)
        diff = plan(catalog.file_states(), roots, catalog.roots(), exclusions)
        recorded, awaiting = retry_awaiting(catalog, diff)
        self.writer = writer = Writer(self.store, diff)
        codecs = missing_codecs_note(diff.unreadable)
        if codecs:
            writer.report.notes.append(codecs)
        encoder = None
        journal = self.store.folder / inflight.JOURNAL_FILE
        if diff.candidates:
            encoder = self.get_encoder()
            # Files a crashed run was loading are tried in a child process first.
            diff.candidates = inflight.recheck(
                journal, diff.candidates, encoder.image_size, self.load_seconds
            )
            self._loader = Loader(self.load_seconds, inflight.Journal(journal))
        self.progress.start(len(diff.candidates))
        # A first run saves right after its first batch, so searches started meanwhile
        # see results at once; later runs keep to the checkpoint interval.
        self._early_save = bool(diff.candidates) and len(self.store.vectors()) == 0
        self._last_save = time.monotonic()
        try:
            with _stop_on_interrupt() as stop:
                if encoder is not None:
                    self._embed(diff.candidates, encoder, stop)
                if not stop.requested:
                    writer.remove_missing()
        finally:
            self._loader.close()
            if self._loader.journal is not None:  # no crash: nothing was left half-loaded
                self._loader.journal.close()
            # Whatever was committed is saved, also on Ctrl-C or an error mid-run; an
            # unchanged re-run leaves the index file alone.
            if self.store.dirty:
                self.store.checkpoint()
            self.progress.close()
        writer.report.seconds = time.monotonic() - started
        if stop.requested:
            raise KeyboardInterrupt
        record_awaiting(catalog, recorded, awaiting, writer.report)
        return writer.report

    def _embed(self, entries: list[FileEntry], encoder: Encoder, stop: _StopFlag) -> None:
        """Load, embed and commit ``entries`` in planned order, until done or stopped."""
        if tensor_decode_available(encoder):
            self._tensors = TensorPreprocessor(encoder.preprocess_cfg, encoder.device)
        lanes = image_lanes(encoder, self.workers) if self._tensors is None else 1
        if self.batch_size is None:
            self.batch_size = default_batch_size(encoder.device, lanes)
        after = len(self.store.vectors()) + len(entries)
        text = self.text_after is not None and self.text_after(encoder, after)
        warming = _warm_towers(encoder, text)
        try:
            if lanes == 1:
                self._run_in_batches(entries, encoder, stop)
            else:
                self._run_in_lanes(entries, encoder, lanes, stop)
        finally:
            warming.join()
            if lanes > 1:
                image_lanes(encoder, 1)  # back to all cores a call, for query images

    def _checkpoint(self) -> None:
        due = time.monotonic() - self._last_save > self.checkpoint_seconds
        if due or (self._early_save and len(self.store.vectors()) > 0):
            self.store.checkpoint()
            if self.adapt is not None:
                self.adapt()
            self._last_save, self._early_save = time.monotonic(), False

    def _run_in_batches(self, entries: list[FileEntry], encoder: Encoder, stop: _StopFlag) -> None:
        """Load threads feed the main thread, which encodes a batch at a time."""
        pending: list[Pixels | Jpeg] = []
        for item in self._loaded(entries, encoder):
            if isinstance(item, (Pixels, Jpeg)):
                pending.append(item)
            else:
                self.writer.commit([item], None)
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
        self, entries: list[FileEntry], encoder: Encoder, lanes: int, stop: _StopFlag
    ) -> None:
        """Each lane loads and encodes a batch of its own; lanes run side by side and
        the main thread writes their batches in order.

        On a CPU this keeps every core busy without the model's threads waiting on
        each other (see ``OnnxClipEncoder.image_lanes``). A stop drops the batches
        still in the lanes; the next run embeds those files.
        """
        assert self.batch_size is not None
        known = self.writer.known_hashes
        size = self.batch_size
        pool = ThreadPoolExecutor(lanes, thread_name_prefix="lane")
        window: deque[Future[tuple[list[Item], np.ndarray | None]]] = deque()
        spans = iter(lane_batches(len(entries), size, lanes))
        try:
            while True:
                # Two batches queued per lane, so none idles while the main thread commits.
                while len(window) < 2 * lanes and (span := next(spans, None)) is not None:
                    chunk = entries[span[0] : span[1]]
                    job = pool.submit(_load_and_encode, self._loader, chunk, encoder, known)
                    window.append(job)
                if not window:
                    break
                items, vectors = window.popleft().result()
                self.writer.commit(items, vectors)
                self.progress.advance(len(items))
                if stop.requested:
                    break
                self._checkpoint()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _loaded(self, entries: list[FileEntry], encoder: Encoder) -> Iterator[Item]:
        if not entries:
            return
        known = self.writer.known_hashes
        on_device = self._tensors is not None
        assert self.batch_size is not None
        lookahead = max(self.batch_size * 2, self.workers * 4)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="load")
        window: deque[Future[Item]] = deque()
        try:
            for entry in entries:
                window.append(pool.submit(self._loader, entry, encoder, known, on_device))
                if len(window) >= lookahead:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            # Stopping early (Ctrl-C, an error) must not wait for the look-ahead.
            pool.shutdown(wait=True, cancel_futures=True)

    def _embed_and_commit(self, items: list[Pixels | Jpeg], encoder: Encoder) -> None:
        if self._tensors is None:
            pixels = stack_pixels(list(items))
            assert pixels is not None
            self.writer.commit(items, encoder.encode_pixels(pixels))
            return
        assert isinstance(encoder, TensorEncoder)
        self._embed_on_device(items, encoder, self._tensors)

    def _embed_on_device(
        self, items: list[Pixels | Jpeg], encoder: TensorEncoder, tensors: TensorPreprocessor
    ) -> None:
        """Decode the batch's JPEGs on the device, embed them with the rest in one call.

        A JPEG the device cannot decode goes through Pillow instead (and fails there
        like any broken file).
        """
        import torch

        jpegs = [it for it in items if isinstance(it, Jpeg)]
        pixels = [it for it in items if isinstance(it, Pixels)]
        decoded = tensors.decode_each([it.data for it in jpegs])
        ready: list[Item] = []
        images, orientations = [], []
        for item, image in zip(jpegs, decoded, strict=True):
            if image is None:
                redone = decode_with_pillow(item.entry, item.digest, item.data, encoder)
                if isinstance(redone, Pixels):
                    pixels.append(redone)
                else:
                    self.writer.commit([redone], None)
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
            self.writer.commit(ready, encoder.encode_tensor(torch.cat(batch)))


def _warm_towers(encoder: Encoder, text: bool) -> threading.Thread:
    """Open the encoder's lazily opened towers in a thread of their own, now.

    Opening ViT-B-32's image tower in ONNX Runtime takes ~0.4 s of one core: done by
    the first batch, the other lanes wait for it with their photos decoded; done here,
    it overlaps the first photos' decoding. The text tower (``text``) is what the
    collection's calibration asks for right after the run, when only one core works.
    Errors are left to the calls that need the tower, which meet them again.
    """

    def warm() -> None:
        for name in ("warm_image", "warm_text") if text else ("warm_image",):
            method = getattr(encoder, name, None)
            try:
                if method is not None:
                    method()
            except Exception:
                return

    thread = threading.Thread(target=warm, name="warm-towers", daemon=True)
    thread.start()
    return thread


def lane_batches(total: int, size: int, lanes: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each lane batch: ``size`` photos, the last ``lanes * size`` in
    quarters of that.

    A lane that takes the last batch works on alone while the others have nothing left;
    with the tail in small batches the lanes finish within a small batch of each other
    (12 MP photos: a batch of 8 is ~1.2 s of one core, a quarter of it ~0.3 s).
    """
    tail_start = max(0, total - lanes * size) // size * size
    spans = [(i, min(i + size, total)) for i in range(0, tail_start, size)]
    small = max(1, size // 4)
    spans += [(i, min(i + small, total)) for i in range(tail_start, total, small)]
    return spans


def _load_and_encode(
    loader: Loader, entries: list[FileEntry], encoder: Encoder, known_hashes: frozenset[str]
) -> tuple[list[Item], np.ndarray | None]:
    """Lane: load each file, encode the decoded ones in one call (vectors in their order)."""
    items = loader.batch(entries, encoder, known_hashes)
    pixels = stack_pixels(items)
    return items, None if pixels is None else encoder.encode_pixels(pixels)


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
