"""An honest "nothing matches": the weak-match line per collection and model.

With the colour-space fake encoder: texts embed as the colours they name, so a query
for a colour the collection has matches, one for a colour it lacks does not, and the
null queries (no colour) embed as grey.
"""

from __future__ import annotations

import numpy as np
import pytest
from imagegen import solid

from searchengine import Collection, Config
from searchengine.models.fake import FakeEncoder
from searchengine.ranking import Calibration, Query, TextTerm, calibrate
from searchengine.ranking.calibration import MIN_IMAGES, NULL_QUERIES
from searchengine.values import MetaKey
from searchengine.vectors import FaissIndex

SHADES = {
    "red": [(250, 10 * i, 0) for i in range(5)],
    "green": [(10 * i, 240, 0) for i in range(5)],
    "yellow": [(250, 240, 10 * i) for i in range(5)],
}


@pytest.fixture
def coll(tmp_path):
    photos = tmp_path / "photos"
    for colour, shades in SHADES.items():
        for i, rgb in enumerate(shades):
            solid(photos / f"{colour}-{i}.jpg", rgb)
    encoder = FakeEncoder()
    config = Config(home=tmp_path / "idx", workers=1)
    with Collection.open("c", config, create=True, encoder=encoder) as c:
        c.index([photos])
        yield c


def test_the_line_is_the_median_best_score_of_queries_that_name_nothing():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaissIndex(4)
    index.add(np.arange(1, 201), vectors)
    encoder = FakeEncoder()
    measured = calibrate(index, encoder)
    nulls = encoder.encode_texts(list(NULL_QUERIES))
    expected = np.median((nulls @ vectors.T).max(axis=1))
    assert measured is not None
    assert measured.threshold == pytest.approx(expected, abs=1e-5)
    assert (measured.model, measured.images) == ("fake", 200)
    small = FaissIndex(4)
    small.add(np.arange(1, MIN_IMAGES), vectors[: MIN_IMAGES - 1])
    assert calibrate(small, encoder) is None  # too few images to say


def test_a_present_colour_matches_and_an_absent_one_is_weak(coll):
    present = coll.search("red", k=3)
    assert all("red" in r.path for r in present)
    assert [r.weak for r in present] == [False, False, False]
    absent = coll.search("blue", k=3)
    assert [r.weak for r in absent] == [True, True, True]
    # The verdict is on the query: the green and yellow photos after the reds are not
    # called weak one by one.
    whole = coll.search("red", k=15)
    assert len(whole) == 15 and not any(r.weak for r in whole)
    assert whole[-1].cosine < coll.calibration().threshold
    page = coll.rank(Query((TextTerm("blue"),), 3))
    assert page.weak_below == coll.calibration().threshold
    assert all(r.cosine < page.weak_below for r in page.results)


def test_image_queries_are_not_judged(coll):
    example = next(r for r in coll.catalog.records() if "green-0" in r.path)
    similar = coll.similar(example.path, k=3)
    assert similar and all(r.weak is None for r in similar)


def test_the_line_is_stored_by_the_ingest_and_reused(coll, tmp_path):
    stored = Calibration.from_json(coll.catalog.get_meta(MetaKey.CALIBRATION))
    assert stored is not None and stored.fits("fake", 15)
    encoder = coll.encoder
    before = encoder.texts_encoded
    assert coll.calibration() == stored  # read back, not measured again
    assert encoder.texts_encoded == before
    solid(tmp_path / "photos" / "white.jpg", (250, 250, 250))
    coll.index()
    again = Calibration.from_json(coll.catalog.get_meta(MetaKey.CALIBRATION))
    assert again is not None and again.images == 16


def test_a_stale_or_foreign_calibration_is_measured_again(coll):
    stored = Calibration.from_json(coll.catalog.get_meta(MetaKey.CALIBRATION))
    assert stored is not None
    coll.catalog.set_meta({MetaKey.CALIBRATION: Calibration("fake", 0.0, 999).to_json()})
    coll._calibration = None  # as a fresh process would
    assert coll.calibration() == stored  # measured on the index as it is
    assert Calibration.from_json('{"model": "fake", "threshold": 1, "images": 2}') is None
    assert Calibration.from_json("not json") is None
    assert Calibration.from_json(stored.to_json()) == stored
