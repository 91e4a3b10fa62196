"""Bad input leaves nothing behind; collections are listed and removed."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from imagegen import noise

from searchengine import Collection, Config, collection_summaries, list_collections
from searchengine.cli import main
from searchengine.fsutil import FileLock
from searchengine.store import LOCK_FILE


def _index(tmp_path, *args: str, env: dict[str, str] | None = None):
    photos = tmp_path / "photos"
    if not photos.exists():
        noise(photos / "a.jpg", seed=1)
        noise(photos / "b.png", seed=2, fmt="PNG")
    home = tmp_path / "home"
    return CliRunner().invoke(
        main, ["index", str(photos), "--index-dir", str(home), *args], env=env
    )


def _left_on_disk(tmp_path) -> list[str]:
    home = tmp_path / "home"
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


def test_a_model_that_does_not_load_creates_no_collection(tmp_path):
    result = _index(tmp_path, "--model", "nosuch:thing")
    assert result.exit_code == 1
    assert "nosuch" in result.output and "Traceback" not in result.output
    assert _left_on_disk(tmp_path) == []
    # Nothing recorded the bad spec: the next run with a good model just works.
    result = _index(tmp_path, "--model", "toy", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 2


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("postgresql://someone:secret@127.0.0.1:1/photos", 1),  # nothing listens there
        ("nosuchdb://x/y", 2),
        ("sqlite:////nonexistent/folder/catalog.sqlite", 2),
    ],
)
def test_an_unreachable_or_unusable_database_creates_nothing(tmp_path, url, code):
    result = _index(tmp_path, "--model", "toy", env={"SEARCHENGINE_DATABASE_URL": url})
    assert result.exit_code == code, result.output
    assert "secret" not in result.output  # the password is not printed
    assert "Traceback" not in result.output
    assert _left_on_disk(tmp_path) == []


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SEARCHENGINE_DEVICE": "gpu"},
            "SEARCHENGINE_DEVICE='gpu' is not one of: auto, cpu, cuda",
        ),
        ({"SEARCHENGINE_RUNTIME": "fast"}, "SEARCHENGINE_RUNTIME='fast' is not one of"),
        ({"SEARCHENGINE_LOAD_SECONDS": "0"}, "SEARCHENGINE_LOAD_SECONDS='0' must be a positive"),
    ],
)
def test_an_unknown_option_value_creates_nothing(tmp_path, env, says):
    result = _index(tmp_path, "--model", "toy", env=env)
    assert result.exit_code == 2
    assert says in result.output
    assert _left_on_disk(tmp_path) == []


def test_a_missing_path_creates_nothing(tmp_path):
    result = CliRunner().invoke(
        main, ["index", str(tmp_path / "gone"), "--index-dir", str(tmp_path / "home")]
    )
    assert result.exit_code == 2 and "no such file or folder" in result.output
    assert _left_on_disk(tmp_path) == []


def test_collections_lists_each_with_model_images_and_size(tmp_path):
    assert _index(tmp_path, "--model", "toy", "-c", "family").exit_code == 0
    Collection.open("empty", Config(home=tmp_path / "home"), create=True, model="toy").close()
    (tmp_path / "home" / "not-a-collection").mkdir()  # a stray folder does not count
    result = CliRunner().invoke(
        main, ["collections", "--index-dir", str(tmp_path / "home"), "--json"]
    )
    assert result.exit_code == 0, result.output
    listed = {c["name"]: c for c in json.loads(result.stdout)}
    assert set(listed) == {"empty", "family"}
    assert (listed["family"]["model"], listed["family"]["images"]) == ("toy", 2)
    assert listed["empty"]["images"] == 0
    assert listed["family"]["size_bytes"] > listed["empty"]["size_bytes"] > 0
    text = CliRunner().invoke(main, ["collections", "--index-dir", str(tmp_path / "home")])
    lines = text.output.splitlines()
    assert lines[1].startswith("family") and "2 images" in lines[1] and "toy" in lines[1]


def test_remove_asks_then_deletes_and_leaves_the_photos(tmp_path):
    assert _index(tmp_path, "--model", "toy", "-c", "old").exit_code == 0
    home = tmp_path / "home"
    args = ["remove", "--collection", "old", "--index-dir", str(home)]
    kept = CliRunner().invoke(main, args, input="n\n")
    assert kept.exit_code == 1 and "remove collection 'old' (2 images" in kept.output
    assert list_collections(Config(home=home)) == ["old"]
    gone = CliRunner().invoke(main, args, input="y\n")
    assert gone.exit_code == 0, gone.output
    assert list_collections(Config(home=home)) == [] and not (home / "old").exists()
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["a.jpg", "b.png"]
    again = CliRunner().invoke(main, [*args, "--yes"])
    assert again.exit_code == 1 and "no collection 'old'" in again.output


def test_remove_is_refused_while_the_collection_is_being_indexed(tmp_path):
    assert _index(tmp_path, "--model", "toy", "-c", "busy").exit_code == 0
    home = tmp_path / "home"
    indexer = FileLock(home / "busy" / LOCK_FILE, blocking=False)  # what `index` holds
    assert indexer.acquire()
    try:
        result = CliRunner().invoke(main, ["remove", "-c", "busy", "--index-dir", str(home), "-y"])
    finally:
        indexer.release()
    assert result.exit_code == 1
    assert "is being indexed by process" in result.output
    assert [s.name for s in collection_summaries(Config(home=home))] == ["busy"]


def test_a_team_database_url_in_the_environment_does_not_hide_a_personal_collection(tmp_path):
    assert _index(tmp_path, "--model", "toy", "-c", "mine").exit_code == 0
    home = tmp_path / "home"
    team = {"SEARCHENGINE_DATABASE_URL": "postgresql://team@127.0.0.1:9/photos"}
    listed = CliRunner().invoke(main, ["collections", "--index-dir", str(home), "--json"], env=team)
    assert listed.exit_code == 0, listed.output
    [mine] = json.loads(listed.stdout)
    assert (mine["name"], mine["images"], mine["unavailable"]) == ("mine", 2, None)
    base = ["remove", "-c", "mine", "--index-dir", str(home)]
    local = CliRunner().invoke(main, [*base, "--local", "--yes"], env=team)
    assert local.exit_code == 1 and "without --local" in local.output
    assert list_collections(Config(home=home)) == ["mine"]
    gone = CliRunner().invoke(main, base, input="y\n", env=team)
    assert gone.exit_code == 0, gone.output
    assert "remove collection 'mine' (2 images" in gone.output
    assert list_collections(Config(home=home)) == []
