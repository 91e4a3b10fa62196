"""An independent verdict per file: can Pillow, on its own, decode every pixel of it?

The indexer's answer for a file must agree with this one: a file Pillow decodes fully
(first frame, under the indexer's pixel limit) is indexed, any other is failed. The
oracle shares no code with ``searchengine``: a child process opens each file with
Pillow's defaults (no truncated-image tolerance), refuses it when its header is over
the limit, and loads the first frame. A file that takes longer than ``seconds`` or
kills the child (a crash in a native codec) counts as not decodable; the child is
restarted for the files after it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterable

OK = "ok"

CHILD = r"""
import json, sys, warnings
from PIL import Image
warnings.simplefilter("ignore")
Image.MAX_IMAGE_PIXELS = None  # the limit below decides, as in the indexer
try:  # HEIC/HEIF, where pillow-heif is installed: Pillow's plugin for it
    from pillow_heif import register_heif_opener
    register_heif_opener()
except ImportError:
    pass
limit = int(sys.argv[1])
Image.init()


def decode(path, formats=None):
    try:
        with Image.open(path, formats=formats) as image:
            w, h = image.size
            if w * h > limit:
                return f"over the limit: {w}x{h}"
            image.load()
            return "ok"
    except BaseException as exc:  # anything at all: not decodable this way
        return f"{type(exc).__name__}: {exc}"


for line in sys.stdin:
    path = json.loads(line)
    verdict = decode(path)
    if verdict != "ok":
        # Two plugins claim the HEIF container (Pillow's AVIF, pillow-heif's HEIF), and
        # the first to accept a file keeps it even where it cannot decode it: the file
        # is decodable if either can.
        if any(fmt in Image.ID and decode(path, [fmt]) == "ok" for fmt in ("AVIF", "HEIF")):
            verdict = "ok"
    sys.stdout.write(json.dumps(verdict) + "\n")
    sys.stdout.flush()
"""


def verdicts(paths: Iterable[str], max_pixels: int, seconds: float = 10.0) -> dict[str, str]:
    """``{path: "ok" or why not}`` for each path (regular files only)."""
    todo = list(paths)
    out: dict[str, str] = {}
    child: subprocess.Popen[str] | None = None
    try:
        for path in todo:
            if child is None:
                child = _start(max_pixels)
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(path) + "\n")
            child.stdin.flush()
            line = _read_line(child, seconds)
            if line is None:  # hung or died: this file's fault
                code = child.poll()
                _stop(child)
                child = None
                out[path] = "timeout" if code is None else f"child died ({code})"
                continue
            out[path] = json.loads(line)
    finally:
        if child is not None:
            _stop(child)
    return out


def _stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            pipe.close()


def _start(max_pixels: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(max_pixels)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _read_line(child: subprocess.Popen[str], seconds: float) -> str | None:
    assert child.stdout is not None
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([child.stdout], [], [], left)
        if ready:
            line = child.stdout.readline()
            return line or None  # "" = the child died
