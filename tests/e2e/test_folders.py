"""A collection's folders through the real CLI: one folder under two names is walked
once, and a folder can be taken out of a collection (``remove --folder``).

Before folders were compared by identity (device and inode), ``index photos`` and then ``index
link-to-photos`` made two folders of one, and every photo in it came back twice from
every search. Such a collection is made here the way that code made it (the second
name written to the list of folders, then walked), to check that it is reported and
can be mended.
"""

from __future__ import annotations

import shlex
import sqlite3
from pathlib import Path

import pytest
from clirunner import cli, ok_json

from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    toyworld.generate(photos, 24, 4601)
    other = tmp_path / "other"
    toyworld.generate(other, 6, 4602)
    link = tmp_path / "link"
    link.symlink_to(photos)
    return {"photos": photos, "other": other, "link": link, "home": tmp_path / "home"}


def base(world: dict[str, Path], *args: str) -> list[str]:
    return [*args, "-c", "c", "--index-dir", str(world["home"])]


def found_paths(world: dict[str, Path], query: str = "a red circle") -> list[str]:
    hits = ok_json("search", query, "-k", "100", *base(world))
    return [h["path"] for h in hits]


def roots(world: dict[str, Path]) -> list[str]:
    return ok_json("status", *base(world))["roots"]


def test_a_folder_named_through_a_link_is_indexed_once(world):
    photos, link = world["photos"], world["link"]
    first = ok_json("index", str(photos / "album-b"), *base(world, "-m", "toy"))
    assert first["added"] == 12
    # The same folder through the link: indexed under the name the collection knows.
    again = cli("index", str(link), *base(world))
    assert again.exit_code == 0, again.output
    assert f"{link} is {photos} by another name" in again.stderr
    assert "added 12," in again.stdout and "unchanged 12" in again.stdout
    # Inside a known folder, through the link; and the link with the real name.
    inner = ok_json("index", str(link / "album-a"), str(photos), str(link), *base(world))
    assert inner["added"] == 0 and inner["unchanged"] == 24
    assert roots(world) == [str(photos), str(photos / "album-a"), str(photos / "album-b")]
    paths = found_paths(world)
    assert len(paths) == 24 == len(set(paths))
    assert all(p.startswith(str(photos) + "/") for p in paths)


def test_a_folder_known_by_its_link_keeps_that_name(world):
    photos, link = world["photos"], world["link"]
    ok_json("index", str(link / "album-b"), *base(world, "-m", "toy"))
    # The real folder holding the known one is written through the link, as it is.
    report = ok_json("index", str(photos), *base(world))
    assert report["added"] == 12 and report["unchanged"] == 12
    assert report["notes"] == [
        f"{photos} is {link} by another name; indexed as that, so that no photo is listed twice"
    ]
    assert roots(world) == [str(link), str(link / "album-b")]
    paths = found_paths(world)
    assert len(paths) == 24 == len(set(paths))


def test_a_collection_with_one_folder_twice_is_told_and_mended(world):
    photos, link, other = world["photos"], world["link"], world["other"]
    ok_json("index", str(photos), str(other), *base(world, "-m", "toy"))
    catalog = world["home"] / "c" / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:  # what `index LINK` wrote before this change
        db.execute("insert into roots values (?)", (str(link),))
    walked = cli("index", *base(world))
    assert walked.exit_code == 0, walked.output
    command = f"searchengine remove -c c --index-dir {world['home']} --folder {link}"
    assert f"{link} is {photos} by another name, so its photos are listed twice" in walked.stderr
    assert command in walked.stderr
    assert "added 24," in walked.stdout
    shown = cli("status", *base(world)).stdout
    assert f"folders     {link} (= {photos}: photos listed twice), {other}, {photos}\n" in shown
    notes = ok_json("status", *base(world))["folder_notes"]
    assert notes == {str(link): f"= {photos}: photos listed twice"}  # also in --json
    # In the catalog twice (54 rows); in results once, the other name among its copies.
    assert ok_json("status", *base(world))["images"] == 54
    hits = ok_json("search", "a red circle", "-k", "100", *base(world))
    assert len(hits) == 30 and sum(len(h["copies"]) for h in hits) == 24

    # The command as said, pasted; declined: nothing goes.
    asked = cli(*shlex.split(command)[1:], input="n\n")
    assert asked.exit_code == 1
    assert f"take {link} out of collection 'c' (24 photos)? The files stay on disk" in asked.output
    assert ok_json("status", *base(world))["images"] == 54

    gone = ok_json("remove", "--folder", str(link), "--yes", *base(world))
    assert gone == [{"folders": [str(link)], "images": 24}]
    hits = ok_json("search", "a red circle", "-k", "100", *base(world))
    assert len(hits) == 30 and all(h["copies"] == [] for h in hits)
    assert not any(h["path"].startswith(str(link)) for h in hits)
    assert roots(world) == [str(other), str(photos)]
    quiet = cli("index", *base(world))  # mended: no note, nothing to do
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert "unchanged 30" in quiet.stdout
    assert (link / "album-a").is_dir() and len(list(photos.rglob("*.jpg"))) == 8


