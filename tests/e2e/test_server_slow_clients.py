"""Clients that do not keep pace with the web server: a connection that sends nothing,
a request head or body a few bytes at a time (slowloris), a response nobody reads.
uvicorn waits for each for ever; ``server.http.ServerProtocol`` bounds them.

The first tests run the real app under uvicorn in this process, with the deadlines
shortened; the last runs the real ``searchengine serve`` with its own deadlines and a
process limit of 256 open files, under 300 slow connections.
"""

from __future__ import annotations

import json
import resource
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from servertools import make_collection, server_process, serving

from searchengine.server import create_app, http

HEAD_408 = "the request did not arrive in time"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deadlines of a second: a head or a body must come within 1 s (+1 s a 500 B)."""
    monkeypatch.setattr(http, "HEAD_SECONDS", 1.0)
    monkeypatch.setattr(http, "BODY_SECONDS", 1.0)
    monkeypatch.setattr(http, "SEND_SECONDS", 1.0)


@pytest.fixture
def app_url(tmp_path: Path, quick: None) -> Iterator[tuple[str, Path]]:
    collection, photos, _ = make_collection(tmp_path)
    with collection, serving(create_app(collection)) as url:
        yield url, photos


def connect(url: str, timeout: float = 15) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def trickle(sock: socket.socket, data: bytes, every: float) -> float:
    """Send ``data`` a byte every ``every`` s until the server closes; how long it took."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(every)
    return time.monotonic() - started


def status_and_error(data: bytes) -> tuple[int, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_a_connection_that_sends_nothing_gets_a_408_then_the_close(app_url) -> None:
    url, _ = app_url
    started = time.monotonic()
    with connect(url) as sock:
        data = read_all(sock)
    took = time.monotonic() - started
    status, error = status_and_error(data)
    assert status == 408 and HEAD_408 in error
    assert b"x-content-type-options: nosniff" in data  # the same headers as every answer
    assert 0.9 < took < 5, took


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(app_url) -> None:
    url, _ = app_url
    host = url.removeprefix("http://")
    with connect(url) as sock:
        took = trickle(sock, f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), 0.1)
        data = read_all(sock)
    assert status_and_error(data)[0] == 408
    assert took < 4, took  # the 45 bytes would have taken 4.5 s


def test_a_body_that_trickles_is_cut_off_and_a_slow_steady_one_is_not(app_url) -> None:
    """A 10 kB upload at 1 kB/s takes 10 s: within 1 s + 1 s a 500 bytes, so it is
    answered; the same upload at 20 bytes/s falls behind and is cut off."""
    url, photos = app_url
    host = url.removeprefix("http://")
    jpeg = (photos / "red.jpg").read_bytes()
    upload = jpeg + b"\0" * (10_000 - len(jpeg))  # padding after the JPEG's end
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n\r\n'
        + upload
        + b"\r\n--b--\r\n"
    )
    head = (
        f"POST /api/similar?k=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(url, timeout=60) as sock:
        sock.sendall(head)
        for start in range(0, len(body), 250):
            sock.sendall(body[start : start + 250])
            time.sleep(0.25)
        data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    answer = json.loads(data.partition(b"\r\n\r\n")[2])
    assert answer["results"][0]["name"] == "red.jpg"
    with connect(url) as sock:
        sock.sendall(head)
        took = trickle(sock, body[:200], 0.05)
        data = read_all(sock)
    assert not data.startswith(b"HTTP/1.1 200")
    assert took < 6, took  # the 200 bytes would have taken 10 s


def test_each_request_on_a_kept_alive_connection_has_its_own_deadline(app_url) -> None:
    """A first request answered, 2 s of quiet (within the keep-alive), then a second
    request trickled: the second deadline counts from its first byte and cuts it off."""
    url, _ = app_url
    host = url.removeprefix("http://")
    request = f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    with connect(url) as sock:
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        time.sleep(2)
        trickle(sock, request, 0.1)
        data = read_all(sock)
    assert status_and_error(data)[0] == 408


def test_a_response_the_client_stops_reading_is_dropped(tmp_path: Path, quick: None) -> None:
    """An 8 MB original asked for by a client that then reads nothing: once the
    server's buffers are full for 1 s it drops the connection, so what the client reads
    later is cut short. A client that reads is sent it whole."""
    collection, photos, _ = make_collection(tmp_path)
    noise = np.random.default_rng(7).integers(0, 256, (1700, 1700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photos / "noise.png", compress_level=0)
    size = (photos / "noise.png").stat().st_size
    collection.index([photos])
    (noise_id,) = [r.id for r in collection.catalog.records() if r.path.endswith("noise.png")]
    with collection, serving(create_app(collection)) as url:
        host = url.removeprefix("http://")
        request = (
            f"GET /api/images/{noise_id}/file HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ).encode()
        whole = httpx.get(f"{url}/api/images/{noise_id}/file", timeout=30)
        assert whole.status_code == 200 and len(whole.content) == size
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            host_name, port = host.split(":")
            sock.settimeout(30)
            sock.connect((host_name, int(port)))
            sock.sendall(request)
            time.sleep(4)  # reads nothing
            data = read_all(sock)
    assert data.startswith(b"HTTP/1.1 200")
    assert len(data.partition(b"\r\n\r\n")[2]) < size


@contextmanager
def open_files_limit(soft: int) -> Iterator[None]:
    """Processes started in the block inherit a soft limit of ``soft`` open files."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.slow
def test_serve_keeps_answering_under_300_slow_connections(toy, offline_hub_env) -> None:
    """The real ``serve``, started with a soft limit of 256 open files: 300 connections
    that each send half a request head and wait. Before, every other client was
    refused until they left ("Too many open files"); now a search is answered at once
    (the limit was raised to the hard one), and each slow connection gets its 408
    after the 20 s ``HEAD_SECONDS``."""
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1024:
        pytest.skip("this machine's hard limit on open files is under 1,024")
    with ExitStack() as stack:
        with open_files_limit(256):
            url, child = stack.enter_context(server_process(toy, offline_hub_env))
        limits = Path(f"/proc/{child.pid}/limits").read_text()
        soft = int(next(ln for ln in limits.splitlines() if "open files" in ln).split()[3])
        assert soft > 1024, limits
        host = url.removeprefix("http://")
        started = time.monotonic()
        slow = [stack.enter_context(connect(url, timeout=40)) for _ in range(300)]
        for sock in slow:
            sock.sendall(f"GET /api/health HTTP/1.1\r\nHost: {host}\r\n".encode())
        answer = httpx.get(f"{url}/api/search", params={"q": "a red circle"}, timeout=20)
        assert answer.status_code == 200 and answer.json()["results"]
        answered = [status_and_error(read_all(sock))[0] for sock in slow]
        took = time.monotonic() - started
    assert answered == [408] * 300
    assert http.HEAD_SECONDS <= took < http.HEAD_SECONDS + 20, took
    print(f"\n300 slow connections: a search answered meanwhile; all 408 after {took:.1f} s")
