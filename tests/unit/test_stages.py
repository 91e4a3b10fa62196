"""Each ingest stage alone: plan (disk vs catalog), load (read, hash, decode), write
(rows from items, through the store), and the store's batches and checkpoints."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest
from imagegen import solid

from searchengine.backends import server_location, sqlite_location
from searchengine.catalog import Catalog
from searchengine.errors import CollectionLockedError
from searchengine.fsutil import content_hash
from searchengine.ingest.load import Failed, Known, Pixels, load
from searchengine.ingest.plan import plan
from searchengine.ingest.run import Ingest, lane_batches
from searchengine.ingest.scan import FileEntry
from searchengine.ingest.write import Writer
from searchengine.models.fake import FakeEncoder
from searchengine.ranking.calibration import needs_text_tower
from searchengine.store import Store
from searchengine.values import FAILED, OK, MetaKey

RED, BLUE = (250, 0, 0), (0, 0, 250)


def entry(path) -> FileEntry:
    info = os.stat(path)
    return FileEntry(str(path), info.st_size, info.st_mtime_ns)


def open_catalog(folder, database_url) -> Catalog:
    """The catalog of collection ``coll`` in ``folder``, on either backend."""
    if database_url is None:
        return Catalog(sqlite_location(folder).url)
    location = server_location(database_url, "coll")
    return Catalog(location.url, schema=location.schema)


@pytest.fixture
def store(tmp_path, database_url):
    folder = tmp_path / "coll"
    folder.mkdir()
    catalog = open_catalog(folder, database_url)
    catalog.set_meta({MetaKey.DIM: "4"})
    made = Store(folder, catalog, "coll")
    yield made
    made.close()


def same_catalog(store: Store) -> Catalog:
    """The store's catalog opened again, as another process would."""
    return Catalog(store.catalog.url, schema=store.catalog.location.schema)


def test_plan_sorts_the_disk_into_new_changed_unchanged_and_gone(tmp_path) -> None:
    photos = tmp_path / "photos"
    same, changed, new = (solid(photos / f"{n}.jpg", RED) for n in ("same", "changed", "new"))
    known = {
        str(same): (1, same.stat().st_size, same.stat().st_mtime_ns),
        str(changed): (2, changed.stat().st_size + 1, changed.stat().st_mtime_ns),
        str(photos / "gone.jpg"): (3, 10, 10),
        str(tmp_path / "elsewhere" / "x.jpg"): (4, 10, 10),  # not under the roots
    }
    diff = plan(known, [str(photos)])
    assert sorted(e.path for e in diff.candidates) == [str(changed), str(new)]
    assert diff.unchanged == 1
    assert diff.missing == {str(photos / "gone.jpg"): 3}
    assert str(tmp_path / "elsewhere" / "x.jpg") not in diff.known


def test_plan_keeps_the_rows_of_a_folder_away_and_drops_a_deleted_one(tmp_path) -> None:
    drive, mount, home = tmp_path / "drive", tmp_path / "mount", tmp_path / "home"
    mount.mkdir()  # a mount point with nothing mounted: no image in it
    solid(mount / "notes" / "readme.jpg.txt", RED, fmt="PNG")
    kept = solid(home / "kept.jpg", RED)
    rows = {
        str(drive / "a.jpg"): (1, 1, 1),
        str(drive / "sub" / "b.jpg"): (2, 1, 1),
        str(mount / "c.jpg"): (3, 1, 1),
        str(home / "deleted" / "d.jpg"): (4, 1, 1),
        str(kept): (5, kept.stat().st_size, kept.stat().st_mtime_ns),
    }
    roots = [str(drive), str(drive / "sub"), str(mount), str(home), str(home / "deleted")]
    diff = plan(rows, roots)
    # Named once, by its outermost folder; a folder inside one that holds images is not away.
    assert diff.away == {str(drive): (False, 2), str(mount): (True, 1)}
    assert diff.missing == {str(home / "deleted" / "d.jpg"): 4}
    assert (diff.unchanged, diff.candidates) == (1, [])
    assert plan({}, [str(drive)]).away == {}  # nothing known there: nothing to keep


