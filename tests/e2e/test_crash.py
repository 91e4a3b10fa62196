"""Issue: nothing lost, nothing broken. SIGKILL at random moments, Ctrl-C, a second
indexer, searching while indexing — through the real CLI in subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from crash_harness import check_collection, index_command, make_photos, read_state, run_trials
from fakehub import CLIPS_REPO_ID

pytestmark = pytest.mark.slow
MODEL = f"hf-hub:{CLIPS_REPO_ID}"


def test_sigkill_at_random_moments_loses_nothing(offline_hub_env, tmp_path):
    report = run_trials(20, MODEL, offline_hub_env, tmp_path, seed=7, n=60)
    print(json.dumps(report.to_dict(), indent=2))
    assert report.failures == []
    assert report.trials == 20 and report.kills >= 26
    # The random delays must actually reach the interesting moments.
    assert report.phases["before first commit"] >= 1
    assert report.phases["catalog ahead of saved index"] + report.phases["during index save"] >= 3


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def committed_rows(folder: Path) -> int:
    return read_state(folder)[1]


@pytest.fixture
def spawn():
    """Start subprocesses that are killed at teardown, also when the test fails."""
    started: list[subprocess.Popen] = []

    def start(*args, **kwargs):
        proc = subprocess.Popen(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def big_photos(tmp_path):
    return make_photos(tmp_path / "photos", 400, seed=3)


def test_ctrl_c_stops_after_the_batch_and_resume_finishes(
    offline_hub_env, tmp_path, big_photos, spawn
):
    good, broken = big_photos
    cmd = index_command(tmp_path / "photos", tmp_path / "idx", MODEL)
    folder = tmp_path / "idx" / "crash"
    proc = spawn(
        cmd, env=offline_hub_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert wait_for(lambda: committed_rows(folder) >= 8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command to resume" in err
    assert "Traceback" not in err
    phase, committed = read_state(folder)
    assert phase == "mid-run at a checkpoint" and 0 < committed < len(good)
    done = subprocess.run(cmd, env=offline_hub_env, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["added"] == len(good) - committed
    assert check_collection(folder, good, broken) == []


def test_second_indexer_is_refused_and_a_killed_ones_lock_is_not_stale(
    offline_hub_env, tmp_path, big_photos, spawn
):
    good, broken = big_photos
    cmd = index_command(tmp_path / "photos", tmp_path / "idx", MODEL)
    folder = tmp_path / "idx" / "crash"
    first = spawn(cmd, env=offline_hub_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(lambda: committed_rows(folder) >= 4 and (folder / "vectors.faiss").exists())
    second = subprocess.run(cmd, env=offline_hub_env, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"is being indexed by process {first.pid}" in second.stderr
    # Searching works while the first indexer runs, on a consistent snapshot.
    search = [
        cmd[0],
        "search",
        "anything",
        "--index-dir",
        str(tmp_path / "idx"),
        "-c",
        "crash",
        "-k",
        "1000",
        "--json",
    ]
    hits = json.loads(
        subprocess.run(
            search, env=offline_hub_env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert hits and len({h["path"] for h in hits}) == len(hits)
    assert {h["path"] for h in hits} <= good
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = subprocess.run(cmd, env=offline_hub_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert check_collection(folder, good, broken) == []
