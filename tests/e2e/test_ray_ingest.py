"""``searchengine index --engine ray``: the same collection as a local run, through the
real CLI in subprocesses that join a real one-node Ray cluster (``tests/raycluster.py``).

Parity with ``--engine local`` (rows, vectors, search results, re-runs, renames,
deletions, failures), a worker that cannot read a file, a Ray worker killed mid-run,
the driver killed mid-run then resumed, Ctrl-C, and a run that starts its own Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import faiss
import numpy as np
import pytest
from crash_harness import CatalogReader, check_collection, make_photos, read_state
from PIL import Image
from raycluster import RAY_ENV, processes_with_env

from searchengine.toy import world as toyworld

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EXE = str(Path(sys.executable).with_name("searchengine"))
ROW_FIELDS = "id, path, size, mtime_ns, content_hash, width, height, taken_at, status, error"


def index(photos: Path, home: Path, name: str, *extra: str, env=None, ray=None) -> dict:
    """``searchengine index --json`` in a child; ``ray``: the head to run on."""
    command = [EXE, "index", str(photos), "--index-dir", str(home), "-c", name, "--json", *extra]
    if ray is not None:
        command += ["--engine", "ray", "--ray-address", ray.address]
        env = ray.env(env)
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{command}: {out.stderr[-3000:]}"
    assert "Traceback" not in out.stderr
    return json.loads(out.stdout)


def rows(home: Path, name: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{home / name / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT {ROW_FIELDS} FROM images ORDER BY id").fetchall()
    finally:
        conn.close()


def vectors(home: Path, name: str) -> dict[int, np.ndarray]:
    index = faiss.read_index(str(home / name / "vectors.faiss"))
    ids = faiss.vector_to_array(index.id_map)
    return {int(i): index.reconstruct(int(i)) for i in ids}


def search(home: Path, name: str, query: str, env=None) -> list[tuple[str, float]]:
    command = [EXE, "search", query, "--index-dir", str(home), "-c", name, "-k", "10", "--json"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return [(hit["path"], hit["cosine"]) for hit in json.loads(out.stdout)]


def same_collection(home: Path, local: str, ray: str, queries=(), env=None) -> None:
    """Identical catalog rows, vectors at cosine >= 0.9999, identical search results."""
    assert rows(home, local) == rows(home, ray)
    a, b = vectors(home, local), vectors(home, ray)
    assert a.keys() == b.keys()
    cosines = [float(np.dot(a[i], b[i])) for i in a]
    assert min(cosines) >= 0.9999
    for query in queries:
        hits_local, hits_ray = search(home, local, query, env), search(home, ray, query, env)
        assert [p for p, _ in hits_local] == [p for p, _ in hits_ray], query
        assert np.allclose([c for _, c in hits_local], [c for _, c in hits_ray], atol=1e-4)


def counts(report: dict) -> dict:
    keys = ("added", "updated", "moved", "unchanged", "removed", "failed")
    return {k: report[k] for k in keys}


def test_toy_world_gives_the_same_collection_as_a_local_run(tmp_path, ray_head):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    toyworld.generate(photos, 80, seed=2323)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (photos / "empty.png").write_bytes(b"")
    first = next(photos.rglob("toy-*.png"))
    shutil.copy2(first, photos / "copy-of-first.png")  # same content, second path

    local = index(photos, home, "local", "-m", "toy")
    ray = index(photos, home, "ray", "-m", "toy", ray=ray_head)
    assert counts(ray) == counts(local) == {**counts(local), "added": 81, "failed": 2}
    assert dict(map(tuple, ray["failures"])) == dict(map(tuple, local["failures"]))
    queries = ["a red circle", "a small blue square", "a green triangle and a yellow star"]
    same_collection(home, "local", "ray", queries)

    # Unchanged, then a rename, a deletion, an edited file and a new one.
    assert counts(index(photos, home, "ray", ray=ray_head))["unchanged"] == 83
    files = sorted(photos.rglob("toy-*.png"))
    files[1].rename(files[1].with_name("renamed.png"))
    files[2].unlink()
    Image.new("RGB", (64, 64), "purple").save(files[3])
    Image.new("RGB", (64, 64), "orange").save(photos / "new.png")
    local, ray = index(photos, home, "local"), index(photos, home, "ray", ray=ray_head)
    assert counts(ray) == counts(local)
    assert (ray["moved"], ray["removed"], ray["updated"], ray["added"]) == (1, 1, 1, 1)
    same_collection(home, "local", "ray", ["a purple square", "an orange image"])

    # A folder left out (index --exclude): the driver's plan leaves it out as a local
    # run does, and its photos leave both collections.
    local = index(photos, home, "local", "--exclude", "NESTED")
    ray = index(photos, home, "ray", "--exclude", "NESTED", ray=ray_head)
    assert counts(ray) == counts(local) and ray["excluded"] == local["excluded"] > 0
    assert not any("/nested/" in row[1] for row in rows(home, "ray"))
    same_collection(home, "local", "ray", ["a red circle"])


def test_a_file_a_worker_cannot_read_is_left_for_the_next_run(tmp_path, ray_head):
    """Not recorded as failed (unchanged, it would stay failed for good): named, and
    added by the run after its permission is put right."""
    photos, home = tmp_path / "photos", tmp_path / "idx"
    make_photos(photos, 12, seed=5)
    secret = photos / "secret.png"
    Image.new("RGB", (32, 32), "red").save(secret)
    secret.chmod(0)
    report = index(photos, home, "ray", "-m", "toy", ray=ray_head)
    assert report["unread"] == [[str(secret), "cannot read: Permission denied"]]
    assert report["added"] == 12 and report["failed"] == 2  # broken.jpg, empty.png
    secret.chmod(0o644)
    again = index(photos, home, "ray", "-m", "toy", ray=ray_head)
    assert (again["added"], again["failed"], again["unread"]) == (1, 0, [])


def test_a_killed_ray_worker_is_retried_and_nothing_is_lost_or_doubled(tmp_path, ray_head):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    good, broken = make_photos(photos, 600, seed=11)
    command = [*ray_command(photos, home, ray_head), "--json"]
    proc = subprocess.Popen(
        command, env=ray_head.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(lambda: read_state(home / "crash")[1] >= 20, proc)
        victims = ray_head.actor_pids("Embedder")
        assert victims, "no embedding actor found"
        committed_at_kill = read_state(home / "crash")[1]
        os.kill(victims[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert committed_at_kill < len(good), "the run ended before the kill"
    report = json.loads(out)
    assert (report["added"], report["failed"]) == (len(good), len(broken))
    assert check_collection(home / "crash", good, broken) == []
    paths = [r[1] for r in rows(home, "crash")]
    assert len(paths) == len(set(paths)) == len(good) + len(broken)
    assert "A worker died or was killed" in err  # Ray's notice: the kill hit a live worker


def test_a_killed_driver_leaves_a_consistent_collection_and_the_next_run_resumes(
    tmp_path, ray_head
):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    good, broken = make_photos(photos, 400, seed=13)
    command = ray_command(photos, home, ray_head)
    env = {**ray_head.env(), "SEARCHENGINE_CHECKPOINT_SECONDS": "0.5"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: read_state(home / "crash")[1] >= 30, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _, committed = read_state(home / "crash")
    assert 30 <= committed < len(good)
    resumed = index(photos, home, "crash", "--batch-size", "2", ray=ray_head)
    # Work committed before the kill is not redone: the resume embeds exactly the rest.
    assert resumed["added"] == len(good) - committed
    assert check_collection(home / "crash", good, broken) == []


@pytest.mark.postgres
def test_on_a_postgres_catalog_a_driver_killed_on_one_host_is_resumed_on_another(
    tmp_path, ray_head, pg_cluster
):
    """Host A (one collection folder) is killed mid-run; host B (another folder, the
    same catalog and photo paths) resumes without re-embedding A's committed work, and
    A then catches up from the catalog, embedding nothing."""
    url = pg_cluster.new_database()
    reader = CatalogReader(url)
    try:
        photos, host_a, host_b = tmp_path / "photos", tmp_path / "host-a", tmp_path / "host-b"
        good, broken = make_photos(photos, 400, seed=29)
        env = {**os.environ, "SEARCHENGINE_DATABASE_URL": url}
        killed = {**ray_head.env(env), "SEARCHENGINE_CHECKPOINT_SECONDS": "0.5"}
        proc = subprocess.Popen(
            ray_command(photos, host_a, ray_head),
            env=killed,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert wait_for(lambda: read_state(host_a / "crash", reader)[1] >= 30, proc)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        _, committed = read_state(host_a / "crash", reader)
        assert 30 <= committed < len(good)
        resumed = index(photos, host_b, "crash", env=env, ray=ray_head)
        assert resumed["added"] == len(good) - committed
        assert check_collection(host_b / "crash", good, broken, reader) == []
        caught_up = index(photos, host_a, "crash", env=env, ray=ray_head)
        assert caught_up["added"] == 0
        assert check_collection(host_a / "crash", good, broken, reader) == []
    finally:
        reader.close()
        pg_cluster.give_back(url)


def test_ctrl_c_stops_after_the_batch_and_the_same_command_resumes(tmp_path, ray_head):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    good, broken = make_photos(photos, 400, seed=17)
    command = ray_command(photos, home, ray_head)
    proc = subprocess.Popen(
        command, env=ray_head.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(lambda: read_state(home / "crash")[1] >= 20, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "run the same command to resume" in err and "Traceback" not in err
    phase, committed = read_state(home / "crash")
    assert phase == "mid-run at a checkpoint"  # the index file holds every committed batch
    resumed = index(photos, home, "crash", ray=ray_head)
    assert resumed["added"] == len(good) - committed
    assert check_collection(home / "crash", good, broken) == []


def test_without_an_address_a_run_starts_its_own_ray_and_leaves_nothing_running(tmp_path):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    good, broken = make_photos(photos, 10, seed=19)
    marker = f"SEARCHENGINE_TEST_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    env = {**os.environ, **RAY_ENV, name: value}
    report = index(photos, home, "own", "-m", "toy", "--engine", "ray", env=env)
    assert (report["added"], report["failed"]) == (len(good), len(broken))
    assert check_collection(home / "own", good, broken) == []
    deadline = time.monotonic() + 30
    while processes_with_env(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_with_env(marker) == []


def test_an_unreachable_cluster_is_one_clear_line(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, 2)
    from raycluster import free_port

    address = f"127.0.0.1:{free_port()}"
    command = [EXE, "index", str(photos), "--index-dir", str(tmp_path / "idx"), "-m", "toy",
               "--engine", "ray", "--ray-address", address]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"Error: cannot reach the Ray cluster at {address} (Connection refused); start it "
        "with `ray start --head` and pass the address it prints, or leave out --ray-address "
        "to run Ray on this machine"
    ]


@pytest.mark.gpu
def test_gpu_actors_give_the_same_collection_as_a_local_cuda_run(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    photos, home = tmp_path / "photos", tmp_path / "idx"
    toyworld.generate(photos, 64, seed=77)
    env = {**os.environ, **RAY_ENV}
    local = index(photos, home, "local", "-m", "toy", "--device", "cuda", env=env)
    ray = index(photos, home, "ray", "-m", "toy", "--device", "cuda", "--engine", "ray", env=env)
    assert counts(ray) == counts(local)
    same_collection(home, "local", "ray", ["a red circle"], env)


def test_random_vit_b_32_gives_the_same_collection_as_a_local_run(
    tmp_path, ray_head, fake_hub_with_builtin
):
    photos, home = tmp_path / "photos", tmp_path / "idx"
    make_photos(photos, 24, seed=23)
    env = {**os.environ, **fake_hub_with_builtin.env()}
    local = index(photos, home, "local", "-m", "ViT-B-32:openai", env=env)
    ray = index(photos, home, "ray", "-m", "ViT-B-32:openai", env=env, ray=ray_head)
    assert counts(ray) == counts(local) == {**counts(local), "added": 24, "failed": 2}
    same_collection(home, "local", "ray", ["a photo of noise", "a red square"], env)


def ray_command(photos: Path, home: Path, head) -> list[str]:
    """Index with small batches (a long run, to kill in the middle of) on ``head``."""
    return [EXE, "index", str(photos), "--index-dir", str(home), "-c", "crash", "-m", "toy",
            "--batch-size", "2", "--engine", "ray", "--ray-address", head.address]  # fmt: skip


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_file_that_crashes_the_decoder_fails_alone_on_the_cluster(tmp_path, monkeypatch):
    """A segfaulting codec on the workers: the batch's retry probes the files in flight,
    fails the culprit, and the run ends with every good photo indexed (no endless
    restarts)."""
    from badplugins import CRASH, install
    from raycluster import RayHead

    photos, home = tmp_path / "photos", tmp_path / "idx"
    good, broken = make_photos(photos, 10, seed=9)
    crash = photos / "crash.jpg"
    crash.write_bytes(CRASH + b"\0" * 64)
    plugins = install(tmp_path / "plugins")
    # The head's workers (and the probes they start) meet the crashing codec.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), *sys.path]))
    head = RayHead(unprivileged=False)
    try:
        report = index(photos, home, "crashy", "-m", "toy", "--batch-size", "4", ray=head)
    finally:
        head.stop()
    failures = dict(map(tuple, report["failures"]))
    reason = "crashed the image decoder: it died with SIGSEGV on this file"
    assert failures[str(crash)] == reason
    assert (report["added"], report["failed"]) == (len(good), len(broken) + 1)
    assert check_collection(home / "crashy", good, broken | {str(crash)}) == []
