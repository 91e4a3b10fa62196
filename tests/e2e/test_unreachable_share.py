"""A network share under an indexed folder that dies or stops answering, for real: a
FUSE mount (``tests/fuseshare.py``) whose process is killed (every call under it then
fails with "Transport endpoint is not connected", as under a dead sshfs or rclone
mount) or stopped (every call blocks, as on an NFS hard mount whose server went away).

Before: a share that died had its photos removed from the collection without a word
(the next index after it came back embedded them all again), and one that stopped
answering hung ``index`` with no output, for ever.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clirunner import spawn
from fuseshare import ShareUnavailable, share
from imagegen import solid

from searchengine.ingest import answering, reading
from searchengine.ingest import load as load_stage
from searchengine.ingest.plan import plan
from searchengine.ingest.scan import scan
from searchengine.progress import NoProgress

COLOURS = {"red": (250, 0, 0), "green": (0, 250, 0)}
SHARED = {"blue": (0, 0, 250), "yellow": (250, 250, 0), "white": (250, 250, 250)}


@pytest.fixture
def tree(tmp_path: Path):
    """``photos/local`` (two photos) and ``photos/nas``, a share of three: (photos,
    the share)."""
    photos, source = tmp_path / "photos", tmp_path / "server"
    for name, colour in COLOURS.items():
        solid(photos / "local" / f"{name}.jpg", colour)
    for name, colour in SHARED.items():
        solid(source / f"{name}.jpg", colour)
    try:
        with share(source, photos / "nas") as mounted:
            yield photos, mounted
    except ShareUnavailable as exc:
        pytest.skip(str(exc))


def index(home: Path, photos: Path, timeout: float = 180) -> tuple[dict, str, float]:
    started = time.monotonic()
    done = spawn(
        "index", str(photos), "--index-dir", str(home), "-m", "toy", "--json", timeout=timeout
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr, took


def indexed(home: Path) -> int:
    done = spawn("status", "--index-dir", str(home), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["images"]


def test_a_share_whose_file_system_died_keeps_its_photos(tmp_path, tree) -> None:
    """The share's process is killed (ENOTCONN under it): the next index adds the new
    local photo, removes nothing, and says which folder it could not read and that its
    photos are kept; once the share is back, nothing is embedded again."""
    photos, mounted = tree
    home = tmp_path / "idx"
    first, _, _ = index(home, photos)
    assert first["added"] == 5
    mounted.die()
    solid(photos / "local" / "black.jpg", (5, 5, 5))
    report, _, _ = index(home, photos)
    assert (report["added"], report["removed"]) == (1, 0), report
    (note,) = report["notes"]
    assert str(photos / "nas") in note and "Transport endpoint is not connected" in note
    assert "its 3 photos are kept as before" in note
    assert indexed(home) == 6
    mounted.unmount()
    mounted.mount()
    back, _, _ = index(home, photos)
    assert (back["added"], back["updated"], back["removed"], back["unchanged"]) == (0, 0, 0, 6)
    assert back["notes"] == []


@pytest.mark.slow
def test_a_share_that_stops_answering_is_given_up_on_and_the_rest_indexed(tmp_path, tree):
    """The share's process is stopped: every call under it blocks. ``index`` gives the
    share up after 30 s without progress, adds the new local photo and keeps the
    share's; once the share answers again, nothing is embedded again."""
    photos, mounted = tree
    home = tmp_path / "idx"
    index(home, photos)
    solid(photos / "local" / "black.jpg", (5, 5, 5))
    time.sleep(1.5)  # past FUSE's 1 s attribute cache: the mount point's lstat blocks
    with mounted.stopped():
        report, _, took = index(home, photos, timeout=120)
    print(f"\nindex with a share that does not answer: {took:.1f} s")
    assert (report["added"], report["removed"]) == (1, 0), report
    (note,) = report["notes"]
    assert str(photos / "nas") in note and "did not answer in 30 s" in note
    assert "its 3 photos are kept as before" in note
    assert answering.FOLDER_SECONDS <= took < answering.FOLDER_SECONDS + 30
    back, _, _ = index(home, photos)
    assert (back["added"], back["removed"], back["unchanged"]) == (0, 0, 6)