def test_remove_folder_takes_its_photos_out_and_refuses_what_it_cannot(world):
    photos, other = world["photos"], world["other"]
    ok_json("index", str(photos), str(other / "album-a"), *base(world, "-m", "toy"))
    ok_json("index", str(photos / "album-b"), *base(world))  # a folder inside another
    before = set(found_paths(world))

    for inner in (photos / "album-a", photos / "album-b"):
        inside = cli("remove", "--folder", str(inner), "--yes", *base(world))
        assert inside.exit_code == 1
        assert f"is inside the collection's folder {photos}, which the next index walks" in (
            inside.output
        )
    stranger = cli("remove", "--folder", str(other / "album-b"), "--yes", *base(world))
    assert stranger.exit_code == 1
    assert f"its folders: {other / 'album-a'}, {photos}, {photos / 'album-b'}" in stranger.output
    # Nothing is taken out when any folder named is wrong.
    both = cli("remove", "--folder", str(photos), "--folder", "/nowhere", "--yes", *base(world))
    assert both.exit_code == 1 and set(found_paths(world)) == before
    local = cli("remove", "--folder", str(photos), "--local", *base(world))
    assert local.exit_code == 2 and "drop --local" in local.output
    assert cli("remove", "--json", *base(world)).exit_code == 2

    # A folder holding the collection's folder takes it out; named twice, once.
    said = cli("remove", "--folder", str(other), "--folder", str(other), "--yes", *base(world))
    assert said.exit_code == 0, said.output
    assert said.stdout.splitlines() == [
        f"took {other / 'album-a'} out of collection 'c'",
        "3 photos left the collection; the files stay on disk",
    ]
    assert set(found_paths(world)) == {p for p in before if p.startswith(str(photos) + "/")}
    assert roots(world) == [str(photos), str(photos / "album-b")]
    status = ok_json("status", *base(world))
    assert status["images"] == status["vectors"] == 24
    assert len(list((other / "album-a").iterdir())) == 3  # the files stay


def test_a_folder_away_keeps_its_photos_and_a_deleted_one_inside_a_folder_does_not(world):
    """A drive unplugged or a share not mounted looks like a folder deleted; re-embedding
    it when it comes back costs hours, so a known folder that is gone, or holds no image
    at all, keeps its photos, and the run says so and how to take them out."""
    photos, other = world["photos"], world["other"]
    ok_json("index", str(photos), str(other), *base(world, "-m", "toy"))
    ok_json("index", str(photos / "album-a"), *base(world))  # a folder inside another
    unplugged = photos.with_name("photos-unplugged")
    photos.rename(unplugged)
    emptied = other.with_name("other-elsewhere")
    other.rename(emptied)
    other.mkdir()  # the mount point, left empty

    run = cli("index", *base(world))
    assert run.exit_code == 0, run.output
    assert "added 0, updated 0, moved 0, unchanged 0, removed 0" in run.stdout
    said = run.stderr.splitlines()
    assert said == [
        f"{other} holds no image (a drive or share not mounted?): its 6 photos are kept. "
        f"If they are gone for good: searchengine remove -c c --index-dir {world['home']} "
        f"--folder {other}",
        f"{photos} is not there (a drive or share not mounted?): its 24 photos are kept. "
        f"If they are gone for good: searchengine remove -c c --index-dir {world['home']} "
        f"--folder {photos}",
    ]
    assert ok_json("status", *base(world))["images"] == 30
    assert len(found_paths(world)) == 30
    shown = cli("status", *base(world)).stdout
    assert f"folders     {other}, {photos} (not there: photos kept), {photos / 'album-a'} (not" in (
        shown
    )
    assert ok_json("status", *base(world))["folder_notes"] == {
        str(photos): "not there: photos kept",
        str(photos / "album-a"): "not there: photos kept",
    }

    # Back: nothing is embedded again.
    other.rmdir()
    emptied.rename(other)
    unplugged.rename(photos)
    back = ok_json("index", *base(world))
    assert (back["unchanged"], back["added"], back["removed"]) == (30, 0, 0)
    assert back["notes"] == []

    # A folder deleted inside a folder that is there is deleted, also one indexed by name.
    for path in sorted((photos / "album-a").rglob("*"), reverse=True):
        path.unlink()
    (photos / "album-a").rmdir()
    gone = ok_json("index", *base(world))
    assert (gone["removed"], gone["unchanged"], gone["notes"]) == (12, 18, [])


def test_a_drive_mounted_again_at_another_path_moves_its_photos(world):
    """Kept rows of a folder away are still the source of a move: a drive that comes
    back under another name (``/media/usb`` then ``/media/usb1``) is not embedded again
    nor listed twice."""
    photos = world["photos"]
    ok_json("index", str(photos), *base(world, "-m", "toy"))
    remounted = photos.with_name("photos-usb1")
    photos.rename(remounted)
    report = ok_json("index", str(remounted), *base(world))
    assert (report["moved"], report["added"], report["removed"]) == (24, 0, 0)
    assert report["notes"] == []  # nothing is left where the drive was
    paths = found_paths(world)
    assert len(paths) == 24 and all(p.startswith(str(remounted) + "/") for p in paths)


