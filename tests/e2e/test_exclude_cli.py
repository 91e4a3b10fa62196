"""``index --exclude`` through the real CLI, on SQLite and on a live PostgreSQL: a
folder or a kind of file left out of a collection stays out of every later walk
(``index``, ``search --refresh``), its indexed photos leave the collection while the
files stay, and ``--no-exclude`` brings them back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from clirunner import cli, ok_json

from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path: Path, database_url: str | None) -> tuple[Path, list[str]]:
    photos = tmp_path / "photos"
    toyworld.generate(photos, 24, 4701)  # album-a/ and album-b/nested/, 12 photos each
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    if database_url:
        base += ["--database-url", database_url]
    return photos, base


def found(base: list[str], *extra: str) -> list[str]:
    hits = ok_json("search", "a red circle", "-k", "100", *base, *extra)
    return [h["path"] for h in hits]


def test_a_folder_left_out_stays_out_and_comes_back(setup):
    photos, base = setup
    first = ok_json("index", str(photos), *base, "-m", "toy")
    assert first["added"] == 24
    album_a = str(photos / "album-a") + "/"

    # Left out after it was indexed: its photos leave the collection, the files stay.
    result = cli("index", *base, "--exclude", "ALBUM-A/")
    assert result.exit_code == 0, result.output
    assert "unchanged 12, removed 0, failed 0, excluded 12 in" in result.stdout
    assert len(list((photos / "album-a").iterdir())) == 12
    paths = found(base)
    assert len(paths) == 12 and not any(p.startswith(album_a) for p in paths)

    status = ok_json("status", *base)
    assert status["exclude"] == ["ALBUM-A"] and status["images"] == 12
    shown = cli("status", *base)
    assert "excluded    ALBUM-A" in shown.stdout

    # Every later walk leaves it out: a re-run, and a search that refreshes first.
    again = ok_json("index", *base)
    assert (again["unchanged"], again["excluded"], again["added"]) == (12, 0, 0)
    first_b = sorted((photos / "album-b" / "nested").iterdir())[0]
    shutil.copy(first_b, photos / "album-a" / "new.jpg")
    refreshed = found(base, "--refresh")
    assert len(refreshed) == 12 and not any(p.startswith(album_a) for p in refreshed)
    assert ok_json("index", *base)["added"] == 0

    # Named again on purpose: the folder named is walked whatever the patterns say.
    named = ok_json("index", str(photos / "album-a"), *base)
    assert named["added"] == 13
    assert len(found(base)) == 24  # the new copy is one result with its original
    assert ok_json("index", *base)["unchanged"] == 25


def test_no_exclude_brings_the_photos_back(setup):
    photos, base = setup
    ok_json("index", str(photos), *base, "-m", "toy", "--exclude", "album-b")
    assert ok_json("status", *base)["images"] == 12
    back = ok_json("index", *base, "--no-exclude", "album-b/")
    assert (back["added"], back["unchanged"]) == (12, 12)
    assert ok_json("status", *base)["exclude"] == []
    assert len(found(base)) == 24


def test_a_pattern_that_is_wrong_is_refused_before_anything_is_made(setup, tmp_path):
    photos, base = setup
    for bad, says in [
        ("*", "would leave out every photo"),
        ("", "is empty"),
    ]:
        # A real model spec: the pattern is refused before any model would load.
        result = cli("index", str(photos), *base, "-m", "ViT-B-32:openai", "--exclude", bad)
        assert result.exit_code == 2 and says in result.output, result.output
        assert not (tmp_path / "home").exists()
    ok_json("index", str(photos), *base, "-m", "toy")
    result = cli("index", *base, "--no-exclude", "album-c")
    assert result.exit_code == 2
    assert "the collection does not leave that out (its patterns: none)" in result.output
