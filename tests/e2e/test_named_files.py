"""A path given to a command that is no photo: a FIFO, a device, a file far larger than
any image. Each is refused in one line, exit 1, before a byte of it is read.

Before, the commands that take a photo by name (``similar``, ``score``, ``where``,
``ground``, ...) read whatever they were given to its end: a FIFO hung them for ever,
``/dev/zero`` read until the machine's memory ran out, and a 3 GB file under a
``.jpg`` name was read whole before it was found to be no image. ``index`` refused
FIFOs and devices already (``scan``), but read a huge file whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clirunner import spawn
from imagegen import solid

from searchengine.ingest.decode import MAX_FILE_BYTES

HUGE = MAX_FILE_BYTES + (1 << 30)  # a sparse file: no disk taken


@pytest.fixture
def named(tmp_path: Path) -> dict[str, Path]:
    """A FIFO, a character device and a huge sparse file, each named like a photo."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    device = tmp_path / "zero.jpg"
    device.symlink_to("/dev/zero")
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(HUGE)
    return {"a FIFO": fifo, "a character device": device, "huge": huge}


def _refused(done, path: Path, why: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert str(path) in line and why in line, line
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("what", ["a FIFO", "a character device", "huge"])
@pytest.mark.parametrize(
    "command",
    [
        ("score", "{path}", "a red circle", "-m", "toy"),
        ("where", "{path}", "a red circle", "--model", "toy-seg"),
        ("ground", "{path}", "a red circle", "--box", "0,0,8,8", "-m", "toy"),
    ],
    ids=["score", "where", "ground"],
)
def test_a_command_given_no_photo_refuses_it_at_once(named, what, command) -> None:
    path = named[what]
    done = spawn(*(arg.format(path=path) for arg in command), timeout=60)
    why = "too large: this file is 3.2 GB" if what == "huge" else f"not a regular file ({what})"
    _refused(done, path, why)


def test_similar_search_and_index_refuse_them_too(tmp_path, named) -> None:
    """``similar`` by example and ``search --plus``, and ``index`` meeting a huge file
    in a folder: the file is failed with the reason, the rest indexed."""
    photos, home = tmp_path / "photos", tmp_path / "idx"
    solid(photos / "red.jpg", (250, 0, 0))
    os.link(named["huge"], photos / "huge.jpg")
    done = spawn("index", str(photos), "--index-dir", str(home), "-m", "toy", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["added"], report["failed"]) == (1, 1), report
    ((path, why),) = report["failures"]
    assert path == str(photos / "huge.jpg")
    assert why.startswith("too large: this file is 3.2 GB, over the limit of 2.1 GB")
    for what, path in named.items():
        done = spawn("similar", str(path), "--index-dir", str(home), timeout=60)
        why = "too large" if what == "huge" else f"not a regular file ({what})"
        _refused(done, path, why)
    # Added to a search: the FIFO and the device are refused as no photo (they were
    # searched for as words), the huge file as too large; a mistyped path as well.
    for what, path in [*named.items(), ("missing", photos / "red.jgp.jpg")]:
        done = spawn("search", "red", "--plus", str(path), "--index-dir", str(home), timeout=60)
        why = {"huge": "too large", "missing": "No such file or directory"}.get(
            what, f"not a regular file ({what})"
        )
        _refused(done, path, why)
