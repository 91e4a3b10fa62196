"""The speed benchmarks run as a person re-running them would, at a tiny size.

Their figures belong in ``docs/benchmarks.md``, not in assertions; what is checked
here is that the scripts run end to end and report what they promise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from searchengine.models.onnx import cpu_count

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def test_bench_ingest_reports_ratios_against_every_ceiling(offline_hub_env, tmp_path):
    out = tmp_path / "ingest.json"
    args = ["-n", "12", "--megapixels", "0.05", "--model", "toy", "--device", "cpu"]
    args += ["--ceiling-rounds", "1", "--ceiling-images", "8", "--work", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_ingest.py"), *args, "--json", str(out)],
        env=offline_hub_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    corpus = json.loads(out.read_text())["corpus"]
    assert corpus["files"] == 12 and corpus["embedded"] + corpus["failed"] == 12
    assert corpus["embedded"] >= 10 and corpus["peak_rss_mb"] > 0
    rates = corpus["ceiling_images_per_s"]
    expected = {f"onnx b{n}" for n in (8, 16, 32)} | {f"torch b{n}" for n in (8, 16, 32)}
    if cpu_count() > 1:
        expected |= {f"onnx lanes b{n}" for n in (8, 16, 32)}
    assert set(rates) == expected
    best = max(rates.values())
    assert rates[corpus["ceiling_best_runtime"]] == best
    assert corpus["ratio_to_ceiling_pipeline"] == pytest.approx(
        corpus["images_per_s_pipeline"] / best
    )
    assert "ratio to the fastest ceiling" in done.stdout


@pytest.fixture(scope="session")
def rclip_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rclip 3.3.0 in its own environment (its pins differ from ours), from PyPI."""
    venv = tmp_path_factory.mktemp("rclip") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "rclip==3.3.0"]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv / "bin" / "rclip"


@pytest.mark.peer
def test_bench_rclip_runs_both_tools_on_the_same_photos(
    rclip_exe: Path, offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "peer.json"
    args = ["--rclip", str(rclip_exe), "-n", "12", "--megapixels", "0.05", "--tiny"]
    args += ["--rounds", "1", "--queries", "1", "--work", str(tmp_path), "--json", str(out)]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_rclip.py"), *args],
        env=offline_hub_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    ours, theirs = result["best"]["searchengine"], result["best"]["rclip"]
    assert result["rclip_version"] == "3.3.0"
    assert ours["images"] == theirs["images"] == 12  # both indexed every photo
    assert result["ingest_speedup"] == pytest.approx(ours["images_per_s"] / theirs["images_per_s"])
    assert ours["peak_rss_mb"] > 0 and theirs["peak_rss_mb"] > 0
    assert "x faster" in done.stdout


def test_bench_rclip_refuses_what_is_not_rclip_3(tmp_path: Path) -> None:
    fake = tmp_path / "rclip"
    fake.write_text("#!/bin/sh\necho 'rclip 2.1.6'\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_rclip.py"), "--rclip", str(fake), "-n", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "pip install rclip==3.3.0" in done.stderr
