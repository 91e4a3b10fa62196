"""A codec that crashes the process, hangs, or raises oddly costs its own file only.

The real CLI runs in a subprocess with misbehaving Pillow plugins installed
(``tests/badplugins.py``): a segfault in one, a decode that never returns in another,
``sys.exit`` in a third, next to good photos in the same batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from badplugins import CRASH, HANG, RAISE, install
from imagegen import noise

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("searchengine"))


def _index(photos: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [CLI, "index", str(photos), "-m", "toy", "--batch-size", "4", "--json"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _status(env: dict[str, str]) -> dict:
    command = [CLI, "status", "--failed", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_crash_hang_and_exit_in_codecs_cost_only_their_files(tmp_path):
    photos = tmp_path / "photos"
    good = [noise(photos / f"good-{i}.jpg", seed=i) for i in range(7)]
    for name, magic in [("a-crash.jpg", CRASH), ("m-hang.jpg", HANG), ("z-exit.jpg", RAISE)]:
        (photos / name).write_bytes(magic + b"\0" * 64)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(install(tmp_path / "plugins")), *sys.path]),
        "SEARCHENGINE_HOME": str(tmp_path / "home"),
        "SEARCHENGINE_LOAD_SECONDS": "3",
    }
    first = _index(photos, env)
    # The segfault takes the process down, as it would without any of this.
    assert first.returncode == -signal.SIGSEGV, (first.returncode, first.stderr[-2000:])

    second = _index(photos, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Traceback" not in second.stderr
    status = _status(env)
    failures = {os.path.basename(f["path"]): f["error"] for f in status["failures"]}
    assert failures == {
        "a-crash.jpg": "crashed the image decoder: it died with SIGSEGV on this file",
        "m-hang.jpg": "took too long: reading and decoding this file did not finish within "
        "3 s (a decoder hang or a stalled disk)",
        "z-exit.jpg": "corrupt BADRAISE data: SystemExit: a plugin that calls sys.exit",
    }
    assert status["images"] == len(good)  # every good photo of those batches is indexed

    third = _index(photos, env)
    assert third.returncode == 0, third.stderr[-2000:]
    report = json.loads(third.stdout)
    assert (report["embedded"], report["failed"]) == (0, 0)  # nothing retried
    assert report["unchanged"] == len(good) + 3
