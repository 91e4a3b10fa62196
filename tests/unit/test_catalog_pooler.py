"""A shared catalog reached through a connection pooler: a real PgBouncer
(``tests/pgbouncer.py``) in front of the live test server, in the configurations
teams run. Each collection lives in its own schema, chosen by libpq's ``options``
(``search_path``), which PgBouncer cannot pass on: by default it refuses them, and
with the usual ``ignore_startup_parameters = options`` it drops them, when every
collection's tables were made, read and dropped in the database's ``public`` schema,
together, without a word. Both now end in one line that names the pooler, and nothing
is written."""

from __future__ import annotations

import subprocess

import pytest
from clirunner import on_server
from imagegen import solid

pytestmark = pytest.mark.postgres

POOLER = "a connection pooler such as PgBouncer in front of the server does not pass"


def tables(url: str) -> list[tuple[str, str]]:
    """Every table of the database outside PostgreSQL's own schemas."""
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()


@pytest.mark.parametrize(
    ("pool_mode", "ignore_options"),
    [("session", False), ("session", True), ("transaction", True)],
    ids=["refuses-options", "session-drops-options", "transaction-drops-options"],
)
def test_a_pooler_that_cannot_pass_the_collections_schema_is_refused_in_one_line(
    tmp_path, pg_cluster, pgbouncer, pool_mode, ignore_options
):
    """``index``, ``search`` and ``status`` through the pooler: exit 1, one line naming
    the pooler and what to do, no collection folder, no table anywhere in the database;
    the same commands straight to the server then work."""
    url = pg_cluster.new_database()
    bouncer = pgbouncer(url.rsplit("/", 1)[1], pool_mode=pool_mode, ignore_options=ignore_options)
    solid(tmp_path / "photos" / "red.jpg", (250, 0, 0))
    solid(tmp_path / "photos" / "blue.jpg", (0, 0, 250))
    home = tmp_path / "idx"

    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return on_server(home, url, *args, "-c", "team")

    pooled = bouncer.url(url.rsplit("/", 1)[1])
    for args in (["index", str(tmp_path / "photos"), "-m", "toy"], ["search", "red"], ["status"]):
        done = run(pooled, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert POOLER in lines[0] and "connect to the PostgreSQL server directly" in lines[0]
        if ignore_options:  # what the sessions were found to be in
            assert "search_path is '\"$user\", public', not 'se_team'" in lines[0], lines[0]
        else:
            assert "unsupported startup parameter: options" in lines[0], lines[0]
        assert "setest-secret" not in lines[0] and done.stdout == ""
        assert not home.exists()
        assert tables(url) == []
    done = run(url, "index", str(tmp_path / "photos"), "-m", "toy")
    assert done.returncode == 0, done.stderr
    found = run(url, "search", "red")
    assert found.returncode == 0 and "red.jpg" in found.stdout.splitlines()[0], found.stderr
    assert {schema for schema, _ in tables(url)} == {"se_team"}
    pg_cluster.give_back(url)
