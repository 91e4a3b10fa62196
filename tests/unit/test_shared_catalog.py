"""A catalog on a live PostgreSQL server, as a team would share it: several collections
in one database, several hosts (here: several ``SEARCHENGINE_HOME`` folders) writing
and reading one collection, a read-only role, and every way a connection can fail."""

from __future__ import annotations

import json
import os
import random
import re
import string
import threading

import pytest
from click.testing import CliRunner
from imagegen import solid
from servertools import FakeCaptioner

from searchengine import Collection, Config
from searchengine.cli import main
from searchengine.errors import CollectionError, CollectionLockedError
from searchengine.models.fake import FakeEncoder

RED, GREEN, BLUE, YELLOW = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)


def names(results):
    return [os.path.basename(r.path) for r in results]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    solid(folder / "red.jpg", RED)
    solid(folder / "green.png", GREEN, fmt="PNG")
    solid(folder / "trip" / "blue.webp", BLUE)
    return folder


def host(tmp_path, name: str, url: str | None) -> Config:
    """One machine's settings: its own collections folder, the shared database."""
    return Config(home=tmp_path / name, workers=1, batch_size=2, database_url=url)


def test_a_3000_byte_path_indexes_and_is_found(tmp_path, database_url):
    deep = tmp_path / "photos" / os.path.join(*[f"{i:02d}" + "d" * 248 for i in range(12)])
    image = solid(deep / "sunset.jpg", YELLOW)
    assert len(os.fsencode(str(image))) > 3000
    solid(tmp_path / "photos" / "red.jpg", RED)
    config = host(tmp_path, "idx", database_url)
    with Collection.open("long", config, create=True, encoder=FakeEncoder()) as coll:
        assert coll.index([tmp_path / "photos"]).added == 2
        assert [r.path for r in coll.search("yellow", k=1)] == [str(image)]
        assert coll.index().unchanged == 2  # and every later run works too


def test_a_root_folder_path_of_3000_random_bytes_is_indexed_or_refused_in_one_line(
    tmp_path, database_url
):
    # Random names: PostgreSQL compresses a repetitive key below its B-tree limit.
    rnd = random.Random(7)
    alphabet = string.ascii_letters + string.digits
    parts = ["".join(rnd.choice(alphabet) for _ in range(250)) for _ in range(12)]
    deep = tmp_path / "photos" / os.path.join(*parts)
    solid(deep / "red.jpg", RED)
    assert len(os.fsencode(str(deep))) > 3000
    args = ["index", str(deep), "-m", "toy", "-c", "long", "--index-dir", str(tmp_path / "h")]
    env = {"SEARCHENGINE_DATABASE_URL": database_url} if database_url else {}
    result = CliRunner().invoke(main, args, env=env)
    if database_url is None:  # SQLite has no key limit
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "too long for a PostgreSQL catalog" in result.output
    assert "server is up" not in result.output  # not a connection problem
    short = tmp_path / "short"
    short.symlink_to(deep)  # what the message suggests
    args[1] = str(short)
    result = CliRunner().invoke(main, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 1


@pytest.mark.postgres
def test_collections_in_one_database_stay_separate(tmp_path, photos, pg_cluster):
    url = pg_cluster.new_database()
    config = host(tmp_path, "idx", url)
    other = tmp_path / "other"
    solid(other / "yellow.jpg", YELLOW)
    encoder = FakeEncoder()
    with Collection.open("main", config, create=True, encoder=encoder) as main_coll:
        assert main_coll.index([photos]).added == 3
    with Collection.open("second", config, create=True, encoder=encoder) as second:
        assert second.index([other]).added == 1
        assert names(second.search("red", k=10)) == ["yellow.jpg"]
    with Collection.open("main", config, encoder=encoder) as main_coll:
        assert main_coll.status().images == 3
        assert names(main_coll.search("yellow", k=10)) != ["yellow.jpg"]
        assert "yellow.jpg" not in names(main_coll.search("yellow", k=10))
        report = main_coll.index()
        assert (report.unchanged, report.added, report.removed) == (3, 0, 0)
        assert set(main_coll.vectors().ids()) == main_coll.catalog.ok_ids()


@pytest.mark.postgres
def test_the_second_host_is_refused_while_the_first_writes_and_loses_nothing(
    tmp_path, photos, pg_cluster
):
    url = pg_cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
        b = Collection.open("team", host(tmp_path, "b", url), create=True, encoder=encoder)
        refused = pytest.raises(CollectionLockedError, match=f"process {os.getpid()} on ")
        with b, a.store.writing(), refused:
            b.index([photos])
        solid(photos / "yellow.jpg", YELLOW)
        assert a.index().added == 1
        a_results = a.search("yellow", k=4)
    encoded = encoder.images_encoded
    with Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as b:
        # Host b has never had an index file: its reader builds one from the catalog.
        assert names(b.search("yellow", k=4)) == names(a_results)
        report = b.index()  # the writer on host b saves it, embedding nothing
        assert (report.unchanged, report.added, report.removed) == (4, 0, 0)
        assert encoder.images_encoded == encoded
        assert set(b.vectors().ids()) == b.catalog.ok_ids()
        assert (tmp_path / "b" / "team" / "vectors.faiss").exists()


@pytest.mark.postgres
def test_a_reader_on_another_host_sees_what_a_writer_adds(tmp_path, photos, pg_cluster):
    url = pg_cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
        with Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as reader:
            assert len(reader.search("red", k=10)) == 3
            assert not reader.store.refresh()
            solid(photos / "yellow.jpg", YELLOW)
            a.index()
            assert reader.store.refresh()  # what the web server does before each query
            assert names(reader.search("yellow", k=1)) == ["yellow.jpg"]
    assert not (tmp_path / "b").exists()  # a reader writes nothing, not even a folder


@pytest.mark.postgres
def test_a_read_only_role_searches(tmp_path, photos, pg_cluster):
    url = pg_cluster.new_database()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=FakeEncoder()) as a:
        a.index([photos])
    viewer = pg_cluster.viewer(url)
    with Collection.open("team", host(tmp_path, "v", viewer), encoder=FakeEncoder()) as coll:
        assert names(coll.search("blue", k=1)) == ["blue.webp"]
        info = coll.status()  # this host has no index file: built from the catalog
        assert (info.images, info.vectors) == (3, 3)
        captioner = FakeCaptioner()  # made for the answer, not stored (the role may not)
        ids = [r.id for r in coll.search("blue", k=3)]
        assert len(coll.caption(ids, captioner)) == 3
        assert len(coll.caption(ids, captioner)) == 3 and captioner.calls == 6
    more = tmp_path / "more"
    solid(more / "yellow.jpg", YELLOW)
    result = CliRunner().invoke(
        main,
        ["index", str(more), "-c", "team", "--index-dir", str(tmp_path / "w")],
        env={"SEARCHENGINE_DATABASE_URL": viewer},
    )
    assert result.exit_code == 1
    assert "permission denied" in result.output and len(result.output.splitlines()) == 1
    assert "this database role may not do that; to index, a role needs" in result.output


