"""Kill `searchengine index` at random moments and check nothing is lost or broken.

Each trial indexes a photo folder into a fresh collection, SIGKILLs the indexer after
a random delay (sometimes twice in a row), then lets `index` finish and checks:

- catalog and FAISS index agree exactly: same ids, no orphans, no duplicates;
- every readable image is searchable exactly once, every broken one is recorded;
- the recovery run embeds only what had not been committed before the kill.

Where the kill landed is read off the collection afterwards: before the first commit
(start-up, scan, model load), with a batch committed but not yet in the saved index,
during an index save (a temporary file left behind), or at a consistent point.

Usage:
    python scripts/crash_harness.py --trials 50 --model toy
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

PHASES = (
    "before first commit",  # start-up, scan, model load, first batch
    "catalog ahead of saved index",  # batches committed since the last index save
    "during index save",  # a temporary index file was left behind
    "mid-run at a checkpoint",  # index saved, more files still to do
    "after the last commit",
)


@dataclass
class HarnessReport:
    trials: int = 0
    kills: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    images: int = 0
    broken: int = 0
    full_run_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "trials": self.trials,
            "kills": self.kills,
            "phases": dict(self.phases),
            "images_per_trial": self.images,
            "broken_files_per_trial": self.broken,
            "full_run_seconds": round(self.full_run_seconds, 2),
            "failures": self.failures,
        }


def make_photos(folder: Path, n: int, seed: int = 0) -> tuple[set[str], set[str]]:
    """``n`` distinct small images in nested folders plus a few broken files."""
    rng = np.random.default_rng(seed)
    good: set[str] = set()
    for i in range(n):
        path = folder / f"d{i % 4}" / f"img{i:04d}.{('jpg', 'png')[i % 2]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((160, 120), Image.Resampling.BICUBIC).save(path)
        good.add(str(path))
    broken = {folder / "broken.jpg": b"\xff\xd8\xff\xe0 cut short", folder / "empty.png": b""}
    for path, data in broken.items():
        path.write_bytes(data)
    return good, {str(p) for p in broken}


def index_command(photos: Path, home: Path, model: str) -> list[str]:
    exe = Path(sys.executable).with_name("searchengine")
    return [
        str(exe),
        "index",
        str(photos),
        "--index-dir",
        str(home),
        "-c",
        "crash",
        "-m",
        model,
        "--batch-size",
        "4",
        "--json",
    ]


def read_state(folder: Path) -> tuple[str, int]:
    """(phase the kill landed in, ok rows committed) read without changing anything."""
    db = folder / "catalog.sqlite"
    phase = "during index save" if list(folder.glob("vectors.faiss.*.tmp")) else ""
    if not db.exists():
        return phase or "before first commit", 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        ok = conn.execute("SELECT count(*) FROM images WHERE status = 'ok'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return phase or "before first commit", 0
    finally:
        conn.close()
    if not phase:
        if int(meta.get("last_batch", 0)) == 0:
            phase = "before first commit"
        elif int(meta.get("last_batch", 0)) > int(meta.get("index_batch", 0)):
            phase = "catalog ahead of saved index"
        else:
            phase = "mid-run at a checkpoint"
    return phase, int(ok)


def _wait_for_commits(folder: Path, target: int, proc: subprocess.Popen[bytes]) -> None:
    """Until ``target`` images are committed, the indexer exits, or two minutes pass."""
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline and proc.poll() is None:
        if read_state(folder)[1] >= target:
            return
        time.sleep(0.02)


def check_collection(folder: Path, good: set[str], broken: set[str]) -> list[str]:
    """Problems found in a finished collection (empty when all invariants hold)."""
    import faiss

    problems = []
    conn = sqlite3.connect(f"file:{folder / 'catalog.sqlite'}?mode=ro", uri=True)
    rows = conn.execute("SELECT id, path, status FROM images").fetchall()
    pending = conn.execute("SELECT count(*) FROM pending_vectors").fetchone()[0]
    conn.close()
    ok = {i: p for i, p, s in rows if s == "ok"}
    failed = {p for _, p, s in rows if s != "ok"}
    index = faiss.read_index(str(folder / "vectors.faiss"))  # keep alive: id_map is a view
    ids = faiss.vector_to_array(index.id_map)
    if len(ids) != len(set(ids.tolist())):
        problems.append("duplicate ids in the index")
    if set(ids.tolist()) != set(ok):
        problems.append(f"index ids != catalog ok ids ({len(ids)} vs {len(ok)})")
    if sorted(ok.values()) != sorted(good):
        problems.append(f"catalog holds {len(ok)} ok images, expected {len(good)}")
    if failed != broken:
        problems.append(f"failed files {sorted(failed)} != {sorted(broken)}")
    if pending:
        problems.append(f"{pending} vectors left in the log after a finished run")
    return problems


def run_trials(
    trials: int, model: str, env: Mapping[str, str], workdir: Path, seed: int = 0, n: int = 40
) -> HarnessReport:
    """Run the kill/recover trials; ``env`` is the environment for the indexer."""
    rng = random.Random(seed)
    photos = workdir / "photos"
    good, broken = make_photos(photos, n, seed)
    report = HarnessReport(images=len(good), broken=len(broken))
    env = {**env, "PYTHONUNBUFFERED": "1"}
    # An untimed first run pays one-time costs (the ONNX export of the model), so the
    # timed run below measures start-up and ingest as every trial will see them.
    warm = index_command(photos, workdir / "warm-up", model)
    subprocess.run(warm, env=env, check=True, capture_output=True)
    started = time.monotonic()
    baseline = workdir / "baseline"
    first = subprocess.run(
        index_command(photos, baseline, model), env=env, check=True, capture_output=True, text=True
    )
    report.full_run_seconds = time.monotonic() - started
    ingest = float(json.loads(first.stdout)["seconds"])
    startup = max(0.0, report.full_run_seconds - ingest)
    for trial in range(trials):
        home = workdir / f"trial{trial:03d}"
        folder = home / "crash"
        kills = 2 if trial % 3 == 2 else 1  # every third trial crashes twice in a row
        # Saving the index after every batch puts kills inside saves; saving rarely
        # leaves the catalog ahead of the index file for most of the run.
        checkpoint = ("0", "0.5", "30")[trial % 3]
        trial_env = {**env, "SEARCHENGINE_CHECKPOINT_SECONDS": checkpoint}
        committed = 0
        for _ in range(kills):
            proc = subprocess.Popen(
                index_command(photos, home, model),
                env=trial_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if rng.random() < 0.25:  # anywhere in start-up, scan and model load
                time.sleep(rng.uniform(0.0, startup))
            else:  # mid-ingest: once a random number of images is committed
                target = rng.randint(1, len(good) - 1)
                _wait_for_commits(folder, target, proc)
                time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            report.kills += 1
            phase, committed = read_state(folder)
            if phase == "mid-run at a checkpoint" and committed == len(good):
                phase = "after the last commit"
            report.phases[phase] += 1
        done = subprocess.run(
            index_command(photos, home, model), env=env, capture_output=True, text=True
        )
        report.trials += 1
        if done.returncode != 0:
            report.failures.append(f"trial {trial}: recovery run failed: {done.stderr[-300:]}")
            continue
        summary = json.loads(done.stdout)
        embedded = summary["added"] + summary["updated"]
        if embedded != len(good) - committed:
            report.failures.append(
                f"trial {trial}: recovery embedded {embedded}, expected "
                f"{len(good) - committed} ({committed} were committed before the kill)"
            )
        report.failures += [f"trial {trial}: {p}" for p in check_collection(folder, good, broken)]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_trials(args.trials, args.model, os.environ, Path(tmp), args.seed, args.images)
    print(json.dumps(report.to_dict(), indent=2))
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
