"""File-system calls that may never return, made where a run can give up on them.

A network share whose server went away (an NFS hard mount, SMB, sshfs or rclone over
FUSE) blocks every call under it in the kernel, for ever on an NFS hard mount: a walk
of a photo folder holding such a share hung ``index`` with no output, until Ctrl-C.
``FolderReader`` makes the walk's calls on a thread of its own. A call that makes no
progress for ``FOLDER_SECONDS`` (a listing counts a step an entry, so a large folder on a
slow share is not cut) is given up on with ``NotAnswering``; its thread is left to the
kernel, as a daemon, and the next call gets a new one. The walk then treats that
folder as one it could not read: its photos in the collection are kept as they were
(``plan``).

Measured (``tests/e2e/test_unreachable_share.py``): ``index`` of a folder holding a
FUSE share whose process is stopped ends in ~31 s, the rest indexed and the share's
photos kept; before, it never ended. Folders on a local disk are read without it
(``mounts``), so an unchanged re-run there costs what it did.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

FOLDER_SECONDS = 30.0  # a call under a folder that makes no progress this long is given up

T = TypeVar("T")


class NotAnswering(Exception):
    """A file-system call made no progress for ``FOLDER_SECONDS``.

    Attributes:
        at: what the call said it was working on when it stopped
            (``Progress.at``), or None.
    """

    def __init__(self, message: str, at: str | None) -> None:
        super().__init__(message)
        self.at = at


class Progress:
    """What a call on a reader's thread reports as it works: it adds to ``steps``
    whenever it gets on, and sets ``at`` to what it works on next (None: itself), so
    that a call given up on says where it stopped. Plain attributes: a walk sets them
    twice an entry."""

    __slots__ = ("at", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.at: str | None = None


class Stall:
    """Whether the ``Progress`` a waiter looks at now and then has stood still for
    ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.step = min(1.0, seconds / 4)  # how often a waiter should look
        self.restart()

    def restart(self) -> None:
        self._seen, self._since = -1, time.monotonic()

    def __call__(self, progress: Progress) -> bool:
        now = time.monotonic()
        if progress.steps != self._seen:
            self._seen, self._since = progress.steps, now
            return False
        return now - self._since > self.seconds


class _Call:
    __slots__ = ("args", "done", "error", "fn", "progress", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.progress = Progress()
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class FolderReader:
    """Runs calls on a thread of its own and waits for each while it makes progress.

    Args:
        seconds: how long a call may make no progress before it is given up on.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = FOLDER_SECONDS if seconds is None else seconds
        self._inbox: queue.SimpleQueue[_Call | None] | None = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(progress, *args)`` on the reader's thread, waited for while it makes
        ``progress`` (``Progress``; ``lambda progress, path: os.stat(path)`` is one step).

        Raises:
            NotAnswering: no progress for ``seconds``; the call is left running.
            Exception: whatever ``fn`` raised.
        """
        call = _Call(fn, args)
        if self._inbox is None:
            self._inbox = queue.SimpleQueue()
            thread = threading.Thread(
                target=_serve, args=(self._inbox,), name="folder-reader", daemon=True
            )
            thread.start()
        self._inbox.put(call)
        stalled = Stall(self.seconds)
        while not call.done.wait(stalled.step):
            if stalled(call.progress):
                self.close()  # its thread ends if the call ever returns
                raise NotAnswering(f"did not answer in {self.seconds:.0f} s", call.progress.at)
        if call.error is not None:
            raise call.error
        return call.result

    def close(self) -> None:
        """End the thread once it is free."""
        if self._inbox is not None:
            self._inbox.put(None)
            self._inbox = None


def _serve(inbox: queue.SimpleQueue[_Call | None]) -> None:
    while (call := inbox.get()) is not None:
        try:
            call.result = call.fn(call.progress, *call.args)
        except BaseException as exc:  # handed to the waiting caller
            call.error = exc
        finally:
            call.done.set()
