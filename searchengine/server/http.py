"""How the app is run under uvicorn: one configuration for ``serve`` and the tests.

- Requests that are not valid HTTP never reach the app: uvicorn answers them itself, in
  plain text. ``JsonErrorsH11`` makes that answer the API's JSON error too, with the
  same security headers as every other response.
- The request line and headers may take up to ``MAX_HEAD_BYTES``: a query at the API's
  own bounds (2,000 characters plus 20 terms of 2,000, percent-encoded UTF-8: up to
  ~380 KB) must fit, so that the app, not the parser, says what is too long.
- Ctrl-C or SIGTERM stops the server within ``SHUTDOWN_SECONDS`` (plus a moment): open
  requests get that long to finish. Model loads and model calls run on daemon threads
  (``workers.py``), so none of them holds the process up.
"""

from __future__ import annotations

import asyncio
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


class JsonErrorsH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering unparseable requests with a JSON 400.

    After the answer the connection closes gently ("lingering close", as web servers
    do): what the client still sends is read and dropped for a moment, so that the
    close does not reset the connection before the client has read why.
    """

    _refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {
                "error": "not a valid HTTP/1.1 request: a malformed request line, header or "
                f"Content-Length, or a URL and headers over {MAX_HEAD_BYTES // 1024} KB"
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *SECURITY_HEADERS,
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


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
    host, port = sock.getsockname()[:2]
    Server(uvicorn_config(app, host, port)).run(sockets=[sock])


def uvicorn_config(app: Any, host: str, port: int) -> Config:
    """The uvicorn settings the server runs with."""
    return Config(
        app,
        host=host,
        port=port,
        http=JsonErrorsH11,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
        log_level="warning",
        access_log=False,
    )
