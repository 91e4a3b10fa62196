"""`scripts/train_toy_clip.py` on a tiny budget: deterministic, and the engine loads it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import train_toy_clip

from searchengine.models import load_encoder

pytestmark = pytest.mark.slow

TINY = ["--size", "toy", "--steps", "6", "--images", "64", "--batch-size", "16"]


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "open_clip_model.safetensors").read_bytes()).hexdigest()


def test_training_is_deterministic_and_writes_a_loadable_model(tmp_path, capsys):
    assert train_toy_clip.main([str(tmp_path / "a"), *TINY]) == 0
    assert train_toy_clip.main([str(tmp_path / "b"), *TINY]) == 0
    assert weights_digest(tmp_path / "a") == weights_digest(tmp_path / "b")
    out = capsys.readouterr().out
    losses = [float(line.split()[3]) for line in out.splitlines() if line.startswith("step ")]
    assert losses and all(np.isfinite(losses))
    # The folder is an open_clip hub-format model the engine loads like any other.
    encoder = load_encoder(f"local-dir:{tmp_path / 'a'}", "cpu", "torch")
    assert encoder.dim == 64
    vectors = encoder.encode_texts(["a red circle", "a blue square"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_another_seed_gives_other_weights(tmp_path):
    assert train_toy_clip.main([str(tmp_path / "a"), *TINY]) == 0
    assert train_toy_clip.main([str(tmp_path / "b"), *TINY, "--seed", "2"]) == 0
    assert weights_digest(tmp_path / "a") != weights_digest(tmp_path / "b")