def test_a_share_inside_a_share_that_stops_answering_loses_nothing_read_before_it(
    tmp_path, monkeypatch
):
    """A share (``photos``, read on a thread the walk can leave) holding, at ``m/nas``,
    a share of its own that stops answering: the folders read before it, still in the
    reader's hands when it is given up on, are all seen (none of their photos counts as
    missing), and the inner share's are kept."""
    monkeypatch.setattr(answering, "FOLDER_SECONDS", 1.0)
    # Nothing is handed over before the share is met: all of it is in the reader's hands.
    monkeypatch.setattr(reading, "BATCH_SECONDS", 600.0)
    photos, server, inner = tmp_path / "photos", tmp_path / "server", tmp_path / "server2"
    for n in range(5):  # read before m/, in name order, and in m/ one photo before nas/
        solid(server / f"a{n}" / "p.jpg", (10 * n, 0, 0))
    solid(server / "m" / "p.jpg", (0, 9, 0))
    solid(server / "z" / "p.jpg", (0, 0, 9))
    for name, colour in SHARED.items():
        solid(inner / f"{name}.jpg", colour)
    try:
        with share(inner, server / "m" / "nas") as nested, share(server, photos):
            before = {e.path: (i, e.size, e.mtime_ns) for i, e in enumerate(scan([photos]))}
            assert len(before) == 10
            time.sleep(1.5)  # past FUSE's 1 s attribute cache: the mount point's lstat blocks
            with nested.stopped():
                started = time.monotonic()
                diff = plan(before, [str(photos)])
                took = time.monotonic() - started
    except ShareUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nunlisted: {diff.unlisted}")
    assert diff.missing == {} and diff.candidates == []
    # What the outer share answers once its reader is blocked in the inner one varies
    # (a FUSE process serves some calls in turn): each folder it does not answer is
    # given up on in turn, its photos kept; a0-a4, read before, are seen whatever.
    assert diff.unchanged >= 5 and diff.unchanged + len(diff.kept) == 10
    assert diff.unlisted[str(photos / "m" / "nas")] == ("did not answer in 1 s", 3)
    assert all(why == "did not answer in 1 s" for why, _ in diff.unlisted.values())
    assert took < 20, took


class _WhenListed(NoProgress):
    """Progress that does something to the share once the run has listed its photos
    (``start``), before it reads them: a share that goes away mid-run."""

    def __init__(self, act: Callable[[], object]) -> None:
        self.act = act

    def start(self, total: int) -> None:
        self.act()


def _listed_then(tmp_path: Path, photos: Path, act: Callable[[], object]):
    """A fresh collection of ``photos`` indexed (two load threads) while ``act`` is
    done to the share once its photos are listed: (collection, report, seconds)."""
    from searchengine import Collection, Config
    from searchengine.models.fake import FakeEncoder

    config = Config(home=tmp_path / "idx", device="cpu", workers=2)
    collection = Collection.open("t", config, create=True, encoder=FakeEncoder())
    started = time.monotonic()
    report = collection.index([photos], progress=_WhenListed(act))
    return collection, report, time.monotonic() - started


def test_a_share_that_dies_after_it_was_listed_loses_no_photo(tmp_path, tree) -> None:
    """The share's process is killed once its photos are listed: each read fails
    with ENOTCONN. Its photos are not recorded as failed (which, unchanged, they
    would have stayed for good) but left unread, named in one line; once the share is
    back, the next run adds them."""
    photos, mounted = tree
    collection, report, _ = _listed_then(tmp_path, photos, mounted.die)
    with collection:
        assert (report.added, report.failed, len(report.unread)) == (2, 0, 3), report
        assert {why for _, why in report.unread} == {
            "cannot read: Transport endpoint is not connected"
        }
        (note,) = report.notes
        assert note.startswith(f"3 photos under {photos / 'nas'} (the first: {photos / 'nas'}/")
        assert "the next index reads them again" in note
        mounted.unmount()
        mounted.mount()
        again = collection.index([photos])
        assert (again.added, again.failed, again.unread, again.notes) == (3, 0, [], [])


def test_a_share_that_stops_answering_after_it_was_listed_costs_a_wait(
    tmp_path, monkeypatch
) -> None:
    """The share's process is stopped once its photos are listed: each read blocks.
    Two reads in a row on it that get no further in ``READ_SECONDS`` (the two load
    threads', side by side) give up the whole share for the run, its other photos at
    once; the local ones are added, the
    share's are left unread, and added by the next run once it answers. Before, each
    photo waited out the 120 s load limit in turn (two at a time) and was recorded
    failed, for good: eight photos cost eight minutes and never came in."""
    monkeypatch.setattr(load_stage, "READ_SECONDS", 3.0)
    photos, source = tmp_path / "photos", tmp_path / "server"
    for name, colour in COLOURS.items():
        solid(photos / "local" / f"{name}.jpg", colour)
    for n in range(8):
        solid(source / f"{n}.jpg", (30 * n, 200, 90))
    try:
        with share(source, photos / "nas") as mounted:
            try:
                collection, report, took = _listed_then(tmp_path, photos, mounted.stop)
            finally:
                mounted.resume()
            with collection:
                print(f"\nindex, a share stopping once listed: {took:.1f} s; {report.notes}")
                again = collection.index([photos])
    except ShareUnavailable as exc:
        pytest.skip(str(exc))
    assert (report.added, report.failed, len(report.unread)) == (2, 0, 8), report
    assert took < 3.0 * 2 + 5, took  # at most two waits, in turn
    stalled = [p for p, why in report.unread if why.startswith("stopped answering")]
    assert len(stalled) == load_stage.STALLS, report.unread  # a read being waited for is left
    # The others name the read that gave the share up (either thread's, if both stalled).
    given_up = {f"not read: {photos / 'nas'} stopped answering while {p} was read" for p in stalled}
    assert sum(why in given_up for _, why in report.unread) == 8 - len(stalled), report.unread
    assert any(note.startswith(f"{8 - len(stalled)} photos under") for note in report.notes)
    assert (again.added, again.failed, again.unread) == (8, 0, []), again


