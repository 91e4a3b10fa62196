"""Kill `searchengine index` at random moments and check nothing is lost or broken.

Each trial indexes a photo folder into a fresh collection, SIGKILLs the indexer after
a random delay (sometimes twice in a row), then lets `index` finish and checks:

- catalog and FAISS index agree exactly: same ids, no orphans, no duplicates;
- every readable image is searchable exactly once, every broken one is recorded;
- the recovery run embeds only what had not been committed before the kill.

Where the kill landed is read off the collection afterwards: before the first commit
(start-up, scan, model load), with a batch committed but not yet in the saved index,
during an index save (a temporary file left behind), or at a consistent point.

With ``--database-url`` the catalogs live in that PostgreSQL database (one collection
per trial), and the checks read them there: the catalog then keeps every vector, and
what each index file holds is recorded beside it (``vectors.state.json``).

Usage:
    python scripts/crash_harness.py --trials 50 --model toy
    python scripts/crash_harness.py --trials 20 --database-url postgresql://me@127.0.0.1/crash
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


def index_command(photos: Path, home: Path, model: str, collection: str = "crash") -> list[str]:
    exe = Path(sys.executable).with_name("searchengine")
    return [
        str(exe),
        "index",
        str(photos),
        "--index-dir",
        str(home),
        "-c",
        collection,
        "-m",
        model,
        "--batch-size",
        "4",
        "--json",
    ]


class CatalogReader:
    """Reads a collection's catalog without changing anything: the SQLite file in its
    folder, or (with a database URL) the collection's schema on the server."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url
        self._engines: dict[str, object] = {}

    def query(self, folder: Path, sql: str) -> list[tuple] | None:
        """Rows of ``sql``, or None while the catalog or its tables do not exist yet."""
        if self.database_url is None:
            db = folder / "catalog.sqlite"
            if not db.exists():
                return None
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return conn.execute(sql).fetchall()
            except sqlite3.OperationalError:  # tables not created yet
                return None
            finally:
                conn.close()
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        engine = self._engine(folder.name)
        try:
            with engine.connect() as conn:  # type: ignore[attr-defined]
                return [tuple(row) for row in conn.execute(text(sql))]
        except ProgrammingError:  # schema or tables not created yet
            return None

    def settle(self, folder: Path, seconds: float = 10.0) -> None:
        """On PostgreSQL, wait until no other session of the database is in the middle
        of a statement. A client killed just after it sent COMMIT has that commit
        finished by its server process after the client is gone: read before then, the
        catalog shows a batch fewer than the recovery run finds committed."""
        if self.database_url is None:
            return
        from sqlalchemy import text

        busy = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND state IS DISTINCT FROM 'idle'"
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._engine(folder.name).connect() as conn:  # type: ignore[attr-defined]
                if not conn.execute(busy).scalar():
                    return
            time.sleep(0.01)

    def _engine(self, collection: str) -> object:
        if collection not in self._engines:
            from searchengine.backends import create_catalog_engine, server_location

            assert self.database_url is not None
            location = server_location(self.database_url, collection)
            self._engines[collection] = create_catalog_engine(location)
        return self._engines[collection]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()  # type: ignore[attr-defined]
        self._engines.clear()


_LOCAL = CatalogReader()


def index_batch(folder: Path, meta: Mapping[str, str], reader: CatalogReader) -> int:
    """The batch the saved index file holds: recorded beside it for a shared catalog."""
    if reader.database_url is None:
        return int(meta.get("index_batch", 0))
    try:
        return int(json.loads((folder / "vectors.state.json").read_text())["batch"])
    except (OSError, ValueError, KeyError):
        return 0


def read_state(folder: Path, reader: CatalogReader = _LOCAL) -> tuple[str, int]:
    """(phase the kill landed in, ok rows committed) read without changing anything."""
    phase = "during index save" if list(folder.glob("vectors.faiss.*.tmp")) else ""
    meta_rows = reader.query(folder, "SELECT key, value FROM meta")
    ok_rows = reader.query(folder, "SELECT count(*) FROM images WHERE status = 'ok'")
    if meta_rows is None or ok_rows is None:
        return phase or "before first commit", 0
    meta = dict(meta_rows)
    ok = ok_rows[0][0]
    if not phase:
        last = int(meta.get("last_batch", 0))
        if last == 0:
            phase = "before first commit"
        elif last > index_batch(folder, meta, reader):
            phase = "catalog ahead of saved index"
        else:
            phase = "mid-run at a checkpoint"
    return phase, int(ok)


def _wait_for_commits(
    folder: Path, target: int, proc: subprocess.Popen[bytes], reader: CatalogReader
) -> None:
    """Until ``target`` images are committed, the indexer exits, or two minutes pass."""
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline and proc.poll() is None:
        if read_state(folder, reader)[1] >= target:
            return
        time.sleep(0.02)


