"""How the app is run under uvicorn: one configuration for ``serve`` and the tests.

- Requests that are not valid HTTP never reach the app: uvicorn answers them itself, in
  plain text. ``ServerProtocol`` makes that answer the API's JSON error too, with the
  same security headers as every other response.
- The request line and headers may take up to ``MAX_HEAD_BYTES``: a query at the API's
  own bounds (2,000 characters plus 20 terms of 2,000, percent-encoded UTF-8: up to
  ~380 KB) must fit, so that the app, not the parser, says what is too long.
- Ctrl-C or SIGTERM stops the server within ``SHUTDOWN_SECONDS`` (plus a moment): open
  requests get that long to finish. Model loads and model calls run on daemon threads
  (``workers.py``), so none of them holds the process up.
- **A client must keep pace** (``ServerProtocol``). uvicorn waits for ever for a request
  that does not come: a connection that sends nothing, or a request head a byte at a
  time (slowloris), holds a file descriptor and a socket until the client leaves. 300
  such connections to a ``serve`` whose process may open 256 files (desktops give
  1,024) refused every other client ("Too many open files") for as long as they
  stayed. Now, as web servers do (Apache's ``mod_reqtimeout``: ``header=20``,
  ``body=20``, ``MinRate=500``): a request's line and headers must arrive within
  ``HEAD_SECONDS`` of the connection (or of their first byte, on a kept-alive one),
  else a JSON 408 and the close; its body within ``BODY_SECONDS`` of the head; every
  ``MIN_RATE`` bytes received add a second, so a slow but working link is never cut.
  A response the client has stopped reading for ``SEND_SECONDS`` is dropped. ``run``
  raises the process's soft limit on open files to the hard one (at most
  ``MOST_FILES``), so a burst of clients is not refused either.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import socket
from typing import Any

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from searchengine.errors import ConfigError
from searchengine.server.security import SECURITY_HEADERS

MAX_HEAD_BYTES = 512 * 1024
SHUTDOWN_SECONDS = 1
LINGER_SECONDS = 2.0  # how long a refused client may go on sending before the close
HEAD_SECONDS = 20.0  # a request's line and headers must arrive within this
BODY_SECONDS = 20.0  # and its body within this of the head
MIN_RATE = 500  # bytes a second: each this many received add a second to either
SEND_SECONDS = 60.0  # a response the client has not read on for this long is dropped
MOST_FILES = 65536  # the soft limit on open files ``run`` raises to, at most

_HEAD, _BODY = "head", "body"


class ServerProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering unparseable requests with a JSON 400 and
    closing on clients that do not keep pace (module docstring).

    After a refusal the connection closes gently ("lingering close", as web servers
    do): what the client still sends is read and dropped for a moment, so that the
    close does not reset the connection before the client has read why.
    """

    _refused = False
    _phase: str | None = None  # what the client is sending: a request's head or body
    _due = 0.0  # by when (the loop's clock) the phase must be done, as received so far
    _timer: asyncio.TimerHandle | None = None
    _stall: asyncio.TimerHandle | None = None  # armed while the client reads nothing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin(_HEAD)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        state = self.conn.their_state
        phase = _HEAD if state is h11.IDLE else _BODY if state is h11.SEND_BODY else None
        if phase is None:
            self._phase = None  # the whole request is in: the rest is the server's time
        elif phase != self._phase:
            self._begin(phase)
        self._due += len(data) / MIN_RATE

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = None
        for timer in (self._timer, self._stall):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(SEND_SECONDS, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _begin(self, phase: str) -> None:
        self._phase = phase
        self._due = self.loop.time() + (HEAD_SECONDS if phase == _HEAD else BODY_SECONDS)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self._due, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._phase is None or self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the server is not reading: not the client's time
            self._due += 1.0
            self._timer = self.loop.call_at(now + 1.0, self._check)
        elif now < self._due:
            self._timer = self.loop.call_at(self._due, self._check)
        elif self._phase == _HEAD:
            self._refuse(
                408,
                b"Request Timeout",
                f"the request did not arrive in time: its line and headers must come within "
                f"{HEAD_SECONDS:.0f} s (a second more for every {MIN_RATE} bytes)",
            )
        else:  # the app is reading the body: it sees the client leave
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._refuse(
            400,
            b"Bad Request",
            "not a valid HTTP/1.1 request: a malformed request line, header or "
            f"Content-Length, or a URL and headers over {MAX_HEAD_BYTES // 1024} KB",
        )

    def _refuse(self, status: int, reason: bytes, error: str) -> None:
        """Answer ``status`` with a JSON error, then close gently."""
        body = json.dumps({"error": error}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *SECURITY_HEADERS,
        ]
        # Written as bytes: h11 sends a response only to a request it has read.
        head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        self.transport.write(head + b"\r\n" + body)
        self._refused = True
        self._phase = None
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound now as uvicorn would bind it, so that a port in use or
    an address that is not this machine's is said in one line before the model loads
    (uvicorn says it in a log line after, and exits 3).

    Raises:
        ConfigError: the address cannot be listened on, and why.
    """
    sock = socket.socket(family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(_cannot_listen(host, port, exc)) from None
    sock.set_inheritable(True)
    return sock


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is in use (another searchengine serve?); stop it, or "
            "choose another port with --port"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} needs more privileges than this user has; choose one above 1023"
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (
            f"{host} is not an address of this machine; use 127.0.0.1 (this machine only), "
            "0.0.0.0 (every network) or one of its own addresses"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def run(app: Any, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` (``listening_socket``) until Ctrl-C or SIGTERM.

    Start-up (imports, the model, the index) leaves garbage that the first full
    collections would walk while requests wait: ~50 ms each here, over 100 ms on a busy
    machine. It is collected now, and what survives is frozen out of later collections.
    """
    gc.collect()
    gc.freeze()
    more_files()
    host, port = sock.getsockname()[:2]
    Server(uvicorn_config(app, host, port)).run(sockets=[sock])


def more_files() -> None:
    """Raise the soft limit on open files to the hard one (at most ``MOST_FILES``):
    each client holds one. Left as it is where the system refuses."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MOST_FILES if hard == resource.RLIM_INFINITY else min(hard, MOST_FILES)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def uvicorn_config(app: Any, host: str, port: int) -> Config:
    """The uvicorn settings the server runs with."""
    return Config(
        app,
        host=host,
        port=port,
        http=ServerProtocol,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        log_level="warning",
        access_log=False,
    )