def test_load_reads_hashes_and_decodes_once_and_its_items_travel(tmp_path) -> None:
    """What a worker returns is a plain value: it pickles (a remote task can send it)."""
    red = solid(tmp_path / "red.png", RED, fmt="PNG")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    encoder = FakeEncoder()
    item = load(entry(red), encoder, frozenset())
    assert isinstance(item, Pixels)
    assert item.digest == content_hash(red.read_bytes())
    assert item.pixels.shape == (3, 16, 16) and (item.width, item.height) == (64, 48)
    assert isinstance(load(entry(red), encoder, frozenset({item.digest})), Known)
    failed = load(entry(broken), encoder, frozenset())
    assert isinstance(failed, Failed) and failed.digest is not None and failed.reason
    for sent in (item, failed):
        assert pickle.loads(pickle.dumps(sent)).entry == sent.entry
    assert encoder.images_encoded == 0  # loading never runs the model


def test_a_batch_commits_rows_and_vectors_together_or_not_at_all(store) -> None:
    vector = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    row = {"path": "/a.jpg", "size": 1, "mtime_ns": 1, "content_hash": "h", "status": OK}
    with store.writing():
        with pytest.raises(RuntimeError), store.batch() as batch:
            batch.put(None, row, vector)
            raise RuntimeError("the process fails mid-batch")
        assert store.catalog.ok_count() == 0 and len(store.vectors()) == 0
        with store.batch() as batch:
            image_id = batch.put(None, row, vector)
        assert store.catalog.ok_ids() == {image_id}
        assert store.vectors().reconstruct(image_id) is not None
        assert store.dirty
        with store.batch() as batch:  # a failure takes the image out of the index
            batch.put(image_id, {**row, "status": FAILED, "error": "corrupt"})
        assert len(store.vectors()) == 0
        store.checkpoint()
    assert not store.dirty
    assert store.saved.state() == (int(store.catalog.get_meta(MetaKey.LAST_BATCH) or 0), 0)


def test_one_writer_at_a_time(store, tmp_path) -> None:
    other = Store(store.folder, same_catalog(store), "coll")
    try:
        locked = pytest.raises(CollectionLockedError, match=f"process {os.getpid()}")
        with store.writing(), locked, other.writing():
            pass
        with other.writing():  # released when the first writer is done
            pass
    finally:
        other.close()


def test_refresh_picks_up_an_index_another_process_saved(store) -> None:
    vector = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)
    reader = Store(store.folder, same_catalog(store), "coll")
    try:
        with store.writing():
            with store.batch() as batch:
                batch.put(None, {"path": "/a", "size": 1, "mtime_ns": 1, "status": OK}, vector)
            store.checkpoint()
        assert len(reader.vectors()) == 1
        assert not reader.refresh()  # nothing new
        with store.writing():
            with store.batch() as batch:
                batch.put(None, {"path": "/b", "size": 1, "mtime_ns": 1, "status": OK}, vector)
            store.checkpoint()
        assert reader.refresh() and len(reader.vectors()) == 2
    finally:
        reader.close()


def test_writer_turns_items_into_rows_moves_and_failures(store, tmp_path) -> None:
    photos = tmp_path / "photos"
    red, blue = solid(photos / "red.jpg", RED), solid(photos / "blue.jpg", BLUE)
    encoder = FakeEncoder()
    with store.writing():
        diff = plan({}, [str(photos)])
        writer = Writer(store, diff)
        items = [load(e, encoder, writer.known_hashes) for e in diff.candidates]
        pixels = np.stack([it.pixels for it in items if isinstance(it, Pixels)])
        writer.commit(items, encoder.encode_pixels(pixels))
        assert (writer.report.added, writer.report.failed) == (2, 0)
        ids = {r.path: r.id for r in store.catalog.records()}
        moved = photos / "crimson.jpg"
        os.rename(red, moved)
        blue.write_bytes(b"no longer an image")
        diff = plan(store.catalog.file_states(), [str(photos)])
        writer = Writer(store, diff)
        items = [load(e, encoder, writer.known_hashes) for e in diff.candidates]
        writer.commit(items, None)
        writer.remove_missing()
    report = writer.report
    assert (report.moved, report.failed, report.removed, report.added) == (1, 1, 0, 0)
    rows = {r.path: r for r in store.catalog.records()}
    assert rows[str(moved)].id == ids[str(red)]  # the row (and vector) followed the file
    assert rows[str(blue)].status == FAILED and set(store.vectors().ids()) == {ids[str(red)]}


