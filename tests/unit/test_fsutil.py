"""Filesystem helpers: atomic writes leave the old file on failure; locks exclude."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from searchengine.fsutil import FileLock, atomic_write, content_hash, display_path


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path) -> None:
    target = tmp_path / "sub" / "file.bin"
    with atomic_write(target, durable=True) as out:
        out.write(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_write(target) as out:
        out.write(b"half of the sec")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"first"
    assert os.listdir(target.parent) == ["file.bin"]  # no temporary file left behind


def test_a_file_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path) -> None:
    path = tmp_path / "write.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from searchengine.fsutil import FileLock;"
            f"FileLock(Path({str(path)!r})).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = FileLock(path, blocking=False)
        assert not lock.acquire()
        assert lock.holder() == str(holder.pid)
    finally:
        holder.kill()
        holder.communicate()
    assert lock.acquire()  # the kernel released the dead holder's lock
    lock.release()


def test_content_hash_and_display_path() -> None:
    assert content_hash(b"abc") == content_hash(b"abc") != content_hash(b"abd")
    assert len(content_hash(b"")) == 32
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes, not UTF-8
    assert display_path(name) == "caf\\xe9.jpg"
    assert display_path("plain.jpg") == "plain.jpg"
