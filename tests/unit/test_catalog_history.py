"""A shared catalog that goes back in time, on a live PostgreSQL server.

An administrator restores the catalog's database from a backup (``pg_dump``, then
``psql``), as after a bad migration or a lost disk; hosts whose index files were
ahead of the backup must not take the batches written after it, which reuse the
batch numbers and image ids for other photos, for the ones they hold
(``searchengine/history.py``).
"""

from __future__ import annotations

import json
import os
import subprocess

import psycopg
import pytest
from imagegen import solid

from searchengine import Collection, Config
from searchengine.catalog import pending_vectors
from searchengine.models.fake import FakeEncoder
from searchengine.values import MetaKey

pytestmark = pytest.mark.postgres

COLOURS = {
    "red": (250, 0, 0),
    "green": (0, 250, 0),
    "blue": (0, 0, 250),
    "yellow": (250, 250, 0),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
    "cyan": (0, 250, 250),
    "magenta": (250, 0, 250),
}


def host(tmp_path, name: str, url: str) -> Config:
    return Config(home=tmp_path / name, workers=1, batch_size=2, database_url=url)


def photos(folder, *colours: str):
    for colour in colours:
        solid(folder / f"{colour}.jpg", COLOURS[colour])
    return folder


def found(coll: Collection, colour: str) -> str:
    return os.path.basename(coll.search(colour, k=1)[0].path)


def backup(pg_cluster, url: str, where, *options: str) -> None:
    """What an administrator does: ``pg_dump`` of the database (``options``: more of
    its options)."""
    dump = [str(pg_cluster.bindir / "pg_dump"), "--clean", "--if-exists", *options]
    subprocess.run([*dump, "-f", str(where), url], check=True, capture_output=True)


