"""Reading a CLIPSeg logit map: found / not found, score, peak and box in original pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchengine.errors import QueryError, UnknownModelError
from searchengine.models.clipseg import parse_seg_model
from searchengine.overlay import heat_overlay, logit_figure, write_pictures
from searchengine.where import read_map


def _blob_map(shape=(40, 40), centre=(10, 30), radius=4, high=4.0, low=-6.0) -> np.ndarray:
    """Logits: ``low`` everywhere, ``high`` on a disc around ``centre`` (row, col)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    return np.where(disc, high, low).astype(np.float32)


def test_confident_blob_is_found_with_box_and_peak_in_original_pixels() -> None:
    logits = _blob_map()
    logits[10, 30] = 6.0  # the peak
    loc = read_map("a red circle", logits, size=(800, 400))
    assert loc.found and loc.score == pytest.approx(1 / (1 + np.exp(-6.0)))
    # Column 30 of 40 -> x in [600, 620); row 10 of 40 -> y in [100, 110).
    assert 600 <= loc.peak[0] < 620 and 100 <= loc.peak[1] < 110
    x0, y0, x1, y1 = loc.box
    assert (x0, x1) == (26 * 20, 35 * 20) and (y0, y1) == (6 * 10, 15 * 10)
    assert loc.to_dict()["box"] == [x0, y0, x1, y1]


def test_diffuse_low_map_is_not_found_and_has_no_box() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(-4.0, 0.5, (40, 40)).astype(np.float32)
    loc = read_map("a dog", logits, size=(640, 480))
    assert not loc.found and loc.box is None and loc.score < 0.5
    assert 0 <= loc.peak[0] < 640 and 0 <= loc.peak[1] < 480
    assert loc.to_dict()["box"] is None


def test_box_surrounds_only_the_region_holding_the_peak() -> None:
    logits = np.maximum(_blob_map(centre=(8, 8)), _blob_map(centre=(30, 30), high=2.0))
    loc = read_map("a circle", logits, size=(40, 40))
    assert loc.found and loc.box == (4, 4, 13, 13)


def test_threshold_decides_found_and_the_box_extent() -> None:
    logits = _blob_map(high=0.0)  # probability 0.5 exactly on the disc
    assert read_map("x", logits, (40, 40), threshold=0.5).found
    assert not read_map("x", logits, (40, 40), threshold=0.6).found
    with pytest.raises(QueryError, match="between 0 and 1"):
        read_map("x", logits, (40, 40), threshold=1.0)


def test_mask_resizes_the_map_to_the_original_image() -> None:
    loc = read_map("a red circle", _blob_map(), size=(400, 200))
    mask = loc.mask()
    assert mask.shape == (200, 400)
    ys, xs = np.nonzero(mask)
    assert 250 <= xs.mean() <= 360 and 40 <= ys.mean() <= 65


def test_pictures_are_pngs_of_the_photo_and_of_the_logits(tmp_path: Path) -> None:
    photo = Image.new("RGB", (320, 160), (200, 200, 200))
    found = read_map("a red circle", _blob_map(), size=(640, 320))
    absent = read_map("a dog", np.full((40, 40), -5.0, np.float32), size=(640, 320))
    over = heat_overlay(photo, found)
    assert over.size == photo.size
    # The heat is drawn where the blob is, not elsewhere.
    pixels = np.asarray(over).astype(int)
    assert abs(pixels[40, 240] - 200).sum() > abs(pixels[140, 40] - 200).sum()
    figure = logit_figure(found)
    assert figure.width > 512 and figure.height > 256
    written = write_pictures(photo, [found, absent], tmp_path / "where.png")
    assert [p.name for p in written] == ["where-1.png", "where-2.png"]
    with Image.open(written[0]) as png:
        assert png.format == "PNG"
    one = write_pictures(photo, [found], tmp_path / "one", logits=True)
    assert one == [tmp_path / "one.png"]
    with Image.open(one[0]) as png:
        assert png.size == figure.size


def test_model_names() -> None:
    assert parse_seg_model("CIDAS/clipseg-rd64-refined").source == "CIDAS/clipseg-rd64-refined"
    assert parse_seg_model("hf:CIDAS/clipseg-rd64").source == "CIDAS/clipseg-rd64"
    assert parse_seg_model("toy-seg").source.endswith("toy-seg")
    with pytest.raises(UnknownModelError, match="neither a local folder nor a hub repo id"):
        parse_seg_model("not-a-repo")
