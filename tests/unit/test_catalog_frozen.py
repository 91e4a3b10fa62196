"""A catalog server that stops answering while its connections stay open: its
processes stopped (SIGSTOP, ``Cluster.frozen``) as a hung disk or a paused process
leaves them, the kernel still acknowledging every packet and keepalive. For real: a
live PostgreSQL server, the product's own engine, the real CLI and ``serve``.

Before ``catalog_watch``, a statement on such a server waited for ever: a web server's
search got no answer in 150 s (and every search queued behind it), a command hung
until Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from clirunner import on_server
from imagegen import solid
from servertools import serve_command

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STOPPED = "the server stopped answering"
UNREACHABLE = "the collection's catalog database cannot be reached now; try again shortly"


@pytest.fixture
def cluster(own_cluster):
    return own_cluster()


@pytest.fixture
def team(tmp_path, cluster):
    """A collection ``team`` of two photos on the cluster: (index dir, URL)."""
    photos = tmp_path / "photos"
    solid(photos / "red.jpg", (250, 0, 0))
    solid(photos / "blue.png", (0, 0, 250), fmt="PNG")
    url = cluster.new_database()
    home = tmp_path / "idx"
    indexed = on_server(home, url, "index", str(photos), "-m", "toy", "-c", "team")
    assert indexed.returncode == 0, indexed.stderr
    return home, url


def engine_for(url: str):
    from searchengine.backends import create_catalog_engine, server_location

    return create_catalog_engine(server_location(url, "team"))


def timed(call):
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except Exception as exc:  # what the caller asserts on
        return exc, time.monotonic() - started


def test_a_statement_on_a_server_that_stops_answering_fails_in_seconds_then_it_recovers(
    cluster,
):
    """A statement in flight when the server's processes stop: after 5 s its server is
    checked, a new connection gets no answer in 5 s, the statement fails saying so
    (~10 s, not never). Once the processes run again, the same engine works."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    engine = engine_for(cluster.new_database())
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1
    with ThreadPoolExecutor(1) as pool:

        def slow_select():
            with engine.connect() as conn:
                return conn.scalar(text("SELECT 7 FROM pg_sleep(3)"))

        asked = pool.submit(timed, slow_select)
        time.sleep(0.5)  # the statement is on the server
        with cluster.frozen():
            got, took = asked.result(timeout=60)
    print(f"\nstatement in flight: failed in {took:.1f} s")
    assert isinstance(got, OperationalError), got
    assert STOPPED in str(got) and "no answer in 5 s" in str(got)
    assert 9 <= took < 25, took
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 1")) == 1
    engine.dispose()


def test_a_slow_statement_on_a_server_that_answers_is_left_to_finish(cluster, monkeypatch):
    """The check runs every second here: a statement of 3.5 s is checked three times,
    the server answers each time, and the statement gives its result."""
    from sqlalchemy import text

    from searchengine import catalog_watch

    monkeypatch.setattr(catalog_watch.WATCHER, "check_after", 1.0)
    checks: list[str | None] = []
    real = catalog_watch.probe

    def counted(*args):
        check = real(*args)
        checks.append(check.lost)
        return check

    monkeypatch.setattr(catalog_watch, "probe", counted)
    engine = engine_for(cluster.new_database())
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT 7 FROM pg_sleep(3.5)")) == 7
    engine.dispose()
    assert len(checks) >= 2 and checks == [None] * len(checks)


def test_a_search_waiting_on_a_server_that_stops_answering_exits_in_one_line(
    tmp_path, cluster, team
):
    """``search`` waits for a table a migration holds (the URL allows 60 s); the server
    stops: one line saying so and exit 1 in ~10 s, not at the lock time-out or never."""
    import psycopg

    home, url = team
    waits = f"{url}?options={quote('-c lock_timeout=60s')}"
    with psycopg.connect(url) as admin, ThreadPoolExecutor(1) as pool:
        admin.execute("ALTER TABLE se_team.images ADD COLUMN note text")
        searching = pool.submit(
            timed, lambda: on_server(home, waits, "search", "red", "-c", "team", "--json")
        )
        time.sleep(4)  # the command has started (~1 s) and waits for the lock
        with cluster.frozen():
            done, took = searching.result(timeout=90)
        admin.rollback()
    print(f"\nsearch waiting on the server: exit in {took:.1f} s")
    assert isinstance(done, subprocess.CompletedProcess), done
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert STOPPED in lines[0] and "setest-secret" not in lines[0], lines
    assert took < 30, took  # 4 s before the stop, ~10 s after it


def ask(base: str, q: str) -> tuple[int | None, str | None, float]:
    started = time.monotonic()
    try:
        answer = httpx.get(f"{base}/api/search", params={"q": q}, timeout=120)
    except httpx.TimeoutException:
        return None, "no answer", time.monotonic() - started
    body = answer.json()
    return answer.status_code, body.get("error"), time.monotonic() - started


def test_the_web_server_answers_503_while_its_catalog_server_is_stopped_then_results(
    tmp_path, cluster, team
):
    """``serve``: a search while the server's processes are stopped and its connection
    sits in the pool is a 503 in ~20 s (the check, then the pool's new connection
    waits its 10 s connect_timeout); one already waiting on the server when it stops,
    in ~10 s. The log says why; once the server runs again, results."""
    import psycopg

    home, url = team
    where = ["-c", "team", "--index-dir", str(home), "--database-url", url]
    with serve_command(tmp_path, os.environ, *where) as (base, _child):
        assert ask(base, "red")[0] == 200
        with cluster.frozen():
            idle = ask(base, "blue")
        assert ask(base, "red")[0] == 200
        with psycopg.connect(url) as admin, ThreadPoolExecutor(1) as pool:
            admin.execute("ALTER TABLE se_team.images ADD COLUMN note text")
            waiting = pool.submit(ask, base, "blue")
            time.sleep(1)  # the search waits for the lock (the server's 3 s)
            with cluster.frozen():
                mid = waiting.result(timeout=120)
            admin.rollback()
        after = ask(base, "red")
    print(f"\nserve: idle {idle[0]} in {idle[2]:.1f} s, in flight {mid[0]} in {mid[2]:.1f} s")
    assert idle[:2] == (503, UNREACHABLE) and idle[2] < 40, idle
    assert mid[:2] == (503, UNREACHABLE) and mid[2] < 25, mid
    assert after[0] == 200
    log = next(Path(tmp_path).glob("serve-*.log")).read_text(errors="replace")
    assert STOPPED in log


def test_the_watcher_never_shuts_a_socket_after_its_wait_has_ended():
    """A round trip whose answer comes while its server is being checked is left
    alone: the socket, which the connection may since have closed and the process
    reused, is not shut."""
    import socket

    from searchengine.catalog_watch import Check, Watcher

    mine, theirs = socket.socketpair()
    checking = threading.Event()
    release = threading.Event()

    def slow_lost_probe(backends):
        checking.set()
        release.wait(10)
        return Check("lost")

    watcher = Watcher(check_after=0.2, tick=0.05)
    with watcher.waiting(mine.fileno(), ("s",), slow_lost_probe) as wait:
        assert checking.wait(10)
    release.set()  # the verdict comes after the wait ended
    time.sleep(0.3)
    assert wait.cut is None
    theirs.sendall(b"x")
    assert mine.recv(1) == b"x"  # still open both ways
    mine.sendall(b"y")
    assert theirs.recv(1) == b"y"
    mine.close()
    theirs.close()
