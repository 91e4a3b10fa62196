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

A server that answers but whose commits wait for a **synchronous standby** that is
gone (``synchronous_standby_names`` names standbys, none of which is connected) makes
every commit wait for ever, by design: the commit is durable on the primary, and the
server holds it until a standby confirms it. The check then also asks the server what
the waiting statement waits on (``pg_stat_activity``); for ``SyncRep`` it says so in
one line on stderr, with the setting and what clears it, once a statement, and leaves
the statement waiting: it completes as soon as a standby answers or the setting is
cleared, and nothing is lost (``tests/unit/test_catalog_sync_standby.py``). Before, an
``index`` hung there without a word.

One watcher thread serves every watched connection of the process, and checks each
server at most once a round, however many statements wait on it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg

STALL_CHECK_S = 5.0  # a round trip waiting this long has its server checked
PROBE_TIMEOUT_S = 5  # libpq's connect_timeout for the check (libpq's least is 2 s)


def stderr_line(line: str) -> None:
    """``line`` on stderr; through tqdm where it is loaded, which takes a progress bar
    on the terminal (``index``'s) off the line first and draws it again below, so the
    line does not land in the middle of the bar."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        print(line, file=sys.stderr)
    else:
        tqdm.tqdm.write(line, file=sys.stderr)


@dataclass(frozen=True)
class Check:
    """What a check of a server found."""

    lost: str | None  # why the server counts as lost; None: it answers
    # The backends (of those asked about) that wait for a synchronous standby, and the
    # server's synchronous_standby_names.
    on_standby: frozenset[int] = frozenset()
    standby_names: str = ""


Probe = Callable[[Sequence[int]], Check]


@dataclass(eq=False)
class _Wait:
    """One round trip in flight on a watched connection."""

    fd: int
    server: tuple[Any, ...]  # what the check connects to: one check a round per server
    probe: Probe
    started: float
    due: float  # when its server is checked next
    backend: int | None = None  # the server process of the connection
    cut: str | None = None  # why the watcher shut its socket
    told: bool = False  # whether its wait for a synchronous standby was said


@dataclass
class Watcher:
    """Checks the servers of round trips that wait too long; cuts those that are lost.

    Args:
        check_after: how long a round trip waits before its server is checked, and
            between checks.
        tick: how often the watcher looks at what is in flight.
        tell: where a line about a statement left waiting goes (stderr).
    """

    check_after: float = STALL_CHECK_S
    tick: float = 0.5
    tell: Callable[[str], None] = stderr_line
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waits: set[_Wait] = field(default_factory=set)
    _thread: threading.Thread | None = None

    @contextmanager
    def waiting(
        self, fd: int, server: tuple[Any, ...], probe: Probe, backend: int | None = None
    ) -> Iterator[_Wait]:
        """Watch one round trip on the socket ``fd`` (of server process ``backend``)
        while the block runs."""
        now = time.monotonic()
        wait = _Wait(fd, server, probe, now, now + self.check_after, backend)
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
            verdicts: dict[tuple[Any, ...], Check] = {}
            for wait in due:
                if wait.server not in verdicts:
                    backends = [w.backend for w in due if w.server == wait.server and w.backend]
                    verdicts[wait.server] = wait.probe(backends)
                check = verdicts[wait.server]
                said = None
                with self._lock:
                    if wait not in self._waits:
                        continue  # its answer came while the server was checked
                    waited = time.monotonic() - wait.started
                    if check.lost is None:
                        wait.due = time.monotonic() + self.check_after
                        if wait.backend in check.on_standby and not wait.told:
                            wait.told = True
                            said = standby_line(check.standby_names, waited)
                    else:
                        wait.cut = (
                            f"{check.lost}, while a statement had waited {waited:.0f} s for it"
                        )
                        _shut(wait.fd)
                if said is not None:
                    self._say(said)

    def _say(self, line: str) -> None:
        """``tell`` a line, outside the lock (a stderr nobody reads blocks), and never
        failing: a closed stderr must not end the watching."""
        with suppress(Exception):
            self.tell(line)


def standby_line(names: str, waited: float) -> str:
    """What a user is told of a commit that waits for a synchronous standby."""
    return (
        f"the catalog server has held a commit for {waited:.0f} s, waiting for a "
        f"synchronous standby to confirm it (synchronous_standby_names = '{names}'), and "
        "none has: is that standby down? The commit completes as soon as one answers, or "
        "once the server's administrator clears the setting (ALTER SYSTEM SET "
        "synchronous_standby_names = ''; SELECT pg_reload_conf()). Waiting meanwhile; "
        "Ctrl-C stops, and nothing committed is lost"
    )


def _shut(fd: int) -> None:
    """End the connection on ``fd``: its reader wakes to a closed connection. A
    duplicate is shut and closed; the connection still owns ``fd``."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the server: the reader has its error


WATCHER = Watcher()


def probe(args: tuple[Any, ...], params: dict[str, Any], backends: Sequence[int] = ()) -> Check:
    """Check a server by connecting as ``args``/``params`` did, and ask which of the
    server processes ``backends`` wait for a synchronous standby.

    The server counts as lost only if the connection gets no answer; a refusal (an
    error of the server's own) means it is alive, and then nothing more is asked."""
    try:
        with psycopg.connect(*args, **{**params, "connect_timeout": PROBE_TIMEOUT_S}) as conn:
            if not backends:
                conn.execute("SELECT 1")
                return Check(None)
            rows = conn.execute(
                "SELECT pid, current_setting('synchronous_standby_names') "
                "FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event = 'SyncRep'",
                [list(backends)],
            ).fetchall()
    except psycopg.Error as exc:
        if exc.sqlstate is not None:
            return Check(None)  # the server answered, if with a refusal: it is alive
        return Check(
            "the server stopped answering (a new connection to it got no answer in "
            f"{PROBE_TIMEOUT_S} s: its processes stopped, its disk hung, or the network "
            "to it is down)"
        )
    names = str(rows[0][1]) if rows else ""
    return Check(None, frozenset(int(row[0]) for row in rows), names)


class WatchedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose round trips ``WATCHER`` watches.

    Every exchange with the server (statements, fetches, commits, the pool's ping)
    goes through ``Connection.wait``, so watching it covers them all.
    """

    probe: Probe
    server: tuple[Any, ...]

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        try:
            fd = self.pgconn.socket
        except psycopg.OperationalError:
            return super().wait(*args, **kwargs)  # closed: psycopg says so itself
        with WATCHER.waiting(fd, self.server, self.probe, self.pgconn.backend_pid) as wait:
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
    conn.probe = lambda backends: probe(args, params, backends)
    return conn
