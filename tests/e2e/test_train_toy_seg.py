"""`scripts/train_toy_seg.py` on a tiny budget: deterministic, held-out seeds refused, loadable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import train_toy_seg
from PIL import Image

from searchengine.models.clipseg import ClipSeg
from searchengine.toy.masks import HELD_OUT_SEEDS

pytestmark = pytest.mark.slow

TINY = ["--steps", "4", "--scenes", "48", "--batch-size", "8", "--check-scenes", "0"]
REPO_FILES = {
    "config.json",
    "preprocessor_config.json",
    "pytorch_model.bin",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
}


def digest(folder: Path) -> str:
    return hashlib.sha256((folder / "pytorch_model.bin").read_bytes()).hexdigest()


def test_training_is_deterministic_and_writes_the_hub_layout(tmp_path: Path) -> None:
    assert train_toy_seg.main([str(tmp_path / "a"), *TINY]) == 0
    assert train_toy_seg.main([str(tmp_path / "b"), *TINY]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert {p.name for p in (tmp_path / "a").iterdir()} == REPO_FILES  # no tokenizer.json
    # Loaded the way `searchengine where -m FOLDER` loads it.
    seg = ClipSeg(str(tmp_path / "a"), device="cpu")
    maps = seg.logits([Image.new("RGB", (640, 480), (240, 240, 240))] * 2, ["a red circle", "x"])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_held_out_seeds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for seed in HELD_OUT_SEEDS:
        with pytest.raises(SystemExit):
            train_toy_seg.parse_args(["/tmp/never-written", "--seed", str(seed)])
        assert "held out for evaluation" in capsys.readouterr().err
