"""Rerank, CLIPScore on every result, combined queries, filters and date sorting."""

import datetime as dt
import os

import numpy as np
import pytest
from imagegen import solid

from searchengine import Collection, Config
from searchengine.errors import QueryError
from searchengine.models.fake import FakeEncoder
from searchengine.ranking import Filters, parse_date

RED, GREEN, BLUE, YELLOW = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)


def names(results):
    return [os.path.basename(r.path) for r in results]


@pytest.fixture
def coll(tmp_path):
    config = Config(home=tmp_path / "idx", workers=2, batch_size=4)
    with Collection.open("c", config, create=True, encoder=FakeEncoder()) as c:
        yield c


@pytest.fixture
def dated(tmp_path):
    """Ten reddish photos with known EXIF dates and sizes, plus others."""
    folder = tmp_path / "photos"
    for i in range(10):
        sub = "2020" if i < 5 else "2021"
        solid(
            folder / sub / f"red{i}.jpg",
            (250 - i * 3, i * 2, 0),
            size=(64, 48) if i % 2 else (48, 64),
            taken=f"{sub}:0{1 + i % 5}:15 10:00:00",
        )
    solid(folder / "green.jpg", GREEN, taken="2021:03:01 08:00:00")
    solid(folder / "blue.jpg", BLUE, size=(100, 100), taken="2019:12:31 23:00:00")
    return folder


def test_every_result_has_cosine_and_clip_score(coll, dated):
    coll.index([dated])
    for r in coll.search("red", k=3):
        assert r.clip_score == pytest.approx(2.5 * max(r.cosine, 0.0), abs=0.05)
        assert r.score == r.cosine


def test_rerank_with_another_model_uses_the_cache(coll, dated, monkeypatch):
    coll.index([dated])

    class Flipped(FakeEncoder):
        """Thinks red is green: reranking under it must change the order."""

        def encode_texts(self, texts):
            swapped = [t.replace("red", "green") for t in texts]
            return super().encode_texts(swapped)

    reranker = Flipped(spec="flipped")
    first = coll.search("red", k=3)
    reranked = coll.search("red", k=3, rerank=reranker, candidates=20)
    assert names(first)[0].startswith("red")
    assert names(reranked)[0] == "green.jpg"
    assert reranked[0].score == reranked[0].clip_score
    assert reranker.images_encoded == 12  # every candidate once
    import searchengine.ranking.rescore as rerank_module

    def no_decode(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(rerank_module, "decode_file", no_decode)
    again = coll.search("red", k=3, rerank=reranker, candidates=20)
    assert names(again) == names(reranked)
    assert reranker.images_encoded == 12


def test_rerank_cache_is_invalidated_when_a_file_changes(coll, dated):
    coll.index([dated])
    reranker = FakeEncoder(spec="second")
    coll.search("green", k=1, rerank=reranker, candidates=20)
    solid(dated / "blue.jpg", GREEN, size=(100, 100))
    coll.index()
    encoded = reranker.images_encoded
    top = coll.search("green", k=2, rerank=reranker, candidates=20)
    assert reranker.images_encoded == encoded + 1  # only the changed file
    assert sorted(names(top)) == ["blue.jpg", "green.jpg"]


def test_min_score_drops_weak_results(coll, dated):
    coll.index([dated])
    results = coll.search("green", k=12, min_score=2.0)
    assert names(results) == ["green.jpg"]


def test_combined_query_with_image_and_minus_text(coll, dated, tmp_path):
    coll.index([dated])
    example = solid(tmp_path / "query" / "yellowish.png", YELLOW, fmt="PNG")
    # red + yellow image - red = yellow-ish: the green photo beats the red ones
    results = coll.search("red", k=1, plus=[str(example)], minus=["2:red"])
    assert names(results) == ["green.jpg"]
    with pytest.raises(QueryError, match="cancel out"):
        coll.search("red", minus=["red"])


def test_filters_return_k_results_even_when_top_candidates_are_filtered(coll, dated):
    coll.index([dated])
    # The two non-red photos are the worst matches for "red", yet asking only for
    # them still returns both: the filter runs inside the vector search.
    results = coll.search("red", k=2, filters=Filters(path="*/[gb]*.jpg"))
    assert sorted(names(results)) == ["blue.jpg", "green.jpg"]
    square = coll.search("red", k=5, filters=Filters(orientation="square"))
    assert names(square) == ["blue.jpg"]
    wide = coll.search("red", k=20, filters=Filters(min_width=60))
    assert {r.width for r in wide} >= {64, 100} and all(r.width >= 60 for r in wide)
    folder = coll.search("red", k=20, filters=Filters(path=str(dated / "2020")))
    assert sorted(names(folder)) == [f"red{i}.jpg" for i in range(5)]


def test_date_filters_and_sorting(coll, dated):
    coll.index([dated])
    in_2021 = Filters(after=parse_date("2021"), before=parse_date("2021", end=True))
    results = coll.search("red", k=20, filters=in_2021, sort="date")
    assert sorted(names(results)) == sorted([f"red{i}.jpg" for i in range(5, 10)] + ["green.jpg"])
    dates = [r.taken_at for r in results]
    assert dates == sorted(dates, reverse=True)
    march = Filters(after=parse_date("2021-03"), before=parse_date("2021-03", end=True))
    assert sorted(names(coll.search("red", k=20, filters=march))) == ["green.jpg", "red7.jpg"]
    oldest = coll.search("red", k=20, sort="date-asc")[0]
    assert names([oldest]) == ["blue.jpg"]
    assert dt.datetime.fromtimestamp(oldest.taken_at).year == 2019


def test_date_falls_back_to_mtime(coll, tmp_path):
    folder = tmp_path / "nodate"
    path = solid(folder / "a.png", RED, fmt="PNG")
    os.utime(path, (dt.datetime(2015, 6, 1).timestamp(),) * 2)
    coll.index([folder])
    assert names(coll.search("red", filters=Filters(before=parse_date("2016")))) == ["a.png"]
    assert coll.search("red", filters=Filters(after=parse_date("2016"))) == []


def test_bad_dates_and_orientation_are_query_errors():
    with pytest.raises(QueryError, match="YYYY"):
        parse_date("last summer")
    with pytest.raises(QueryError, match="out of range"):
        parse_date("9999", end=True)
    with pytest.raises(QueryError, match="orientation"):
        Filters(orientation="diagonal")


def test_parse_date_end_bounds():
    assert parse_date("2021-12", end=True) == parse_date("2022-01")
    assert parse_date("2021-02-28", end=True) == parse_date("2021-03-01")
    assert np.isclose(parse_date("2020", end=True), parse_date("2021"))


def test_precompute_caches_a_second_models_vectors(coll, dated, monkeypatch):
    coll.index([dated])
    second = FakeEncoder(spec="second")
    assert coll.precompute(second) == 12
    assert coll.precompute(second) == 0  # nothing new
    import searchengine.ranking.rescore as rerank_module

    monkeypatch.setattr(rerank_module, "decode_file", lambda p: pytest.fail(f"decoded {p}"))
    assert names(coll.search("green", k=1, rerank=second)) == ["green.jpg"]