@pytest.mark.postgres
def test_a_role_that_may_not_make_schemas_indexes_into_the_schema_made_for_it(
    tmp_path, photos, pg_cluster
):
    """A team's database where the application's role may not create schemas (the
    usual grant on a managed server): ``index`` says what an administrator runs, and
    once the collection's schema is made for the role, the same command works."""
    url = pg_cluster.new_database()
    database, role = url.rsplit("/", 1)[1], "app_" + "".join(random.choices("abcdef", k=8))
    pg_cluster.admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    pg_cluster.admin(f"GRANT CONNECT ON DATABASE {database} TO {role}", database=database)
    app = pg_cluster.url(database, user=role, password="pw")
    args = ["index", str(photos), "-c", "team", "--index-dir", str(tmp_path / "h"), "-m", "toy"]
    refused = CliRunner().invoke(main, [*args, "--database-url", app])
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1, refused.output
    assert f"permission denied for database {database}: this database role may not" in (
        refused.output
    )
    assert "CREATE SCHEMA se_<collection> AUTHORIZATION <role>" in refused.output
    assert not (tmp_path / "h").exists()
    pg_cluster.admin(f"CREATE SCHEMA se_team AUTHORIZATION {role}", database=database)
    done = CliRunner().invoke(main, [*args, "--database-url", app, "--json"])
    assert done.exit_code == 0 and json.loads(done.output)["added"] == 3, done.output


@pytest.mark.postgres
def test_a_collection_is_opened_only_where_its_catalog_is(
    tmp_path, photos, pg_cluster, monkeypatch
):
    url = pg_cluster.new_database()
    home = tmp_path / "idx"
    with Collection.open("local", Config(home=home), create=True, encoder=FakeEncoder()) as c:
        c.index([photos])
    with pytest.raises(CollectionError, match=r"keeps its catalog in .*catalog\.sqlite"):
        Collection.open("local", Config(home=home, database_url=url))
    with Collection.open("team", Config(home=home, database_url=url), create=True, model="toy"):
        pass
    recorded = json.loads((home / "team" / "catalog.json").read_text())
    assert recorded["backend"] == "postgresql" and "setest-secret" not in json.dumps(recorded)
    elsewhere = pg_cluster.new_database()
    with pytest.raises(CollectionError, match="keeps its catalog in postgresql"):
        Collection.open("team", Config(home=home, database_url=elsewhere))
    # No URL: the recorded one, with the password from libpq's environment.
    monkeypatch.setenv("PGPASSWORD", "setest-secret")
    with Collection.open("team", Config(home=home)) as coll:
        assert coll.status().backend == "postgresql"


