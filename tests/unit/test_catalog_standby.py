"""A shared catalog read from a hot standby: a team's search-only hosts pointed at a
replica of the primary (``pg_basebackup -R``, streaming), as PostgreSQL's own
high-availability setups offer. Searching there works and follows the primary's
writes; writing there is refused by the server (``read_only_sql_transaction``), and
``index`` ended in a SQLAlchemy traceback. It now ends in one line that says to index
against the primary, and leaves nothing behind. Live servers, real replication."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clirunner import on_server, spawn
from imagegen import solid
from pgcluster import PASSWORD

from searchengine import Collection, Config
from searchengine.models.fake import FakeEncoder

pytestmark = pytest.mark.postgres

NO_WRITES = (
    "the server takes no writes (a standby, i.e. a replica of the primary, or "
    "default_transaction_read_only is on); run index and remove against the primary server"
)


cli = on_server


@pytest.fixture(scope="module")
def primary_and_standby(tmp_path_factory, module_cluster):
    """A primary holding collection ``team`` (red, green, blue in ``photos``; indexed by
    host ``a``), and a hot standby of it; yields (primary, standby, database name,
    photos). A standby takes ~10 s to copy and start: one for the module."""
    primary = module_cluster
    url = primary.new_database()
    photos = tmp_path_factory.mktemp("primary") / "photos"
    for name, colour in (("red", (250, 0, 0)), ("green", (0, 250, 0)), ("blue", (0, 0, 250))):
        solid(photos / f"{name}.jpg", colour)
    done = cli(photos.parent / "a", url, "index", str(photos), "-m", "toy", "-c", "team")
    assert done.returncode == 0, done.stderr
    standby = primary.standby()
    yield primary, standby, url.rsplit("/", 1)[1], photos
    standby.stop()


def test_search_on_a_standby_works_and_index_there_is_refused_in_one_line(
    tmp_path, primary_and_standby
):
    _, standby, database, _ = primary_and_standby
    replica = standby.url(database)
    found = cli(tmp_path / "b", replica, "search", "red", "-c", "team", "--json")
    assert found.returncode == 0, found.stderr
    assert Path(json.loads(found.stdout)[0]["path"]).name == "red.jpg"
    solid(tmp_path / "more" / "yellow.jpg", (250, 250, 0))
    for host, collection in (("b", "team"), ("c", "fresh")):  # an existing one, a new one
        more = ["index", str(tmp_path / "more"), "-c", collection, "-m", "toy"]
        done = cli(tmp_path / host, replica, *more)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert "in a read-only transaction: " + NO_WRITES in lines[0], lines[0]
        assert "Traceback" not in done.stderr and "setest-secret" not in lines[0]
    assert not (tmp_path / "c").exists()  # nothing left of the collection never made
    status = cli(tmp_path / "b", replica, "status", "-c", "team", "--json")
    assert json.loads(status.stdout)["images"] == 3  # the refused run wrote nothing
    removed = spawn(  # host b's folder records the standby's URL, without the password
        *["remove", "-c", "team", "--yes", "--index-dir", str(tmp_path / "b")],
        env={**os.environ, "PGPASSWORD": PASSWORD},
    )
    lines = removed.stderr.strip().splitlines()
    assert removed.returncode == 1 and len(lines) == 1, removed.stderr
    assert "cannot execute DROP SCHEMA in a read-only transaction: " + NO_WRITES in lines[0]
    assert (tmp_path / "b" / "team").is_dir()  # nothing removed, here or on the server
    assert cli(tmp_path / "b", replica, "status", "-c", "team").returncode == 0


def test_a_web_server_on_a_standby_serves_what_the_primary_gains(tmp_path, primary_and_standby):
    """A web server reading the standby answers, and after host ``a`` indexes a photo
    on the primary and the standby replays it, finds that photo too."""
    from fastapi.testclient import TestClient

    from searchengine.server import create_app

    primary, standby, database, photos = primary_and_standby
    encoder = FakeEncoder()
    writer_config = Config(home=tmp_path / "w", workers=1, database_url=primary.url(database))
    with Collection.open("other", writer_config, create=True, encoder=encoder) as writer:
        writer.index([photos])
    primary.caught_up(standby)
    config = Config(home=tmp_path / "s", workers=1, database_url=standby.url(database))
    serving = Collection.open("other", config, encoder=encoder)
    with serving, TestClient(create_app(serving), base_url="http://127.0.0.1:8765") as client:
        first = client.get("/api/search", params={"q": "red"})
        assert first.status_code == 200 and first.json()["results"][0]["name"] == "red.jpg"
        solid(photos / "yellow.jpg", (250, 250, 0))
        with Collection.open("other", writer_config, encoder=encoder) as writer:
            assert writer.index([photos]).added == 1
        primary.caught_up(standby)
        again = client.get("/api/search", params={"q": "yellow"})
        assert again.status_code == 200 and again.json()["results"][0]["name"] == "yellow.jpg"
        assert client.get("/api/status").json()["images"] == 4


def test_a_host_follows_its_catalog_to_a_promoted_standby_as_the_refusal_says(
    tmp_path, primary_and_standby
):
    """A failover: the standby is promoted to primary, at another address. Host ``a``
    (which indexed the collection, and holds its index file) is refused the new URL, in
    a line that says how to follow the catalog there; doing that, its next ``index``
    builds the index from the catalog and embeds nothing. The last test of the module:
    it promotes the module's standby."""
    primary, standby, database, photos = primary_and_standby
    host_a = photos.parent / "a"
    promoted = standby.url(database)
    standby.promote()
    refused = cli(host_a, promoted, "index", str(photos), "-c", "team")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    follow = f"`searchengine remove -c team --index-dir {host_a} --local`"
    assert "if the catalog has moved there (a failover to a standby" in lines[0]
    assert follow in lines[0] and "nothing is embedded again" in lines[0]
    command = follow.strip("`").split()  # the command as the line gives it
    left = spawn(*command[1:], "--yes")
    assert left.returncode == 0, left.stderr
    again = cli(host_a, promoted, "index", str(photos), "-c", "team", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    new = len(list(photos.iterdir())) - 3  # photos an earlier test of the module added
    assert (report["added"], report["unchanged"]) == (new, 3)  # the 3 not embedded again
    found = cli(host_a, promoted, "search", "red", "-c", "team", "--json")
    assert Path(json.loads(found.stdout)[0]["path"]).name == "red.jpg"
    del primary
