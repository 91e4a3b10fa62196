"""A shared catalog on a primary with synchronous replication whose standby is down.

A team that cannot lose a commit runs PostgreSQL with ``synchronous_standby_names``
(PostgreSQL's documentation, "Synchronous Replication": a commit waits until a
standby named there confirms it). When that standby goes down, every commit on the
primary waits for ever, by design, while the server answers everything else. Before,
``index`` hung there without a word. Now the watcher (``catalog_watch``) sees what the
waiting statement waits on (``SyncRep``) and says so in one line; the run goes on as
soon as the standby is back, and nothing is lost. For real: a primary, a streaming
standby made with ``pg_basebackup -R`` and stopped, the real CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clirunner import EXE, on_server
from imagegen import solid

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SAID = "waiting for a synchronous standby to confirm it (synchronous_standby_names = '*')"


class Lines:
    """A process's stderr, read line by line as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        assert process.stderr is not None
        self._stream = process.stderr
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.seen.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.seen if text in line]
            if found:
                return found[0]
            time.sleep(0.1)
        return None


def test_an_index_whose_commits_wait_for_a_standby_that_is_down_says_so_and_goes_on(
    tmp_path, own_cluster
):
    primary = own_cluster(durable=True)  # the test clusters' default commits without waiting
    url = primary.new_database()
    home = tmp_path / "idx"
    photos = tmp_path / "photos"
    solid(photos / "red.jpg", (250, 0, 0))
    first = on_server(home, url, "index", str(photos), "-m", "toy", "-c", "team")
    assert first.returncode == 0, first.stderr

    standby = primary.standby()
    try:
        primary.admin("ALTER SYSTEM SET synchronous_standby_names = '*'", "SELECT pg_reload_conf()")
        primary.caught_up(standby)
        standby.halt()  # the synchronous standby goes down
        solid(photos / "blue.png", (0, 0, 250), fmt="PNG")
        command = [EXE, "index", str(photos), "-c", "team", "--json"]
        command += ["--index-dir", str(home), "--database-url", url]
        started = time.monotonic()
        running = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
        )
        try:
            lines = Lines(running)
            said = lines.wait_for(SAID, timeout=40)
            assert said is not None, lines.seen
            assert time.monotonic() - started < 30  # a check comes 5 s into a wait
            assert "nothing committed is lost" in said and "pg_reload_conf()" in said
            time.sleep(2)
            assert running.poll() is None  # still waiting: the commit is not given up
            standby.start()  # back: it catches up and confirms the commit
            out, _ = running.communicate(timeout=120)
        finally:
            if running.poll() is None:
                running.kill()
    finally:
        primary.admin("ALTER SYSTEM RESET synchronous_standby_names", "SELECT pg_reload_conf()")
        standby.stop()
    assert running.returncode == 0, lines.seen
    assert sum(SAID in line for line in lines.seen) == 1, lines.seen  # said once
    assert '"added": 1' in out, out
    found = on_server(home, url, "search", "blue", "-c", "team", "-k", "2")
    assert found.returncode == 0, found.stderr
    assert {Path(line.split()[1]).name for line in found.stdout.splitlines()} == {
        "red.jpg",
        "blue.png",
    }


def test_a_line_that_cannot_be_written_neither_holds_nor_ends_the_watching():
    """The line is said outside the watcher's lock: a stderr that blocks (a pipe
    nobody reads) holds up no other connection's round trip, and one that fails (a
    closed pipe) does not end the watching: a server lost meanwhile is still cut."""
    import socket

    from searchengine.catalog_watch import Check, Watcher

    telling, release = threading.Event(), threading.Event()

    def blocked_then_broken(line: str) -> None:
        telling.set()
        release.wait(10)
        raise BrokenPipeError(line)

    watcher = Watcher(check_after=0.2, tick=0.05, tell=blocked_then_broken)
    held, held_peer = socket.socketpair()
    lost, lost_peer = socket.socketpair()
    on_standby = lambda backends: Check(None, frozenset(backends), "*")  # noqa: E731
    with watcher.waiting(held.fileno(), ("primary",), on_standby, backend=42):
        assert telling.wait(10)
        entered = time.monotonic()
        with watcher.waiting(lost.fileno(), ("other",), lambda backends: Check("gone")) as wait:
            assert time.monotonic() - entered < 1  # not held up by the line being said
            release.set()
            deadline = time.monotonic() + 10
            while wait.cut is None and time.monotonic() < deadline:
                time.sleep(0.05)
    assert wait.cut is not None and wait.cut.startswith("gone, while a statement had waited")
    assert lost.recv(1) == b""  # shut
    for sock in (held, held_peer, lost, lost_peer):
        sock.close()


def test_the_line_lands_below_a_progress_bar_not_in_it(capsys):
    """On a terminal ``index`` draws a tqdm bar on stderr; the watcher's line clears
    the bar, starts at the beginning of a line of its own, and the bar is drawn again
    after it."""
    from tqdm import tqdm

    from searchengine.catalog_watch import stderr_line

    bar = tqdm(total=10, desc="indexing", file=sys.stderr, disable=False, mininterval=0)
    bar.update(4)
    capsys.readouterr()  # the bar so far
    stderr_line("the catalog server has held a commit for 5 s")
    bar.close()
    written = capsys.readouterr().err
    before, after = written.split("the catalog server has held a commit for 5 s\n")
    assert before.endswith("\r") and "indexing" not in before  # the bar taken off first
    assert "indexing:  40%" in after  # and drawn again below