@pytest.mark.postgres
def test_status_shows_the_database_without_its_password(tmp_path, photos, pg_cluster):
    url = pg_cluster.new_database()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=FakeEncoder()) as a:
        a.index([photos])
        info = a.status()
    assert info.backend == "postgresql" and "***" in info.catalog
    assert "setest-secret" not in info.catalog and info.catalog_bytes > 0
    assert info.size_bytes > info.catalog_bytes  # the index file counts too
    result = CliRunner().invoke(
        main, ["status", "-c", "team", "--index-dir", str(tmp_path / "a"), "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    assert "catalog     postgresql: postgresql+psycopg://setest:***@127.0.0.1" in result.output
    assert "setest-secret" not in result.output


@pytest.mark.postgres
@pytest.mark.parametrize("problem", ["password", "down", "database", "driver"])
def test_connection_failures_are_one_line_and_leave_nothing(
    tmp_path, photos, pg_cluster, problem, monkeypatch
):
    from pgcluster import free_port

    url = {
        "password": pg_cluster.url(password="wrong"),
        "down": f"postgresql://setest:x@127.0.0.1:{free_port()}/postgres",
        "database": pg_cluster.url("no_such_db"),
        "driver": pg_cluster.url(),
    }[problem]
    if problem == "driver":  # as on a machine without the postgres extra
        monkeypatch.setitem(__import__("sys").modules, "psycopg", None)
    home = tmp_path / "idx"
    for args in (["index", str(photos), "-m", "toy"], ["search", "red"], ["status"]):
        result = CliRunner().invoke(
            main, [*args, "-c", "x", "--index-dir", str(home), "--database-url", url]
        )
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        expected = {
            "password": "password authentication failed",
            "down": "Connection refused",
            "database": 'database "no_such_db" does not exist',
            "driver": "pip install 'searchengine[postgres]'",
        }[problem]
        assert expected in result.output
        assert "wrong" not in result.output.replace("wrong password", "")
        assert not home.exists()


@pytest.mark.postgres
def test_the_web_server_answers_503_while_its_catalog_server_is_down_then_recovers(
    tmp_path, photos, own_cluster, caplog
):
    """The team's database server stops (a crash, a restart) while a web server serves:
    each request is answered 503 with Retry-After and one line, not a 500 "internal
    error" with a traceback in the log; the address stays in the server's log; once
    the database is back, the next request is answered as before."""
    from fastapi.testclient import TestClient

    from searchengine.server import create_app

    cluster = own_cluster(durable=True)  # a stop without durability loses the last commits
    url = cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
    serving = Collection.open("team", host(tmp_path, "s", url), encoder=encoder)
    app = create_app(serving)
    with serving, TestClient(app, base_url="http://127.0.0.1:8765") as client:
        first = client.get("/api/search", params={"q": "red"})
        assert first.status_code == 200 and first.json()["results"][0]["name"] == "red.jpg"
        cluster.halt()
        for path in ("/api/search?q=red", "/api/health", "/api/status", "/api/folders"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["retry-after"] == "5"
            assert answer.json() == {
                "error": "the collection's catalog database cannot be reached now; "
                "try again shortly"
            }
        assert f"127.0.0.1:{cluster.port}" in caplog.text  # for the operator, in the log
        assert "Traceback" not in caplog.text and "setest-secret" not in caplog.text
        cluster.start()
        again = client.get("/api/search", params={"q": "blue"})
        assert again.status_code == 200 and again.json()["results"][0]["name"] == "blue.webp"
        assert client.get("/api/health").json()["status"] == "ok"


@pytest.mark.postgres
def test_a_web_server_whose_catalog_is_down_at_its_first_request_serves_soon_after(
    tmp_path, photos, own_cluster
):
    """A web server made without warming up (``create_app``'s default; ``serve`` warms
    up first) loads its model and index at the first request. A catalog database out of
    reach then counted as the model failing to load: 503 "cannot be loaded" for a
    minute after the database was back, doubling to 15 minutes while it stayed away.
    It is now the catalog's line, and tried again after 5 s."""
    import time

    from fastapi.testclient import TestClient

    from searchengine.server import create_app

    cluster = own_cluster(durable=True)
    url = cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
    serving = Collection.open("team", host(tmp_path, "s", url), encoder=encoder)
    with serving, TestClient(create_app(serving), base_url="http://127.0.0.1:8765") as client:
        cluster.halt()
        for _ in range(2):  # a second try before the 5 s is told the same, not loaded again
            answer = client.get("/api/search", params={"q": "red"})
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) <= 5
            said = answer.json()["error"]
            assert said.startswith("the search model fake cannot be loaded (cannot use the "), said
            assert re.search(r"\); the server tries again in [1-5] s$", said), said
        cluster.start()
        time.sleep(5.2)
        again = client.get("/api/search", params={"q": "red"})
        assert again.status_code == 200 and again.json()["results"][0]["name"] == "red.jpg"


@pytest.mark.parametrize("waits", [None, 2], ids=["default", "url-connect-timeout"])
def test_a_catalog_server_that_never_answers_is_given_up_on_in_one_line(tmp_path, waits):
    """A server that accepts the connection and never answers (a stalled server, a
    broken proxy): libpq waits for ever by default, and every command hung. Each now
    gives up after ``CONNECT_TIMEOUT_S``, or the URL's own ``connect_timeout``."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from hanginghub import hanging_hub

    from searchengine.backends import CONNECT_TIMEOUT_S

    exe = str(Path(sys.executable).with_name("searchengine"))
    home = tmp_path / "idx"
    with hanging_hub() as silent:
        url = f"postgresql://me:secret@127.0.0.1:{silent.rsplit(':', 1)[1]}/photos"
        if waits is not None:
            url += f"?connect_timeout={waits}"
        for args in (["status"], ["search", "red"]):
            started = time.monotonic()
            done = subprocess.run(
                [exe, *args, "-c", "x", "--index-dir", str(home), "--database-url", url],
                capture_output=True,
                text=True,
                timeout=120,
            )
            took = time.monotonic() - started
            assert done.returncode == 1, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and "the server did not answer" in lines[0], done.stderr
            assert "?connect_timeout=SECONDS" in lines[0] and "secret" not in lines[0]
            if waits is None:
                assert took >= CONNECT_TIMEOUT_S
            else:  # the URL's own wait, not the default
                assert took < CONNECT_TIMEOUT_S
    assert not home.exists()


@pytest.mark.postgres
def test_vectors_only_one_hosts_file_holds_are_given_to_the_catalog(tmp_path, photos, pg_cluster):
    """A catalog moved from an earlier release has no vectors (it trimmed its log):
    the host holding the index file gives them to the catalog, so another host
    builds its index from it instead of dropping rows."""
    from sqlalchemy import text

    url = pg_cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
        with a.catalog.transaction() as conn:
            conn.execute(text("DELETE FROM pending_vectors"))
        (tmp_path / "a" / "team" / "vectors.state.json").unlink()  # as that release left it
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        assert a.index().unchanged == 3
    encoded = encoder.images_encoded
    with Collection.open("team", host(tmp_path, "b", url), create=True, encoder=encoder) as b:
        report = b.index([photos])
        assert (report.unchanged, report.removed, report.added) == (3, 0, 0)
        assert encoder.images_encoded == encoded
        assert names(b.search("blue", k=1)) == ["blue.webp"]


def schemas(url: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return set(conn.scalars(text("SELECT nspname FROM pg_namespace")))
    finally:
        engine.dispose()


def team_on_two_hosts(tmp_path, photos, pg_cluster) -> tuple[str, FakeEncoder]:
    """Collection "team" in a new database, indexed from host a; host b with an index
    file of its own. Returns the database's URL and the encoder both hosts use."""
    url = pg_cluster.new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        assert a.index([photos]).added == 3
    with Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as b:
        assert b.index().unchanged == 3
    assert (tmp_path / "b" / "team" / "vectors.faiss").exists()
    return url, encoder


def other_photos(folder):
    """Three photos of other colours: a collection made again from them reuses ids 1-3."""
    solid(folder / "yellow.jpg", YELLOW)
    solid(folder / "white.png", (250, 250, 250), fmt="PNG")
    solid(folder / "black.jpg", (5, 5, 5))
    return folder


def remove_on(tmp_path, host_name: str, url: str, *args: str, answer: str | None = None):
    """``searchengine remove -c team`` on one host, the team's URL in the environment."""
    command = ["remove", "-c", "team", "--index-dir", str(tmp_path / host_name), *args]
    env = {"SEARCHENGINE_DATABASE_URL": url}
    return CliRunner().invoke(main, command, input=answer, env=env)


@pytest.mark.postgres
def test_remove_drops_a_shared_collection_for_every_host_and_its_successor_starts_clean(
    tmp_path, photos, pg_cluster
):
    url, encoder = team_on_two_hosts(tmp_path, photos, pg_cluster)
    asked = remove_on(tmp_path, "a", url, answer="n\n")
    assert asked.exit_code == 1 and "se_team" in asked.output
    assert "every host that shares it" in asked.output and "setest-secret" not in asked.output
    gone = remove_on(tmp_path, "a", url, answer="y\n")
    assert gone.exit_code == 0, gone.output
    assert "se_team" not in schemas(url) and not (tmp_path / "a" / "team").exists()
    assert sorted(p.name for p in photos.rglob("*") if p.is_file()) == [
        "blue.webp",
        "green.png",
        "red.jpg",
    ]
    # The other host's folder now names a collection that is not found.
    with pytest.raises(CollectionError, match="no collection 'team'"):
        Collection.open("team", host(tmp_path, "b", url), encoder=encoder)

    # A new collection of the same name reuses ids 1-3 for other photos, over as many
    # batches: host b's old file must not be taken for one of it.
    others = other_photos(tmp_path / "others")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        assert a.index([others]).added == 3
        expected = {q: [(r.path, r.score) for r in a.search(q, k=3)] for q in ("yellow", "red")}
    for writes in (False, True):  # a reader (in memory), then a writer (its file too)
        with Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as b:
            if writes:
                assert b.index().unchanged == 3
            for query, hits in expected.items():
                found = [(r.path, r.score) for r in b.search(query, k=3)]
                assert [p for p, _ in found] == [p for p, _ in hits], query
                assert [s for _, s in found] == pytest.approx([s for _, s in hits])
            assert set(b.vectors().ids()) == b.catalog.ok_ids()


@pytest.mark.postgres
def test_remove_of_a_shared_collection_is_refused_while_another_host_indexes_it(
    tmp_path, photos, pg_cluster
):
    url, encoder = team_on_two_hosts(tmp_path, photos, pg_cluster)
    # b.store.writing() is what `index` holds on host b for its whole run.
    with Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as b, b.store.writing():
        refused = remove_on(tmp_path, "a", url, "--yes")
    assert refused.exit_code == 1
    assert "is being indexed by process" in refused.output
    assert len(refused.output.splitlines()) == 1
    assert "se_team" in schemas(url) and (tmp_path / "a" / "team").exists()
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        assert a.status().images == 3


@pytest.mark.postgres
def test_a_server_on_another_host_says_removed_then_serves_the_new_collection(
    tmp_path, photos, pg_cluster
):
    from fastapi.testclient import TestClient

    from searchengine.server import create_app

    url, encoder = team_on_two_hosts(tmp_path, photos, pg_cluster)
    others = other_photos(tmp_path / "others")
    with (
        Collection.open("team", host(tmp_path, "b", url), encoder=encoder) as served,
        TestClient(create_app(served), base_url="http://127.0.0.1:8765") as client,
    ):
        first = client.get("/api/search", params={"q": "red", "k": 1})
        assert first.status_code == 200
        assert [os.path.basename(h["path"]) for h in first.json()["results"]] == ["red.jpg"]
        removed = remove_on(tmp_path, "a", url, "--yes")
        assert removed.exit_code == 0, removed.output
        gone = client.get("/api/search", params={"q": "red", "k": 1})
        assert gone.status_code == 404 and "was removed" in gone.json()["error"]
        # Made again under the same name (ids 1-3 now other photos): served from it.
        with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
            a.index([others])
            want = [(r.path, r.score) for r in a.search("yellow", k=3)]
        again = client.get("/api/search", params={"q": "yellow", "k": 3})
        assert again.status_code == 200, again.text
        got = [(h["path"], h["score"]) for h in again.json()["results"]]
        assert [p for p, _ in got] == [p for p, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)


@pytest.mark.postgres
def test_a_host_leaves_with_remove_local_and_the_others_keep_the_collection(
    tmp_path, photos, pg_cluster
):
    url, encoder = team_on_two_hosts(tmp_path, photos, pg_cluster)
    asked = remove_on(tmp_path, "b", url, "--local", answer="y\n")
    assert asked.exit_code == 0, asked.output
    assert "stays for the hosts that share it" in asked.output
    assert "removed this host's folder of collection 'team'" in asked.output
    assert not (tmp_path / "b" / "team").exists() and "se_team" in schemas(url)
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        assert names(a.search("blue", k=1)) == ["blue.webp"] and a.status().images == 3


@pytest.mark.postgres
def test_a_server_that_is_down_is_listed_as_unavailable_and_remove_local_still_works(
    tmp_path, photos, pg_cluster
):
    from pgcluster import start_cluster

    down = start_cluster()  # a server of its own, stopped below
    try:
        url = down.new_database()
        with Collection.open("team", host(tmp_path, "h", url), create=True, model="toy") as c:
            c.index([photos])
    finally:
        down.stop()
    with Collection.open("mine", host(tmp_path, "h", None), create=True, model="toy") as c:
        c.index([photos])
    home = ["--index-dir", str(tmp_path / "h")]
    listed = CliRunner().invoke(main, ["collections", *home, "--json"])
    assert listed.exit_code == 0, listed.output
    found = {s["name"]: s for s in json.loads(listed.stdout)}
    assert found["mine"]["images"] == 3 and found["mine"]["unavailable"] is None
    assert "cannot use the catalog database" in found["team"]["unavailable"]
    text = CliRunner().invoke(main, ["collections", *home]).output
    assert "team  unavailable: cannot use the catalog database" in text
    refused = CliRunner().invoke(main, ["remove", "-c", "team", *home, "--yes"])
    assert refused.exit_code == 1 and len(refused.output.splitlines()) == 1
    assert "use --local" in refused.output and (tmp_path / "h" / "team").exists()
    left = CliRunner().invoke(main, ["remove", "-c", "team", *home, "--local"], input="y\n")
    assert left.exit_code == 0, left.output
    assert "catalog unavailable" in left.output
    assert [
        s["name"]
        for s in json.loads(CliRunner().invoke(main, ["collections", *home, "--json"]).stdout)
    ] == ["mine"]


def many_colours(folder, count: int, seed: int = 5):
    """``count`` photos of distinct random colours (the fake model embeds the colour)."""
    rnd = random.Random(seed)
    for no in range(count):
        colour = tuple(rnd.randrange(256) for _ in range(3))
        solid(folder / f"c{no:03d}.png", colour, size=(8, 8), fmt="PNG")
    return folder


class Counted:
    """A ``Progress`` that remembers what it was told."""

    def __init__(self) -> None:
        self.total, self.done, self.closed = 0, 0, False

    def start(self, total: int) -> None:
        self.total += total

    def advance(self, n: int = 1) -> None:
        self.done += n

    def close(self) -> None:
        self.closed = True


def exact_adds(monkeypatch) -> list[int]:
    """Record how many vectors each exact index holds after each add."""
    from searchengine.vectors import FaissIndex

    sizes: list[int] = []
    add = FaissIndex.add

    def spy(self, ids, vectors):
        add(self, ids, vectors)
        if self.exact:
            sizes.append(len(self))

    monkeypatch.setattr(FaissIndex, "add", spy)
    return sizes


@pytest.mark.postgres
@pytest.mark.parametrize("accelerated", [False, True])
def test_a_new_host_builds_its_index_as_the_recorded_type_never_all_vectors_exact(
    tmp_path, pg_cluster, monkeypatch, accelerated
):
    """Past the exact-search threshold a collection is ``IVF…,SQ8``. A host without an
    index file (a new team member's machine, a web server) builds its index from the
    catalog's log as that type, trained on a sample and filled chunk by chunk: an
    exact copy of every vector is never held (206 GB at 10^8 vectors, where SQ8 is 54)."""
    from searchengine.index_choice import IndexPolicy
    from searchengine.values import MetaKey
    from searchengine.vectors import FaissIndex

    # 300 photos: IVF4,SQ8; a reader builds that past 250 vectors, exact up to it
    policy = IndexPolicy(flat_max=200, min_ivf=100, nlist=4, reader_exact_max=250)
    photos = many_colours(tmp_path / "photos", 300)
    url = pg_cluster.new_database()
    encoder = FakeEncoder()
    queries = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]

    def config(name: str, policy: IndexPolicy = policy) -> Config:
        return Config(home=tmp_path / name, workers=1, database_url=url, index_policy=policy)

    with Collection.open("team", config("a"), create=True, encoder=encoder) as a:
        assert a.index([photos]).added == 300
        assert a.store.index_type() == "IVF4,SQ8"
        if accelerated:  # as a collection records an accelerator its writer kept
            params = json.loads(a.catalog.get_meta(MetaKey.INDEX_PARAMS))
            a.catalog.set_meta({MetaKey.INDEX_PARAMS: json.dumps({**params, "accelerator": "x"})})
        expected = {q: names(a.search(q, k=10)) for q in queries}
    encoded = encoder.images_encoded
    sizes = exact_adds(monkeypatch)

    with Collection.open("team", config("reader"), encoder=encoder) as reader:
        found = {q: names(reader.search(q, k=10)) for q in queries}
        held = reader.store.vectors()
        assert (held.index_type, len(held)) == ("IVF4,SQ8", 300)
        assert (held.accelerator is not None) == accelerated
    assert not (tmp_path / "reader").exists()  # a reader writes nothing
    small = IndexPolicy(flat_max=200, min_ivf=100, nlist=4, reader_exact_max=300)
    with Collection.open("team", config("small", small), encoder=encoder) as reader:
        exact = names(reader.search("red", k=10))
        assert exact[0] == expected["red"][0] and len(set(exact) & set(expected["red"])) >= 8
        assert reader.store.vectors().index_type == "Flat"  # quicker to build, and exact
    assert sizes == [300]
    sizes.clear()

    counted = Counted()
    with Collection.open("team", config("b"), encoder=encoder) as b:
        assert b.index(build_progress=counted).unchanged == 300
        assert (counted.total, counted.done, counted.closed) == (300, 300, True)
        built = FaissIndex.load(tmp_path / "b" / "team" / "vectors.faiss")
        assert (built.index_type, len(built)) == ("IVF4,SQ8", 300)
        assert b.index().unchanged == 300  # and the next run reads nothing again
    assert encoder.images_encoded == encoded  # nothing embedded again
    assert sizes == []  # no exact index was filled on either host

    for q in queries:  # both hosts find what the first host finds
        assert found[q][0] == expected[q][0], q
        assert len(set(found[q]) & set(expected[q])) >= 8, q


@pytest.mark.postgres
def test_a_log_too_small_for_the_recorded_lists_is_replayed_exact(
    tmp_path, pg_cluster, monkeypatch
):
    """Below what the recorded type's lists need to train (39 vectors a list), a new
    host replays the log into an exact index, as before, and the run picks the type."""
    from searchengine.index_choice import IndexPolicy
    from searchengine.values import MetaKey

    policy = IndexPolicy(flat_max=20, min_ivf=10, nlist=4)  # 30 photos: IVF4 (30 < 4 * 39)
    photos = many_colours(tmp_path / "photos", 30)
    url = pg_cluster.new_database()
    encoder = FakeEncoder()

    def config(name: str) -> Config:
        return Config(home=tmp_path / name, workers=1, database_url=url, index_policy=policy)

    with Collection.open("team", config("a"), create=True, encoder=encoder) as a:
        a.index([photos])
        assert a.catalog.get_meta(MetaKey.INDEX_TYPE) == "IVF4,SQ8"
        expected = names(a.search("red", k=5))
    sizes = exact_adds(monkeypatch)
    with Collection.open("team", config("reader"), encoder=encoder) as reader:
        assert names(reader.search("red", k=5))[0] == expected[0]
        assert reader.store.vectors().index_type == "Flat"
    assert sizes and max(sizes) == 30


@pytest.mark.postgres
def test_a_reader_without_a_file_catches_its_index_up_in_place_instead_of_building_again(
    tmp_path, pg_cluster, monkeypatch
):
    """A web server on a host that never indexed builds its index from the log once;
    after another host adds and removes photos, the next query catches that index up in
    place: not trained again, not copied (a copy held it twice), and not while a query
    still reads it (the refresh waits for it)."""
    from searchengine import logged_vectors
    from searchengine.index_choice import IndexPolicy
    from searchengine.vectors import FaissIndex

    policy = IndexPolicy(flat_max=200, min_ivf=100, nlist=4, reader_exact_max=0)
    photos = many_colours(tmp_path / "photos", 300)
    url = pg_cluster.new_database()
    encoder = FakeEncoder()

    def config(name: str) -> Config:
        return Config(home=tmp_path / name, workers=1, database_url=url, index_policy=policy)

    builds, copies = [], []  # reads of the whole log; copies of an index
    read_log, copy = logged_vectors.LoggedVectors.__init__, FaissIndex.copy

    def spy(self, *args):
        builds.append(1)
        read_log(self, *args)

    def copied(self):
        copies.append(1)
        return copy(self)

    monkeypatch.setattr(logged_vectors.LoggedVectors, "__init__", spy)
    monkeypatch.setattr(FaissIndex, "copy", copied)
    with Collection.open("team", config("a"), create=True, encoder=encoder) as a:
        a.index([photos])
        with Collection.open("team", config("server"), encoder=encoder) as server:
            before = server.store.vectors()
            assert (before.index_type, len(before), len(builds)) == ("IVF4,SQ8", 300, 1)
            solid(photos / "yellow.jpg", YELLOW)
            (photos / "c000.png").unlink()
            assert a.index().added == 1
            refreshed: list[bool] = []
            with server.store.reading():  # a query reading the index on another thread
                waiting = threading.Thread(target=lambda: refreshed.append(server.store.refresh()))
                waiting.start()
                waiting.join(0.5)
                assert waiting.is_alive() and not refreshed, "the refresh should wait"
                assert set(before.ids()) != a.catalog.ok_ids()  # unchanged while it reads
            waiting.join(30)
            assert refreshed == [True]
            after = server.store.vectors()
            assert after is before and not copies  # caught up in place
            assert (after.index_type, len(after), len(builds)) == ("IVF4,SQ8", 300, 1)
            held = []  # at each read of the index by a query: held against other threads?
            read = server.vectors

            def probe():
                lock, free = server.store.reading(), []

                def try_it() -> None:
                    free.append(lock.acquire(blocking=False))
                    if free[0]:
                        lock.release()

                thread = threading.Thread(target=try_it)
                thread.start()
                thread.join()
                held.append(not free[0])
                return read()

            monkeypatch.setattr(server, "vectors", probe)
            found = names(server.search("yellow", k=5))
            server.similar(photos / "yellow.jpg", k=3)
            server.status()
            assert len(held) >= 4 and all(held), f"queries should hold the index: {held}"
            assert "yellow.jpg" in found and found == names(a.search("yellow", k=5))
            assert set(after.ids()) == a.catalog.ok_ids()  # c000.png left, yellow.jpg came
            assert not server.store.refresh()  # nothing newer
    assert not (tmp_path / "server").exists()


@pytest.mark.postgres
def test_a_search_that_builds_the_index_from_the_catalog_says_how_to_keep_it(
    tmp_path, photos, pg_cluster, monkeypatch
):
    """A host that never indexed builds the index at every search; when that is slow,
    the search says so on stderr, with the command that saves it on this host."""
    from clirunner import cli

    from searchengine import catch_up

    url = pg_cluster.new_database()
    env = {"SEARCHENGINE_DATABASE_URL": url}
    first = cli(
        "index", str(photos), "-m", "toy", "-c", "team", "--index-dir", str(tmp_path / "a"), env=env
    )
    assert first.exit_code == 0, first.output
    search = ["search", "a red photo", "-c", "team", "--index-dir", str(tmp_path / "b"), "--json"]
    quick = cli(*search, env=env)
    assert quick.exit_code == 0 and len(json.loads(quick.stdout)) == 3
    assert quick.stderr == ""  # a quick build is not worth a word
    monkeypatch.setattr(catch_up, "SLOW_BUILD_S", 0.0)
    slow = cli(*search, env=env)
    assert slow.exit_code == 0 and len(json.loads(slow.stdout)) == 3
    assert "this host has no vector index of collection 'team'" in slow.stderr
    assert "(3 vectors," in slow.stderr
    saving = f"searchengine index -c team --index-dir {tmp_path / 'b'}"
    assert saving in slow.stderr
    assert cli(*saving.split()[1:], env=env).exit_code == 0  # the command it gives works
    assert (tmp_path / "b" / "team" / "vectors.faiss").exists()
    assert cli(*search, env=env).stderr == ""  # and then the note is gone


@pytest.mark.postgres
def test_serve_builds_the_index_from_the_catalog_before_it_serves_and_says_how_to_keep_it(
    tmp_path, photos, pg_cluster, monkeypatch
):
    """``serve`` on a host that never indexed builds the index at start-up, not in the
    first query; when that is slow it says so, as ``search`` does, before it serves."""
    from clirunner import cli
    from fastapi.testclient import TestClient

    from searchengine import catch_up, store
    from searchengine.server import http

    url = pg_cluster.new_database()
    env = {"SEARCHENGINE_DATABASE_URL": url}
    first = cli(
        "index", str(photos), "-m", "toy", "-c", "team", "--index-dir", str(tmp_path / "a"), env=env
    )
    assert first.exit_code == 0, first.output
    builds = []
    brought_up = store.Store._brought_up

    def spy(self, *args, **kwargs):
        builds.append(args[1])  # the batch it starts from: 0 is the whole log
        return brought_up(self, *args, **kwargs)

    answered = []

    def one_query(app, sock):  # in place of the serving loop: one query, then stop
        sock.close()
        assert builds == [0], "the index should be built before the server serves"
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            answered.extend(
                client.get("/api/search", params={"q": "a red photo"}).json()["results"]
            )

    monkeypatch.setattr(store.Store, "_brought_up", spy)
    monkeypatch.setattr(http, "run", one_query)
    monkeypatch.setattr(catch_up, "SLOW_BUILD_S", 0.0)
    serve = ["serve", "--port", "0", "-c", "team", "--index-dir", str(tmp_path / "b")]
    done = cli(*serve, env=env)
    assert done.exit_code == 0, done.output
    assert len(answered) == 3 and builds == [0]  # the query found it built
    lines = done.stderr.splitlines()
    note = next(i for i, line in enumerate(lines) if "this host has no vector index" in line)
    assert "collection 'team'" in lines[note] and "(3 vectors," in lines[note]
    assert f"searchengine index -c team --index-dir {tmp_path / 'b'}" in lines[note]
    assert lines[note + 1].startswith("serving 'team' at ")


def writer_sessions(url: str) -> list[int]:
    """The server sessions holding a collection's writer lock (its advisory lock)."""
    import psycopg

    from searchengine.server_catalog import _WRITER_LOCK

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 "
            "AND classid = %s",
            [_WRITER_LOCK],
        ).fetchall()
    return [pid for (pid,) in rows]


