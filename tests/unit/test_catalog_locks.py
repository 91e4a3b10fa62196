"""A shared catalog whose tables another session keeps locked: maintenance on the
server (``ALTER TABLE`` in an open transaction, ``VACUUM FULL``, ``REINDEX``) or a
collection being removed. Every statement waited for the lock for ever, so every
search on every host hung with no word; each now gives up after the server's
``lock_timeout`` (``backends.LOCK_TIMEOUT_S``, or the URL's own) in one line, and the
web server answers 503. Live server, real locks."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
from clirunner import on_server
from imagegen import solid

from searchengine import Collection, Config
from searchengine.models.fake import FakeEncoder

pytestmark = pytest.mark.postgres

RED, GREEN, BLUE = (250, 0, 0), (0, 250, 0), (0, 0, 250)
LOCKED = "another session held a lock on the collection's tables"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    solid(folder / "red.jpg", RED)
    solid(folder / "green.png", GREEN, fmt="PNG")
    solid(folder / "blue.webp", BLUE)
    return folder


@contextmanager
def migration_in_progress(url: str, schema: str = "se_team"):
    """An administrator's ``ALTER TABLE`` on the collection's images, its transaction
    left open (a migration under way): it holds the table's ACCESS EXCLUSIVE lock,
    which every read waits for, until it ends (here: rolled back)."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(f"ALTER TABLE {schema}.images ADD COLUMN note text")  # type: ignore[arg-type]
        yield
        conn.rollback()


def with_options(url: str, options: str) -> str:
    """``url`` with libpq's ``options`` (server settings) in its query."""
    return f"{url}{'&' if '?' in url else '?'}options={quote(options)}"


