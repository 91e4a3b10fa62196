"""Per-file isolation in the load stage: any exception, a hang, a crash one run later."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from badplugins import CRASH, HANG, RAISE, install
from PIL import Image

from searchengine.ingest import inflight
from searchengine.ingest import load as load_stage
from searchengine.ingest.load import Failed, Loader, Pixels, Unread, load
from searchengine.ingest.mounts import MountTable
from searchengine.ingest.scan import FileEntry


class Model:
    """What loading needs of a model (see ``load.Preprocessor``)."""

    image_size = 16

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image.resize((16, 16)), dtype=np.float32).transpose(2, 0, 1)


def _entry(path) -> FileEntry:
    st = os.stat(path)
    return FileEntry(str(path), st.st_size, st.st_mtime_ns)


def _jpeg(path, colour=(200, 100, 0)):
    Image.new("RGB", (20, 20), colour).save(path, format="JPEG")
    return _entry(path)


def test_an_exception_of_any_type_fails_only_its_file(tmp_path, monkeypatch):
    good = _jpeg(tmp_path / "good.jpg")
    odd = _jpeg(tmp_path / "odd.jpg", (1, 2, 3))
    real = load_stage.decode_bytes

    def decode(data, **kw):
        if data == (tmp_path / "odd.jpg").read_bytes():
            raise SystemExit("a codec that exits")  # not even an Exception
        return real(data, **kw)

    monkeypatch.setattr(load_stage, "decode_bytes", decode)
    items = Loader().batch([good, odd, good], Model(), frozenset())
    assert [type(it) for it in items] == [Pixels, Failed, Pixels]
    assert items[1].reason == "could not be loaded: SystemExit: a codec that exits"


def test_a_preprocessing_failure_names_the_image(tmp_path):
    class Fussy(Model):
        def preprocess(self, image):
            raise ValueError("tile cannot extend outside image")

    item = load(_jpeg(tmp_path / "a.jpg"), Fussy(), frozenset())
    assert isinstance(item, Failed)
    assert item.reason.startswith("unsupported JPEG image shape: the model's preprocessing failed")


def test_a_hanging_decode_fails_its_file_and_the_batch_goes_on(tmp_path, monkeypatch):
    entries = [_jpeg(tmp_path / f"{i}.jpg", (i * 40, 0, 0)) for i in range(4)]
    stuck = (tmp_path / "2.jpg").read_bytes()
    release = threading.Event()
    real = load_stage.decode_bytes

    def decode(data, **kw):
        if data == stuck:
            release.wait(30)  # hangs until the test lets it go
        return real(data, **kw)

    monkeypatch.setattr(load_stage, "decode_bytes", decode)
    loader = Loader(seconds=0.5)
    try:
        items = loader.batch(entries, Model(), frozenset())
    finally:
        release.set()
        loader.close()
    assert [type(it) for it in items] == [Pixels, Pixels, Failed, Pixels]
    assert items[2].reason.startswith("took too long: reading and decoding this file did not")
    assert "0.5 s" in items[2].reason


def test_reads_that_get_no_further_leave_their_mount_for_the_run(tmp_path, monkeypatch):
    """A read that makes no progress for ``read_seconds`` gives its file up as unread;
    after two in a row on one mount, its other files are given up at once, without
    waiting on each. A read that is slow but gets on is waited for, however long it
    takes as a whole, and a file read between two stalls keeps the mount (one file
    that hangs on a disk that answers)."""
    files = [_jpeg(tmp_path / f"{n}.jpg", (n * 9, 0, 0)) for n in range(7)]
    slow, stuck = files[0].path, {files[1].path, files[3].path, files[4].path}
    release = threading.Event()
    real = load_stage.read_bytes

    def read_bytes(path, progress, local=frozenset()):
        if path == slow:  # 1.5 s in all, a step every 0.1 s: never 0.5 s without one
            progress.at = path
            for _ in range(15):
                release.wait(0.1)
                progress.steps += 1
        if path in stuck:
            progress.at = path
            release.wait(30)  # hangs until the test lets it go
        return real(path, progress, local)

    monkeypatch.setattr(load_stage, "read_bytes", read_bytes)
    loader = Loader(seconds=0.5, read_seconds=0.5)
    try:
        started = time.monotonic()
        items = loader.batch(files, Model(), frozenset())
        took = time.monotonic() - started
    finally:
        release.set()
        loader.close()
    kinds = [type(it) for it in items]
    assert kinds == [Pixels, Unread, Pixels, Unread, Unread, Unread, Unread], items
    for n in (1, 3, 4):
        assert items[n].reason.startswith("stopped answering: reading it got no further in 0.5")
    mount = MountTable.read().mount_of(files[3].path)
    given_up = f"not read: {mount} stopped answering while {files[3].path} was read"
    assert [it.reason for it in items[5:]] == [given_up] * 2
    assert took < 1.5 + 3 * 0.5 + 2, took  # the slow read, three waits, none for the last two


def test_the_loaders_of_one_run_share_the_mounts_it_gave_up(tmp_path, monkeypatch):
    """A Ray worker process loads batch after batch of a run, each with a loader of its
    own: once one of them gave a mount up, the next one of that run leaves its files at
    once, where it would wait on two more reads first; another run's waits again."""
    files = [_jpeg(tmp_path / f"{n}.jpg", (n * 9, 0, 0)) for n in range(4)]
    release = threading.Event()
    real = load_stage.read_bytes

    def read_bytes(path, progress, local=frozenset()):
        progress.at = path
        release.wait(30)  # every read hangs: a share that stopped answering
        return real(path, progress, local)

    monkeypatch.setattr(load_stage, "read_bytes", read_bytes)
    loaders = [Loader(read_seconds=0.3, run=run) for run in ("run-a", "run-a", "run-b")]
    try:
        took = []
        for loader in loaders:
            started = time.monotonic()
            items = loader.batch(files, Model(), frozenset())
            took.append(time.monotonic() - started)
            assert all(isinstance(it, Unread) for it in items), items
    finally:
        release.set()
        for loader in loaders:
            loader.close()
    assert took[1] < 0.2 < 0.5 < took[0] and took[2] > 0.5, took  # the second run waits


