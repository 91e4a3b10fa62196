"""``index --exclude``: what the patterns match, on a real tree, and how they are kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from searchengine.errors import ConfigError
from searchengine.ingest.exclude import Exclusions, clean_pattern, parse_saved, saved_value, updated
from searchengine.ingest.plan import plan
from searchengine.ingest.scan import scan


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "Pictures"
    touch(
        root,
        "a.jpg",
        "scan.TIF",
        "Raw/r1.jpg",
        "2019/RAW/r2.jpg",
        "2019/private/p.jpg",
        "2019/private/deep/p2.jpg",
        "2020/private/q.jpg",
        "2020/exports/e.png",
        "trips/exports-old/x.jpg",
        "trips/IMG_0001-edited.jpg",
        "trips/IMG_0001.jpg",
    )
    return root


def walked(root: Path, *patterns: str) -> tuple[set[str], list[str]]:
    left_out: list[str] = []
    found = {
        os.path.relpath(e.path, root)
        for e in scan([root], exclusions=Exclusions(patterns), left_out=left_out)
    }
    return found, sorted(os.path.relpath(p, root) for p in left_out)


def test_without_patterns_everything_is_walked(tree):
    found, left_out = walked(tree)
    assert len(found) == 11 and left_out == []


def test_a_name_matches_at_any_depth_whatever_its_case(tree):
    found, left_out = walked(tree, "raw")
    assert left_out == ["2019/RAW", "Raw"]  # folders: not walked at all
    assert not any("r1" in p or "r2" in p for p in found) and len(found) == 9


def test_a_glob_on_names_leaves_out_files(tree):
    found, left_out = walked(tree, "*.tif", "*-edited.jpg")
    assert left_out == ["scan.TIF", "trips/IMG_0001-edited.jpg"]
    assert "trips/IMG_0001.jpg" in found and len(found) == 9


def test_a_pattern_with_a_slash_matches_below_the_folder_only(tree):
    found, left_out = walked(tree, "2019/private")
    assert left_out == ["2019/private"]
    assert "2020/private/q.jpg" in found  # the same name elsewhere stays
    found, left_out = walked(tree, "*/exports")
    assert left_out == ["2020/exports"]  # not trips/exports-old
    assert "trips/exports-old/x.jpg" in found


def test_an_absolute_pattern_and_a_trailing_slash(tree):
    found, left_out = walked(tree, f"{tree}/2020", "trips/")
    assert left_out == ["2020", "trips"]
    assert found == {"a.jpg", "scan.TIF", "Raw/r1.jpg", "2019/RAW/r2.jpg",
                     "2019/private/p.jpg", "2019/private/deep/p2.jpg"}  # fmt: skip


def test_a_folder_named_itself_is_walked_whatever_its_name(tree):
    exclusions = Exclusions(["raw"])
    found = {e.path for e in scan([tree / "Raw"], exclusions=exclusions)}
    assert found == {str(tree / "Raw" / "r1.jpg")}


def test_covers_says_which_rows_leave(tree):
    exclusions = Exclusions(["raw", "2019/private", "*.tif"])
    roots = [str(tree)]
    assert exclusions.covers(str(tree / "2019/RAW/r2.jpg"), roots)
    assert exclusions.covers(str(tree / "2019/private/deep/p2.jpg"), roots)
    assert exclusions.covers(str(tree / "scan.TIF"), roots)
    assert not exclusions.covers(str(tree / "2020/private/q.jpg"), roots)
    assert not exclusions.covers(str(tree / "a.jpg"), roots)
    assert not exclusions.covers("/elsewhere/Raw/x.jpg", roots)  # under no folder


def test_plan_drops_covered_rows_and_a_folder_left_out_whole_is_not_away(tree):
    # Every photo of the folder is left out: the folder is there, so its rows are
    # excluded, not kept as if a drive were unplugged.
    rows = {str(tree / "Raw/r1.jpg"): (1, 1, os.stat(tree / "Raw/r1.jpg").st_mtime_ns)}
    diff = plan(rows, [str(tree / "Raw")], exclusions=Exclusions(["*.jpg"]))
    assert diff.excluded == {str(tree / "Raw/r1.jpg"): 1}
    assert diff.away == {} and diff.missing == {} and diff.candidates == []
    # Without patterns the same file is unchanged.
    assert plan(rows, [str(tree / "Raw")]).unchanged == 1


@pytest.mark.parametrize("bad", ["", "  ", "/", "*", "**", "?*", "*/"])
def test_patterns_that_leave_out_nothing_or_everything_are_refused(bad):
    with pytest.raises(ConfigError, match="--exclude"):
        clean_pattern(bad)


def test_patterns_are_saved_added_and_dropped():
    saved = updated([], ["Raw/", " *.tif ", "Raw"], [])
    assert saved == ["Raw", "*.tif"]
    assert parse_saved(saved_value(saved)) == saved
    assert updated(saved, [], ["Raw/"]) == ["*.tif"]
    said = r"does not leave that out \(its patterns: 'Raw', '\*.tif'\)"
    with pytest.raises(ConfigError, match=said):
        updated(saved, [], ["raw2"])
    # Names Linux allows: a newline, bytes that are not UTF-8.
    odd = ["a\nb", "caf\udce9"]
    assert parse_saved(saved_value(odd)) == odd
    assert parse_saved(None) == [] and parse_saved("") == []


def test_the_int8_check_samples_none_of_what_is_left_out(tmp_path):
    """The int8 tower is checked on the collection's own photos: not on a folder the
    collection leaves out."""
    from PIL import Image

    from searchengine.models import load_encoder
    from searchengine.precision import sample_pixels

    for folder, colour, count in [("keep", (200, 30, 30), 3), ("Raw", (30, 30, 200), 5)]:
        (tmp_path / folder).mkdir()
        for i in range(count):
            Image.new("RGB", (80, 60), colour).save(tmp_path / folder / f"{i}.png")
    encoder = load_encoder("toy", "cpu", "torch")
    every = sample_pixels([str(tmp_path)], encoder, size=8)
    kept = sample_pixels([str(tmp_path)], encoder, size=8, exclusions=Exclusions(["raw"]))
    assert len(every) == 8 and len(kept) == 3
    want = encoder.preprocess(Image.new("RGB", (80, 60), (200, 30, 30)))
    assert all(abs(pixels - want).max() < 1e-5 for pixels in kept)