def cli(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return on_server(home, url, *args, "-c", "team")


def test_every_connection_waits_for_a_lock_at_most_the_default_or_the_urls_time_out(pg_cluster):
    """Each server connection the product makes sets ``lock_timeout`` (30 s); the URL's
    own ``?options=`` reach the server and win (they were dropped); its ``search_path``
    stays the collection's whatever the URL says."""
    from sqlalchemy import text

    from searchengine.backends import LOCK_TIMEOUT_S, create_catalog_engine, server_location

    url = pg_cluster.new_database()
    shown = "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
    for given, expected in (
        (url, (f"{LOCK_TIMEOUT_S}s", "0")),
        (with_options(url, "-c lock_timeout=2s -c statement_timeout=9s"), ("2s", "9s")),
        (with_options(url, "-c search_path=public"), (f"{LOCK_TIMEOUT_S}s", "0")),
    ):
        engine = create_catalog_engine(server_location(given, "team"))
        with engine.connect() as conn:
            assert tuple(conn.execute(text(shown)).one()) == expected
            assert conn.scalar(text("SELECT current_setting('search_path')")) == "se_team"
        engine.dispose()
    pg_cluster.give_back(url)


def test_a_search_behind_a_locked_table_gives_up_in_one_line_then_works(
    tmp_path, photos, pg_cluster
):
    """``search`` while a migration holds the images table: after the lock time-out
    (here the URL's 2 s), exit 1 and one line naming the cause and what to do; once
    the migration ends, the same command finds the photo."""
    from searchengine.backends import LOCK_TIMEOUT_S

    url = pg_cluster.new_database()
    home = tmp_path / "idx"
    indexed = cli(home, url, "index", str(photos), "-m", "toy")
    assert indexed.returncode == 0, indexed.stderr
    searching = with_options(url, "-c lock_timeout=2s")
    with migration_in_progress(url):
        started = time.monotonic()
        done = cli(home, searching, "search", "red", "--json")
        took = time.monotonic() - started
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and LOCKED in lines[0], done.stderr
        assert "VACUUM FULL, ALTER TABLE" in lines[0] and "lock_timeout%3D" in lines[0]
        assert "setest-secret" not in lines[0] and done.stdout == ""
        assert 2 <= took < LOCK_TIMEOUT_S  # the URL's own setting, not the default
    done = cli(home, searching, "search", "red", "--json")
    assert done.returncode == 0, done.stderr
    assert Path(json.loads(done.stdout)[0]["path"]).name == "red.jpg"
    pg_cluster.give_back(url)


def test_index_behind_a_locked_table_keeps_what_it_committed_and_resumes(
    tmp_path, photos, pg_cluster
):
    """``index`` of new photos while a migration holds the images table: one line
    saying what was kept (not "once it is up": the server is up), nothing half-written;
    the same command afterwards adds exactly the new photos."""
    url = pg_cluster.new_database()
    home = tmp_path / "idx"
    assert cli(home, url, "index", str(photos), "-m", "toy").returncode == 0
    for name, colour in (("cyan.jpg", (0, 250, 250)), ("pink.jpg", (250, 0, 250))):
        solid(photos / "more" / name, colour)
    waiting = with_options(url, "-c lock_timeout=2s")
    with migration_in_progress(url):
        done = cli(home, waiting, "index", str(photos))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and LOCKED in lines[-1], done.stderr
    assert lines[-1].endswith("to the URL); what was committed is kept"), lines[-1]
    done = cli(home, waiting, "index", str(photos), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["added"], summary["failed"]) == (2, 0), summary
    pg_cluster.give_back(url)


def test_the_web_server_answers_503_while_a_table_is_locked_then_serves(
    tmp_path, photos, pg_cluster, caplog
):
    """A web server whose catalog's images table a migration holds: each search is
    answered 503 with Retry-After after the URL's lock time-out, saying the catalog is
    locked (not that the server is down); once the migration ends, results as before.
    The URL's ``search_path`` cannot move the collection to another schema."""
    from fastapi.testclient import TestClient

    from searchengine.server import create_app

    url = pg_cluster.new_database()
    config = Config(home=tmp_path / "a", workers=1, batch_size=2, database_url=url)
    encoder = FakeEncoder()
    with Collection.open("team", config, create=True, encoder=encoder) as writer:
        writer.index([photos])
    hostile = with_options(url, "-c lock_timeout=2s -c search_path=public")
    serving = Collection.open(
        "team",
        Config(home=tmp_path / "s", workers=1, batch_size=2, database_url=hostile),
        encoder=encoder,
    )
    with serving, TestClient(create_app(serving), base_url="http://127.0.0.1:8765") as client:
        assert client.get("/api/search", params={"q": "red"}).status_code == 200  # warm
        with migration_in_progress(url):
            started = time.monotonic()
            answer = client.get("/api/search", params={"q": "red"})
            assert time.monotonic() - started < 30  # the URL's 2 s, not the default 30
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "5"
            assert answer.json() == {
                "error": "the collection's catalog is locked by another session now; "
                "try again shortly"
            }
        assert LOCKED in caplog.text and "Traceback" not in caplog.text
        again = client.get("/api/search", params={"q": "blue"})
        assert again.status_code == 200 and again.json()["results"][0]["name"] == "blue.webp"
    pg_cluster.give_back(url)


def test_serve_answers_each_search_and_its_health_check_in_seconds_while_a_table_is_locked(
    tmp_path, photos, pg_cluster
):
    """``searchengine serve`` waits for a locked table ``SERVE_LOCK_TIMEOUT_S`` (3 s),
    not a command's 30 s: its searches queue for one worker, so three searches sent at
    once while a migration held the table were answered after 30, 60 and 90 s, and each
    health check took 30 s. Now each is a 503 within seconds, and the server serves as
    soon as the lock is gone."""
    import httpx
    from servertools import serve_command

    from searchengine.backends import LOCK_TIMEOUT_S, SERVE_LOCK_TIMEOUT_S

    url = pg_cluster.new_database()
    home = tmp_path / "idx"
    indexed = cli(home, url, "index", str(photos), "-m", "toy")
    assert indexed.returncode == 0, indexed.stderr
    where = ["-c", "team", "--index-dir", str(home), "--database-url", url]
    with serve_command(tmp_path, os.environ, *where) as (base, _child):
        with migration_in_progress(url):
            started = time.monotonic()

            def search(query: str) -> tuple[httpx.Response, float]:
                answer = httpx.get(f"{base}/api/search", params={"q": query}, timeout=200)
                return answer, time.monotonic() - started

            def health(_: int) -> tuple[httpx.Response, float]:
                probe = time.monotonic()
                answer = httpx.get(f"{base}/api/health", timeout=200)
                return answer, time.monotonic() - probe

            with ThreadPoolExecutor(4) as pool:
                probes = pool.submit(lambda: [health(i) for i in range(3)])
                searches = list(pool.map(search, ["red", "green", "blue"]))
                checks = probes.result()
        print(
            f"\nsearches answered at {[round(t, 1) for _, t in searches]} s; health took "
            f"{[round(t, 1) for _, t in checks]} s"
        )
        for answer, _ in searches:
            assert answer.status_code == 503, answer.text
            assert "locked by another session" in answer.json()["error"]
        # Queued one behind the other, each waits the server's time-out, not 30 s.
        slowest = max(took for _, took in searches)
        assert slowest < 3 * SERVE_LOCK_TIMEOUT_S + 10 < LOCK_TIMEOUT_S, searches
        for answer, took in checks:
            assert answer.status_code in (200, 503), answer.text
            assert took < SERVE_LOCK_TIMEOUT_S + 10 < LOCK_TIMEOUT_S
        found = httpx.get(f"{base}/api/search", params={"q": "red"}, timeout=60)
        assert found.status_code == 200 and found.json()["results"]
    pg_cluster.give_back(url)


def test_a_statement_timeout_the_administrator_set_is_named_with_what_lifts_it(
    tmp_path, pg_cluster, photos
):
    """A database whose administrator set ``statement_timeout`` (here so short that
    every statement meets it): ``index`` ends in one line that names the setting and
    how to lift it for searchengine alone, not "check the URL and that the server is
    up"; with the URL's options the line gives, the same command indexes."""
    url = pg_cluster.new_database()
    database = url.rsplit("/", 1)[1]
    pg_cluster.admin(f"ALTER DATABASE {database} SET statement_timeout = '1ms'")
    try:
        home = tmp_path / "idx"
        refused = cli(home, url, "index", str(photos), "-m", "toy")
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 1 and len(lines) == 1, refused.stderr
        assert "canceling statement due to statement timeout" in lines[0]
        assert "the server's statement_timeout (set for this database or role" in lines[0]
        assert "check --database-url" not in lines[0] and "Traceback" not in refused.stderr
        assert not (home / "team").exists()  # nothing left of the collection never made
        lifted = lines[0].rsplit("add ", 1)[1].split(" to the URL")[0]  # as the line says
        assert lifted == "?options=-c%20statement_timeout%3D0"
        done = cli(home, url + lifted, "index", str(photos), "-m", "toy", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["added"] == 3
    finally:
        pg_cluster.admin(f"ALTER DATABASE {database} RESET statement_timeout")


def test_a_role_at_its_connection_limit_is_told_so_not_to_check_the_url(
    tmp_path, pg_cluster, photos
):
    """A read-only role whose administrator allows it one connection, held by another
    of its sessions: ``search`` ends in one line that says the limit is reached, not
    "check the URL and that the server is up"; once that session ends, it searches."""
    import psycopg

    url = pg_cluster.new_database()
    assert cli(tmp_path / "a", url, "index", str(photos), "-m", "toy").returncode == 0
    viewer = pg_cluster.viewer(url, "ALTER ROLE {role} CONNECTION LIMIT 1")
    with psycopg.connect(viewer):  # the role's one connection, taken
        turned_away = cli(tmp_path / "b", viewer, "search", "red")
    lines = turned_away.stderr.strip().splitlines()
    assert turned_away.returncode == 1 and len(lines) == 1, turned_away.stderr
    assert "too many connections for role" in lines[0]
    assert "the server has no connection free for this role or database" in lines[0]
    assert "check --database-url" not in lines[0] and ":look@" not in lines[0]  # no password
    found = cli(tmp_path / "b", viewer, "search", "red", "--json")
    assert found.returncode == 0, found.stderr
    assert Path(json.loads(found.stdout)[0]["path"]).name == "red.jpg"