@pytest.mark.postgres
def test_a_shared_collection_whose_folder_is_gone_can_take_it_out(world, pg_cluster, tmp_path):
    """On a shared catalog an absent folder may be another host's mount: its photos are
    kept and the run names the command that takes it out, which every host then sees."""
    photos, other = world["photos"], world["other"]
    url = pg_cluster.new_database()
    host1 = ["-c", "team", "--index-dir", str(tmp_path / "h1"), "--database-url", url]
    host2 = ["-c", "team", "--index-dir", str(tmp_path / "h2"), "--database-url", url]
    assert ok_json("index", str(photos), str(other), "-m", "toy", *host1)["added"] == 30
    for path in sorted(other.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    other.rmdir()
    kept = cli("index", *host1)
    assert kept.exit_code == 0, kept.output
    assert kept.stderr == (
        f"{other} is not there (a drive or share not mounted?; a collection shared "
        "between hosts needs its folders at the same paths on each): its 6 photos are "
        "kept. If they are gone for good: searchengine remove -c team --index-dir "
        f"{tmp_path / 'h1'} --folder {other}\n"
    )
    assert ok_json("status", *host2)["images"] == 30

    # `remove` reads the URL (with its password) from the environment, as for a collection.
    team = {"SEARCHENGINE_DATABASE_URL": url}
    gone = ok_json("remove", "--folder", str(other), "--yes", *host1[:4], env=team)
    assert gone == [{"folders": [str(other)], "images": 6}]
    assert ok_json("index", *host2)["unchanged"] == 24  # the other host: the rest only
    status = ok_json("status", *host2)
    assert status["roots"] == [str(photos)] and status["images"] == 24
    hits = ok_json("search", "a red circle", "-k", "100", *host1)
    assert len(hits) == 24 and all(h["path"].startswith(str(photos)) for h in hits)


def test_an_example_photo_named_through_a_link_is_left_out_of_its_own_results(world, tmp_path):
    photos, link = world["photos"], world["link"]
    ok_json("index", str(photos), *base(world, "-m", "toy"))
    photo = sorted(photos.rglob("*.jpg"))[0]
    favourite = tmp_path / "favourite.jpg"  # a file link from outside the collection
    favourite.symlink_to(photo)
    named = [photo, link / photo.relative_to(photos), favourite]
    for example in named:
        for region in ([], ["--region", "0,0,320,240"]):
            hits = ok_json("similar", str(example), "-k", "30", *region, *base(world))
            paths = [h["path"] for h in hits]
            assert len(paths) == 23 and str(photo) not in paths, (example, region)
    # The library's own catalog (not the one-shot reader) finds it the same way.
    from searchengine import Collection, Config

    with Collection.open("c", Config(home=world["home"])) as coll:
        results = coll.similar(str(named[1]), k=30)
    assert len(results) == 23 and str(photo) not in [r.path for r in results]


def test_a_folder_filter_named_through_a_link_keeps_that_folders_photos(world):
    photos, link = world["photos"], world["link"]
    ok_json("index", str(photos), *base(world, "-m", "toy"))
    expected = {str(p) for p in (photos / "album-a").iterdir()}
    for folder in (photos / "album-a", link / "album-a"):
        hits = ok_json("search", "a red circle", "-k", "100", "--path", str(folder), *base(world))
        assert {h["path"] for h in hits} == expected, folder


def test_indexing_the_folder_that_holds_the_collections_leaves_their_thumbnails_out(
    tmp_path, monkeypatch
):
    """``searchengine index .`` where ``./indexes`` is: the web server's thumbnails of the
    photos were indexed as photos (each result came back as its thumbnail too, and
    every thumbnail made later added one more)."""
    from fastapi.testclient import TestClient

    from searchengine.collection import Collection
    from searchengine.config import Config
    from searchengine.server import create_app

    monkeypatch.chdir(tmp_path)
    toyworld.generate(tmp_path / "pics", 12, 4604)
    assert ok_json("index", "pics", "-m", "toy")["added"] == 12
    with (
        Collection.open("default", Config(home=Path("indexes"), device="cpu")) as coll,
        TestClient(create_app(coll), base_url="http://127.0.0.1:8765") as client,
    ):
        hits = client.get("/api/search", params={"q": "a red circle", "k": 12}).json()["results"]
        assert all(client.get(h["thumbnail"]).status_code == 200 for h in hits)
    assert len(list((tmp_path / "indexes").rglob("thumbs/*/*.jpg"))) == 12
    report = ok_json("index", ".")
    assert (report["added"], report["unchanged"]) == (0, 12)
    paths = [h["path"] for h in ok_json("search", "a red circle", "-k", "100")]
    assert len(paths) == 12 and not any("/indexes/" in p for p in paths)
