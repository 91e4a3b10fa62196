"""Property-based checks: any file name round-trips, any query gives results or a
clear error — never a traceback."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from searchengine import Collection, Config
from searchengine.errors import QueryError
from searchengine.models.fake import FakeEncoder
from searchengine.ranking import MAX_QUERY_CHARS

# Name bytes: anything but "/" and NUL, at most 200 bytes (the file system allows 255).
name_bytes = st.binary(min_size=1, max_size=200).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=name_bytes)
def test_any_file_name_is_indexed_and_found(raw: bytes) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        name = os.fsdecode(raw + b".png")
        photos = folder / "photos"
        photos.mkdir()
        Image.new("RGB", (8, 8), (250, 0, 0)).save(photos / name, format="PNG")
        with Collection.open(
            "p", Config(home=folder / "idx"), create=True, encoder=FakeEncoder()
        ) as coll:
            report = coll.index([photos])
            assert report.added == 1 and report.failed == 0
            [hit] = coll.search("red", k=5)
            assert hit.path == str(photos / name)
            assert Path(hit.path).read_bytes()[:4] == b"\x89PNG"
            assert coll.index([photos]).unchanged == 1
    finally:
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
    with Collection.open(
        "q", Config(home=folder / "idx"), create=True, encoder=FakeEncoder()
    ) as coll:
        coll.index([folder])
        yield coll


@settings(max_examples=200, deadline=None)
@given(query=st.text(max_size=300) | st.text(max_size=MAX_QUERY_CHARS * 2, min_size=1900))
def test_any_query_gives_results_or_a_clear_error(small_collection, query: str) -> None:
    try:
        results = small_collection.search(query, k=3)
    except QueryError as exc:
        assert str(exc)
        cleaned = " ".join("".join(c if c.isprintable() else " " for c in query).split())
        assert not cleaned or len(cleaned) > MAX_QUERY_CHARS
    else:
        assert len(results) == 3
