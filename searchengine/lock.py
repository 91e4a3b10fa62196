"""One writer per collection: an advisory lock on a file in the collection folder.

``flock`` locks belong to the open file, so the kernel drops them when the holding
process dies, however it dies: a lock left by a killed indexer is never stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from searchengine.errors import CollectionLockedError

LOCK_FILE = "write.lock"


class WriteLock:
    """Exclusive, non-blocking write lock on a collection folder."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / LOCK_FILE
        self.name = name
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ``CollectionLockedError`` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "another process"
            os.close(fd)
            raise CollectionLockedError(
                f"collection {self.name!r} is being indexed by process {holder}; wait for it "
                "to finish (searching works meanwhile), or stop it and run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
