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
