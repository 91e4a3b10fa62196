"""The speed benchmarks run as a person re-running them would, at a tiny size.

Their figures belong in ``docs/benchmarks.md``, not in assertions; what is checked
here is that the scripts run end to end and report what they promise.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from searchengine.models.onnx import cpu_count

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run_script(
    name: str, args: list[str], out: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``scripts/NAME`` to success; its process and the JSON it wrote to ``out``."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


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
    # The bound: the fastest ceiling and decoding alone, overlapped perfectly.
    decode = corpus["decode_images_per_s"]
    assert corpus["bound_images_per_s"] == pytest.approx(1 / (1 / best + 1 / decode))
    assert corpus["bound_images_per_s"] < min(best, decode)
    assert 0 < corpus["cores_busy"] <= cpu_count() + 0.5
    assert "cores busy" in done.stdout


def test_bench_ingest_paired_gives_each_rounds_ingest_over_that_rounds_bound(
    offline_hub_env, tmp_path
):
    out = tmp_path / "paired.json"
    args = ["-n", "6", "--megapixels", "0.05", "--model", "toy", "--paired", "2"]
    done, result = _run_script(
        "bench_ingest.py",
        [*args, "--work", str(tmp_path), "--json", str(out)],
        out,
        offline_hub_env,
    )
    paired = result["paired"]
    assert len(paired["rounds"]) == 2
    for one in paired["rounds"]:
        assert one["ratio"] == pytest.approx(one["images_per_s"] / one["bound_images_per_s"])
        assert 0 < one["images_per_s"] <= one["pipeline_images_per_s"]
    assert paired["median_ratio"] == pytest.approx(
        statistics.median(r["ratio"] for r in paired["rounds"])
    )
    assert "round 2: bound" in done.stdout and "median:" in done.stdout
    assert "corpus" not in result  # the paired rounds alone


def _python_312() -> str | None:
    """A Python 3.12+ for rclip 4.x: ``SEARCHENGINE_PYTHON312``, else one on PATH, else
    one pyenv has installed (its shim on PATH fails where 3.12 is not selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(pyenv.glob("3.1[2-9]*/bin/python3"))  # the oldest rclip 4 runs on
    chosen = os.environ.get("SEARCHENGINE_PYTHON312")
    for found in [chosen] if chosen else [shutil.which("python3.12"), *installed]:
        if not found or not Path(found).exists():
            continue
        runs = subprocess.run([found, "--version"], capture_output=True, timeout=60)
        if runs.returncode == 0:
            return str(found)
    return None


RCLIP_VERSIONS = {"3.3.0": sys.executable, "4.0.8": _python_312()}


@pytest.fixture(scope="session", params=sorted(RCLIP_VERSIONS))
def rclip_exe(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rclip in its own environment (its pins differ from ours), from PyPI: 3.3.0, and
    4.0.8 where a Python 3.12 is at hand (rclip 4 needs it)."""
    version, python = request.param, RCLIP_VERSIONS[request.param]
    if python is None:
        pytest.skip("rclip 4 needs Python 3.12+: set SEARCHENGINE_PYTHON312")
    venv = tmp_path_factory.mktemp("rclip") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"rclip=={version}"]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv / "bin" / "rclip"


@pytest.mark.peer
def test_bench_rclip_runs_both_tools_on_the_same_photos(
    rclip_exe: Path, offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "peer.json"
    args = ["--rclip", str(rclip_exe), "-n", "12", "--megapixels", "0.05", "--tiny"]
    args += ["--rounds", "1", "--queries", "1", "--add", "2", "--ceiling-images", "8"]
    args += ["--work", str(tmp_path), "--json", str(out)]
    done, result = _run_script("bench_rclip.py", args, out, offline_hub_env)
    best = result["best"]
    theirs = best["rclip"]
    assert result["rclip_version"] in RCLIP_VERSIONS
    for precision in ("fp32", "int8"):
        ours = best[f"searchengine {precision}"]
        assert ours["images"] == theirs["images"] == 12  # both indexed every photo
        ratios = result["ratios"][precision]
        assert ratios["ingest_vs_rclip"] == pytest.approx(
            ours["images_per_s"] / theirs["images_per_s"]
        )
        bound = result["bound"][precision]["bound_images_per_s"]
        assert ratios["ingest_vs_bound"] == pytest.approx(ours["images_per_s"] / bound)
        # The bound again, measured like the tools: the whole corpus, once a round.
        whole = result["bound"]["corpus"][precision]
        assert ratios["ingest_vs_corpus_bound"] == pytest.approx(
            ours["images_per_s"] / whole["bound_images_per_s"]
        )
        decode = result["bound"]["corpus"]["decode_images_per_s"]
        assert 0 < whole["bound_images_per_s"] < min(whole["model_images_per_s"], decode)
        assert ours["add_then_search_seconds"] > 0 and theirs["add_then_search_seconds"] > 0
        assert ratios["example_query_vs_rclip"] == pytest.approx(
            ours["example_query_median_s"] / theirs["example_query_median_s"]
        )
        assert ours["peak_rss_mb"] > 0 and theirs["peak_rss_mb"] > 0
        for tool in (ours, theirs):  # a share of the machine's cores, in % (timer slack)
            assert 0 < tool["cores_busy_pct"] <= 105
    assert "of the bound" in done.stdout and "measured like the tools" in done.stdout
    assert len(result["bound"]["rounds"]) == 1  # measured in the rotation, once a round
    assert "cores busy indexing" in done.stdout
    assert not (Path(result["corpus"]) / "zz-added-by-bench").exists()  # added photos gone


def test_bench_rclip_refuses_what_is_not_rclip_3_or_4(tmp_path: Path) -> None:
    fake = tmp_path / "rclip"
    fake.write_text("#!/bin/sh\necho 'rclip 2.1.6'\n")
    fake.chmod(0o755)
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_rclip.py"), "--rclip", str(fake), "-n", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "pip install rclip==4.0.8" in done.stderr


def test_check_int8_bits_compares_both_builds_through_the_product_check(
    offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "bits.json"
    args = ["--toy-only", "--work", str(tmp_path), "--json", str(out)]
    done, result = _run_script("check_int8_bits.py", args, out, offline_hub_env)
    assert set(result["models"]) == {"toy", "toy-large"}
    for model in result["models"].values():
        first, now = model["8bit"], model["7bit"]
        assert first["images"] == now["images"] == 32
        assert now["passed"] and now["mean_cosine"] >= 0.99  # the product's build
        assert model["fp32_ms"] > 0 and first["ms"] > 0 and now["ms"] > 0
    assert done.stdout.startswith("CPU: ") and "| toy-large |" in done.stdout


def _printed_json(name: str, *args: str) -> dict[str, Any]:
    """Run ``scripts/NAME ARGS --json`` to success; the JSON it printed."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_bench_walk_times_every_case_over_the_same_tree() -> None:
    result = _printed_json("bench_walk.py", "--files", "250", "--rounds", "2")
    cases = result["cases"]
    assert result["files"] == 250 and set(cases) >= {"no patterns", "3 names", "3 patterns"}
    base = cases["no patterns"]["median_s"]
    for case in cases.values():
        assert 0 < case["min_s"] <= case["median_s"]
        assert case["ratio"] == pytest.approx(case["median_s"] / base)


def test_bench_raw_times_the_preview_and_the_sensor_data_against_a_jpeg() -> None:
    cases = _printed_json("bench_raw.py", "--megapixels", "0.5", "--rounds", "1")["cases"]
    assert set(cases) == {"JPEG (DCT-scaled decode)", "DNG, camera preview",
                          "DNG, sensor data (half-size demosaic)"}  # fmt: skip
    base = cases["JPEG (DCT-scaled decode)"]["cpu_s"]
    for case in cases.values():
        assert case["cpu_s"] > 0
        assert case["ratio_to_jpeg"] == pytest.approx(case["cpu_s"] / base)


@pytest.mark.postgres
def test_bench_catchup_builds_each_way_from_one_catalog(pg_cluster, tmp_path) -> None:
    out = tmp_path / "catchup.json"
    args = ["--size", "5000", "--flat-max", "4096", "--rounds", "1", "--json", str(out)]
    args += ["--database-url", pg_cluster.new_database()]
    _run_script("bench_catchup.py", args, out, dict(os.environ))
    result = json.loads(out.read_text())
    recorded = result["recorded_type"]
    assert recorded.startswith("IVF") and recorded.endswith(",SQ8")
    built = {way: figures[0] for way, figures in result["runs"].items()}
    assert {way: f["index_type"] for way, f in built.items()} == {
        "recorded": recorded, "replay": recorded, "exact": "Flat"}  # fmt: skip
    assert all(f["vectors"] == 5000 and f["peak_rss_mb"] > 0 for f in built.values())
    assert built["exact"]["recall_at_10"] == 1.0 and built["recorded"]["recall_at_10"] >= 0.9
    assert built["recorded"]["file_mb"] > 0 and built["exact"]["file_mb"] == 0
    ratio = result["ratios"]["recorded_to_replay"]
    assert ratio["peak_rss"] == pytest.approx(
        built["recorded"]["peak_rss_mb"] / built["replay"]["peak_rss_mb"]
    )


def test_bench_catchup_times_the_id_bookkeeping_both_ways(tmp_path) -> None:
    out = tmp_path / "ids.json"
    _run_script(
        "bench_catchup.py", ["--id-work", "20000", "--json", str(out)], out, dict(os.environ)
    )
    result = json.loads(out.read_text())
    assert result["ids"] == 20000 and set(result) == {"ids", "sets", "arrays"}
    for way in ("sets", "arrays"):  # both find the index's 200 ids without a row, and
        assert result[way]["seconds"] > 0  # the 200 ok ids it lacks
        assert result[way]["orphans"] == [20001, 20002, 20003, 200]
        assert result[way]["missing"] == [1, 2, 3, 200]


def test_bench_refresh_times_a_copy_and_in_place_on_the_same_index() -> None:
    result = _printed_json("bench_refresh.py", "--size", "3000", "--batch", "8", "--rounds", "2")
    assert (result["size"], result["index_type"], result["index_mb"] > 0) == (3000, "Flat", True)
    assert result["vectors_after"] == 3000 + 2 * 2 * 8 - 2 * 2  # each refresh: 8 in, 1 out
    for way in ("copy", "in_place"):
        assert result[way]["median_ms"] > 0
    ratio = result["in_place"]["median_ms"] / result["copy"]["median_ms"]
    assert result["in_place_to_copy"] == pytest.approx(ratio)


@pytest.mark.postgres
def test_bench_connection_times_each_safeguard_beside_what_it_sits_on(pg_cluster) -> None:
    args = ["--rounds", "1", "--repeat", "20", "--json"]
    args += ["--database-url", pg_cluster.new_database()]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "bench_connection.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    timed = ["connect", "schema_check", "read_with_ping", "read_without_ping", "lock_round_trip"]
    assert all(out[f"{name}_ms"] > 0 for name in timed)
    assert out["schema_check_over_connect"] == pytest.approx(
        out["schema_check_ms"] / out["connect_ms"]
    )
    assert out["read_ping_over_without"] == pytest.approx(
        out["read_with_ping_ms"] / out["read_without_ping_ms"]
    )
