"""Reading a folder for ``scan``, and one root's folders on a thread of their own.

A call under a network share whose server is away blocks in the kernel, for ever on
an NFS hard mount (``scan``'s module docstring). So ``Reading`` reads a root's folders
on a thread of its own, which the walk can leave behind: the walk yields the entries
and watches the thread's progress. Folders go across in batches: a hand-over between
threads costs ~50 µs, more than reading a small folder. Even so, two threads share
the interpreter: a walk of 100,000 files in 1,000 folders read this way costs 1.24x
the CPU of the same walk on one thread (``scripts/bench_walk.py``), which is why only
folders on network and FUSE file systems are read so (``mounts``).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from searchengine.config import CATALOG_FILE, INDEX_FILE, LOCATION_FILE
from searchengine.ingest.answering import Progress
from searchengine.ingest.entries import GONE, FileEntry, entry_of, extension, reason
from searchengine.ingest.raw import RAW_EXTENSIONS

# Folders below a root that hold no photos of the user's own, by name: NAS thumbnails
# (Synology ``@eaDir``, QNAP ``.@__thumb``), recycle bins and trash (Synology, QNAP,
# Windows, macOS and Linux on removable drives), and Synology snapshots (a copy of
# everything). Walking them would list each photo again as its thumbnails, and bring
# deleted photos back. A root named directly is walked whatever its name.
SKIPPED_FOLDERS = frozenset(
    {"@eaDir", ".@__thumb", "#recycle", "@Recycle", "$RECYCLE.BIN", ".Trashes", ".Trash",
     "#snapshot", "@Recently-Snapshot"}
)  # fmt: skip
# A searchengine collection's folder (its thumbnails are JPEGs), not walked either, is
# told by its index file beside a catalog file or a server catalog's note.
MARKERS = frozenset({INDEX_FILE, CATALOG_FILE, LOCATION_FILE})

BATCH_ENTRIES = 2000  # a walk's folders go to the consumer in batches of this many entries
BATCH_SECONDS = 0.05  # or read in this long


class Listing(NamedTuple):
    """What reading one folder found (on the reader's thread)."""

    entries: list[FileEntry]
    subdirs: list[tuple[str, tuple[int, int]]]  # path, (device, inode)
    markers: set[str]  # the ``MARKERS`` among its names
    failed: list[tuple[str, str]]  # names that could not be read, and why
    left_out: list[str]
    unreadable: list[str]
    apart: list[str]  # file systems mounted here, walked apart (``mounts``)


class Reading:
    """The reading of one root's folders, depth first in name order, on a thread of
    its own: each folder's ``(folder, Listing or OSError)`` goes to ``out`` in
    batches, ``(generation, batch)``, then ``(generation, None)`` at the end.

    A reading given up on (``give_up``) leaves its thread to the kernel; the next
    generation's thread goes on with the folders left, and what the old one may still
    do once its call returns is dropped: every change to the shared state is checked
    against the generation under ``lock``.
    """

    def __init__(
        self,
        folder: str,
        identity: tuple[int, int],
        exts: frozenset[str],
        leaves_out: Callable[[str, str], bool] | None,
        cannot_read: frozenset[str],
        hung: set[str],
        apart: frozenset[str],
    ) -> None:
        self.folder = folder
        self.settings = (exts, leaves_out, cannot_read, hung, apart)
        self.hung = hung
        self.lock = threading.Lock()
        self.gen = 0
        self.stack = [folder]
        self.walked = {identity}
        self.current = folder
        self.pending: list[tuple[str, Listing | OSError]] = []  # read, not yet handed over
        self.size, self.sent = 0, time.monotonic()  # entries pending; when last handed over
        self.progress = Progress()
        self.out: queue.SimpleQueue[tuple[int, list[tuple[str, Any]] | None]] = queue.SimpleQueue()

    def start(self) -> None:
        self.progress = Progress()
        thread = threading.Thread(
            target=self._run, args=(self.gen, self.progress), name="folder-reader", daemon=True
        )
        thread.start()

    def give_up(self) -> str:
        """Leave the folder or name being read, go on with a new thread; returns it.
        The folders read before it go out first, as they are whole."""
        with self.lock:
            self.gen += 1
            self._send()
            at = self.progress.at
            if at is None:  # the folder's own listing
                lost = self.current
            else:  # one name in it (a share's mount point): the folder is read again
                lost = at
                self.hung.add(at)
                self.stack.append(self.current)
        self.start()
        return lost

    def stop(self) -> None:
        with self.lock:
            self.gen += 1

    def _run(self, gen: int, progress: Progress) -> None:
        while True:
            with self.lock:
                if gen != self.gen:
                    return
                if not self.stack:
                    self._send()
                    self.out.put((gen, None))
                    return
                current = self.current = self.stack.pop()
            progress.at = None
            found: Listing | OSError
            try:
                found = read_folder(progress, current, *self.settings)
            except OSError as exc:
                found = exc
            with self.lock:
                if gen != self.gen:
                    return  # given up on: what it read is dropped
                self.pending.append((current, found))
                if isinstance(found, Listing):
                    push_folders(self.stack, self.walked, self.folder, current, found)
                    self.size += len(found.entries)
                progress.steps += 1
                # Folders go out in batches: a hand-over between threads costs ~50 µs,
                # more than reading a small folder.
                if self.size >= BATCH_ENTRIES or time.monotonic() - self.sent > BATCH_SECONDS:
                    self._send()
            while self.out.qsize() > 64 and gen == self.gen:
                time.sleep(0.001)  # the walk's consumer is behind: hold a little

    def _send(self) -> None:
        """Hand the folders read so far to the walk (under ``lock``)."""
        if self.pending:
            self.out.put((self.gen, self.pending))
        self.pending, self.size, self.sent = [], 0, time.monotonic()


def push_folders(
    stack: list[str], walked: set[tuple[int, int]], top: str, current: str, found: Listing
) -> None:
    """Put the folders ``current`` holds on the walk's ``stack``, to be read next in
    name order (the same name wins each run), but for those already ``walked`` (their
    device and inode: a bind mount of a folder inside the tree would list every photo
    in it twice) and those of a collection's folder below ``top`` (its thumbnails are
    not photos)."""
    if current != top and is_collection(found.markers):
        return
    new = []
    for path, key in sorted(found.subdirs):
        if key not in walked:
            walked.add(key)
            new.append(path)
    stack.extend(reversed(new))


def stat_path(progress: Progress, path: str) -> os.stat_result:
    return os.stat(path)


def read_folder(
    progress: Progress,
    current: str,
    exts: frozenset[str],
    leaves_out: Callable[[str, str], bool] | None,
    cannot_read: frozenset[str],
    hung: set[str],
    apart: frozenset[str],
) -> Listing:
    """Read one folder: its photos' entries, its subfolders and what else ``scan``
    notes, leaving out the names in ``hung`` and, untouched, the mount points in
    ``apart`` (their own ``lstat`` may block). Sets ``progress.at`` to each entry's
    path while its own calls run (``FolderReader``)."""
    found = Listing([], [], set(), [], [], [], [])
    named: list[str] = []  # the photos found here, for RAW+JPEG pairs
    raws: list[tuple[os.DirEntry[str], str]] = []
    with os.scandir(current) as entries:
        for entry in entries:
            if hung and entry.path in hung:
                continue
            if apart and entry.path in apart:
                if leaves_out is not None and leaves_out(entry.path, entry.name):
                    found.left_out.append(entry.path)
                elif entry.name not in SKIPPED_FOLDERS:
                    found.apart.append(entry.path)
                continue
            progress.at = entry.path
            progress.steps += 1
            try:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name in SKIPPED_FOLDERS or name.startswith(".Trash-"):
                        continue
                    if leaves_out is not None and leaves_out(entry.path, name):
                        found.left_out.append(entry.path)
                        continue
                    info = entry.stat(follow_symlinks=False)
                    found.subdirs.append((entry.path, (info.st_dev, info.st_ino)))
                elif (ext := extension(name)) in exts and not name.startswith("._"):
                    if leaves_out is not None and leaves_out(entry.path, name):
                        found.left_out.append(entry.path)
                        continue
                    if ext in RAW_EXTENSIONS:
                        raws.append((entry, ext))
                        continue
                    named.append(name)
                    found.entries.append(entry_of(entry))
                elif name in MARKERS:
                    found.markers.add(name)
                elif (
                    ext in cannot_read
                    and not name.startswith("._")
                    and (leaves_out is None or not leaves_out(entry.path, name))
                ):
                    raws.append((entry, ext))  # counted, unless a pair's
            except OSError as exc:
                if exc.errno not in GONE:
                    found.failed.append((entry.path, reason(exc)))
            progress.at = None
        if raws:
            raw_entries(progress, raws, named, exts, found)
    return found


def raw_entries(
    progress: Progress,
    raws: list[tuple[os.DirEntry[str], str]],
    named: list[str],
    exts: frozenset[str],
    found: Listing,
) -> None:
    """The camera RAW files of one folder that no other photo of the same name stands
    for (a camera set to RAW+JPEG writes both; the JPEG is its rendering of the shot),
    and a count of the photos of a format this installation cannot read."""
    stems = {n[: n.rfind(".")].lower() for n in named}
    for entry, ext in raws:
        name = entry.name
        if ext in RAW_EXTENSIONS and name[: name.rfind(".")].lower() in stems:
            continue
        if ext in exts:
            progress.at = entry.path
            progress.steps += 1
            try:
                found.entries.append(entry_of(entry))
            except OSError as exc:
                if exc.errno not in GONE:
                    found.failed.append((entry.path, reason(exc)))
            progress.at = None
        else:
            found.unreadable.append(entry.path)


def is_collection(names: set[str]) -> bool:
    """Whether a folder holding ``names`` (of ``MARKERS``) is a collection's."""
    return INDEX_FILE in names and len(names) > 1
