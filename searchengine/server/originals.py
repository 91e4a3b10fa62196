"""Reading indexed originals for the web server: a reader pool for each mount.

A photo on a network share whose server went away blocks its reader in the kernel for
ever. Every request that needs an original (served as it is, made into a thumbnail,
searched by, captioned, located) reads it here, on the worker of the mount it lies on
(``/proc/self/mountinfo``), and waits at most ``FILE_SECONDS`` for it (then a 503).
Such reads fill only their own share's queue: photos on other disks are read as
before, while the share's are refused at once once its queue is full. A read given
up on starts one more thread for its mount (up to ``FILE_THREADS_MOST``), should its
reader be stuck for good.
"""

from __future__ import annotations

import asyncio
import time

from searchengine.catalog import ImageRecord
from searchengine.ingest.mounts import MountTable
from searchengine.server.thumbnails import FileUnavailable, read_indexed
from searchengine.server.workers import Worker

FILE_SECONDS = 10.0  # how long a request waits for an original file to be read
FILE_THREADS_MOST = 64  # readers of a mount at most, most of them stuck on a share away
MOUNTS_SECONDS = 10.0  # how old the mount table may be: a share mounted since is its own


class Originals:
    """The readers of originals, one ``Worker`` a mount, made when first needed.

    Used from the event loop only.

    Args:
        threads: readers a mount starts with.
        depth: reads that may wait for a mount's readers; one more is refused (503).
    """

    def __init__(self, threads: int = 4, depth: int = 32) -> None:
        self.threads, self.depth = threads, depth
        self._workers: dict[str, Worker] = {}
        self._mounts = MountTable.read()
        self._read_at = time.monotonic()

    async def read(self, record: ImageRecord) -> bytes:
        """The indexed file's bytes (``read_indexed``).

        Raises:
            FileUnavailable: gone (404), changed (409), or it did not answer within
                ``FILE_SECONDS`` (503; its reader is left to the kernel).
            Unavailable: its mount's readers are all busy and its queue is full.
        """
        worker = self.worker(record.path)
        try:
            return await asyncio.wait_for(worker.run(read_indexed, record), timeout=FILE_SECONDS)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            worker.add_thread(most=FILE_THREADS_MOST)
            raise FileUnavailable(
                f"image {record.id}'s file did not answer in {FILE_SECONDS:g} s (on a "
                "network share that is away?); try again later",
                503,
            ) from None

    def worker(self, path: str) -> Worker:
        """The worker of the mount ``path`` lies on."""
        if time.monotonic() - self._read_at > MOUNTS_SECONDS:
            self._mounts, self._read_at = MountTable.read(), time.monotonic()
        mount = self._mounts.mount_of(path)
        worker = self._workers.get(mount)
        if worker is None:
            worker = Worker("file", threads=self.threads, depth=self.depth, retry_after=10)
            self._workers[mount] = worker
        return worker

    def stop(self) -> None:
        for worker in self._workers.values():
            worker.stop()