def restore(pg_cluster, url: str, where) -> None:
    done = subprocess.run(
        [str(pg_cluster.bindir / "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-f", str(where), url],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def marks_after(url: str, batch: int) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        query = "SELECT batch, mark FROM se_team.batch_marks WHERE batch > %s"
        return [tuple(row) for row in conn.execute(query, [batch])]


def last_batch(coll: Collection) -> int:
    return int(coll.catalog.get_meta(MetaKey.LAST_BATCH) or 0)


def agrees_with_the_log(coll: Collection) -> None:
    """The host's index holds, for every ok id, the vector the catalog logged for it."""
    catalog, index = coll.catalog, coll.store.vectors()
    ok = catalog.ok_id_array()
    assert sorted(index.ids().tolist()) == ok.tolist()
    with catalog.transaction() as conn:
        for ids, vectors in pending_vectors(conn, 0):
            held = index.reconstruct_batch(ids)
            assert abs(held - vectors).max() < 1e-6


@pytest.mark.parametrize("leftover", [False, True], ids=["whole", "marks-left-over"])
def test_a_host_ahead_of_a_restored_catalog_builds_its_index_again_and_loses_nothing(
    tmp_path, pg_cluster, leftover
):
    """The whole database restored; and the same where the marks of the batches the
    restore lost were left in the table (a restore table by table that skipped it):
    the next writer drops them before it numbers its own batches."""
    url, encoder = pg_cluster.new_database(), FakeEncoder()
    mine = photos(tmp_path / "a-photos", "red", "green", "blue")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([mine])
    backup(pg_cluster, url, tmp_path / "backup.sql")
    photos(mine, "yellow", "white", "black")
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        assert a.index().added == 3  # host a's file now holds batches the backup lacks
        ahead = last_batch(a)
    before = set(marks_after(url, 0))
    restore(pg_cluster, url, tmp_path / "backup.sql")
    lost = before - set(marks_after(url, 0))
    assert len(lost) == 2
    if leftover:
        with psycopg.connect(url, autocommit=True) as conn:
            for batch, mark in lost:
                conn.execute("INSERT INTO se_team.batch_marks VALUES (%s, %s)", [batch, mark])
    theirs = photos(tmp_path / "b-photos", "cyan", "magenta", "black")
    with Collection.open("team", host(tmp_path, "b", url), create=True, encoder=encoder) as b:
        assert b.index([theirs]).added == 3
        assert last_batch(b) == ahead  # the same batch numbers, for other photos
        assert not set(marks_after(url, 0)) & lost  # marked anew
        ids_of_b = {r.path: r.id for r in b.catalog.records("ok")}
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        assert found(a, "cyan") == "cyan.jpg"  # a search on host a, before any run there
        assert any("another history of the catalog" in note for note in a.store.notes)
        assert found(a, "magenta") == "magenta.jpg"
        report = a.index()
        assert any("another history of the catalog" in note for note in report.notes)
        # Host a's three photos the restore lost come back; host b's all stay, as they were.
        assert (report.added, report.removed, report.unchanged) == (3, 0, 6)
        kept = {r.path: r.id for r in a.catalog.records("ok")}
        assert {path: kept[path] for path in ids_of_b} == ids_of_b
        assert a.status().images == a.status().vectors == 9
        for colour in ("red", "yellow", "white", "cyan", "magenta"):
            assert found(a, colour) == f"{colour}.jpg"
        agrees_with_the_log(a)
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        again = a.index()  # the file built again is trusted from now on
        assert (again.added, again.unchanged, again.notes) == (0, 9, [])


def test_a_reader_in_memory_across_a_restore_is_caught_up_to_the_new_history(tmp_path, pg_cluster):
    """The web server's index, caught up to batch N before the restore, meets a batch N
    written after it: the same number, other photos."""
    url, encoder = pg_cluster.new_database(), FakeEncoder()
    mine = photos(tmp_path / "a-photos", "red", "green", "blue")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([mine])
    backup(pg_cluster, url, tmp_path / "backup.sql")
    with Collection.open("team", host(tmp_path, "r", url), encoder=encoder) as reader:
        assert found(reader, "blue") == "blue.jpg"
        photos(mine, "yellow", "white", "black")
        with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
            a.index()
            held = last_batch(a)
        assert reader.store.refresh() and found(reader, "yellow") == "yellow.jpg"
        restore(pg_cluster, url, tmp_path / "backup.sql")
        theirs = photos(tmp_path / "b-photos", "cyan", "magenta", "black")
        with Collection.open("team", host(tmp_path, "b", url), create=True, encoder=encoder) as b:
            b.index([theirs])
            assert last_batch(b) == held
        assert reader.store.refresh()
        assert found(reader, "cyan") == "cyan.jpg"
        assert found(reader, "magenta") == "magenta.jpg"
        assert found(reader, "yellow") != "yellow.jpg"  # lost with the restore
        agrees_with_the_log(reader)
        assert not reader.store.refresh()  # caught up: nothing more to do
    assert not (tmp_path / "r").exists()  # a reader writes nothing


def test_a_file_recorded_without_a_mark_is_trusted_as_before(tmp_path, pg_cluster, monkeypatch):
    """An index file an earlier release saved has no mark: it is used, not built again."""
    from searchengine import store

    url, encoder = pg_cluster.new_database(), FakeEncoder()
    mine = photos(tmp_path / "a-photos", "red", "green", "blue")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([mine])
    folder = tmp_path / "a" / "team"
    state = json.loads((folder / "vectors.state.json").read_text())
    assert len(state.pop("mark")) == 32
    (folder / "vectors.state.json").write_text(json.dumps(state))
    before = (folder / "vectors.faiss").stat().st_ino
    replayed_from = []
    replay = store.replay_log

    def spy(catalog, index, saved):
        replayed_from.append(saved)  # 0: the index is built whole from the log
        return replay(catalog, index, saved)

    monkeypatch.setattr(store, "replay_log", spy)
    photos(mine, "yellow")
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        report = a.index()
        assert (report.added, report.unchanged, report.notes) == (1, 3, [])
        assert replayed_from == []  # the file is used as saved: not rebuilt from the log
    assert encoder.images_encoded == 4
    assert "mark" in json.loads((folder / "vectors.state.json").read_text())
    assert (folder / "vectors.faiss").stat().st_ino != before  # saved anew, with its mark


def test_a_read_only_role_that_may_not_read_the_marks_still_searches_and_refreshes(
    tmp_path, pg_cluster
):
    """A role granted ``SELECT`` before the marks table existed cannot read it."""
    url, encoder = pg_cluster.new_database(), FakeEncoder()
    mine = photos(tmp_path / "a-photos", "red", "green", "blue")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([mine])
    viewer = pg_cluster.viewer(url, "REVOKE SELECT ON se_team.batch_marks FROM {role}")
    with Collection.open("team", host(tmp_path, "v", viewer), encoder=encoder) as reader:
        assert found(reader, "blue") == "blue.jpg"
        photos(mine, "yellow")
        with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
            a.index()
        assert reader.store.refresh()
        assert found(reader, "yellow") == "yellow.jpg"


def test_default_privileges_let_a_read_only_role_read_the_marks_a_writer_makes_later(
    tmp_path, pg_cluster
):
    """What ``docs/scale.md`` tells an administrator: ``ALTER DEFAULT PRIVILEGES`` for
    the writer's role covers the marks table that a writer of this release makes in a
    catalog an earlier release wrote."""
    from sqlalchemy import text

    from searchengine.history import read_mark

    url, encoder = pg_cluster.new_database(), FakeEncoder()
    mine = photos(tmp_path / "a-photos", "red", "green", "blue")
    with Collection.open("team", host(tmp_path, "a", url), create=True, encoder=encoder) as a:
        a.index([mine])
        with a.catalog.transaction() as conn:  # as an earlier release left the catalog
            conn.execute(text("DROP TABLE batch_marks"))
    future = "ALTER DEFAULT PRIVILEGES FOR ROLE setest IN SCHEMA se_team"
    viewer = pg_cluster.viewer(url, future + " GRANT SELECT ON TABLES TO {role}")
    photos(mine, "yellow")
    with Collection.open("team", host(tmp_path, "a", url), encoder=encoder) as a:
        a.index()  # makes the table again, and marks this run's batch
        last = last_batch(a)
    with Collection.open("team", host(tmp_path, "v", viewer), encoder=encoder) as reader:
        assert len(read_mark(reader.catalog, last) or "") == 32
        assert found(reader, "yellow") == "yellow.jpg"


def test_a_host_whose_file_holds_commits_the_server_lost_builds_its_index_again(
    tmp_path, own_cluster
):
    """The other way a catalog goes back: a server that acknowledges commits before
    they reach its disk (``synchronous_commit = off``, here with the WAL writer's delay
    at its 10 s maximum) crashes, and loses the last batch that host a had already
    saved in its file. Host b then writes its own batch of that number."""
    cluster = own_cluster(settings="-c wal_writer_delay=10000")  # synchronous_commit=off
    encoder = FakeEncoder()
    for attempt in range(4):  # the crash loses the batch about 9 times in 10
        url, home = cluster.new_database(), tmp_path / f"try{attempt}"
        mine = photos(home / "a-photos", "red", "green", "blue")
        with Collection.open("team", host(home, "a", url), create=True, encoder=encoder) as a:
            a.index([mine])
        cluster.admin("CHECKPOINT")  # what came before is on the server's disk
        photos(mine, "yellow")
        with Collection.open("team", host(home, "a", url), encoder=encoder) as a:
            assert a.index().added == 1
            ahead = last_batch(a)
        cluster.halt()  # a crash: commits only in the server's memory are gone
        cluster.start()
        with Collection.open("team", host(home, "b", url), create=True, encoder=encoder) as b:
            if last_batch(b) < ahead:
                break
    else:
        pytest.fail("the server kept its last commit through four crashes")
    with Collection.open("team", host(home, "b", url), encoder=encoder) as b:
        assert b.index([photos(home / "b-photos", "cyan")]).added == 1
        assert last_batch(b) == ahead  # the same batch number, and the same id, for cyan
    with Collection.open("team", host(home, "a", url), encoder=encoder) as a:
        assert found(a, "cyan") == "cyan.jpg"
        report = a.index()
        assert any("another history of the catalog" in note for note in report.notes)
        assert (report.added, report.removed, report.unchanged) == (1, 0, 4)  # yellow back
        assert found(a, "yellow") == "yellow.jpg"
        agrees_with_the_log(a)