@pytest.mark.postgres
def test_a_servers_idle_session_timeout_does_not_end_the_writer_lock_mid_run(
    tmp_path, photos, own_cluster
):
    """A server whose ``idle_session_timeout`` ends idle sessions (1 s here): the writer
    lock's session is idle while photos are embedded, so it was ended two seconds into
    a run, the lock with it, and a second host's writer started beside the first (it
    then failed on a duplicate batch mark; without marks the two would have mixed their
    batches). The lock's session opts out of that time-out."""
    import time

    url = own_cluster(settings="-c idle_session_timeout=1s").new_database()
    encoder = FakeEncoder()
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([photos])
        b = Collection.open("team", host(tmp_path, "b", url), create=True, encoder=encoder)
        with b, a.store.writing():
            time.sleep(2.5)  # idle, as while a batch of large photos is embedded
            assert len(writer_sessions(url)) == 1
            with pytest.raises(CollectionLockedError, match=f"process {os.getpid()} on "):
                b.index([photos])
        solid(photos / "yellow.jpg", YELLOW)
        assert a.index().added == 1


class KilledMidRun(FakeEncoder):
    """Embeds like ``FakeEncoder``; on its first batch an administrator ends the writer
    lock's session (``pg_terminate_backend``), as a server restart of that backend, a
    connection dropped on the way or a time-out would."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url, self.killed = url, False

    def encode_pixels(self, pixels):
        if not self.killed:
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                for pid in writer_sessions(self.url):
                    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
            self.killed = True
        return super().encode_pixels(pixels)


@pytest.mark.postgres
def test_a_writer_whose_lock_session_ends_mid_run_commits_nothing_more(
    tmp_path, photos, pg_cluster
):
    """The lock's session ends mid-run: the server has released the lock, and another
    host may be writing. The run stops before its next batch commits, in one line;
    another host may write; the same command then adds what was left."""
    url = pg_cluster.new_database()
    killer = KilledMidRun(url)
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=killer) as a:
        with pytest.raises(CollectionLockedError) as lost:
            a.index([photos])
        assert str(lost.value).startswith("this run lost the writer lock of se_team: the ")
        assert "terminating connection due to administrator command" in str(lost.value)
        assert str(lost.value).endswith("what was committed is kept: run the same command again")
        assert a.catalog.ok_count() == 0  # its first batch was not committed
    with Collection.open("team", host(tmp_path, "b", url), encoder=FakeEncoder()) as b:
        assert b.index([photos]).added == 3  # the lock was free: another host writes
    with Collection.open("team", host(tmp_path, "a", url), encoder=FakeEncoder()) as a:
        report = a.index()
        assert (report.added, report.unchanged) == (0, 3)
        assert names(a.search("red", k=1)) == ["red.jpg"]
