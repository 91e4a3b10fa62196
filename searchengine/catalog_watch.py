"""A catalog server that stops answering while its connections stay open.

A PostgreSQL server whose processes are stopped, or stuck on a disk that no longer
answers, still has a live kernel: it acknowledges what a client sends and answers
keepalive probes, so neither ``tcp_user_timeout`` nor the keepalives
(``backends.SOCKET_SETTINGS``) ever fire, and libpq waits for the reply for ever. A web
server's search then never answered, and every search queued behind it; a command hung
until Ctrl-C.

A time-out on the statement itself cannot tell that server from a slow statement (a
large delete, a migration's index) or one waiting for a lock (``lock_timeout`` ends
those). So a round trip that has waited ``STALL_CHECK_S`` has the server checked: a new
connection to it, which must log in and run ``SELECT 1`` within ``PROBE_TIMEOUT_S``.

- **The server answers** (the check succeeds, or the server refuses it with an error
  of its own: too many connections, a password): the statement is slow, not lost; it
  is checked again every ``STALL_CHECK_S`` and left to finish.
- **It does not**: the waiting connection is cut (its socket shut down), so the
  statement fails at once with "stopped answering", which the commands and the web
  server report as a catalog that cannot be reached (``catalog_errors``); the pool
  drops the connection and the next one is tried afresh.

Measured on a live server with its processes stopped (``tests/unit/
test_catalog_frozen.py``): a search in flight gets its 503 in ~10 s, one sent while
the server's connection sat in the pool in ~20 s (the pool's new connection then waits
for its own ``connect_timeout``); before, neither was answered. A network that goes
silent under a statement in flight is caught the same way, in 10 s rather than the
keepalives' 15 s (``tests/unit/test_catalog_network.py``).

One watcher thread serves every watched connection of the process, and checks each
server at most once a round, however many statements wait on it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

STALL_CHECK_S = 5.0  # a round trip waiting this long has its server checked
PROBE_TIMEOUT_S = 5  # libpq's connect_timeout for the check (libpq's least is 2 s)


@dataclass(eq=False)
class _Wait:
    """One round trip in flight on a watched connection."""

    fd: int
    server: tuple[Any, ...]  # what the check connects to: one check a round per server
    probe: Callable[[], str | None]
    started: float
    due: float  # when its server is checked next
    cut: str | None = None  # why the watcher shut its socket


@dataclass
class Watcher:
    """Checks the servers of round trips that wait too long; cuts those that are lost.

    Args:
        check_after: how long a round trip waits before its server is checked, and
            between checks.
        tick: how often the watcher looks at what is in flight.
    """

    check_after: float = STALL_CHECK_S
    tick: float = 0.5
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waits: set[_Wait] = field(default_factory=set)
    _thread: threading.Thread | None = None

    @contextmanager
    def waiting(
        self, fd: int, server: tuple[Any, ...], probe: Callable[[], str | None]
    ) -> Iterator[_Wait]:
        """Watch one round trip on the socket ``fd`` while the block runs."""
        now = time.monotonic()
        wait = _Wait(fd, server, probe, now, now + self.check_after)
        with self._lock:
            self._waits.add(wait)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)
                self._thread.start()
        try:
            yield wait
        finally:
            # Under the lock: once the block has left, the watcher never touches ``fd``,
            # which the connection may close and the process reuse.
            with self._lock:
                self._waits.discard(wait)

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                due = [w for w in self._waits if w.due <= now and w.cut is None]
            verdicts: dict[tuple[Any, ...], str | None] = {}
            for wait in due:
                if wait.server not in verdicts:
                    verdicts[wait.server] = wait.probe()
                lost = verdicts[wait.server]
                with self._lock:
                    if wait not in self._waits:
                        continue  # its answer came while the server was checked
                    if lost is None:
                        wait.due = time.monotonic() + self.check_after
                        continue
                    waited = time.monotonic() - wait.started
                    wait.cut = f"{lost}, while a statement had waited {waited:.0f} s for it"
                    _shut(wait.fd)


def _shut(fd: int) -> None:
    """End the connection on ``fd``: its reader wakes to a closed connection. A
    duplicate is shut and closed; the connection still owns ``fd``."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the server: the reader has its error


WATCHER = Watcher()


def probe(args: tuple[Any, ...], params: dict[str, Any]) -> str | None:
    """Check a server by connecting as ``args``/``params`` did: None when it answers
    (also with an error of its own), else why it counts as lost."""
    try:
        with psycopg.connect(*args, **{**params, "connect_timeout": PROBE_TIMEOUT_S}) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        if exc.sqlstate is not None:
            return None  # the server answered, if with a refusal: it is alive
        return (
            "the server stopped answering (a new connection to it got no answer in "
            f"{PROBE_TIMEOUT_S} s: its processes stopped, its disk hung, or the network "
            "to it is down)"
        )
    return None


class WatchedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose round trips ``WATCHER`` watches.

    Every exchange with the server (statements, fetches, commits, the pool's ping)
    goes through ``Connection.wait``, so watching it covers them all.
    """

    probe: Callable[[], str | None]
    server: tuple[Any, ...]

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        try:
            fd = self.pgconn.socket
        except psycopg.OperationalError:
            return super().wait(*args, **kwargs)  # closed: psycopg says so itself
        with WATCHER.waiting(fd, self.server, self.probe) as wait:
            try:
                return super().wait(*args, **kwargs)
            except psycopg.OperationalError as exc:
                if wait.cut is None:
                    raise
                raise psycopg.OperationalError(wait.cut) from exc


def connect(args: tuple[Any, ...], params: dict[str, Any]) -> WatchedConnection:
    """A watched connection, made as psycopg's ``connect(*args, **params)`` would
    (SQLAlchemy's ``do_connect`` event hands both)."""
    conn = WatchedConnection.connect(*args, **params)
    conn.server = (args, tuple(sorted((k, str(v)) for k, v in params.items())))
    conn.probe = lambda: probe(args, params)
    return conn
