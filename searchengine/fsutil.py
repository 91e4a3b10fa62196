"""Filesystem helpers: content hashes, atomic writes, advisory locks, printable paths.

Each lives here once; the vector index, thumbnails, benchmark caches, model exports and
the collection's write lock all use these.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


def open_regular(path: str) -> tuple[BinaryIO, os.stat_result]:
    """``path`` opened for reading, and its ``fstat``, without blocking on what is not
    a regular file: a FIFO or a terminal put where a photo was opens at once
    (``O_NONBLOCK``, ``O_NOCTTY``), so the caller can refuse it by ``st_mode`` before a
    byte is read. The caller closes the handle.

    Raises:
        OSError: it cannot be opened.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        return os.fdopen(fd, "rb"), os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def content_hash(data: bytes) -> str:
    """The catalog's content hash of a file's bytes: 128-bit BLAKE2b, hex.

    It recognises moved and copied files without re-embedding them, and tells a
    served file from one changed since indexing.
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@contextlib.contextmanager
def atomic_write(target: Path, *, durable: bool = False, prefix: str = ".") -> Iterator[BinaryIO]:
    """Write ``target`` through a temporary file in its folder, renamed over it at the end.

    A reader sees the old file or the new one, never half of either; on an error the
    temporary file is removed and ``target`` is left as it was. The new file gets the
    old one's permissions, or a new file's (``0o666`` less the umask), not the
    temporary file's owner-only ones: other users may read a collection shared with
    them. With ``durable``, the
    file and its folder are synced before and after the rename, so a power cut cannot
    leave an empty file behind a completed rename (the vector index needs this; caches
    do not).

    Args:
        target: the file to write.
        durable: fsync the data and the folder entry.
        prefix: how temporary files are named (``<prefix>...tmp``), so that a writer
            killed mid-write leaves files its folder's owner can recognise and remove.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # (not on Windows, where modes mean little)
            try:
                mode = stat.S_IMODE(os.stat(target).st_mode)
            except OSError:
                mode = 0o666 & ~_umask()
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


def _umask() -> int:
    """This process's umask, read without changing it where Linux tells it (setting it
    to read it back would race with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock:
    """An exclusive advisory lock (``flock``) on a file, recording the holder's pid.

    ``flock`` locks belong to the open file, so the kernel drops them when the holding
    process dies, however it dies: a lock left by a killed process is never stale.
    Where ``flock`` does not exist (Windows) the lock is a no-op.

    Args:
        path: the lock file (created if missing; its content is the holder's pid).
        blocking: wait for the lock instead of failing at once.
    """

    def __init__(self, path: Path, *, blocking: bool = True) -> None:
        self.path = path
        self.blocking = blocking
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another process holds it and ``blocking`` is off."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return True

    def check(self) -> None:
        """Nothing to check: the lock lasts as long as this process (``DatabaseLock``'s
        session can end before it)."""

    def holder(self) -> str:
        """Who holds the lock, as far as its file says (a pid), for messages."""
        try:
            text = self.path.read_bytes()[:64].decode("ascii", "replace").strip()
        except OSError:
            text = ""
        return text or "another process"

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def display_path(path: str) -> str:
    """A path any terminal or JSON document can carry: undecodable bytes as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def folder_prefix(folder: str) -> str:
    """What the paths inside ``folder`` start with: it and one separator."""
    return folder.rstrip(os.sep) + os.sep


def under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, by name (names of one folder
    are made one by ``spelled_as_known``)."""
    return path == folder or path.startswith(folder_prefix(folder))


def spelled_as_known(path: str, known: Iterable[str]) -> str:
    """``path`` (absolute) written under the known folder it is, is inside, or holds.

    A folder can be reached by more than one name: a symbolic link along the way
    (``~/Pictures`` -> ``/data/Pictures``), a link to a folder, a bind mount, another
    letter case on a case-insensitive disk. A collection that took two names of one
    folder as two folders would walk it twice and list every photo in it twice. So a
    folder to index is compared with the known ones by identity (device and inode of
    it and of the folders above it), and where it is one of them, inside one or holds
    one, it is written the way the collection already writes it. Otherwise it is
    returned as given: the user's name for it is kept (a link may be the short way to
    a long path). Known folders absent here (another host's mount) are passed over.
    """
    try:
        mine = _identities(path)
    except OSError:
        return path  # a broken link named here keeps its name, and gets its verdict
    for folder in known:
        if folder == path:
            return path
        try:
            theirs = _identities(folder)
        except OSError:
            continue
        for key, real in mine:  # the folder itself, or one above it
            if key == theirs[0][0]:
                below = os.path.relpath(mine[0][1], real)
                return folder if below == "." else os.path.join(folder, below)
        for up, (key, _) in enumerate(theirs[1:], 1):  # a folder that holds it
            if key == mine[0][0]:
                steps = [folder]
                for _ in range(up):
                    steps.append(os.path.dirname(steps[-1]))
                # A walk of ``above`` follows no link below it, so none may lead to folder.
                above = steps.pop()
                if not any(map(os.path.islink, steps)) and _identity(os.stat(above)) == key:
                    return above
    return path


def _identities(path: str) -> list[tuple[tuple[int, int], str]]:
    """``((device, inode), real path)`` of ``path`` and of every folder above it."""
    current = os.path.realpath(path)
    found = []
    while True:
        found.append((_identity(os.stat(current)), current))
        parent = os.path.dirname(current)
        if parent == current:
            return found
        current = parent


def _identity(info: os.stat_result) -> tuple[int, int]:
    return (info.st_dev, info.st_ino)


def human_size(size: int) -> str:
    """A byte count as people read it: ``512 B``, ``1.5 KB``, ``3.2 GB``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
