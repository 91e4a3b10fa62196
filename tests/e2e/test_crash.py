"""Nothing lost, nothing broken: SIGKILL at random moments, Ctrl-C, a second indexer
(on the same host, and on another host sharing a PostgreSQL catalog), searching while
indexing — through the real CLI in subprocesses, on both catalog backends."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from crash_harness import (
    CatalogReader,
    check_collection,
    index_command,
    make_photos,
    read_state,
    run_trials,
)
from fakehub import CLIPS_REPO_ID

pytestmark = pytest.mark.slow
MODEL = f"hf-hub:{CLIPS_REPO_ID}"


def test_sigkill_at_random_moments_loses_nothing(offline_hub_env, tmp_path, database_url):
    report = run_trials(
        20, MODEL, offline_hub_env, tmp_path, seed=7, n=60, database_url=database_url
    )
    print(json.dumps(report.to_dict(), indent=2))
    assert report.failures == []
    assert report.trials == 20 and report.kills >= 26
    # The random delays must actually reach the interesting moments.
    assert report.phases["before first commit"] >= 1
    assert report.phases["catalog ahead of saved index"] + report.phases["during index save"] >= 3


def wait_for(predicate, timeout=180.0):  # a loaded 2-core machine exports models slowly
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def reader(database_url):
    made = CatalogReader(database_url)
    yield made
    made.close()


@pytest.fixture
def env(offline_hub_env, database_url):
    """The indexer's environment: the fake hub, and the catalog's database if any."""
    if database_url is None:
        return offline_hub_env
    return {**offline_hub_env, "SEARCHENGINE_DATABASE_URL": database_url}


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


def test_ctrl_c_stops_after_the_batch_and_resume_finishes(env, reader, tmp_path, big_photos, spawn):
    good, broken = big_photos
    cmd = index_command(tmp_path / "photos", tmp_path / "idx", MODEL)
    folder = tmp_path / "idx" / "crash"
    proc = spawn(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: read_state(folder, reader)[1] >= 8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command to resume" in err
    assert "Traceback" not in err
    phase, committed = read_state(folder, reader)
    assert phase == "mid-run at a checkpoint" and 0 < committed < len(good)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    assert summary["added"] == len(good) - committed
    assert check_collection(folder, good, broken, reader) == []


@pytest.mark.parametrize("second_host", [False, True], ids=["same-host", "other-host"])
def test_second_indexer_is_refused_and_a_killed_ones_lock_is_not_stale(
    env, reader, database_url, tmp_path, big_photos, spawn, second_host
):
    """Another indexer of the collection is refused while one runs; with a catalog on
    a server also one on another host (another SEARCHENGINE_HOME). After the first is
    killed, the second finishes and both hosts hold the whole collection."""
    if second_host and database_url is None:
        pytest.skip("a SQLite catalog is one host's: other hosts cannot share it")
    good, broken = big_photos
    cmd = index_command(tmp_path / "photos", tmp_path / "idx", MODEL)
    home = tmp_path / ("idx2" if second_host else "idx")
    other = index_command(tmp_path / "photos", home, MODEL)
    folder = tmp_path / "idx" / "crash"
    first = spawn(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for(
        lambda: read_state(folder, reader)[1] >= 4 and (folder / "vectors.faiss").exists()
    )
    second = subprocess.run(other, env=env, capture_output=True, text=True)
    assert second.returncode == 1
    assert f"is being indexed by process {first.pid}" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    # Searching works while the first indexer runs, on a consistent snapshot.
    search = [cmd[0], "search", "anything", "--index-dir", str(home), "-c", "crash"]
    hits = json.loads(
        subprocess.run(
            [*search, "-k", "1000", "--json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert hits and len({h["path"] for h in hits}) == len(hits)
    assert {h["path"] for h in hits} <= good
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = subprocess.run(other, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert check_collection(home / "crash", good, broken, reader) == []
    if second_host:  # the first host catches up from the catalog, embedding nothing
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        assert json.loads(again.stdout)["added"] == 0
        assert check_collection(folder, good, broken, reader) == []


@pytest.mark.postgres
def test_a_catalog_server_that_stops_mid_run_loses_nothing(
    offline_hub_env, tmp_path, big_photos, spawn, own_cluster
):
    """The shared catalog's server stops in the middle of a run as in a crash (``pg_ctl
    stop -m immediate``; durability on, as a server runs): the run ends in one line,
    what was committed is kept, and once the server is back the same command embeds
    exactly the rest."""
    cluster = own_cluster(durable=True)
    url = cluster.new_database()
    env = {**offline_hub_env, "SEARCHENGINE_DATABASE_URL": url}
    reader = CatalogReader(url)
    try:
        good, broken = big_photos
        cmd = index_command(tmp_path / "photos", tmp_path / "idx", MODEL)
        folder = tmp_path / "idx" / "crash"
        proc = spawn(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: read_state(folder, reader)[1] >= 8)
        cluster.halt()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert "Traceback" not in err
        said = [line for line in err.splitlines() if line.startswith("Error")]
        assert said == [err.strip().splitlines()[-1]]  # one line, after any progress bar
        assert said[0].startswith("Error: cannot use the catalog database: connection")
        assert said[0].endswith(
            "; what was committed is kept: run the same command again once it is up"
        )
        reader.close()
        cluster.start()
        _, committed = read_state(folder, reader)
        assert 8 <= committed < len(good)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        assert json.loads(done.stdout)["added"] == len(good) - committed
        assert check_collection(folder, good, broken, reader) == []
    finally:
        reader.close()
