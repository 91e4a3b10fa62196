"""Ingest stage 2, load: read each file once, hash it, decode what is new.

A worker turns a ``FileEntry`` into one of four plain, picklable items: ``Pixels``
(decoded and preprocessed, ready for the model), ``Jpeg`` (checked, left for a GPU to
decode), ``Known`` (content already has a vector), or ``Failed`` (with the reason).
Nothing here touches the catalog or the index, so the stage runs unchanged in a
thread, a lane or a remote task.

Each file is isolated from the others: whatever loading it raises becomes its own
``Failed`` item, and a ``Loader`` gives up on a file whose loading hangs past a time
limit (the helper thread it ran on is abandoned; the rest of the batch goes on). A
crash of the whole process is contained one run later (``inflight``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from searchengine.config import DEFAULT_LOAD_SECONDS
from searchengine.errors import ImageError
from searchengine.fsutil import content_hash
from searchengine.ingest import reasons
from searchengine.ingest.decode import decode_bytes
from searchengine.ingest.inflight import Journal, timed_out
from searchengine.ingest.scan import FileEntry
from searchengine.ingest.tensor_decode import JPEG_MAGIC, read_header


class Preprocessor(Protocol):
    """What loading needs of a model: its input size and its preprocessing."""

    image_size: int

    def preprocess(self, image: Image.Image) -> np.ndarray: ...


@dataclass
class Pixels:
    entry: FileEntry
    digest: str
    pixels: np.ndarray
    width: int
    height: int
    taken_at: float | None
    warnings: tuple[str, ...] = ()  # what the decoder said about the file


@dataclass
class Jpeg:  # a JPEG left for the device to decode (see ``tensor_decode``)
    entry: FileEntry
    digest: str
    data: bytes
    width: int
    height: int
    taken_at: float | None
    orientation: int


@dataclass
class Known:  # content already has a vector in the index
    entry: FileEntry
    digest: str


@dataclass
class Failed:
    entry: FileEntry
    digest: str | None
    reason: str


Item = Pixels | Jpeg | Known | Failed


def load(
    entry: FileEntry,
    model: Preprocessor,
    known_hashes: frozenset[str],
    on_device: bool = False,
) -> Item:
    """Read, hash, and (for unseen content) decode and preprocess one file.

    With ``on_device``, a JPEG is only checked (header, size limit, orientation, date)
    and handed on as bytes for the device to decode. Never raises (short of
    ``KeyboardInterrupt``): any failure is this file's ``Failed`` item.
    """
    try:
        return _load(entry, model, known_hashes, on_device)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a bug or an odd file (even SystemExit): never the run's end
        return Failed(entry, None, reasons.unexpected(exc))


def _load(
    entry: FileEntry, model: Preprocessor, known_hashes: frozenset[str], on_device: bool
) -> Item:
    if entry.error is not None:
        return Failed(entry, None, entry.error)
    try:
        with open(entry.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return Failed(entry, None, f"cannot read: {exc.strerror or exc}")
    except MemoryError:
        return Failed(entry, None, "too large: not enough memory to read this file")
    digest = content_hash(data)
    if digest in known_hashes:
        return Known(entry, digest)
    if on_device and data.startswith(JPEG_MAGIC):
        try:
            head = read_header(data)
        except ImageError:
            pass  # Pillow below says what is wrong with it
        else:
            return Jpeg(entry, digest, data, head.width, head.height, head.taken_at,
                        head.orientation)  # fmt: skip
    return decode_with_pillow(entry, digest, data, model)


def decode_with_pillow(entry: FileEntry, digest: str, data: bytes, model: Preprocessor) -> Item:
    """Decode bytes with Pillow (at reduced size where the format allows) and preprocess."""
    try:
        decoded = decode_bytes(data, min_side=model.image_size, name=entry.path)
    except ImageError as exc:
        return Failed(entry, digest, str(exc))
    try:
        pixels = model.preprocess(decoded.image)
    except Exception as exc:  # an image shape the model's resize cannot take
        return Failed(entry, digest, reasons.preprocess_failure(exc, decoded.format))
    return Pixels(entry, digest, pixels, decoded.width, decoded.height, decoded.taken_at,
                  tuple(decoded.warnings))  # fmt: skip


class Loader:
    """``load`` with a time limit per file, and a journal of the files in flight.

    Each calling thread hands its files, one at a time, to a helper thread of its
    own and waits at most ``seconds``; a file not done by then is failed, its helper
    abandoned (a daemon thread: it cannot keep the process alive) and a new one
    started. The hand-off and the journal's two appends cost ~30 µs a file (measured
    on the 2-core machine), against 13-80 ms of decoding.

    Args:
        seconds: how long one file may take to read and decode.
        journal: where files in flight are noted, so a crash can name them.
    """

    def __init__(
        self, seconds: float = DEFAULT_LOAD_SECONDS, journal: Journal | None = None
    ) -> None:
        self.seconds = seconds
        self.journal = journal
        self._helpers = threading.local()
        self._all: list[_Helper] = []
        self._lock = threading.Lock()

    def __call__(
        self,
        entry: FileEntry,
        model: Preprocessor,
        known_hashes: frozenset[str],
        on_device: bool = False,
    ) -> Item:
        """``load`` one file, or ``Failed`` when it takes longer than ``seconds``."""
        if entry.error is not None:
            return Failed(entry, None, entry.error)
        helper = getattr(self._helpers, "helper", None)
        if helper is None:
            helper = self._helpers.helper = _Helper()
            with self._lock:
                self._all.append(helper)
        if self.journal is not None:
            self.journal.begin(entry.path)
        done = helper.run(lambda: load(entry, model, known_hashes, on_device), self.seconds)
        if done is None:  # hung: leave it to itself, and note it ended for this run
            self._helpers.helper = None
            done = Failed(entry, None, timed_out(self.seconds))
        if self.journal is not None:
            self.journal.end(entry.path)
        return done

    def batch(
        self, entries: list[FileEntry], model: Preprocessor, known_hashes: frozenset[str]
    ) -> list[Item]:
        """Each file of a batch, in order."""
        return [self(entry, model, known_hashes) for entry in entries]

    def close(self) -> None:
        """Stop the helper threads (a hung one stops if its file ever finishes)."""
        with self._lock:
            helpers, self._all = self._all, []
        for helper in helpers:
            helper.stop()


_Job = tuple[Callable[[], Item], list[Item], threading.Event]


class _Helper:
    """A daemon thread that runs one job at a time for the thread that owns it."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="load-helper", daemon=True).start()

    def run(self, job: Callable[[], Item], seconds: float) -> Item | None:
        """The job's result, or None if it did not finish within ``seconds``."""
        result: list[Item] = []
        finished = threading.Event()
        self._jobs.put((job, result, finished))
        if not finished.wait(seconds):
            self.stop()  # should the job ever return
            return None
        return result[0]

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while (task := self._jobs.get()) is not None:
            job, result, finished = task
            result.append(job())
            finished.set()


def load_batch(
    entries: list[FileEntry], model: Preprocessor, known_hashes: frozenset[str]
) -> list[Item]:
    """``load`` over a batch, in order (no time limit: see ``Loader``)."""
    return [load(entry, model, known_hashes) for entry in entries]


def stack_pixels(items: list[Item]) -> np.ndarray | None:
    """The decoded items' pixels as one (N, 3, H, W) batch, in item order; None if none."""
    pixels = [it.pixels for it in items if isinstance(it, Pixels)]
    return np.stack(pixels) if pixels else None
