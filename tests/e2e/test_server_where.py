"""The "where" API routes: heatmaps of indexed photos and "more like this part".

On the web tests' toy collection (60 held-out images, seed 4242) with ``toy-seg`` as the
CLIPSeg model: the answer names where the query's object is, the overlay is a PNG of the
photo, and a region search ranks exactly as ``Collection.similar(..., region=...)``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from servertools import ToyCollection

from searchengine.collection import Collection
from searchengine.config import Config
from searchengine.server import create_app
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def opened(toy: ToyCollection):
    config = Config(home=toy.index_dir, device="cpu")
    with Collection.open("web", config) as collection:
        app = create_app(collection, where_model="toy-seg")
        with TestClient(app, base_url=BASE) as client:
            yield client, collection


def _photo_with(toy: ToyCollection, collection: Collection, shows: str) -> tuple[int, str]:
    path = next(p for p, caption in sorted(toy.shows.items()) if shows in caption)
    record = collection.catalog.by_path(path)
    assert record is not None
    return record.id, path


def _scene_of(toy: ToyCollection, path: str) -> toyworld.Scene:
    items = toyworld.load_manifest(toy.photos)
    return next(i.scene for i in items if os.path.abspath(toy.photos / i.path) == path)


def test_where_answers_in_upright_pixels_with_an_overlay(opened, toy) -> None:
    client, collection = opened
    image_id, path = _photo_with(toy, collection, "green circle")
    response = client.get(f"/api/images/{image_id}/where", params={"q": "a green circle"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["found"] and body["model"] == "toy-seg"
    assert (body["width"], body["height"]) == (640, 480)
    scene = _scene_of(toy, path)
    _, regions = toymasks.scene_regions(scene)
    target = next(r for r in regions if (r.object.shape, r.object.color) == ("circle", "green"))
    x, y = body["peak"]
    assert target.mask[y, x]
    picture = client.get(body["overlay"])
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(picture.content)) as png:
        assert png.size == (640, 480)
    logits = client.get(body["overlay"] + "&view=logits")
    assert logits.status_code == 200 and logits.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_where_says_not_found_for_an_absent_object(opened, toy) -> None:
    client, collection = opened
    image_id, path = _photo_with(toy, collection, "green circle")
    shapes = {o.shape for o in _scene_of(toy, path).objects}
    absent = next(s for s in toyworld.SHAPES if s not in shapes)
    body = client.get(f"/api/images/{image_id}/where", params={"q": f"a purple {absent}"}).json()
    assert not body["found"] and body["box"] is None


def test_similar_part_ranks_as_the_library_does(opened, toy) -> None:
    client, collection = opened
    image_id, path = _photo_with(toy, collection, " and ")
    _, regions = toymasks.scene_regions(_scene_of(toy, path))
    box = regions[0].box
    response = client.get(
        f"/api/images/{image_id}/similar-part",
        params={"box": ",".join(map(str, box)), "k": 10},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = collection.similar(path, 10, region=box)
    assert [r["id"] for r in body["results"]] == [r.id for r in expected]
    assert image_id not in [r["id"] for r in body["results"]] and body["source"] == image_id
    crop = client.get(
        f"/api/images/{image_id}/similar-part",
        params={"box": ",".join(map(str, box)), "k": 10, "method": "crop"},
    ).json()
    expected_crop = collection.similar(path, 10, region=box, region_method="crop")
    assert [r["id"] for r in crop["results"]] == [r.id for r in expected_crop]


def test_bad_requests_are_refused_plainly(opened, toy) -> None:
    client, collection = opened
    image_id, _ = _photo_with(toy, collection, "green circle")
    missing = client.get("/api/images/999999/where", params={"q": "a dog"})
    assert missing.status_code == 404 and "no image with id" in missing.json()["error"]
    bad_box = client.get(f"/api/images/{image_id}/similar-part", params={"box": "1,2,3"})
    assert bad_box.status_code == 422
    outside = client.get(f"/api/images/{image_id}/similar-part", params={"box": "900,10,990,90"})
    assert outside.status_code == 400 and "outside the 640x480 image" in outside.json()["error"]
    empty = client.get(f"/api/images/{image_id}/where", params={"q": ""})
    assert empty.status_code == 422


def test_a_clipseg_model_that_cannot_load_is_a_503_and_listed_in_status(toy, tmp_path) -> None:
    config = Config(home=toy.index_dir, device="cpu")
    missing = tmp_path / "no-such-clipseg"
    with Collection.open("web", config) as collection:
        app = create_app(collection, where_model=str(missing))
        with TestClient(app, base_url=BASE) as client:
            image_id, _ = _photo_with(toy, collection, "green circle")
            response = client.get(f"/api/images/{image_id}/where", params={"q": "a circle"})
            for _ in range(50):  # the load runs off the request path; it fails quickly
                if "cannot be loaded" in response.json()["error"]:
                    break
                response = client.get(f"/api/images/{image_id}/where", params={"q": "a circle"})
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1
            assert "the where model" in response.json()["error"]
            models = {m["role"]: m for m in client.get("/api/status").json()["models"]}
            assert models["where"]["state"] == "failed" and models["where"]["error"]
            # Searching is not held up by it.
            assert client.get("/api/search", params={"q": "a green circle"}).status_code == 200


def test_a_photo_changed_since_indexing_is_refused_even_when_its_answer_is_cached(
    toy, tmp_path
) -> None:
    config = Config(home=toy.index_dir, device="cpu")
    with Collection.open("web", config) as collection:
        app = create_app(collection, where_model="toy-seg")
        with TestClient(app, base_url=BASE) as client:
            image_id, path = _photo_with(toy, collection, "red")
            asked = {"q": "a red shape"}
            first = client.get(f"/api/images/{image_id}/where", params=asked)
            assert first.status_code == 200, first.text  # answered, and cached
            photo = Path(path)
            original = photo.read_bytes()
            try:
                photo.write_bytes(original[:-64] + bytes(64))  # same size, other content
                again = client.get(f"/api/images/{image_id}/where", params=asked)
                overlay = client.get(first.json()["overlay"])
            finally:
                photo.write_bytes(original)
            assert again.status_code == 409 and "searchengine index" in again.json()["error"]
            assert overlay.status_code == 409
            back = client.get(f"/api/images/{image_id}/where", params=asked)
            assert back.json() == first.json()  # the file as indexed again: as before