@pytest.mark.parametrize("total", [0, 1, 7, 16, 17, 100, 236, 1000])
def test_lane_batches_cover_each_photo_once_and_end_in_small_batches(total: int) -> None:
    spans = lane_batches(total, 8, 2)
    assert [i for start, end in spans for i in range(start, end)] == list(range(total))
    assert all(end - start <= 8 for start, end in spans)
    # The lanes' last photos come in quarter batches, so no lane works on alone for long.
    assert all(end - start <= 2 for start, end in spans[-min(len(spans), 8) :])


class LazyTowers(FakeEncoder):
    """A fake with towers opened on first use (as ONNX Runtime's sessions are), which
    notes who opened them; with ``broken`` the image tower cannot be opened."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__(lanes=2)
        self.broken = broken
        self.opened: dict[str, str] = {}  # tower -> the thread that opened it

    def _open(self, tower: str) -> None:
        with self._lock:
            if tower not in self.opened:
                if self.broken and tower == "image":
                    raise RuntimeError("the image tower's file is damaged")
                self.opened[tower] = threading.current_thread().name

    def warm_image(self) -> None:
        self._open("image")

    def warm_text(self) -> None:
        self._open("text")

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self._open("image")
        return super().encode_pixels(pixels)


@pytest.mark.parametrize("photos, text_expected", [(12, True), (3, False)])
def test_ingest_opens_the_towers_while_the_first_photos_decode(
    store, tmp_path, photos: int, text_expected: bool
) -> None:
    folder = tmp_path / "photos"
    for n in range(photos):
        solid(folder / f"{n}.png", (20 * n, 0, 250 - 20 * n))
    encoder = LazyTowers()
    with store.writing():
        report = Ingest(store, lambda: encoder, workers=2, text_after=needs_text_tower).run(
            [str(folder)]
        )
    assert report.added == photos
    # Opened ahead of the lanes' first call; the text tower only for a collection
    # large enough to be calibrated right after the run.
    assert encoder.opened["image"] == "warm-towers"
    assert ("text" in encoder.opened) is text_expected


def test_a_tower_that_fails_to_open_early_fails_the_run_as_before(store, tmp_path) -> None:
    folder = tmp_path / "photos"
    for n in range(4):
        solid(folder / f"{n}.png", RED)
    with store.writing(), pytest.raises(RuntimeError, match="damaged"):
        Ingest(store, lambda: LazyTowers(broken=True), workers=2).run([str(folder)])
    assert len(store.vectors()) == 0  # nothing half-written
    assert store.catalog.counts() == {}


def test_the_log_read_as_a_build_source_gives_the_index_built_from_the_vectors(store) -> None:
    """``LoggedVectors`` (what a host without an index file builds from) holds the ok
    images' logged vectors: read by id in the order asked, streamed whole, and built
    into the same IVF index as the same vectors taken from an exact one."""
    from searchengine.index_choice import build_index
    from searchengine.logged_vectors import LoggedVectors
    from searchengine.vectors import FaissIndex

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with store.writing():
        with store.batch() as batch:
            ids = [
                batch.put(None, {"path": f"/{no}", "size": 1, "mtime_ns": 1, "status": OK}, v)
                for no, v in enumerate(vectors)
            ]
        with store.batch() as batch:  # a failed image's vector is not among them
            batch.put(ids[7], {"path": "/7", "size": 1, "mtime_ns": 1, "status": FAILED})
    source = LoggedVectors(store.catalog, 4, store.catalog.ok_id_array())
    kept = np.asarray([i for i in ids if i != ids[7]], dtype=np.int64)
    assert np.array_equal(source.ids(), kept)
    asked = kept[[5, 0, 398, 42]]  # the vectors of images 5, 0, 399 and 43
    assert np.array_equal(source.reconstruct_batch(asked), vectors[[5, 0, 399, 43]])
    streamed = np.concatenate([part for part, _ in source.chunks()])
    assert sorted(streamed.tolist()) == kept.tolist()
    assert len(np.concatenate([p for p, _ in source.chunks(kept[:10])])) == 10
    exact = FaissIndex(4)
    exact.add(kept, vectors[np.arange(400) != 7])
    from_log, _ = build_index(source, "IVF4,SQ8")
    from_exact, _ = build_index(exact, "IVF4,SQ8")
    assert sorted(from_log.ids().tolist()) == kept.tolist()
    assert np.allclose(
        from_log.reconstruct_batch(kept), from_exact.reconstruct_batch(kept), atol=0.05
    )