def test_a_file_that_cannot_be_opened_is_left_unread(tmp_path):
    """Opening a file fails (here ELOOP, and ENOENT for one deleted since it was
    listed; the end-to-end tests meet EACCES and ENOTCONN for real): it is left for
    the next run, which sees what became of it, with the reason."""
    gone = _jpeg(tmp_path / "gone.jpg")
    os.remove(gone.path)
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    items = Loader().batch([gone, FileEntry(str(loop), 1, 1)], Model(), frozenset())
    assert [type(it) for it in items] == [Unread, Unread]
    assert items[0].reason == "cannot read: No such file or directory"
    assert items[1].reason == "cannot read: Too many levels of symbolic links"


def test_the_journal_names_the_files_in_flight_when_a_run_dies(tmp_path):
    path = tmp_path / inflight.JOURNAL_FILE
    journal = inflight.Journal(path)
    names = ["a.jpg", "new\nline.jpg", os.fsdecode(b"caf\xe9.jpg"), "d.jpg"]
    for name in names:
        journal.begin(name)
    journal.end("a.jpg")
    journal.end("d.jpg")
    # No close(): the process died here.
    assert inflight.suspects(path) == names[1:3]
    journal.close()  # a run that ends leaves nothing to suspect
    assert not path.exists() and inflight.suspects(path) == []


def test_the_journal_stays_small_on_a_long_run(tmp_path, monkeypatch):
    monkeypatch.setattr(inflight, "_COMPACT_BYTES", 2000)
    path = tmp_path / inflight.JOURNAL_FILE
    journal = inflight.Journal(path)
    journal.begin("slow.jpg")
    for i in range(500):
        journal.begin(f"{i}.jpg")
        journal.end(f"{i}.jpg")
    assert path.stat().st_size < 4000
    assert inflight.suspects(path) == ["slow.jpg"]


def test_a_probe_in_a_child_process_finds_what_crashes_or_hangs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "plugins")))
    files = {}
    for name, content in [("crash", CRASH), ("hang", HANG), ("exit", RAISE), ("crash2", CRASH)]:
        files[name] = tmp_path / f"{name}.jpg"
        files[name].write_bytes(content + b"\0" * 64)
    files["good"] = tmp_path / "good.jpg"
    Image.new("RGB", (8, 8)).save(files["good"], format="JPEG")
    order = ["good", "crash", "exit", "hang", "good", "crash2"]
    found = inflight.probe([str(files[n]) for n in order], 16, seconds=2)
    assert found == {
        str(files["crash"]): "crashed the image decoder: it died with SIGSEGV on this file",
        str(files["crash2"]): "crashed the image decoder: it died with SIGSEGV on this file",
        str(files["hang"]): "took too long: reading and decoding this file did not finish "
        "within 2 s (a decoder hang or a stalled disk)",
    }  # the good file and the ordinary failure are left to the indexer


def test_recheck_marks_only_the_suspects_that_crash(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install(tmp_path / "plugins")))
    crash = tmp_path / "crash.jpg"
    crash.write_bytes(CRASH + b"\0" * 64)
    fine = _jpeg(tmp_path / "fine.jpg")
    untouched = _jpeg(tmp_path / "untouched.jpg")
    journal = tmp_path / inflight.JOURNAL_FILE
    died = inflight.Journal(journal)
    died.begin(str(crash))
    died.begin(fine.path)  # another thread's file, innocent
    entries = [_entry(crash), fine, untouched]
    out = inflight.recheck(journal, entries, 16, seconds=30)
    assert [e.error for e in out] == [
        "crashed the image decoder: it died with SIGSEGV on this file",
        None,
        None,
    ]
    assert not journal.exists()
    item = Loader().batch(out[:1], Model(), frozenset())[0]
    assert isinstance(item, Failed) and item.reason.startswith("crashed the image decoder")
