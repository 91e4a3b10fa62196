"""Bounded work for the server: model slots, worker queues and a decoding memory budget.

No request ever waits for a model to load, for another request's model call, or for
memory, beyond a stated bound:

- ``ModelSlot``: one model the server uses, loaded once on a daemon thread, with its
  state (``idle``, ``loading``, ``ready``, ``failed``) for ``/api/status``. A request
  needing a model that is not ready gets ``Unavailable`` (503 with ``Retry-After``) at
  once; a failure is remembered, and retried only after a back-off (1, 2, 4 ... 15 min).
- ``Worker``: daemon threads that run model calls (or decodes) in turn from a bounded
  queue. A full queue is ``Unavailable`` at once. Routes await the result, so no thread
  of the web server's pool is held while a model works, and Ctrl-C or SIGTERM never
  waits for one.
- ``MemoryBudget``: bytes of decoded pixels held at once (uploads, query images,
  thumbnails); each decode reserves its estimate (``ingest.decode.decode_memory``) first.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Literal, TypeVar

from searchengine.errors import ImageError, SearchEngineError

log = logging.getLogger("searchengine.server")
T = TypeVar("T")
State = Literal["idle", "loading", "ready", "failed"]

# Back-off after a failed load: the first retry after a minute, doubling to 15 minutes.
RETRY_FIRST = 60.0
RETRY_MOST = 900.0
LOADING_RETRY_AFTER = 5  # what a client is told to wait while a model loads


class Unavailable(SearchEngineError):
    """What a request needs is not available now; it may be later (HTTP 503).

    Attributes:
        retry_after: whole seconds after which asking again may succeed.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(frozen=True)
class SlotState:
    """What ``/api/status`` says about one model."""

    role: str
    model: str
    state: State
    since: float  # POSIX seconds of the last change of state
    error: str | None = None
    retry_in: float | None = None  # seconds until a failed load may be retried


class ModelSlot(Generic[T]):
    """One model, loaded once off the request path.

    Args:
        role: what the server uses it for (``search``, ``rerank``, ``caption``).
        model: its name, for messages and the status.
        load: makes the model (runs on a daemon thread); its exceptions are failures.
        loaded: the model, when the caller already has it (state ``ready`` at once).
        patience: seconds a request waits for a load that is under way before it is
            told to come back (0: at once). A model that loads in a blink, such as one
            already in memory, then answers the first request instead of a 503.
        clock: monotonic seconds, for the back-off (tests pass their own).
        transient: for a load's error that is not the model's (the catalog's database
            out of reach while the index is read), the seconds until it is tried again,
            instead of the back-off; None for the model's own failures.
    """

    def __init__(
        self,
        role: str,
        model: str,
        load: Callable[[], T],
        *,
        loaded: T | None = None,
        patience: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        transient: Callable[[BaseException], float | None] = lambda exc: None,
    ) -> None:
        self.role = role
        self._clock = clock
        self.model = model
        self._load = load
        self._patience = patience
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._value: T | None = loaded
        self._owned = loaded is None  # a model handed in stays its owner's to close
        self._state: State = "ready" if loaded is not None else "idle"
        self._since = time.time()
        self._error: str | None = None
        self._failures = 0
        self._retry_at = 0.0  # clock() after which a failed load is retried
        self._transient = transient

    def get(self) -> T:
        """The model, when ready.

        Raises:
            Unavailable: it is loading (it starts loading now if it never did), or
                its last load failed and the back-off has not run out.
        """
        with self._lock:
            if self._value is not None:
                return self._value
            if self._state == "idle" or (
                self._state == "failed" and self._clock() >= self._retry_at
            ):
                self._start()
            done = self._done
        if self._patience > 0 and done.wait(self._patience) and self._value is not None:
            return self._value
        raise self._unavailable()

    @property
    def ready(self) -> T | None:
        """The model if it is loaded, else ``None``; never waits, never starts a load."""
        return self._value

    def start(self) -> None:
        """Begin loading in the background, unless loaded or loading already."""
        with self._lock:
            if self._state in ("idle", "failed"):
                self._start()

    def load_now(self) -> T:
        """Load on this thread (start-up), raising the loader's own error on failure."""
        with self._lock:
            if self._value is not None:
                return self._value
            self._state, self._since = "loading", time.time()
        try:
            value = self._load()
        except Exception as exc:
            self._failed(exc)
            raise
        self._ready(value)
        return value

    def state(self) -> SlotState:
        with self._lock:
            retry = None
            if self._state == "failed":
                retry = round(max(0.0, self._retry_at - self._clock()), 1)
            return SlotState(self.role, self.model, self._state, self._since, self._error, retry)

    def close(self) -> None:
        """Release the model, if this slot loaded it."""
        if not self._owned:
            return
        with self._lock:
            value, self._value = self._value, None
            self._state = "idle"
        close = getattr(value, "close", None)
        if callable(close):
            close()

    # -- internals ----------------------------------------------------------------------
    def _start(self) -> None:
        """Begin a load (the lock is held)."""
        self._state, self._since, self._error = "loading", time.time(), None
        self._done = threading.Event()
        thread = threading.Thread(target=self._run, name=f"load {self.role} model", daemon=True)
        thread.start()

    def _run(self) -> None:
        try:
            value = self._load()
        except Exception as exc:  # whatever it was, it is this model's failure to load
            self._failed(exc)
        else:
            self._ready(value)

    def _ready(self, value: T) -> None:
        with self._lock:
            self._value, self._state, self._since = value, "ready", time.time()
            self._failures, self._error = 0, None
            self._done.set()
        log.info("%s model %s is ready", self.role, self.model)

    def _failed(self, exc: BaseException) -> None:
        lines = str(exc).strip().splitlines()
        soon = self._transient(exc)
        with self._lock:
            if soon is None:
                self._failures += 1
            wait = soon or min(RETRY_FIRST * 2 ** (self._failures - 1), RETRY_MOST)
            self._state, self._since = "failed", time.time()
            self._error = lines[0] if lines else type(exc).__name__
            self._retry_at = self._clock() + wait
            self._done.set()
        log.warning("cannot load the %s model %s: %s", self.role, self.model, self._error)

    def _unavailable(self) -> Unavailable:
        with self._lock:
            if self._state == "failed":
                wait = max(1.0, self._retry_at - self._clock())
                return Unavailable(
                    f"the {self.role} model {self.model} cannot be loaded ({self._error}); "
                    f"the server tries again in {math.ceil(wait)} s",
                    wait,
                )
            waited = time.time() - self._since
            return Unavailable(
                f"the {self.role} model {self.model} is loading ({waited:.0f} s so far); "
                f"try again in {LOADING_RETRY_AFTER} s",
                LOADING_RETRY_AFTER,
            )


