"""A collection that cannot be written, through the real CLI: another user's folder, a
read-only filesystem, a disk that fills during a run (the collection's own, or the
shared catalog's database server's).

Before, a SQLite catalog was always opened for writing: a collection this user may not
write (published by another user, on a read-only share or snapshot) could not even be
searched ("attempt to write a readonly database", "unable to open database file"), and
a full disk ended ``index`` with a Python traceback. Read-only and size-limited
filesystems are real ``tmpfs`` mounts here (skipped, with the reason, where this
machine does not allow mounting); another user's folder is made with ``chown``, and the
CLI runs without root's power to write any file (``unprivileged.py``).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from clirunner import cli, ok_json
from fastapi.testclient import TestClient
from PIL import Image
from servertools import FakeCaptioner
from unprivileged import without_file_override

from searchengine.collection import Collection
from searchengine.config import Config
from searchengine.server import create_app
from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow

QUERY = "a red circle"
BASE = "http://127.0.0.1:8765"  # a loopback name, as the server requires without a token
OTHER_UID = 12345  # owns "another user's" collection when the tests run as root


def base(home: Path, *args: str) -> list[str]:
    return [*args, "-c", "c", "--index-dir", str(home)]


def child(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The ``searchengine`` command in a child process, bound by file permissions."""
    exe = str(Path(sys.executable).with_name("searchengine"))
    command = without_file_override([exe, *args])
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def child_json(*args: str) -> dict | list:
    done = child(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line a refused command printed; it exited 1 and said each of ``words``."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def ranking(hits: list) -> list[tuple[str, float]]:
    return [(h["path"], round(h["score"], 5)) for h in hits]


@contextmanager
def tmpfs(where: Path, size: str, options: str = "") -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where`` (and mount ``options``, comma-separated);
    the test is skipped where mounting is not allowed (no root, or a container without
    CAP_SYS_ADMIN)."""
    where.mkdir(parents=True, exist_ok=True)
    options = ",".join(filter(None, [f"size={size}", options]))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"no tmpfs mount here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True)


def the_same_command_adds_the_rest(shared: list[str], kept: int, total: int) -> None:
    """After a run that failed with ``kept`` photos committed: ``index`` again adds
    exactly the rest, none twice, and every photo is indexed and found."""
    report = child_json("index", *shared)
    assert (report["unchanged"], report["added"]) == (kept, total - kept)
    status = child_json("status", *shared)
    assert status["images"] == status["vectors"] == total
    hits = child_json("search", QUERY, "-k", str(total), *shared)
    assert len({h["path"] for h in hits}) == total


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    toyworld.generate(folder, 24, 4701)
    return folder


def test_another_users_collection_is_searched_and_never_written(tmp_path, photos):
    home = tmp_path / "home"
    ok_json("index", str(photos), *base(home, "-m", "toy"))
    expected = ranking(ok_json("search", QUERY, "-k", "5", *base(home)))
    folder = home / "c"
    if os.getuid() == 0:  # root owns nothing then: another user's collection
        for path in [home, folder, *folder.iterdir()]:
            os.chown(path, OTHER_UID, OTHER_UID)
    else:  # the owner's own, made read-only: the same to a reader
        for path in [*folder.iterdir(), folder, home]:
            path.chmod(0o555 if path.is_dir() else 0o444)
    before = snapshot(folder)

    # The quick one-shot search, and the full path (a filter needs SQL): same ranking.
    assert ranking(child_json("search", QUERY, "-k", "5", *base(home))) == expected
    full = child_json("search", QUERY, "-k", "5", "--min-width", "1", *base(home))
    assert ranking(full) == expected
    status = child_json("status", *base(home))
    assert status["images"] == status["vectors"] == 24
    assert status["read_only"] == f"this user may not write {folder}"
    assert "writable    no: this user may not write" in child("status", *base(home)).stdout

    # Every writer is refused in one line, before any work; the search goes on without
    # refreshing, and says so.
    refused(child("index", *base(home)), "cannot be written here", "searching it works")
    refused(child("index", str(photos), *base(home)), "cannot be written here")
    toyworld.generate(photos / "new", 3, 4702)
    refreshed = child("search", QUERY, "-k", "5", "--refresh", "--json", *base(home))
    assert refreshed.returncode == 0, refreshed.stderr
    assert ranking(json.loads(refreshed.stdout)) == expected
    assert "not refreshed: collection 'c' cannot be written here" in refreshed.stderr
    refused(child("remove", "--folder", str(photos), "--yes", *base(home)), "cannot be written")
    refused(child("remove", "--yes", *base(home)), "cannot remove collection 'c'")
    assert snapshot(folder) == before  # not even a -wal or -shm file

    if os.getuid() != 0:
        return
    # The owner indexing meanwhile (its commit still in the -wal file): a reader sees it.
    for path in [home, folder, *folder.iterdir()]:
        os.chown(path, 0, 0)
    owner = cli(*base(home, "index", str(photos / "new")))
    assert owner.exit_code == 0, owner.output
    import sqlite3

    writer = sqlite3.connect(folder / "catalog.sqlite")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO roots VALUES ('/a/folder/being/added')")
    writer.commit()
    try:
        for path in [home, folder, *folder.iterdir()]:
            os.chown(path, OTHER_UID, OTHER_UID)
        assert (folder / "catalog.sqlite-wal").stat().st_size > 0
        roots = child_json("status", *base(home))["roots"]
        assert "/a/folder/being/added" in roots and str(photos / "new") in roots
        assert child_json("status", *base(home))["images"] == 27
    finally:
        writer.close()


def test_a_collection_on_a_read_only_filesystem_is_searched_and_served(
    tmp_path, photos, monkeypatch
):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        ok_json("index", str(photos), *base(disk, "-m", "toy"))
        expected = ranking(ok_json("search", QUERY, "-k", "5", *base(disk)))
        remount(disk, "ro")
        assert ranking(ok_json("search", QUERY, "-k", "5", *base(disk))) == expected
        assert (
            ok_json("status", *base(disk))["read_only"]
            == f"{disk / 'c'} is on a read-only filesystem"
        )
        refused(child("index", *base(disk)), "read-only filesystem", "searching it works")
        refused(
            child("index", str(photos), "-c", "new", "--index-dir", str(disk)),
            "cannot make the collection folder",
        )

        # The web server: thumbnails go to the user's cache, or, where that cannot be
        # written either, are served from memory.
        for cache, kept in [(tmp_path / "cache", True), (disk / "cache", False)]:
            monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
            with (
                Collection.open("c", Config(home=disk, device="cpu")) as collection,
                TestClient(create_app(collection, warm_up=True), base_url=BASE) as client,
            ):
                hits = client.get("/api/search", params={"q": QUERY, "k": 5}).json()["results"]
                assert ranking(hits) == expected
                thumb = client.get(hits[0]["thumbnail"])
                assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
                assert max(Image.open(io.BytesIO(thumb.content)).size) == 384
                assert (
                    client.get("/api/status").json()["read_only"].endswith("read-only filesystem")
                )
                captioner = FakeCaptioner()  # made for each answer: nowhere to keep them
                ids = [h["id"] for h in hits]
                assert collection.caption(ids, captioner) == collection.caption(ids, captioner)
                assert captioner.calls == 10
            cached = list(cache.glob("searchengine/thumbs/*/small/*.jpg"))
            assert len(cached) == (1 if kept else 0)
            if kept:
                assert cached[0].read_bytes() == thumb.content


def test_a_full_disk_ends_index_in_one_line_and_loses_nothing(tmp_path):
    photos = tmp_path / "photos"
    toyworld.generate(photos, 200, 4703)  # 100 in album-a, 100 in album-b
    with tmpfs(tmp_path / "disk", "4m") as disk:
        ok_json("index", str(photos / "album-a"), *base(disk, "-m", "toy"))
        # The disk fills while the next run commits its batches: 224 KB left holds a
        # few of them (each commit grows the catalog's log by some pages).
        filler = disk / "filler"
        with filler.open("wb") as out:
            os.posix_fallocate(out.fileno(), 0, shutil.disk_usage(disk).free - 224 * 1024)
        done = child("index", str(photos), "--batch-size", "8", *base(disk))
        refused(
            done, f"no space left on the disk holding {disk / 'c'}", "run the same command again"
        )
        kept = child_json("status", *base(disk))["images"]
        assert 100 < kept < 200, "the disk should fill mid-run: change the space left"
        filler.unlink()
        report = child_json("index", *base(disk))
        assert (report["unchanged"], report["added"]) == (kept, 200 - kept)  # none embedded twice
        status = child_json("status", *base(disk))
        assert status["images"] == status["vectors"] == 200
        hits = child_json("search", QUERY, "-k", "200", *base(disk))
        assert len({h["path"] for h in hits}) == 200

    with tmpfs(tmp_path / "tiny", "64k") as tiny:
        # Full before the first photo: the new collection itself does not fit.
        done = child("index", str(photos), *base(tiny, "-m", "toy"))
        refused(done, f"no space left on the disk holding {tiny}")
        remount(tiny, "size=8m")
        assert child_json("index", str(photos), *base(tiny, "-m", "toy"))["added"] == 200


@pytest.mark.postgres
def test_a_full_disk_on_the_database_server_ends_index_in_one_line_and_loses_nothing(
    tmp_path, pg_cluster
):
    """The shared catalog's tables on a disk of their own that fills mid-run: the live
    server refuses to extend a table (``could not extend file ...: No space left on
    device``, SQLSTATE 53100), as it does when its data disk is full."""
    photos = tmp_path / "photos"
    toyworld.generate(photos, 200, 4703)  # 100 in album-a, 100 in album-b
    owner = pwd.getpwnam(pg_cluster.run_as) if pg_cluster.run_as else None
    options = f"uid={owner.pw_uid},gid={owner.pw_gid},mode=700" if owner else ""
    # In the cluster's folder: the server's user may not reach the tests' own.
    with tmpfs(pg_cluster.root / f"disk-{tmp_path.name}", "4m", options) as disk:
        url = pg_cluster.new_database()
        database = url.rsplit("/", 1)[1]
        pg_cluster.admin(
            f"CREATE TABLESPACE full_disk LOCATION '{disk}'",
            f"ALTER DATABASE {database} SET default_tablespace = full_disk",
        )
        try:
            home = tmp_path / "home"
            shared = base(home, "--database-url", url)
            ok_json("index", str(photos / "album-a"), "-m", "toy", *shared)
            assert any(disk.rglob("*")), "the catalog's tables should be on the small disk"
            # The server's disk fills while the next run commits its batches: 48 KB left
            # holds a few of them.
            filler = disk / "filler"
            with filler.open("wb") as out:
                os.posix_fallocate(out.fileno(), 0, shutil.disk_usage(disk).free - 48 * 1024)
            done = child("index", str(photos), "--batch-size", "8", *shared)
            refused(
                done,
                "the catalog's database server has no space left on its disk",
                "run the same command again (what was committed is kept)",
            )
            kept = child_json("status", *shared)["images"]
            assert 100 < kept < 200, "the disk should fill mid-run: change the space left"
            filler.unlink()
            the_same_command_adds_the_rest(shared, kept, 200)
        finally:
            pg_cluster.admin(f"ALTER DATABASE {database} RESET default_tablespace")
            pg_cluster.give_back(url)
            pg_cluster.admin("DROP TABLESPACE full_disk")


@pytest.mark.postgres
def test_a_full_disk_under_the_database_servers_log_stops_it_and_index_loses_nothing(
    tmp_path, own_cluster
):
    """The server's write-ahead log on a disk of its own that fills mid-run: PostgreSQL
    refuses the statement (SQLSTATE 53100) or, where the log write was in a critical
    section, stops (``PANIC: could not write to file "pg_wal/…": No space left on
    device``) and every client loses its connection. Either way the run ends in one
    line; once space is freed and the server started again, the same command embeds
    exactly the rest."""
    photos = tmp_path / "photos"
    toyworld.generate(photos, 200, 4703)  # 100 in album-a, 100 in album-b
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    options = f"uid={owner.pw_uid},gid={owner.pw_gid},mode=700" if owner else ""
    place = Path(tempfile.mkdtemp(prefix="searchengine-wal-"))  # the server's user reaches it
    place.chmod(0o755)
    try:
        with tmpfs(place / "wal", "32m", options) as wal:
            # Segments made anew, never recycled: each needs 1 MB of free space.
            settings = "-c wal_recycle=off -c min_wal_size=2MB"
            cluster = own_cluster(durable=True, wal_dir=wal, settings=settings)
            try:
                shared = base(tmp_path / "home", "--database-url", cluster.new_database())
                ok_json("index", str(photos / "album-a"), "-m", "toy", *shared)
                use_up_the_log(cluster.url(), wal, leave=32 * 1024)  # a run writes ~150 KB
                filler = wal / "filler"
                with filler.open("wb") as out:
                    os.posix_fallocate(out.fileno(), 0, shutil.disk_usage(wal).free - 512 * 1024)
                done = child("index", str(photos), "--batch-size", "8", *shared)
                # The server's own error (SQLSTATE 53100) where the write failed outside
                # a critical section, else the lost connection of a server that stopped.
                line = refused(done, "run the same command again", "what was committed is kept")
                assert (
                    "the catalog's database server has no space left on its disk" in line
                    or "cannot use the catalog database" in line
                )
                filler.unlink()
                cluster.halt()  # where it restarted after the crash
                cluster.start()
                kept = child_json("status", *shared)["images"]
                assert 100 <= kept < 200, "the log should fill mid-run: change the space left"
                the_same_command_adds_the_rest(shared, kept, 200)
            finally:
                cluster.stop()  # before its log's disk goes
    finally:
        shutil.rmtree(place, ignore_errors=True)


def use_up_the_log(url: str, wal: Path, leave: int) -> None:
    """Use up the log segments the server made ahead, then fill the current one up to
    its last ``leave`` bytes: the next segment will need 1 MB of free space."""
    import psycopg

    segment = 1 << 20
    with psycopg.connect(url, autocommit=True) as conn:

        def value(sql: str) -> Any:
            return conn.execute(sql).fetchone()[0]  # type: ignore[index]

        def ahead() -> list[str]:
            current = value("SELECT pg_walfile_name(pg_current_wal_lsn())")
            return [name for name in os.listdir(wal) if len(name) == 24 and name > current]

        conn.execute("CREATE TABLE burn (x text)")
        conn.execute("CHECKPOINT")
        while True:
            while ahead():
                conn.execute("INSERT INTO burn VALUES ('x')")
                conn.execute("SELECT pg_switch_wal()")
            while int(value("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")) % segment < (
                segment - leave
            ):
                conn.execute("INSERT INTO burn SELECT repeat('x', 1000) FROM generate_series(1, 8)")
            if not ahead():
                return
