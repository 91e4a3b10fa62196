"""Regions of a photo: parsing, the pixel-editing baselines, and FALIP's foveal mask."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from searchengine.errors import ConfigError, QueryError
from searchengine.models.falip import foveal_bias, masked_blocks, patch_coverage
from searchengine.region import (
    clip_box,
    edit_for,
    parse_box,
    parse_methods,
    region_vectors,
    torch_tower,
)


def test_parse_box_and_methods() -> None:
    assert parse_box("10, 20,200,180") == (10, 20, 200, 180)
    assert parse_box("10.4,20.6,200,180") == (10, 21, 200, 180)
    for bad in ("10,20,200", "a,b,c,d", "200,20,10,180", "10,20,10,180"):
        with pytest.raises(QueryError):
            parse_box(bad)
    assert parse_methods("falip,crop,none") == ["falip", "crop", "none"]
    with pytest.raises(ConfigError, match="falip, crop, circle, blur, none"):
        parse_methods("falip,zoom")


def test_boxes_are_clipped_to_the_photo_and_refused_outside_it() -> None:
    assert clip_box((-5, 10, 700, 90), (640, 480)) == (0, 10, 640, 90)
    with pytest.raises(QueryError, match="outside the 640x480 image"):
        clip_box((650, 10, 700, 90), (640, 480))


def _two_squares() -> Image.Image:
    image = Image.new("RGB", (200, 100), (240, 240, 240))
    image.paste((200, 0, 0), (20, 20, 60, 60))
    image.paste((0, 0, 200), (140, 40, 180, 80))
    return image


def test_pixel_editing_baselines_show_the_region_as_the_papers_do() -> None:
    image = _two_squares()
    box = (10, 10, 70, 70)
    crop = edit_for(image, box, "crop")
    assert crop.size == (60, 60)
    assert edit_for(image, box, "none").tobytes() == image.tobytes()
    circle = np.asarray(edit_for(image, box, "circle")).astype(int)
    # A red outline on the ellipse's left edge, none far from it.
    assert circle[40, 10, 0] > 200 and circle[40, 10, 1] < 60
    assert (circle[90, 120] == (240, 240, 240)).all()
    blur = np.asarray(edit_for(image, box, "blur")).astype(int)
    assert (blur[20:60, 20:60] == (200, 0, 0)).all()  # inside the box: untouched
    assert abs(blur[60, 160] - np.array((0, 0, 200))).sum() > 60  # outside: blurred
    with pytest.raises(ConfigError):
        edit_for(image, box, "falip")


def test_foveal_bias_weights_each_patch_by_how_much_of_it_the_box_covers() -> None:
    # A 224-pixel input with 14x14 patches of 16 px; the box covers rows 2..6 wholly,
    # column 2 half (x 40..48 of 32..48) and columns 3..5 wholly.
    bias = foveal_bias((40, 32, 96, 112), (224, 224), (14, 14), strength=2.0).reshape(14, 14)
    touched = np.zeros((14, 14), dtype=bool)
    touched[2:7, 2:6] = True
    assert (bias[~touched] == 0).all()
    np.testing.assert_allclose(bias[2:7, 3:6], 2.0, rtol=1e-6)  # wholly inside: the strength
    half = bias[2:7, 2]
    # Half a patch inside: its softmax weight grows by half as much, e**2 - 1 over 2.
    np.testing.assert_allclose(half, np.log(1 + (np.e**2 - 1) / 2), rtol=1e-6)
    assert (0 < half).all() and (half < 2.0).all()


def test_patch_coverage_is_the_covered_fraction_of_each_patch() -> None:
    cover = patch_coverage((4, 0, 20, 8), (16, 32), (2, 4))  # patches of 8x8 px
    np.testing.assert_allclose(cover, [[0.5, 1.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_foveal_bias_is_zero_without_strength_and_grows_with_it() -> None:
    box, size, grid = (10.0, 12.0, 37.0, 50.0), (64, 64), (8, 8)
    assert (foveal_bias(box, size, grid, 0.0) == 0).all()
    weak, strong = foveal_bias(box, size, grid, 2.0), foveal_bias(box, size, grid, 64.0)
    touched = patch_coverage(box, size, grid).reshape(-1) > 0
    assert (strong[touched] > weak[touched]).all() and (weak[touched] > 0).all()
    assert np.isfinite(foveal_bias(box, size, grid, 1000.0)).all()  # no overflow


def test_a_region_inside_one_patch_boosts_that_patch_alone() -> None:
    # 3x3 px of an 8x8 px patch: for a large strength the bias is strength + log(9/64).
    bias = foveal_bias((17, 17, 20, 20), (64, 64), (8, 8), strength=64.0).reshape(8, 8)
    assert np.count_nonzero(bias) == 1
    assert bias[2, 2] == pytest.approx(64.0 + np.log(9 / 64), abs=1e-4)


def test_the_mask_goes_into_the_last_third_of_the_blocks_and_at_least_four() -> None:
    assert [masked_blocks(d) for d in (1, 3, 4, 6, 12, 24)] == [1, 3, 4, 4, 4, 8]


def test_falip_refuses_transformers_models_in_one_line() -> None:
    class Fake:
        spec = "hf:openai/clip-vit-base-patch32"
        device = "cpu"

    with pytest.raises(ConfigError) as caught:
        torch_tower(Fake())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message and "crop, circle or blur" in message


def test_falip_refuses_a_model_without_a_loadable_spec_in_one_line() -> None:
    from searchengine.models.fake import FakeEncoder

    with pytest.raises(ConfigError) as caught:
        region_vectors(FakeEncoder(), Image.new("RGB", (64, 48)), [(0, 0, 10, 10)], "falip")
    assert "\n" not in str(caught.value) and "--region-method crop" in str(caught.value)
    # The pixel-editing methods work with any model.
    assert (
        region_vectors(FakeEncoder(), Image.new("RGB", (64, 48)), [(0, 0, 10, 10)], "blur").shape[0]
        == 1
    )