class Worker:
    """Daemon threads that run calls in arrival order, with a bounded queue.

    Args:
        name: what it runs, for messages (``search``, ``caption``, ``decode``).
        threads: calls run side by side.
        depth: calls that may wait; one more is refused with ``Unavailable``.
        retry_after: what a refused request is told to wait, in seconds.
    """

    def __init__(self, name: str, threads: int = 1, depth: int = 32, retry_after: float = 5):
        self.name = name
        self.depth = depth
        self.retry_after = retry_after
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue()
        self._pending = 0  # waiting or running
        self._threads = threads
        self._lock = threading.Lock()
        for number in range(threads):
            threading.Thread(target=self._serve, name=f"{name} {number}", daemon=True).start()

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``call(*args)``; its future.

        Raises:
            Unavailable: ``depth`` calls wait already.
        """
        with self._lock:
            if self._pending >= self.depth + self._threads:
                raise Unavailable(
                    f"the server is busy: {self._pending} {self.name} requests are ahead; "
                    f"try again in {self.retry_after:g} s",
                    self.retry_after,
                )
            self._pending += 1
        future: Future[T] = Future()
        # A call given up on while it waits leaves the count at once, not when a thread
        # gets to it (which may be never, if they are all stuck: ``add_thread``).
        future.add_done_callback(self._dropped)
        self._queue.put((future, lambda: call(*args)))
        return future

    def add_thread(self, most: int) -> None:
        """Start one more thread, up to ``most`` in all: for a worker whose threads may
        be stuck for good (a file on a share that no longer answers)."""
        with self._lock:
            if self._threads >= most:
                return
            self._threads += 1
            number = self._threads
        threading.Thread(target=self._serve, name=f"{self.name} {number}", daemon=True).start()

    def _dropped(self, future: Future[Any]) -> None:
        if future.cancelled():
            self._release()

    def _release(self) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` on this worker, awaited (the event loop is free meanwhile)."""
        return await asyncio.wrap_future(self.submit(call, *args))

    @property
    def pending(self) -> int:
        return self._pending

    def stop(self) -> None:
        for _ in range(self._threads):
            self._queue.put(None)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited: already out of the count
            try:
                future.set_result(call())
            except StopIteration as exc:  # cannot cross into an asyncio future
                future.set_exception(RuntimeError(f"StopIteration from {call}"))
                del exc
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                self._release()


# Decodes this large hand their memory back to the system when done (see ``_trim``).
TRIM_ABOVE = 64_000_000


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` on other C libraries."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def _trim() -> None:
    """Return freed heap memory to the system.

    Pillow allocates a large image in 16 MB blocks; glibc serves blocks of that size from
    per-thread heaps once one has been freed, and keeps what is freed there. Without
    this, 8 uploads of 100 MP left ~1 GB held after they were answered; with it the
    server returns to its size before them (``docs/web.md``).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class MemoryBudget:
    """Bytes that decodes may hold at once.

    Args:
        total: the budget in bytes.
        wait: seconds a decode may wait for its share before it is refused as busy.
    """

    def __init__(self, total: int, wait: float = 60.0) -> None:
        self.total = total
        self.wait = wait
        self.used = 0
        self.peak = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        """Reserve ``amount`` bytes for the duration of the block.

        Raises:
            OverBudget: ``amount`` alone is over the budget.
            Unavailable: the share did not free up within ``wait`` seconds.
        """
        if amount > self.total:
            raise OverBudget(
                f"decoding it would take about {amount / 1e6:.0f} MB of memory, over this "
                f"server's {self.total / 1e6:.0f} MB for decoding images"
            )
        with self._free:
            if not self._free.wait_for(lambda: self.used + amount <= self.total, self.wait):
                raise Unavailable("the server is busy decoding other images; try again", 10)
            self.used += amount
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            if amount > TRIM_ABOVE:
                _trim()
            with self._free:
                self.used -= amount
                self._free.notify_all()


class OverBudget(ImageError):
    """An image would take more memory to decode than the server allows (HTTP 413)."""