def test_a_file_that_cannot_be_read_keeps_its_row_and_one_that_vanished_does_not(tmp_path):
    """Reading a name fails: a vanished one (ENOENT) is gone from the collection as
    before; one that fails otherwise (here: a link into a share that died) is kept."""
    photos = tmp_path / "photos"
    solid(photos / "kept.jpg", (1, 2, 3))
    solid(photos / "gone.jpg", (3, 2, 1))
    solid(photos / "here.jpg", (2, 2, 2))  # the folder is not empty, so not away
    states = {e.path: (i, e.size, e.mtime_ns) for i, e in enumerate(scan([photos]))}
    (photos / "gone.jpg").unlink()
    source = tmp_path / "server"
    solid(source / "x.jpg", (9, 9, 9))
    try:
        with share(source, tmp_path / "nas") as mounted:
            (photos / "kept.jpg").unlink()
            (photos / "kept.jpg").symlink_to(tmp_path / "nas" / "x.jpg")
            mounted.die()
            diff = plan(states, [str(photos)])
    except ShareUnavailable as exc:
        pytest.skip(str(exc))
    assert list(diff.missing) == [str(photos / "gone.jpg")]
    assert diff.unlisted == {str(photos / "kept.jpg"): ("Transport endpoint is not connected", 1)}


def test_the_web_server_keeps_answering_while_photos_on_a_share_do_not(tmp_path, monkeypatch):
    """``serve`` with photos on a share that stops answering: 40 requests for such a
    photo's original, 6 for its thumbnail and 4 searches adding it (``plus=image:ID``) each get
    a 503 (at once when the file readers are all busy, else after ``FILE_SECONDS``),
    while health, search and a local photo's thumbnail (made then) answer at once;
    after the burst a local original is served and the share's is a 503 again.
    Before, the 40 reads held every thread of the server's pool, and every route, the
    health probe's included, stalled for as long as the share did; and the thumbnails
    and searches by image read the original on the two decode threads, which two such
    requests held for as long as the share was away, every thumbnail not yet made and
    every search by image waiting behind them."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from servertools import FakeCaptioner, serving

    from searchengine import Collection, Config
    from searchengine.models.fake import FakeEncoder
    from searchengine.server import create_app, originals

    monkeypatch.setattr(originals, "FILE_SECONDS", 2.0)
    photos, source = tmp_path / "photos", tmp_path / "server"
    solid(photos / "red.jpg", COLOURS["red"])
    solid(source / "blue.jpg", SHARED["blue"])
    try:
        with share(source, photos / "nas") as mounted:
            config = Config(home=tmp_path / "idx", device="cpu", workers=1)
            collection = Collection.open("t", config, create=True, encoder=FakeEncoder())
            collection.index([photos])
            ids = {Path(r.path).name: r.id for r in collection.catalog.records()}
            app = create_app(collection, caption_model=FakeCaptioner())
            with collection, serving(app) as url:

                def get(path: str) -> tuple[int | None, float]:
                    started = time.monotonic()
                    try:
                        status = httpx.get(url + path, timeout=20).status_code
                    except httpx.TimeoutException:
                        status = None
                    return status, time.monotonic() - started

                time.sleep(1.5)  # past FUSE's 1 s attribute cache
                blue = ids["blue.jpg"]
                paths = [f"/api/images/{blue}/file"] * 40 + [f"/api/images/{blue}/thumbnail"] * 6
                paths += [f"/api/search?q=a+photo&plus=image:{blue}"] * 4
                with mounted.stopped(), ThreadPoolExecutor(len(paths) + 4) as pool:
                    burst = [pool.submit(get, path) for path in paths]
                    time.sleep(0.5)
                    during = {
                        route: pool.submit(get, route).result()
                        for route in (
                            "/api/health",
                            "/api/search?q=red",
                            f"/api/images/{ids['red.jpg']}/thumbnail",
                        )
                    }
                    answered = [job.result() for job in burst]
                    started = time.monotonic()
                    captioned = httpx.get(
                        url + "/api/search",
                        params={"q": "red", "k": 2, "caption": "true"},
                        timeout=30,
                    ).json()
                    captioned_in = time.monotonic() - started
                    after = get(f"/api/images/{ids['red.jpg']}/file")
                    again = get(f"/api/images/{ids['blue.jpg']}/file")
    except ShareUnavailable as exc:
        pytest.skip(str(exc))
    print(f"\nduring: {during}; burst slowest {max(s for _, s in answered):.1f} s")
    assert all(status == 200 and took < 3 for status, took in during.values()), during
    assert {status for status, _ in answered} == {503}
    assert max(took for _, took in answered) < 8
    assert after[0] == 200 and again[0] == 503 and again[1] < 5, (after, again)
    # Captions: the local photo's is made, the share's photo goes without (it held the
    # caption worker for good before, and every caption after it with it).
    captions = {r["id"]: r["caption"] for r in captioned["results"]}
    assert captions[ids["red.jpg"]] and captions[ids["blue.jpg"]] is None, captioned
    assert captioned_in < 5, captioned_in
