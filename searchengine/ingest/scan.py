"""Walk folders for image files: path, size and mtime only (no file is opened).

A folder or file that cannot be read for another reason than being gone (a network
share whose server is away: "Transport endpoint is not connected", "Stale file
handle", an I/O error, a permission taken away) or that does not answer in
``answering.FOLDER_SECONDS`` is named in ``scan``'s ``unlisted``, so that ``plan``
keeps what the collection holds under it: it was removed from the collection without
a word, and a share that came back was embedded again, hours for a large one.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from searchengine.fsutil import folder_prefix
from searchengine.ingest.answering import FolderReader, NotAnswering, Progress, Stall
from searchengine.ingest.entries import GONE, FileEntry, checked, extension, link_failure, reason
from searchengine.ingest.exclude import Exclusions
from searchengine.ingest.mounts import MountTable
from searchengine.ingest.raw import RAW_EXTENSIONS
from searchengine.ingest.reading import (
    SKIPPED_FOLDERS,
    Listing,
    Reading,
    push_folders,
    read_folder,
    stat_path,
)

__all__ = [
    "AVIF_EXTENSIONS",
    "BASE_EXTENSIONS",
    "CODEC_EXTENSIONS",
    "HEIF_EXTENSIONS",
    "SKIPPED_FOLDERS",
    "FileEntry",
    "image_extensions",
    "missing_codecs_note",
    "scan",
]

BASE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
AVIF_EXTENSIONS = frozenset({".avif"})
# Photos of a format this installation may lack the decoder for: a walk without it
# lists them (``scan``'s ``unreadable``), so that ``index`` can say what to install
# instead of leaving them out without a word (an iPhone library is mostly HEIC).
CODEC_EXTENSIONS = HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS


def image_extensions() -> frozenset[str]:
    """Extensions indexed: HEIC/HEIF only when pillow-heif is installed, AVIF only when
    Pillow reads it (its wheels do from 11.3 on), camera RAW only when rawpy is."""
    from searchengine.ingest.decode import avif_available, heif_installed
    from searchengine.ingest.raw import raw_available

    found = BASE_EXTENSIONS
    if heif_installed():
        found |= HEIF_EXTENSIONS
    if avif_available():
        found |= AVIF_EXTENSIONS
    if raw_available():
        found |= RAW_EXTENSIONS
    return found


def missing_codecs_note(unreadable: Iterable[str]) -> str | None:
    """What ``index`` says of the photos a walk met that this installation cannot read
    (``scan``'s ``unreadable`` paths); None when there were none."""
    exts = [extension(os.path.basename(path)) for path in unreadable]
    heif = sum(ext in HEIF_EXTENSIONS for ext in exts)
    avif = sum(ext in AVIF_EXTENSIONS for ext in exts)
    raw = sum(ext in RAW_EXTENSIONS for ext in exts)
    parts = []
    if heif:
        parts.append(
            f"{heif} HEIC/HEIF photo{'s' if heif != 1 else ''} left out: reading them needs "
            "pillow-heif (pip install 'searchengine[heif]')"
        )
    if avif:
        parts.append(
            f"{avif} AVIF photo{'s' if avif != 1 else ''} left out: reading them needs "
            "Pillow 11.3 or newer (pip install -U pillow)"
        )
    if raw:
        parts.append(
            f"{raw} camera RAW photo{'s' if raw != 1 else ''} left out: reading them needs "
            "rawpy (pip install 'searchengine[raw]')"
        )
    if not parts:
        return None
    return "; ".join(parts) + "; the next index adds them"


def scan(
    roots: Iterable[str | Path],
    extensions: frozenset[str] | None = None,
    exclusions: Exclusions | None = None,
    left_out: list[str] | None = None,
    unreadable: list[str] | None = None,
    unlisted: dict[str, str] | None = None,
    reader: FolderReader | None = None,
    mounts: MountTable | None = None,
) -> Iterator[FileEntry]:
    """Yield every image file under ``roots``; a root that is not a folder is yielded too.

    Directory symlinks are not followed, so link loops cannot trap the walk; file
    symlinks are followed. In a folder, only names with an image extension are
    considered, and not macOS's ``._`` metadata files; a path named directly is
    always considered, whatever its name, so that it gets a verdict (a FIFO, a
    device, a broken link or a text file named on the command line is recorded with
    a reason, not skipped). Below a root, ``SKIPPED_FOLDERS`` and searchengine's own
    collection folders are not walked, nor what ``exclusions`` (the collection's
    ``index --exclude`` patterns) leave out; the paths of those it met go to
    ``left_out``. Photos of a format this installation cannot read (``CODEC_EXTENSIONS``
    outside ``extensions``) go to ``unreadable``, but for a RAW file a photo of the
    same name stands for. Entries that
    vanish during the walk are skipped; those that cannot be read otherwise, or do not
    answer (module docstring), go to ``unlisted`` with why. The walk's calls run on
    ``reader`` (one of its own if None); ``mounts`` says which folders are on a network
    or FUSE file system (this machine's mount table if None).
    """
    exts = image_extensions() if extensions is None else extensions
    own = reader is None
    walker = _Walker(reader or FolderReader(), exts, exclusions, left_out, unreadable, unlisted)
    walker.mounts = mounts or MountTable.read()
    try:
        for root in roots:
            yield from walker.root(os.path.abspath(root))
    finally:
        if own:
            walker.reader.close()


class _Walker:
    """The walk of ``scan``: its settings, and what it collects besides the entries."""

    def __init__(
        self,
        reader: FolderReader,
        exts: frozenset[str],
        exclusions: Exclusions | None,
        left_out: list[str] | None,
        unreadable: list[str] | None,
        unlisted: dict[str, str] | None,
    ) -> None:
        self.reader = reader
        self.exts = exts
        self.exclusions = exclusions
        self.left_out = left_out
        self.unreadable = unreadable
        self.unlisted = unlisted
        self.cannot_read = CODEC_EXTENSIONS - exts if unreadable is not None else frozenset()
        self.hung: set[str] = set()  # names that did not answer: not touched again
        self.mounts = MountTable(known=False)

    def root(self, root: str) -> Iterator[FileEntry]:
        try:
            st = self.reader.call(stat_path, root)
        except NotAnswering as exc:
            self._unlisted(root, str(exc))
            return
        except OSError as exc:
            if exc.errno in GONE or exc.errno == errno.ELOOP:
                if os.path.lexists(root):  # a symbolic link to nowhere, or a loop
                    yield FileEntry(root, 0, 0, link_failure(exc))
            else:
                self._unlisted(root, reason(exc))
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk(root, (st.st_dev, st.st_ino))
        else:
            yield checked(root, st)

    def _walk(self, folder: str, identity: tuple[int, int]) -> Iterator[FileEntry]:
        leaves_out = self.exclusions.matcher(folder_prefix(folder)) if self.exclusions else None
        if self.mounts.watched(identity[0]):
            yield from self._watched(folder, identity, leaves_out)
        else:
            yield from self._local(folder, identity, leaves_out)

    def _local(
        self, folder: str, identity: tuple[int, int], leaves_out: Callable[[str, str], bool] | None
    ) -> Iterator[FileEntry]:
        """The folders under ``folder``, on a local disk, read on this thread; the
        network and FUSE file systems mounted among them are walked apart, watched."""
        walked = {identity}  # ``folder``'s (device, inode), and each folder's below it
        stack = [folder]
        progress = Progress()
        settings = (self.exts, leaves_out, self.cannot_read, self.hung, self.mounts.remote)
        while stack:
            current = stack.pop()
            try:
                found = read_folder(progress, current, *settings)
            except OSError as exc:
                yield from self._found(current, exc)
                continue
            yield from self._found(current, found)
            push_folders(stack, walked, folder, current, found)

    def _watched(
        self, folder: str, identity: tuple[int, int], leaves_out: Callable[[str, str], bool] | None
    ) -> Iterator[FileEntry]:
        """The folders under ``folder``, on a network or FUSE file system, read by
        ``Reading`` on a thread of its own while this one yields their entries; a
        folder that makes no progress for ``reader.seconds`` is given up on (module
        docstring)."""
        reading = Reading(
            folder, identity, self.exts, leaves_out, self.cannot_read, self.hung, self.mounts.remote
        )
        reading.start()
        stalled = Stall(self.reader.seconds)
        try:
            while True:
                try:
                    gen, batch = reading.out.get(timeout=stalled.step)
                except queue.Empty:
                    if stalled(reading.progress):
                        why = f"did not answer in {stalled.seconds:.0f} s"
                        self._unlisted(reading.give_up(), why)
                        stalled.restart()
                    continue
                if batch is None:
                    if gen == reading.gen:
                        return
                    continue
                for current, found in batch:
                    yield from self._found(current, found)
        finally:
            reading.stop()

    def _found(self, current: str, found: Listing | OSError) -> Iterator[FileEntry]:
        if isinstance(found, OSError):
            if found.errno not in GONE:
                self._unlisted(current, reason(found))
            return
        yield from found.entries
        for path, why in found.failed:
            self._unlisted(path, why)
        if self.left_out is not None:
            self.left_out.extend(found.left_out)
        if self.unreadable is not None:
            self.unreadable.extend(found.unreadable)
        for mounted in found.apart:
            yield from self.root(mounted)

    def _unlisted(self, path: str, why: str) -> None:
        if self.unlisted is not None:
            self.unlisted[path] = why
