"""``searchengine where`` end to end: the fake CIDAS repo and ``toy-seg``, one loading path.

The fake ``CIDAS/clipseg-rd64-refined`` (random weights, real layout) proves the loading
code and the output contract offline; ``toy-seg`` (trained on the toy world) proves
that the answers are right: the object is found inside its true mask and an absent one
is reported as not found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fakehub import CLIPSEG, CLIPSEG_REPO_ID, FakeHub
from imagegen import half_and_half
from PIL import Image

from searchengine.cli import main
from searchengine.models.clipseg import ClipSeg
from searchengine.toy import masks as toymasks
from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("searchengine")), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_fake_cidas_repo_loads_with_the_real_layout_and_processor(offline_hub: FakeHub) -> None:
    snapshot = offline_hub.repos[CLIPSEG_REPO_ID].snapshot
    files = sorted(p.name for p in snapshot.iterdir())
    assert "tokenizer.json" not in files and {"vocab.json", "merges.txt"} <= set(files)
    seg = ClipSeg(CLIPSEG_REPO_ID, device="cpu")
    assert seg.input_size == (CLIPSEG.processor_size, CLIPSEG.processor_size) == (352, 352)
    processor = seg._processor.image_processor
    assert int(processor.resample) == 2  # bilinear
    assert list(processor.image_mean) == [0.485, 0.456, 0.406]
    # The weights are the cached ones, not a fresh random init of the right shapes.
    saved = torch.load(snapshot / "pytorch_model.bin", weights_only=True)
    state = seg._net.state_dict()
    for name, value in saved.items():
        torch.testing.assert_close(state[name], value)
    maps = seg.logits([Image.new("RGB", (90, 60))] * 2, ["a red circle", "a dog"])
    assert maps.shape == (2, 352, 352) and np.isfinite(maps).all()


def test_where_prints_one_verdict_per_phrase_in_upright_pixels(
    offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    # 60x40 stored, EXIF orientation 6: upright it is 40 wide and 60 tall.
    photo = half_and_half(tmp_path / "turned.jpg", (200, 0, 0), (0, 0, 200), orientation=6)
    out = tmp_path / "where.png"
    done = _cli(
        "where", str(photo), "a red circle", "a dog", "--out", str(out), "--json",
        env=offline_hub_env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert [r["text"] for r in records] == ["a red circle", "a dog"]
    for record in records:
        assert set(record) >= {"found", "score", "box", "peak", "picture"}
        assert 0 <= record["score"] <= 1 and record["found"] == (record["score"] >= 0.5)
        assert 0 <= record["peak"][0] < 40 and 0 <= record["peak"][1] < 60
        if record["box"] is not None:
            x0, y0, x1, y1 = record["box"]
            assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 60
        with Image.open(record["picture"]) as png:
            assert png.size == (40, 60)  # drawn over the upright photo


def test_where_without_the_weights_says_what_to_do(tmp_path: Path) -> None:
    photo = half_and_half(tmp_path / "p.jpg", (200, 0, 0), (0, 0, 200))
    env = {
        "HF_HOME": str(tmp_path / "empty"),
        "HF_HUB_CACHE": str(tmp_path / "empty" / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = _cli("where", str(photo), "a dog", env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the local Hugging Face cache" in lines[0]
    assert CLIPSEG_REPO_ID in lines[0]


def test_logits_needs_out(tmp_path: Path) -> None:
    photo = half_and_half(tmp_path / "p.jpg", (200, 0, 0), (0, 0, 200))
    result = CliRunner().invoke(main, ["where", str(photo), "a dog", "--logits"])
    assert result.exit_code == 2 and "--logits chooses what --out writes" in result.output


# ---------------------------------------------------------------------------- toy-seg


def _held_out_scene(want: int) -> tuple[toyworld.Scene, int]:
    """The first two-object scene of the held-out test world."""
    seed = toymasks.HELD_OUT_SEEDS[0]
    index = 0
    while True:
        scene = toyworld.sample_scene(np.random.default_rng((seed, index)))
        if len(scene.objects) == want:
            return scene, index
        index += 1


def test_toy_seg_finds_the_object_and_not_an_absent_one(tmp_path: Path) -> None:
    scene, _ = _held_out_scene(2)
    image, regions = toymasks.scene_regions(scene)
    path = tmp_path / "scene.png"
    image.save(path)
    target = regions[0].object
    absent = toyworld.Mention(
        next(s for s in toyworld.SHAPES if all(o.shape != s for o in scene.objects)),
        target.color,
    )
    phrase = toyworld.Mention(target.shape, target.color).text()
    out = tmp_path / "toy.png"
    result = CliRunner().invoke(
        main,
        ["where", str(path), phrase, absent.text(), "-m", "toy-seg", "--json", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    found, missing = json.loads(result.stdout)
    assert found["found"] and found["score"] > 0.5
    x, y = found["peak"]
    assert regions[0].mask[y, x], (found, regions[0].box)
    x0, y0, x1, y1 = found["box"]
    bx0, by0, bx1, by1 = regions[0].box
    overlap = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
    union = (x1 - x0) * (y1 - y0) + (bx1 - bx0) * (by1 - by0) - overlap
    assert overlap / union > 0.5
    assert not missing["found"] and missing["box"] is None
    # Text output: one line per phrase, saying found / not found.
    text = CliRunner().invoke(main, ["where", str(path), phrase, absent.text(), "-m", "toy-seg"])
    lines = text.stdout.strip().splitlines()
    assert lines[0].startswith(f"{phrase}: found") and lines[1].startswith(
        f"{absent.text()}: not found"
    )


def test_search_where_adds_where_each_result_shows_it(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    items = toyworld.generate(photos, 40, toymasks.HELD_OUT_SEEDS[0])
    home = tmp_path / "idx"
    done = CliRunner().invoke(main, ["index", str(photos), "-m", "toy", "--index-dir", str(home)])
    assert done.exit_code == 0, done.output
    wanted = items[0].scene.objects[0]
    query = toyworld.Mention(wanted.shape, wanted.color).text()
    out = tmp_path / "overlays"
    result = CliRunner().invoke(
        main,
        ["search", query, "-k", "3", "--where", "--where-model", "toy-seg", "--out", str(out),
         "--json", "--index-dir", str(home)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    scenes = {str((photos / it.path).resolve()): it.scene for it in items}
    assert len(records) == 3
    for record in records:
        where = record["where"]
        scene = scenes[str(Path(record["path"]).resolve())]
        shows = any((o.shape, o.color) == (wanted.shape, wanted.color) for o in scene.objects)
        assert where["found"] == shows, (query, scene, where)
        with Image.open(where["picture"]) as png:
            assert png.size == (640, 480)
    assert len(list(out.glob("*.png"))) == 3
    text = CliRunner().invoke(
        main,
        ["search", query, "-k", "2", "--where", "--where-model", "toy-seg", "--index-dir",
         str(home)],
    )  # fmt: skip
    lines = text.stdout.strip().splitlines()
    assert lines[-2].startswith(f"  #1 {query}: ") and lines[-1].startswith(f"  #2 {query}: ")
