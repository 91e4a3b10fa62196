"""``searchengine bench --task ground|where|part`` end to end, on a held-out toy world.

The shipped ``toy`` CLIP and ``toy-seg`` on scenes of the test seed (never used in
training): each task prints its table or JSON, and the figures say what a user would
check first (FALIP picks the described box far more often than the whole photo does;
toy-seg's peak lands on the object and an absent object is mostly "not found"; a
region query finds photos of that object). Small worlds keep it quick; the figures in
docs/explain.md come from the same commands on 500 scenes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from searchengine.cli import main
from searchengine.errors import ConfigError
from searchengine.evaluation.toyscenes import (
    grounding_cases,
    load_toy_items,
    loosen_boxes,
    move_boxes,
    parse_boxes,
)
from searchengine.toy import masks as toymasks

pytestmark = pytest.mark.slow

TEST_SEED = toymasks.HELD_OUT_SEEDS[0]


def _bench(cache: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["bench", *args, "--cache-dir", str(cache), "--device", "cpu"], catch_exceptions=False
    )


def test_ground_reports_every_method_and_falip_beats_the_whole_photo(tmp_path: Path) -> None:
    dataset = f"toy:60:{TEST_SEED}"
    result = _bench(tmp_path, dataset, "--task", "ground", "-m", "toy", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["task"] == "ground"
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"falip", "crop", "circle", "blur", "none"}
    assert rows["falip"]["cases"] >= 20
    # The whole photo is the same for both boxes: it can only guess (about 50 %).
    assert rows["falip"]["accuracy"] > 0.85 > 0.6 > rows["none"]["accuracy"]
    # Each method names the descriptions it got wrong, so two methods can be compared
    # case by case: the whole photo misses many, each as "photo: description".
    for row in rows.values():
        assert len(row["misses"]) == round((1 - row["accuracy"]) * row["cases"])
    photo, text = rows["none"]["misses"][0].split(": ", 1)
    assert photo.startswith("toy-") and text.startswith("a ")
    table = _bench(tmp_path, dataset, "--task", "ground", "-m", "toy", "--region-method", "falip")
    assert table.exit_code == 0, table.output
    assert "falip" in table.output and "circle" not in table.output


def test_the_falip_tuning_script_measures_the_product_mask_and_its_variants(
    tmp_path: Path,
) -> None:
    dataset = f"toy:60:{TEST_SEED}"
    script = Path(__file__).parents[2] / "scripts" / "tune_falip_cover.py"
    args = [sys.executable, str(script), dataset, "-m", "toy", "--cache-dir", str(tmp_path)]
    args += ["--variant", "current", "--variant", "linear", "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = {r["variant"]: r for r in json.loads(done.stdout)}
    assert set(rows) == {"current", "linear", "blur"}
    only = ("--region-method", "falip", "--json")
    product = _bench(tmp_path, dataset, "--task", "ground", "-m", "toy", *only)
    falip_row = {r["method"]: r for r in json.loads(product.output)["rows"]}["falip"]
    # "current" is the product's own mask: the same answer, description by description.
    assert rows["current"]["misses"] == falip_row["misses"]
    assert rows["current"]["accuracy"] == falip_row["accuracy"]
    assert rows["linear"]["cases"] == falip_row["cases"]


def test_where_reports_peak_hits_and_not_found_rates(tmp_path: Path) -> None:
    dataset = f"toy:40:{TEST_SEED}"
    result = _bench(tmp_path, dataset, "--task", "where", "-m", "toy-seg", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["rows"]
    assert row["model"] == "toy-seg" and row["present"] == row["absent"] == 40
    assert row["peak_hit"] >= 0.8 and row["mean_iou"] > 0.3
    assert row["not_found_absent"] >= 0.7 and row["false_not_found"] <= 0.2
    table = _bench(tmp_path, dataset, "--task", "where", "-m", "toy-seg")
    assert "peak in object %" in table.output and "threshold 0.5" in table.output


def test_part_ranks_photos_of_the_chosen_object_first(tmp_path: Path) -> None:
    dataset = f"toy:60:{TEST_SEED}"
    args = ("--task", "part", "-m", "toy", "--region-method", "falip,none", "--json")
    result = _bench(tmp_path, dataset, *args)
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.output)["rows"]}
    assert rows["falip"]["queries"] >= 10
    assert rows["falip"]["above_distractor"] > 0.6 > rows["none"]["above_distractor"] - 0.1
    assert rows["falip"]["precision_at_5"] > rows["none"]["precision_at_5"]


def test_region_tasks_refuse_what_is_not_a_toy_world(tmp_path: Path) -> None:
    missing = _bench(tmp_path, "--task", "where")
    assert missing.exit_code == 2 and "needs a toy world" in missing.output
    folder = tmp_path / "photos"
    folder.mkdir()
    plain = _bench(tmp_path, str(folder), "--task", "ground", "-m", "toy")
    assert plain.exit_code != 0
    assert "needs a toy world" in plain.output and "Traceback" not in plain.output
    bad = _bench(tmp_path, f"toy:10:{TEST_SEED}", "--task", "ground", "--region-method", "lasso")
    assert bad.exit_code != 0 and "lasso" in bad.output


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _in_frame(box: tuple[int, ...]) -> bool:
    return 0 < box[0] and box[2] < 640 and 0 < box[1] and box[3] < 480


def test_candidate_boxes_miss_their_objects_as_asked(tmp_path: Path) -> None:
    folder, items = load_toy_items(f"toy:40:{TEST_SEED}", tmp_path)
    exact = grounding_cases(folder, items)
    assert loosen_boxes(exact, "exact", 0.0) == exact
    for kind in ("shifted", "inside", "proposals"):
        moved = loosen_boxes(exact, kind, 0.3)
        # The same boxes every time: each region method is asked about the same ones.
        assert [c.boxes for c in moved] == [c.boxes for c in loosen_boxes(exact, kind, 0.3)]
        assert [(c.path, c.text, c.target) for c in moved] == [
            (c.path, c.text, c.target) for c in exact
        ]
        for before, after in zip(exact, moved, strict=True):
            for true, box in zip(before.boxes, after.boxes, strict=True):
                assert 0 <= box[0] < box[2] <= 640 and 0 <= box[1] < box[3] <= 480
                width, height = true[2] - true[0], true[3] - true[1]
                if kind == "inside":  # every edge 30 % of the side inward
                    assert abs(box[0] - true[0] - 0.3 * width) <= 1
                    assert abs(true[3] - box[3] - 0.3 * height) <= 1
                elif kind == "proposals":  # what a detector would still be credited for
                    assert 0.5 <= _iou(box, true) < 1.0
                elif _in_frame(true) and _in_frame(box):  # else the frame's edge clipped it
                    # Moved by 30 % of its size, in some direction; the size kept.
                    dx, dy = (box[0] - true[0]) / width, (box[1] - true[1]) / height
                    assert abs((dx * dx + dy * dy) ** 0.5 - 0.3) < 0.03
                    assert abs(box[2] - box[0] - width) <= 1
    # A box with no area cannot reach IoU 0.5 however it moves: it comes back, no hang.
    assert move_boxes([(10, 10, 10, 50)], "proposals", 0.3, (640, 480), 0) == ((10, 10, 11, 50),)
    for wrong in ("inside:0.5", "shifted", "shifted:abc", "proposals:0", "lasso:0.2", "exact:1"):
        with pytest.raises(ConfigError, match="--boxes"):
            parse_boxes(wrong)


def _falip_and_blur(cache: Path, dataset: str, task: str, boxes: str) -> dict[str, Any]:
    """``bench --task TASK --boxes BOXES`` with FALIP and blur on ``toy``: the rows by
    method, after checking that the report names the boxes it was asked with."""
    args = ("--task", task, "-m", "toy", "--region-method", "falip,blur", "--json")
    result = _bench(cache, dataset, *args, "--boxes", boxes)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["boxes"] == boxes
    return {r["method"]: r for r in report["rows"]}


def test_boxes_drawn_inside_the_objects_falip_keeps_what_blur_loses(
    tmp_path: Path,
) -> None:
    # A box that leaves out the object's edges: blur smears the parts outside it away,
    # FALIP focuses on the box while every patch still sees the whole object.
    dataset = f"toy:60:{TEST_SEED}"
    rows = _falip_and_blur(tmp_path, dataset, "ground", "inside:0.3")
    assert rows["falip"]["accuracy"] >= rows["blur"]["accuracy"] + 0.05
    table = _bench(tmp_path, dataset, "--task", "ground", "-m", "toy", "--boxes", "shifted:0.3")
    assert table.exit_code == 0 and "boxes shifted:0.3" in table.output
    # "More like this part" with a box dragged over the middle of the object.
    found = _falip_and_blur(tmp_path, dataset, "part", "inside:0.3")
    assert found["falip"]["precision_at_5"] >= 1.5 * found["blur"]["precision_at_5"]
    other_task = _bench(tmp_path, dataset, "--task", "where", "--boxes", "inside:0.3")
    assert other_task.exit_code == 2 and "--task ground and part only" in other_task.output
