"""Filesystem helpers: atomic writes leave the old file on failure; locks exclude."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from searchengine.fsutil import FileLock, atomic_write, content_hash, display_path, spelled_as_known


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


def test_a_folder_is_written_the_way_the_collection_knows_it(tmp_path):
    real = tmp_path / "real"
    (real / "inner" / "deep").mkdir(parents=True)
    (tmp_path / "real2").mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    s = str
    # One folder, inside one, holding one: named under the known name.
    assert spelled_as_known(s(link), [s(real)]) == s(real)
    assert spelled_as_known(s(link / "inner"), [s(real)]) == s(real / "inner")
    assert spelled_as_known(s(real), [s(link / "inner")]) == s(link)
    assert spelled_as_known(s(real / "inner"), [s(link)]) == s(link / "inner")
    # Unrelated, or only alike by name: as given.
    assert spelled_as_known(s(tmp_path / "real2"), [s(link), s(real)]) == s(tmp_path / "real2")
    # A known folder absent here (another host's mount) is passed over.
    assert spelled_as_known(s(link), [s(tmp_path / "gone"), s(real)]) == s(real)
    # A broken link keeps its name, to get its verdict.
    broken = tmp_path / "broken"
    broken.symlink_to(tmp_path / "nowhere")
    assert spelled_as_known(s(broken), [s(tmp_path)]) == s(broken)
    # A known name with a link below the new folder cannot be written under it: as given.
    (real / "inner" / "hop").symlink_to(real / "inner" / "deep")
    assert spelled_as_known(s(real), [s(link / "inner" / "hop")]) == s(real)


def test_a_bind_mount_of_a_known_folder_is_that_folder(tmp_path):
    """A bind mount has its own real path; only the folder's identity tells it apart."""
    real, bound = tmp_path / "real", tmp_path / "bound"
    (real / "inner").mkdir(parents=True)
    bound.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(real), str(bound)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"no bind mount here: {mounted.stderr.decode().strip()}")
    try:
        assert os.path.realpath(bound) == str(bound)
        assert spelled_as_known(str(bound), [str(real)]) == str(real)
        assert spelled_as_known(str(bound / "inner"), [str(real)]) == str(real / "inner")
    finally:
        subprocess.run(["umount", str(bound)], check=True)
