"""The one ranking path: typed terms, paging, the date sort, vector terms."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from imagegen import solid

from searchengine import Collection, Config
from searchengine.errors import QueryError
from searchengine.models.fake import FakeEncoder
from searchengine.ranking import ImageTerm, Query, TextTerm, VectorTerm, parse_term, query_terms

SHADES = [(250 - 20 * i, 10 * i, 0) for i in range(8)]  # reds drifting towards orange


@pytest.fixture
def coll(tmp_path):
    photos = tmp_path / "photos"
    for i, colour in enumerate(SHADES):
        path = solid(photos / f"{i}.png", colour, fmt="PNG")
        os.utime(path, (1_600_000_000 + 86_400 * (i % 3), 1_600_000_000 + 86_400 * (i % 3)))
    solid(photos / "blue.png", (0, 0, 250), fmt="PNG")
    config = Config(home=tmp_path / "idx", workers=1, batch_size=4)
    with Collection.open("c", config, create=True, encoder=FakeEncoder()) as c:
        c.index([photos])
        yield c


def names(results) -> list[str]:
    return [os.path.basename(r.path) for r in results]


def test_pages_are_slices_of_one_ranking(coll) -> None:
    terms = (TextTerm("red"),)
    whole = coll.rank(Query(terms, k=9)).results
    pages = [coll.rank(Query(terms, k=3, offset=o)) for o in (0, 3, 6)]
    assert [r.id for p in pages for r in p.results] == [r.id for r in whole]
    assert [p.has_more for p in pages] == [True, True, False]
    assert names(whole)[-1] == "blue.png"


def test_date_sort_orders_within_the_page(coll) -> None:
    terms = (TextTerm("red"),)
    page = coll.rank(Query(terms, k=4)).results
    dated = coll.rank(Query(terms, k=4, sort="date")).results
    assert {r.id for r in dated} == {r.id for r in page}  # the same four, reordered
    when = [os.stat(r.path).st_mtime for r in dated]
    assert when == sorted(when, reverse=True)
    assert coll.search("red", k=4, sort="date") == dated


def test_a_vector_term_ranks_like_the_image_it_came_from(coll) -> None:
    record = coll.catalog.by_path(os.path.join(coll.catalog.roots()[0], "blue.png"))
    vector = coll.vectors().reconstruct(record.id)
    by_vector = coll.rank(Query((VectorTerm(vector),), k=3, clip_score=False)).results
    by_image = coll.rank(Query((ImageTerm(record.path),), k=3, clip_score=False)).results
    assert names(by_vector)[0] == "blue.png"
    assert [r.id for r in by_vector] == [r.id for r in by_image]


def test_a_vector_term_cannot_be_rescored_under_another_model(coll) -> None:
    vector = np.asarray([0.0, 0.0, 1.0, 0.1], dtype=np.float32)
    other = FakeEncoder(spec="other")
    with pytest.raises(QueryError, match="another model"):
        coll.rank(Query((VectorTerm(vector),), k=3, rerank=True), rerank=other)


def test_strings_become_terms_in_one_place(tmp_path) -> None:
    photo = solid(tmp_path / "2:x.png", (0, 0, 0), fmt="PNG")
    assert parse_term("0.5:a dog") == TextTerm("a dog", 0.5)
    assert parse_term(str(photo)) == ImageTerm(str(photo))  # a file, whatever its name
    assert parse_term("cat", -1.0) == TextTerm("cat", -1.0)
    terms = query_terms("a beach", plus=["people"], minus=["2:rain"])
    assert terms == [TextTerm("a beach"), TextTerm("people"), TextTerm("rain", -2.0)]
    # A typed text term is never read as a file, whatever it says.
    assert query_terms(TextTerm(str(photo)))[0] == TextTerm(str(photo))


def test_a_term_that_looks_like_a_path_must_name_a_photo(tmp_path, monkeypatch) -> None:
    """A mistyped path was searched for as words, without a word said; one that names
    a folder or a FIFO too. Words that only have a dot in them stay words."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "album").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    refused = {
        "./sunset.jpg": "No such file or directory",
        "IMG_0001.JPG": "No such file or directory",
        "2:~/no-such-folder-here/a.webp": "No such file or directory",
        "/no/such/place": "No such file or directory",
        "./album": "it is a folder",
        str(tmp_path / "pipe.jpg"): "not a regular file (a FIFO)",
    }
    for raw, why in refused.items():
        with pytest.raises(QueryError, match="as an example photo: " + re.escape(why)):
            parse_term(raw)
    for words in ("Mr. Smith at the beach", "version 2.0", "notes.txt", "album"):
        assert parse_term(words) == TextTerm(words)


def test_bad_queries_are_refused_before_any_work(coll) -> None:
    with pytest.raises(QueryError, match="sort"):
        Query((TextTerm("red"),), sort="random")
    with pytest.raises(QueryError, match="k must"):
        Query((TextTerm("red"),), k=0)
    with pytest.raises(QueryError, match="empty"):
        TextTerm("   ")


@pytest.mark.parametrize("weight", [1e20, -101.0, float("nan"), float("inf")])
def test_term_weights_are_bounded(weight) -> None:
    # A huge weight overflowed the float32 sum into NaN scores: all-zero results, 200 OK.
    for make in (
        lambda: TextTerm("red", weight),
        lambda: ImageTerm("x.jpg", weight),
        lambda: VectorTerm(np.ones(4), weight),
    ):
        with pytest.raises(QueryError, match="out of range"):
            make()
    with pytest.raises(QueryError, match="out of range"):
        parse_term("99999999999999999999:red")
    assert TextTerm("red", -100.0).weight == -100.0


def test_a_search_reads_its_candidates_rows_once(coll, monkeypatch) -> None:
    # First stage, CLIPScore and the date sort all need the candidates' rows: one
    # catalog read, not one per step (each is a query on a shared server).
    reads: list[int] = []
    get = coll.catalog.get
    monkeypatch.setattr(coll.catalog, "get", lambda ids: reads.append(len(ids)) or get(ids))
    page = coll.rank(Query((TextTerm("red"),), k=4, rerank=True, sort="date")).results
    assert len(page) == 4
    assert reads == [len(SHADES) + 1]
