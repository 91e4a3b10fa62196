"""Files being loaded right now, written down, so that a crash can name them.

A crash inside a native codec (a segfault in C, or the kernel killing the process
for its memory) takes the whole indexer down; no ``except`` runs. Without a record,
every re-run meets the same file and dies at the same place, and the folder can
never be indexed. So each load appends ``+path`` to a journal in the collection
folder before it starts and ``-path`` when it ends (two small appends per file; the
kernel keeps them however the process dies). A run that ends, however it ends short
of a crash, removes the journal.

The next run reads what a crash left (``suspects``): the files that were being
loaded at that moment, the culprit and whatever other files the other threads were
on. Each is decoded once more in a child process (``probe``), where a crash costs
only the child: a file that crashes or hangs it again is recorded as failed with
that reason and not opened again until it changes; the others are loaded as usual.

Decoding every file in a child process would contain a crash at once, but would cost
a copy of every decoded image between processes and a model preprocessing step per
process; the journal costs nothing until something crashes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

from searchengine.ingest.scan import FileEntry

JOURNAL_FILE = "loading.journal"
_COMPACT_BYTES = 1 << 20  # rewrite the journal with only the open entries past this

# The child decodes one file per line of its input (a JSON string) and answers a line
# per file once it is done; a crash or a hang shows as the answer that never comes.
PROBE = r"""
import json, sys
from searchengine.errors import ImageError
from searchengine.ingest.decode import decode_file
side = int(sys.argv[1]) if sys.argv[1] != "-" else None
for line in sys.stdin:
    try:
        decode_file(json.loads(line), min_side=side)
    except ImageError:
        pass  # an ordinary failure: the indexer records it when it loads the file again
    sys.stdout.write("done\n")
    sys.stdout.flush()
"""


class Journal:
    """The files being loaded, appended to a file as loads begin and end.

    Args:
        path: the journal file (in the collection folder).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._open: set[str] = set()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
        self._size = 0

    def begin(self, file: str) -> None:
        """Note that ``file`` is being loaded."""
        self._write("+", file)

    def end(self, file: str) -> None:
        """Note that loading ``file`` finished (whatever the outcome)."""
        self._write("-", file)

    def _write(self, sign: str, file: str) -> None:
        line = (sign + json.dumps(file) + "\n").encode("utf-8", "surrogateescape")
        with self._lock:
            if self._fd < 0:
                return
            if sign == "+":
                self._open.add(file)
            else:
                self._open.discard(file)
            os.write(self._fd, line)
            self._size += len(line)
            if self._size > _COMPACT_BYTES:
                self._compact()

    def _compact(self) -> None:
        """Start the file afresh with the loads still open (it grows two lines a file)."""
        lines = "".join("+" + json.dumps(f) + "\n" for f in sorted(self._open))
        data = lines.encode("utf-8", "surrogateescape")
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, data)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd, self._size = fd, len(data)

    def close(self) -> None:
        """The run ended without a crash: nothing was left half-loaded."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        self.path.unlink(missing_ok=True)


def suspects(path: Path) -> list[str]:
    """Files a crashed run was loading when it died (none when it ended cleanly)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    open_: dict[str, None] = {}
    for line in raw.decode("utf-8", "surrogateescape").splitlines():
        try:
            sign, file = line[0], json.loads(line[1:])
        except (IndexError, ValueError):
            continue  # a line cut short by the crash
        if sign == "+":
            open_[file] = None
        elif sign == "-":
            open_.pop(file, None)
    return list(open_)


def probe(files: list[str], min_side: int | None, seconds: float) -> dict[str, str]:
    """Decode ``files`` in a child process; why each that is unsafe cannot be loaded.

    One child decodes them in turn (one interpreter start for all); a file that
    kills it or takes longer than ``seconds`` gets a reason, and a fresh child goes
    on with the rest. Files that decode, or fail in the ordinary way (the indexer
    records that reason itself when it loads them again), are not in the result.
    """
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, *sys.path])}
    command = [sys.executable, "-c", PROBE, "-" if min_side is None else str(min_side)]
    unsafe: dict[str, str] = {}
    child: subprocess.Popen[str] | None = None
    try:
        for file in files:
            if child is None:
                child = subprocess.Popen(
                    command, env=env, text=True, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(json.dumps(file) + "\n")
                child.stdin.flush()
            except BrokenPipeError:
                pass  # died before reading it: the wait below says how
            answer = _answer(child, seconds)
            if answer == "done":
                continue
            returncode = child.wait() if answer == "died" else None
            _stop(child)
            child = None
            unsafe[file] = timed_out(seconds) if returncode is None else _crashed(returncode)
    finally:
        if child is not None:
            _stop(child)
    return unsafe


def _answer(child: subprocess.Popen[str], seconds: float) -> str:
    """``done``, ``died`` (its output ended) or ``hung`` (nothing within ``seconds``)."""
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], seconds)
    if not ready:
        return "hung"
    return "done" if child.stdout.readline() else "died"


def _stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    for pipe in (child.stdin, child.stdout):
        if pipe is not None:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()


def _crashed(returncode: int) -> str:
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    if name == "SIGKILL":
        return "crashed the image decoder: it was killed (SIGKILL), likely out of memory"
    return f"crashed the image decoder: it died with {name} on this file"


def timed_out(seconds: float) -> str:
    """The reason for a file whose loading did not finish in time."""
    return (
        f"took too long: reading and decoding this file did not finish within {seconds:g} s "
        "(a decoder hang or a stalled disk)"
    )


def recheck(
    journal: Path, candidates: list[FileEntry], min_side: int | None, seconds: float
) -> list[FileEntry]:
    """``candidates``, with the files a crashed run left in flight probed first.

    A file that crashes or hangs the probe comes back with that reason as its
    ``error``, so loading records it without opening it; the journal is removed.
    """
    left = set(suspects(journal))
    journal.unlink(missing_ok=True)
    if not left:
        return candidates
    unsafe = probe(
        [e.path for e in candidates if e.path in left and not e.error], min_side, seconds
    )
    return [e._replace(error=unsafe[e.path]) if e.path in unsafe else e for e in candidates]
