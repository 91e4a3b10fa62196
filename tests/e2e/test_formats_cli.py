"""Photo formats a phone or a download brings, through the real CLI: AVIF is indexed
where Pillow reads it, HEIC/HEIF where pillow-heif is installed, and HEIC/HEIF photos
this installation cannot read are named with what to install, by ``index`` and by
``search --refresh``, instead of being left out without a word."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from clirunner import cli
from PIL import Image

from searchengine.ingest.decode import avif_available, heif_available, heif_installed
from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    toyworld.generate(folder, 8, 4801)
    return folder


def test_an_avif_photo_is_indexed_and_found_like_its_original(photos, tmp_path):
    if not avif_available():
        pytest.skip("this Pillow has no AVIF plugin (wheels from 11.3 on)")
    original = sorted((photos / "album-a").iterdir())[0]
    twin = photos / "phone" / "twin.avif"
    twin.parent.mkdir()
    Image.open(original).convert("RGB").save(twin, quality=90)
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    done = cli("index", str(photos), *base, "-m", "toy", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["added"] == 9 and "AVIF" not in done.stderr
    hits = json.loads(cli("similar", str(original), *base, "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(twin) and hits[0]["score"] > 0.95


def test_heic_photos_without_pillow_heif_are_named_with_what_to_install(
    photos, tmp_path, monkeypatch, request
):
    for cached in (heif_available, heif_installed):
        request.addfinalizer(cached.cache_clear)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed: nothing finds it
    heif_available.cache_clear()
    heif_installed.cache_clear()
    (photos / "iphone").mkdir()
    for n in range(3):
        (photos / "iphone" / f"IMG_{n}.HEIC").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    done = cli("index", str(photos), *base, "-m", "toy")
    assert done.exit_code == 0, done.output
    said = "3 HEIC/HEIF photos left out: reading them needs pillow-heif"
    assert said in done.stderr and "added 8," in done.stdout
    # A search that refreshes first says it too: the quick path, which finds nothing
    # else to index, and the full one, which indexes a new photo.
    (photos / "iphone" / "IMG_3.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    for new in (None, "extra.png"):
        if new:
            (photos / new).write_bytes(next((photos / "album-a").glob("*.png")).read_bytes())
        refreshed = cli("search", "a red circle", *base, "--refresh", "--json")
        assert refreshed.exit_code == 0, refreshed.output
        assert "4 HEIC/HEIF photos left out" in refreshed.stderr
    hits = json.loads(refreshed.stdout)  # the new photo is a copy of one indexed before
    assert str(photos / "extra.png") in [c for hit in hits for c in [hit["path"], *hit["copies"]]]


def test_heic_photos_are_indexed_and_found_like_their_originals(photos, tmp_path):
    """With pillow-heif (the heif extra): a HEIC copy of a photo, as a phone saves it
    (HEVC, 4:2:0, stored sideways with its turn in an ``irot`` box, which pillow-heif
    writes for EXIF orientation 6, as iPhones record it), is indexed
    upright and is its original's nearest neighbour; an AVIF photo beside it is still
    read by Pillow's own plugin, which pillow-heif's would take from it and fail on."""
    import pillow_heif

    assert heif_available()
    originals = sorted((photos / "album-a").iterdir())[:2]
    phone = photos / "phone"
    phone.mkdir()
    upright = Image.open(originals[0]).convert("RGB")
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # as the sensor stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90° clockwise to show
    pillow_heif.from_pillow(sideways).save(phone / "IMG_0001.HEIC", quality=90, exif=exif.tobytes())
    assert b"irot" in (phone / "IMG_0001.HEIC").read_bytes()  # the turn, as a box
    twin = Image.open(originals[1]).convert("RGB")
    twin.save(phone / "IMG_0002.avif", quality=90)
    data = (phone / "IMG_0002.avif").read_bytes()  # the generic brand some encoders write
    (phone / "IMG_0002.avif").write_bytes(data[:8] + b"mif1" + data[12:])
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    # In a process of its own: which plugin gets a file depends on the order Pillow's
    # plugins and pillow-heif's were registered in, which this process has already set.
    exe = str(Path(sys.executable).with_name("searchengine"))
    done = subprocess.run(
        [exe, "index", str(photos), *base, "-m", "toy", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["added"], report["failed"]) == (10, 0), report
    for original, copy in zip(originals, ["IMG_0001.HEIC", "IMG_0002.avif"], strict=True):
        hits = json.loads(cli("similar", str(original), *base, "-k", "1", "--json").stdout)
        assert hits[0]["path"] == str(phone / copy) and hits[0]["score"] > 0.95, hits
    from searchengine.collection import Collection
    from searchengine.config import Config

    with Collection.open("c", Config(home=tmp_path / "home")) as collection:
        record = collection.catalog.by_path(str(phone / "IMG_0001.HEIC"))
        assert record is not None and (record.width, record.height) == upright.size
        # The page shows a HEIC photo (which most browsers cannot) as JPEG, upright.
        from fastapi.testclient import TestClient

        from searchengine.server.app import create_app

        with TestClient(create_app(collection), base_url="http://127.0.0.1:8765") as client:
            for size in ("small", "large"):
                shown = client.get(f"/api/images/{record.id}/thumbnail", params={"size": size})
                assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
                width, height = Image.open(io.BytesIO(shown.content)).size
                assert width > height  # upright: stored taller than wide, shown wider


def test_raw_photos_are_indexed_found_and_shown(photos, tmp_path):
    """DNGs (``tests/rawfiles.py``) of toy scenes, half with the camera's preview: each
    is indexed, is its original's nearest neighbour, and gets a thumbnail from the web
    server, which also reads one as a search term and as an upload; a RAW file beside a
    JPEG of the same name is left to the JPEG."""
    import numpy as np
    from fastapi.testclient import TestClient
    from rawfiles import write_dng

    from searchengine.collection import Collection
    from searchengine.config import Config
    from searchengine.server.app import create_app

    camera = photos / "camera"
    camera.mkdir()
    originals = sorted((photos / "album-a").iterdir())[:4]
    for n, original in enumerate(originals):
        rgb = np.asarray(Image.open(original).convert("RGB"))  # 640 x 480
        preview = Image.fromarray(rgb) if n % 2 else None
        write_dng(camera / f"DSC_{n}.dng", rgb, preview=preview)
    paired = np.asarray(Image.open(sorted((photos / "album-b" / "nested").iterdir())[0]))
    Image.fromarray(paired).convert("RGB").save(camera / "IMG_9.jpg")
    write_dng(camera / "IMG_9.dng", np.asarray(Image.fromarray(paired).convert("RGB")))
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    done = cli("index", str(photos), *base, "-m", "toy", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert (report["added"], report["failed"]) == (8 + 4 + 1, 0), report
    for n, original in enumerate(originals):
        hits = json.loads(cli("similar", str(original), *base, "-k", "1", "--json").stdout)
        assert hits[0]["path"] == str(camera / f"DSC_{n}.dng"), (n, hits)
        assert hits[0]["score"] > 0.9
    status = json.loads(cli("status", *base, "--json").stdout)
    assert status["images"] == 13
    with Collection.open("c", Config(home=tmp_path / "home")) as collection:
        record = collection.catalog.by_path(str(camera / "DSC_1.dng"))
        assert record is not None and (record.width, record.height) == (640, 480)
        app = create_app(collection)
        with TestClient(app, base_url="http://127.0.0.1:8765") as client:
            thumb = client.get(f"/api/images/{record.id}/thumbnail")
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(thumb.content)).size == (384, 288)
            original = client.get(f"/api/images/{record.id}/file")
            assert original.headers["content-type"] == "application/octet-stream"
            # A DNG as a search term (image:ID), and one uploaded: read as RAW, not as
            # the TIFF they are inside (a sensor-only DNG has no picture Pillow reads).
            sensor_only = collection.catalog.by_path(str(camera / "DSC_0.dng"))
            assert sensor_only is not None
            term = {"q": "a photo", "plus": f"9:image:{sensor_only.id}", "k": 1}
            found = client.get("/api/search", params=term)
            assert found.status_code == 200, found.text
            assert found.json()["results"][0]["path"] == str(camera / "DSC_0.dng")
            upload = (camera / "DSC_0.dng").read_bytes()
            files = {"file": ("DSC_0.dng", upload, "application/octet-stream")}
            like = client.post("/api/similar", files=files, params={"k": 1})
            assert like.status_code == 200, like.text
            assert like.json()["results"][0]["path"] == str(camera / "DSC_0.dng")
            assert like.json()["results"][0]["score"] > 0.99


def test_files_failed_for_want_of_rawpy_are_read_again_once_it_is_there(
    photos, tmp_path, monkeypatch, request
):
    """Without rawpy, a RAW file in a folder is counted and a RAW file named directly
    fails with the install line; once rawpy is there, the next run (``index``, or a
    search that refreshes first) reads both, the failed one again although the file
    itself did not change (as for a RAW file that a Ray worker without the extra met)."""
    import numpy as np
    from rawfiles import write_dng

    from searchengine.ingest.raw import NEEDS_RAWPY, raw_available

    camera = photos / "camera"
    camera.mkdir()
    for n, original in enumerate(sorted((photos / "album-a").iterdir())[:2]):
        write_dng(camera / f"DSC_{n}.dng", np.asarray(Image.open(original).convert("RGB")))
    named = str(camera / "DSC_0.dng")
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    import rawpy  # the module, to put back (a C extension is not imported twice)

    request.addfinalizer(raw_available.cache_clear)
    monkeypatch.setitem(sys.modules, "rawpy", None)  # not installed: nothing finds it
    raw_available.cache_clear()
    done = cli("index", str(photos), named, *base, "-m", "toy", "--json")
    first = json.loads(done.stdout)
    assert (first["added"], first["failed"]) == (8, 1)
    assert first["failures"] == [[named, NEEDS_RAWPY]]
    # The other one is left out, and said so (the one named has its verdict).
    assert "1 camera RAW photo left out: reading them needs rawpy" in done.stderr
    waits = json.loads(cli("status", *base, "--json").stdout)["waiting"]
    assert waits == {"raw": 1}
    said = "failed      1 (1 wait for rawpy: pip install 'searchengine[raw]')"
    assert said in cli("status", *base).stdout
    monkeypatch.setitem(sys.modules, "rawpy", rawpy)  # installed
    raw_available.cache_clear()
    fixed = json.loads(cli("index", *base, "--json").stdout)
    assert (fixed["added"], fixed["updated"], fixed["failed"]) == (1, 1, 0)
    again = json.loads(cli("index", *base, "--json").stdout)
    assert (again["unchanged"], again["updated"], again["failed"]) == (10, 0, 0)
    assert json.loads(cli("status", *base, "--json").stdout)["waiting"] == {}
    # The same where a search that refreshes first is the next run: its quick check,
    # which finds nothing new on disk, sees what waits.
    write_dng(camera / "DSC_2.dng", np.zeros((64, 96, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "rawpy", None)
    raw_available.cache_clear()
    late = json.loads(cli("index", str(camera / "DSC_2.dng"), *base, "--json").stdout)
    assert late["failures"] == [[str(camera / "DSC_2.dng"), NEEDS_RAWPY]]
    monkeypatch.setitem(sys.modules, "rawpy", rawpy)
    raw_available.cache_clear()
    assert cli("search", "a red circle", *base, "--refresh", "--json").exit_code == 0
    status = json.loads(cli("status", *base, "--json").stdout)
    assert (status["images"], status["failed"]) == (11, 0)


def test_a_raw_file_cut_in_its_sensor_data_is_indexed_and_named_as_damaged(photos, tmp_path):
    """A copy from a camera card that stopped in a photo's sensor data: the photo is
    found (from the camera's preview in it), and ``index`` and ``status`` say which
    file is damaged, so that the card is not wiped before it is copied again."""
    import numpy as np
    from rawfiles import write_dng

    camera = photos / "card"
    camera.mkdir()
    rgb = np.asarray(Image.open(sorted((photos / "album-a").iterdir())[0]).convert("RGB"))
    whole = write_dng(camera / "DSC_0001.dng", rgb, preview=Image.fromarray(rgb))
    cut = camera / "DSC_0002.dng"
    cut.write_bytes(whole.read_bytes()[:-20000])
    base = ["-c", "c", "--index-dir", str(tmp_path / "home")]
    done = cli("index", str(photos), *base, "-m", "toy")
    assert done.exit_code == 0, done.output
    assert "added 10," in done.stdout and "failed 0" in done.stdout
    said = "1 indexed with a warning (damaged or odd): searchengine status --warnings -"
    assert said in done.stderr
    assert "warnings    1 (status --warnings)" in cli("status", *base).stdout
    listed = cli("status", *base, "--warnings").stdout.splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{cut}\tdecoded with warnings: ")
    assert "the file is cut short: it ends at byte" in listed[0]
    report = json.loads(cli("status", *base, "--warnings", "--json").stdout)
    assert report["warned"] == 1 and [w["path"] for w in report["warnings"]] == [str(cut)]
    hits = json.loads(cli("similar", str(whole), *base, "-k", "1", "--json").stdout)
    assert hits[0]["path"] == str(cut)  # found, and like the whole photo
    again = cli("index", *base)
    assert "warning" not in again.stderr  # said once, by the run that met it