def check_collection(
    folder: Path, good: set[str], broken: set[str], reader: CatalogReader = _LOCAL
) -> list[str]:
    """Problems found in a finished collection (empty when all invariants hold)."""
    import faiss

    problems = []
    rows = reader.query(folder, "SELECT id, path, status FROM images") or []
    logged = {i for (i,) in reader.query(folder, "SELECT image_id FROM pending_vectors") or []}
    meta = dict(reader.query(folder, "SELECT key, value FROM meta") or [])
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
    if reader.database_url is None and logged:
        problems.append(f"{len(logged)} vectors left in the log after a finished run")
    if reader.database_url is not None:  # a shared catalog keeps one vector per ok row
        if logged != set(ok):
            problems.append(f"catalog holds {len(logged)} vectors for {len(ok)} ok rows")
        if index_batch(folder, meta, reader) != int(meta.get("last_batch", 0)):
            problems.append("the index file's recorded batch is not the catalog's last")
    return problems


def run_trials(
    trials: int,
    model: str,
    env: Mapping[str, str],
    workdir: Path,
    seed: int = 0,
    n: int = 40,
    database_url: str | None = None,
) -> HarnessReport:
    """Run the kill/recover trials; ``env`` is the environment for the indexer.

    With ``database_url`` every catalog is in that database, a collection per trial.
    """
    reader = CatalogReader(database_url)
    try:
        return _run_trials(trials, model, env, workdir, seed, n, reader)
    finally:
        reader.close()


def _succeeded(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """``done``, if it exited 0; else an error that carries what it printed."""
    if done.returncode != 0:
        raise RuntimeError(f"{done.args} exited {done.returncode}: {done.stderr[-4000:]}")
    return done


def _run_trials(
    trials: int,
    model: str,
    env: Mapping[str, str],
    workdir: Path,
    seed: int,
    n: int,
    reader: CatalogReader,
) -> HarnessReport:
    rng = random.Random(seed)
    photos = workdir / "photos"
    good, broken = make_photos(photos, n, seed)
    report = HarnessReport(images=len(good), broken=len(broken))
    env = {**env, "PYTHONUNBUFFERED": "1"}
    if reader.database_url is not None:
        env["SEARCHENGINE_DATABASE_URL"] = reader.database_url
    # An untimed first run pays one-time costs (the ONNX export of the model), so the
    # timed run below measures start-up and ingest as every trial will see them.
    warm = index_command(photos, workdir / "warm-up", model, "warmup")
    _succeeded(subprocess.run(warm, env=env, capture_output=True, text=True))
    started = time.monotonic()
    baseline = workdir / "baseline"
    first = _succeeded(
        subprocess.run(
            index_command(photos, baseline, model, "baseline"),
            env=env,
            capture_output=True,
            text=True,
        )
    )
    report.full_run_seconds = time.monotonic() - started
    ingest = float(json.loads(first.stdout)["seconds"])
    startup = max(0.0, report.full_run_seconds - ingest)
    for trial in range(trials):
        home = workdir / f"trial{trial:03d}"
        name = f"crash{trial:03d}"  # trials share the database, not a collection
        folder = home / name
        kills = 2 if trial % 3 == 2 else 1  # every third trial crashes twice in a row
        # Saving the index after every batch puts kills inside saves; saving rarely
        # leaves the catalog ahead of the index file for most of the run.
        checkpoint = ("0", "0.5", "30")[trial % 3]
        trial_env = {**env, "SEARCHENGINE_CHECKPOINT_SECONDS": checkpoint}
        committed = 0
        for _ in range(kills):
            proc = subprocess.Popen(
                index_command(photos, home, model, name),
                env=trial_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if rng.random() < 0.25:  # anywhere in start-up, scan and model load
                time.sleep(rng.uniform(0.0, startup))
            else:  # mid-ingest: once a random number of images is committed
                target = rng.randint(1, len(good) - 1)
                _wait_for_commits(folder, target, proc, reader)
                time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            report.kills += 1
            reader.settle(folder)
            phase, committed = read_state(folder, reader)
            if phase == "mid-run at a checkpoint" and committed == len(good):
                phase = "after the last commit"
            report.phases[phase] += 1
        done = subprocess.run(
            index_command(photos, home, model, name), env=env, capture_output=True, text=True
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
        problems = check_collection(folder, good, broken, reader)
        report.failures += [f"trial {trial}: {p}" for p in problems]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--database-url", default=None, help="keep the catalogs in this PostgreSQL database"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_trials(
            args.trials,
            args.model,
            os.environ,
            Path(tmp),
            args.seed,
            args.images,
            args.database_url,
        )
    print(json.dumps(report.to_dict(), indent=2))
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
