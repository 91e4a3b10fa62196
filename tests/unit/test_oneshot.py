"""The one-shot search: the same answers as ``Collection.search``, without the SQL layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from imagegen import solid
from importcheck import imported_after

from searchengine import Collection, Config
from searchengine.models.fake import FakeEncoder
from searchengine.oneshot import READS_SCHEMA, OneShot
from searchengine.ranking import Filters
from searchengine.schema import SCHEMA_VERSION
from searchengine.store import INDEX_FILE
from searchengine.values import MetaKey

COLOURS = {
    "red": (250, 0, 0),
    "green": (0, 250, 0),
    "blue": (0, 0, 250),
    "yellow": (250, 250, 0),
    "cyan": (0, 250, 250),
    "magenta": (250, 0, 250),
}


@pytest.fixture
def built(tmp_path: Path) -> tuple[Config, Path]:
    photos = tmp_path / "photos"
    for i, (name, rgb) in enumerate(COLOURS.items()):
        solid(photos / f"{name}.jpg", rgb, size=(64 + i, 48))
    # A name that is not UTF-8: stored in its escaped form, found as the same str.
    odd = os.fsdecode(b"caf\xe9-red.jpg")
    solid(photos / odd, (240, 10, 10))
    config = Config(home=tmp_path / "idx", workers=1, batch_size=2)
    with Collection.open("c", config, create=True, encoder=FakeEncoder()) as coll:
        assert coll.index([photos]).added == 7
    return config, photos


QUERIES = [
    {"query": "red", "k": 3},
    {"query": "blue", "k": 2, "plus": ["green"], "minus": ["red"]},
    {"query": "yellow", "k": 4, "rerank": True},
    {"query": "cyan", "k": 5, "min_score": 0.5},
    {"query": "magenta", "k": 7, "sort": "date"},
]


@pytest.mark.parametrize("kwargs", QUERIES)
def test_one_shot_answers_as_the_collection_does(built: tuple[Config, Path], kwargs) -> None:
    config, _ = built
    with Collection.open("c", config, encoder=FakeEncoder()) as coll:
        expected = coll.search(**kwargs)
    quick = OneShot.open(config, "c", FakeEncoder())
    assert quick is not None
    with quick:
        assert quick.search(**kwargs) == expected


def test_example_images_and_odd_names_read_the_same_rows(built: tuple[Config, Path]) -> None:
    config, photos = built
    odd = str(photos / os.fsdecode(b"caf\xe9-red.jpg"))
    with Collection.open("c", config, encoder=FakeEncoder()) as coll:
        expected = coll.search("red", plus=[str(photos / "blue.jpg")], k=7)
        like_odd = coll.search("green", plus=[odd], k=3)
    quick = OneShot.open(config, "c", FakeEncoder())
    assert quick is not None
    with quick:
        assert quick.search("red", plus=[str(photos / "blue.jpg")], k=7) == expected
        assert quick.search("green", plus=[odd], k=3) == like_odd
        assert quick.rows.by_path(odd) is not None and odd in {r.path for r in expected}


SIMILAR = [
    {"image": "red.jpg", "k": 3},
    {"image": "elsewhere.png", "k": 7},  # not indexed: decoded and embedded
    {"image": "blue.jpg", "k": 4, "region": (0, 0, 30, 20), "region_method": "crop"},
    {"image": "elsewhere.png", "k": 4, "region": (5, 5, 40, 40), "region_method": "blur"},
]


@pytest.mark.parametrize("kwargs", SIMILAR)
def test_similar_answers_as_the_collection_does(
    built: tuple[Config, Path], tmp_path: Path, kwargs
) -> None:
    config, photos = built
    solid(tmp_path / "elsewhere.png", (200, 30, 40))
    folder = tmp_path if kwargs["image"] == "elsewhere.png" else photos
    kwargs = {**kwargs, "image": str(folder / kwargs["image"])}
    with Collection.open("c", config, encoder=FakeEncoder()) as coll:
        expected = coll.similar(**kwargs)
    quick = OneShot.open(config, "c", FakeEncoder())
    assert quick is not None
    with quick:
        got = quick.similar(**kwargs)
    assert got == expected and len(got) == kwargs["k"]
    assert kwargs["image"] not in {r.path for r in got}  # an example is not its own result


def test_what_needs_the_full_collection_is_left_to_it(built: tuple[Config, Path]) -> None:
    config, _ = built
    assert OneShot.open(config, "c", None) is None  # no model opened ahead
    assert OneShot.open(config, "c", FakeEncoder("other")) is None  # not its model
    assert OneShot.open(config, "missing", FakeEncoder()) is None
    on_server = Config(home=config.home, database_url="postgresql://db/photos")
    assert OneShot.open(on_server, "c", FakeEncoder()) is None
    quick = OneShot.open(config, "c", FakeEncoder())
    assert quick is not None
    with quick, pytest.raises(ValueError, match="need a Collection"):
        quick.search("red", filters=Filters(min_width=66))


def test_a_catalog_of_another_schema_is_left_to_the_collection(built: tuple[Config, Path]) -> None:
    config, _ = built
    with Collection.open("c", config, encoder=FakeEncoder()) as coll:
        coll.catalog.set_meta({MetaKey.SCHEMA_VERSION: str(SCHEMA_VERSION + 1)})
    assert OneShot.open(config, "c", FakeEncoder()) is None


def test_it_reads_the_files_and_schema_the_catalog_writes() -> None:
    assert READS_SCHEMA == SCHEMA_VERSION
    assert INDEX_FILE == "vectors.faiss"


def test_importing_it_does_not_import_the_sql_layer() -> None:
    loaded = imported_after("import searchengine.oneshot", ["sqlalchemy", "searchengine.catalog"])
    assert loaded == []


def test_a_refresh_with_nothing_changed_on_disk_is_one_shot_too(built: tuple[Config, Path]) -> None:
    config, photos = built
    unchanged = OneShot.open(config, "c", FakeEncoder(), refresh=True)
    assert unchanged is not None
    unchanged.close()
    solid(photos / "white.jpg", (250, 250, 250))  # a new photo: Collection.update's work
    assert OneShot.open(config, "c", FakeEncoder(), refresh=True) is None
    plain = OneShot.open(config, "c", FakeEncoder())
    assert plain is not None  # a plain search is not held up
    plain.close()
    (photos / "white.jpg").unlink()
    (photos / "red.jpg").unlink()  # a photo gone
    assert OneShot.open(config, "c", FakeEncoder(), refresh=True) is None


def test_batches_a_killed_run_left_unsaved_are_refreshed_in_full(
    built: tuple[Config, Path],
) -> None:
    config, _ = built
    with Collection.open("c", config, encoder=FakeEncoder()) as coll:
        last = int(coll.catalog.get_meta(MetaKey.LAST_BATCH) or 0)
        coll.catalog.set_meta({MetaKey.LAST_BATCH: str(last + 1)})
    assert OneShot.open(config, "c", FakeEncoder(), refresh=True) is None


def test_weak_verdicts_are_the_collections(tmp_path: Path) -> None:
    # From MIN_IMAGES photos up a collection has a weak-match line; a one-shot search
    # must mark the same results weak as the full path does.
    photos = tmp_path / "photos"
    for i in range(12):
        solid(photos / f"p{i}.jpg", (20 * i, 250 - 20 * i, (90 * i) % 256), size=(64 + i, 48))
    config = Config(home=tmp_path / "idx", workers=1, batch_size=4)
    with Collection.open("c", config, create=True, encoder=FakeEncoder()) as coll:
        coll.index([photos])
        line = coll.calibration()
        assert line is not None
        expected = {q: coll.search(q, k=3) for q in ("red", "zzzz", "a photo of a red thing")}
    quick = OneShot.open(config, "c", FakeEncoder())
    assert quick is not None
    with quick:
        assert quick.calibration() == line
        for q, results in expected.items():
            assert quick.search(q, k=3) == results
