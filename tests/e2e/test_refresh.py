"""``search --refresh``: adding photos and finding them is one command, with the same
results as ``index`` followed by ``search``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from searchengine.toy.world import render, sample_scene

pytestmark = pytest.mark.slow
EXE = str(Path(sys.executable).with_name("searchengine"))
QUERIES = ("a red circle", "a small blue square on the left", "two green triangles")


def _photos(folder: Path, first: int, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + n):
        scene = sample_scene(np.random.default_rng(i))
        render(scene, (320, 240)).save(folder / f"toy-{i:03d}.jpg", quality=92)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def _results(done: subprocess.CompletedProcess[str]) -> list[tuple[str, float, bool]]:
    # The weak-match verdict too: it comes from the calibration each path reads or makes.
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return [(row["path"], round(row["cosine"], 5), row["weak"]) for row in rows]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_refresh_then_search_equals_index_then_search(
    offline_hub_env: dict[str, str], tmp_path: Path, precision: str
) -> None:
    env = {**offline_hub_env, "SEARCHENGINE_DEVICE": "cpu"}
    photos = tmp_path / "photos"
    _photos(photos / "2023", 0, 30)
    home = ["--index-dir", str(tmp_path / "idx")]
    for name in ("one", "two"):
        build = ["index", str(photos), *home, "-c", name, "-m", "toy", "--precision", precision]
        _run(env, *build)

    # A day's changes: new photos, one deleted, one moved to another folder.
    _photos(photos / "2024", 30, 12)
    (photos / "2023" / "toy-004.jpg").unlink()
    (photos / "archive").mkdir()
    shutil.move(photos / "2023" / "toy-009.jpg", photos / "archive" / "toy-009.jpg")

    refreshed = [
        _results(_run(env, "search", q, *home, "-c", "one", "-k", "8", "--refresh", "--json"))
        for q in QUERIES
    ]
    _run(env, "index", *home, "-c", "two")
    separately = [
        _results(_run(env, "search", q, *home, "-c", "two", "-k", "8", "--json")) for q in QUERIES
    ]
    assert refreshed == separately
    found = {path for rows in refreshed for path, _, _ in rows}
    assert any("/2024/" in p for p in found)  # the new photos are found at once
    assert not any(p.endswith("2023/toy-004.jpg") for p in found)

    one = json.loads(_run(env, "status", *home, "-c", "one", "--json").stdout)
    two = json.loads(_run(env, "status", *home, "-c", "two", "--json").stdout)
    assert one["images"] == two["images"] == 41 and one["precision"] == precision

    # With nothing changed since, a refresh finds nothing to do and answers the same.
    again = _run(env, "search", QUERIES[0], *home, "-c", "one", "-k", "8", "--refresh", "--json")
    assert _results(again) == refreshed[0]
