"""Ingest stage 2, load: read each file once, hash it, decode what is new.

A worker turns a ``FileEntry`` into one of five plain, picklable items: ``Pixels``
(decoded and preprocessed, ready for the model), ``Jpeg`` (checked, left for a GPU to
decode), ``Known`` (content already has a vector), ``Failed`` (the photo's own fault,
with the reason) or ``Unread`` (its bytes could not be had now: tried again next run).
Nothing here touches the catalog or the index, so the stage runs unchanged in a
thread, a lane or a remote task.

Each file is isolated from the others: whatever loading it raises becomes its own
``Failed`` item, and a ``Loader`` gives up on a file whose decoding hangs past a time
limit (the helper thread it ran on is abandoned; the rest of the batch goes on). A
crash of the whole process is contained one run later (``inflight``).

Reading is told apart from decoding. A file that cannot be read (a share that died
under the run, a permission) or whose reading stops getting on (a share that stopped
answering) is no fault of the photo: it is ``Unread``, nothing is written for it, and
the next run reads it again. Recorded as failed, as it was, it stayed failed until the
file itself changed: a permission put right (``chmod`` leaves the time stamp alone) or
a share back online never brought it into the collection. A read that makes no
progress for ``READ_SECONDS`` is given up; two such reads in a row on one mount give up
the whole mount for the rest of the run, so a share that hangs after it was listed
costs a wait or two, not one per photo.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from searchengine.config import DEFAULT_LOAD_SECONDS
from searchengine.errors import ImageError
from searchengine.fsutil import content_hash, display_path
from searchengine.ingest import reasons
from searchengine.ingest.answering import Progress, Stall
from searchengine.ingest.decode import MAX_FILE_BYTES, decode_bytes
from searchengine.ingest.inflight import Journal, timed_out
from searchengine.ingest.mounts import MountTable
from searchengine.ingest.scan import FileEntry
from searchengine.ingest.tensor_decode import JPEG_MAGIC, read_header

READ_SECONDS = 30.0  # a read that gets no further for this long: the disk or share stopped
READ_CHUNK = 1 << 20  # read in steps of this, so a slow share's progress shows
WHOLE_READ = 64 << 20  # a file on a local disk up to this size is read in one call
STALLS = 2  # reads in a row that stall on one mount: it is given up for the run


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


@dataclass
class Unread:
    """A file whose bytes could not be had now, for a reason of where it lies: nothing
    is written for it (its row, if any, stays as it was) and the next run reads it."""

    entry: FileEntry
    reason: str


Item = Pixels | Jpeg | Known | Failed | Unread


def load(
    entry: FileEntry,
    model: Preprocessor,
    known_hashes: frozenset[str],
    on_device: bool = False,
    progress: Progress | None = None,
    local: frozenset[int] = frozenset(),
) -> Item:
    """Read, hash, and (for unseen content) decode and preprocess one file.

    With ``on_device``, a JPEG is only checked (header, size limit, orientation, date)
    and handed on as bytes for the device to decode. Never raises (short of
    ``KeyboardInterrupt``): any failure is this file's ``Failed`` or ``Unread`` item.
    ``progress`` and ``local``: see ``read_bytes`` (``Loader`` watches the progress).
    """
    try:
        return _load(entry, model, known_hashes, on_device, progress, local)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a bug or an odd file (even SystemExit): never the run's end
        return Failed(entry, None, reasons.unexpected(exc))


def _load(
    entry: FileEntry,
    model: Preprocessor,
    known_hashes: frozenset[str],
    on_device: bool,
    progress: Progress | None,
    local: frozenset[int],
) -> Item:
    if entry.error is not None:
        return Failed(entry, None, entry.error)
    if entry.size > MAX_FILE_BYTES:  # read whole, it could take the machine's memory
        return Failed(entry, None, reasons.file_too_large(entry.size, MAX_FILE_BYTES))
    try:
        data = read_bytes(entry.path, progress, local)
    except OSError as exc:
        # Whatever the cause (a permission, a share that died, a Ray worker without the
        # storage mounted, even the file deleted since the walk: the next run sees
        # that), nothing is said of the photo itself.
        return Unread(entry, f"cannot read: {exc.strerror or exc}")
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


def read_bytes(path: str, progress: Progress | None, local: frozenset[int] = frozenset()) -> bytes:
    """The file's bytes. With ``progress``, it counts a step as the file is opened
    and each ``READ_CHUNK`` read, and its ``at`` is the path until all are read.

    A file on a device of ``local`` (a local disk, ``MountTable.local``) of up to
    ``WHOLE_READ`` bytes is read in one call, as fast as it can be; any other in
    steps, so that a slow share's progress shows. The steps cost one copy of the
    bytes (~3 ms for a 5 MB photo, against ~130 ms of decoding it; ~0.2 ms read whole).
    """
    if progress is None:
        with open(path, "rb") as handle:
            return handle.read()
    progress.at = path
    with open(path, "rb", buffering=0) as handle:
        progress.steps += 1  # opened: a share that stopped answering blocks before this
        st = os.fstat(handle.fileno())
        if st.st_dev in local and st.st_size <= WHOLE_READ:
            data = handle.readall()
        else:
            buffer = bytearray(st.st_size + 1)  # one more: a file that grew shows
            done = 0
            with memoryview(buffer) as view:
                while done < len(buffer):
                    got = handle.readinto(view[done : done + READ_CHUNK])
                    if not got:
                        break
                    done += got
                    progress.steps += 1
                data = bytes(view[:done])
            if done == len(buffer):  # it grew while it was read
                data += handle.readall()
    progress.at = None
    return data


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
    """``load`` with time limits per file, and a journal of the files in flight.

    Each calling thread hands its files, one at a time, to a helper thread of its
    own and waits: while the file is read, for as long as its reading gets on (a
    step each ``READ_CHUNK``); then at most ``seconds`` for the decoding. A read that
    gets no further for ``read_seconds`` makes the file ``Unread``; once ``STALLS``
    reads in a row on one mount did so, the mount is given up for the rest of the run
    (its other files are then ``Unread`` at once, those being read included, not
    waited for one by one: a share that stopped answering), while a file read there
    in between keeps it (one file that hangs on a disk or share that answers). A
    decoding past ``seconds`` fails the file. Either way its helper is abandoned (a
    daemon thread: it cannot keep the process alive) and a new one started. The
    hand-off and the journal's two appends cost ~30 µs a file (measured on the
    2-core machine), against 13-80 ms of decoding.

    Args:
        seconds: how long one file may take to decode once read.
        journal: where files in flight are noted, so a crash can name them.
        read_seconds: how long reading a file may get no further (``READ_SECONDS``).
        run: the run this loader serves, where it serves a part of it: the mounts a
            run gave up are then shared by its loaders in this process (a Ray worker
            process loads batch after batch of one run, each with a loader of its own).
    """

    def __init__(
        self,
        seconds: float = DEFAULT_LOAD_SECONDS,
        journal: Journal | None = None,
        read_seconds: float | None = None,
        run: str | None = None,
    ) -> None:
        self.seconds = seconds
        self.journal = journal
        self.read_seconds = READ_SECONDS if read_seconds is None else read_seconds
        self._helpers = threading.local()
        self._all: list[_Helper] = []
        self._lock = threading.Lock()
        self._mounts: MountTable | None = None  # read at the first file
        self._stalls: dict[str, list[str]] = {}  # mount point -> the reads in a row that stalled
        # mount point given up -> its first stalled read
        self._stopped: dict[str, str] = {} if run is None else _GIVEN_UP.setdefault(run, {})

    def __call__(
        self,
        entry: FileEntry,
        model: Preprocessor,
        known_hashes: frozenset[str],
        on_device: bool = False,
    ) -> Item:
        """``load`` one file; ``Unread`` when its reading stalls (or its mount's did
        before), ``Failed`` when its decoding takes longer than ``seconds``."""
        if entry.error is not None:
            return Failed(entry, None, entry.error)
        if (given_up := self._given_up(entry)) is not None:
            return given_up
        helper = getattr(self._helpers, "helper", None)
        if helper is None:
            helper = self._helpers.helper = _Helper()
            with self._lock:
                self._all.append(helper)
        if self.journal is not None:
            self.journal.begin(entry.path)
        mounts = self._mount_table
        progress = Progress()
        done = helper.run(
            lambda: load(entry, model, known_hashes, on_device, progress, mounts.local),
            progress,
            self.read_seconds,
            self.seconds,
            lambda: self._given_up(entry) is not None,
        )
        if isinstance(done, str):  # given up: leave it to itself, note it ended for this run
            self._helpers.helper = None
            if done == _STALLED:
                done = self._stalled(entry)
            elif done == _LEFT:  # its mount was given up meanwhile (never taken back)
                done = self._given_up(entry) or self._stalled(entry)
            else:
                done = Failed(entry, None, timed_out(self.seconds))
        elif self._stalls:  # read: its mount answers
            with self._lock:
                self._stalls.pop(mounts.mount_of(entry.path), None)
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

    def _stalled(self, entry: FileEntry) -> Unread:
        with self._lock:
            mount = self._mount_table.mount_of(entry.path)
            stalls = self._stalls.setdefault(mount, [])
            stalls.append(entry.path)
            if len(stalls) >= STALLS:
                self._stopped.setdefault(mount, stalls[0])
        return Unread(
            entry,
            f"stopped answering: reading it got no further in {self.read_seconds:g} s "
            "(a share whose server went away, or a disk that hangs)",
        )

    @property
    def _mount_table(self) -> MountTable:
        if self._mounts is None:  # threads that race here read the same table
            self._mounts = MountTable.read()
        return self._mounts

    def _given_up(self, entry: FileEntry) -> Unread | None:
        """``Unread`` if ``entry``'s mount was given up (by this run's loaders)."""
        if not self._stopped:  # the usual case: no lookup
            return None
        first = self._stopped.get(mount := self._mount_table.mount_of(entry.path))
        if first is None:
            return None
        why = (
            f"not read: {display_path(mount)} stopped answering while "
            f"{display_path(first)} was read"
        )
        return Unread(entry, why)


_STALLED, _LEFT, _TIMED_OUT = "stalled", "left", "timed out"
_GIVEN_UP: dict[str, dict[str, str]] = {}  # run -> the mounts its loaders gave up
_Job = tuple[Callable[[], Item], list[Item], threading.Event]


class _Helper:
    """A daemon thread that runs one job at a time for the thread that owns it."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="load-helper", daemon=True).start()

    def run(
        self,
        job: Callable[[], Item],
        progress: Progress,
        read_seconds: float,
        seconds: float,
        left: Callable[[], bool],
    ) -> Item | str:
        """The job's result, or why it was given up on: ``_STALLED`` (its ``progress``
        reading got no further for ``read_seconds``), ``_LEFT`` (while it read, its
        mount was given up: ``left()``) or ``_TIMED_OUT`` (more than ``seconds`` since
        its reading ended)."""
        result: list[Item] = []
        finished = threading.Event()
        self._jobs.put((job, result, finished))
        stall = Stall(read_seconds)
        deadline: float | None = None
        while True:
            wait = stall.step if deadline is None else deadline - time.monotonic()
            if finished.wait(max(0.0, wait)):
                return result[0]
            if deadline is not None:
                outcome = _TIMED_OUT
            elif progress.at is None and progress.steps:  # read: decoding has the time now
                deadline = time.monotonic() + seconds
                continue
            elif stall(progress):
                outcome = _STALLED
            elif left():
                outcome = _LEFT
            else:
                continue
            self.stop()  # should the job ever return
            return outcome

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
