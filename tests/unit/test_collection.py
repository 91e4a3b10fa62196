"""The ingest pipeline and collection API with the colour-space fake encoder."""

import os
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
from imagegen import solid

from searchengine import Collection, Config
from searchengine.catalog import OK, delete_images
from searchengine.config import CATALOG_FILE
from searchengine.errors import CollectionNotFoundError, ModelMismatchError, QueryError
from searchengine.models.fake import FakeEncoder
from searchengine.ranking import Query, TextTerm
from searchengine.vectors import FaissIndex
from searchengine.warmup import stored_model

RED, GREEN, BLUE, YELLOW = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    solid(folder / "red.jpg", RED)
    solid(folder / "green.png", GREEN, fmt="PNG")
    solid(folder / "trip" / "blue.webp", BLUE)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    return folder


@pytest.fixture(params=[1, 2], ids=["batches", "lanes"])
def encoder(request):
    """Both ingest structures: decode threads feeding one model call at a time, and
    lanes that decode and encode side by side (ONNX on a multi-core CPU)."""
    return FakeEncoder(lanes=request.param)


@pytest.fixture
def coll(tmp_path, encoder, database_url):
    config = Config(home=tmp_path / "idx", workers=2, batch_size=2, database_url=database_url)
    with Collection.open("photos", config, create=True, encoder=encoder) as c:
        yield c


def paths(results):
    return [os.path.basename(r.path) for r in results]


def test_index_then_search(coll, photos):
    report = coll.index([photos])
    assert (report.added, report.failed) == (3, 1)
    assert paths(coll.search("red", k=1)) == ["red.jpg"]
    assert paths(coll.search("blue", k=1)) == ["blue.webp"]
    hit = coll.search("green", k=1)[0]
    assert hit.width == 64 and hit.height == 48 and 0.99 < hit.score <= 1.0001


def test_unchanged_rerun_embeds_nothing(coll, photos, encoder):
    coll.index([photos])
    encoded = encoder.images_encoded
    report = coll.index([photos])
    assert encoder.images_encoded == encoded
    assert (report.added, report.updated, report.removed, report.failed) == (0, 0, 0, 0)
    assert report.unchanged == 4  # three images and the broken file, not retried


def test_unchanged_rerun_leaves_the_index_file_alone(coll, photos):
    coll.index([photos])
    saved = coll.index_path.stat()
    before = coll.catalog.get_meta("index_batch")
    time.sleep(0.01)
    coll.index([photos])
    after = coll.index_path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (saved.st_mtime_ns, saved.st_ino)
    assert coll.catalog.get_meta("index_batch") == before
    assert paths(coll.search("green", k=1)) == ["green.png"]


def test_unchanged_rerun_does_not_load_the_index(
    tmp_path, photos, encoder, monkeypatch, database_url
):
    config = Config(home=tmp_path / "idx", workers=2, batch_size=2, database_url=database_url)
    with Collection.open("photos", config, create=True, encoder=encoder) as first:
        first.index([photos])
    loads = []
    real_load = FaissIndex.load
    monkeypatch.setattr(
        FaissIndex, "load", lambda path, **kw: loads.append(path) or real_load(path, **kw)
    )
    with Collection.open("photos", config, encoder=encoder) as again:
        assert again.index([photos]).unchanged == 4
        assert loads == []  # 100k vectors of 512-d would be 200 MB read for nothing
        solid(photos / "yellow.jpg", YELLOW)
        assert again.index([photos]).added == 1
        assert paths(again.search("yellow", k=1)) == ["yellow.jpg"]


def test_rows_deleted_behind_the_index_are_still_reconciled(
    tmp_path, photos, encoder, database_url
):
    """A run killed after committing deletions but before saving the index leaves
    vectors without rows; the next run removes them even though no batch is pending."""
    config = Config(home=tmp_path / "idx", workers=2, batch_size=2, database_url=database_url)
    with Collection.open("photos", config, create=True, encoder=encoder) as coll:
        coll.index([photos])
        red = coll.catalog.by_path(str(photos / "red.jpg"))
        with coll.catalog.transaction() as conn:
            delete_images(conn, [red.id])
    with Collection.open("photos", config, encoder=encoder) as coll:
        assert coll.reconcile() == 1
        assert red.id not in set(coll.vectors().ids().tolist())
        assert coll.catalog.ok_count() == len(coll.vectors()) == 2


def test_incremental_add_modify_rename_delete(coll, photos, encoder):
    coll.index([photos])
    ids_before = {r.path: r.id for r in coll.catalog.records()}
    solid(photos / "yellow.jpg", YELLOW)  # added
    solid(photos / "red.jpg", GREEN, size=(80, 60))  # modified: now green
    os.rename(photos / "trip" / "blue.webp", photos / "blue-renamed.webp")  # moved
    os.remove(photos / "green.png")  # deleted
    encoded = encoder.images_encoded
    report = coll.index([photos])
    assert (report.added, report.updated, report.moved, report.removed) == (1, 1, 1, 1)
    assert encoder.images_encoded - encoded == 2  # the move was not re-embedded
    assert paths(coll.search("blue", k=1)) == ["blue-renamed.webp"]
    assert paths(coll.search("yellow", k=1)) == ["yellow.jpg"]
    ids_after = {r.path: r.id for r in coll.catalog.records()}
    # ids never renumber: the modified file keeps its id, the moved one takes its old id
    assert ids_after[str(photos / "red.jpg")] == ids_before[str(photos / "red.jpg")]
    moved = ids_before[str(photos / "trip" / "blue.webp")]
    assert ids_after[str(photos / "blue-renamed.webp")] == moved
    # catalog and index agree exactly
    assert set(coll.vectors().ids()) == coll.catalog.ok_ids()
    assert len(coll.vectors()) == 3
    green = coll.search("green", k=3)
    assert paths(green)[0] == "red.jpg"  # its new content is what is searched


def test_copy_reuses_the_vector_and_is_one_result(coll, photos, encoder):
    coll.index([photos])
    shutil.copy(photos / "red.jpg", photos / "red-copy.jpg")
    shutil.copy(photos / "red.jpg", photos / "trip" / "red-backup.jpg")
    encoded = encoder.images_encoded
    report = coll.index([photos])
    assert report.added == 2 and encoder.images_encoded == encoded
    assert coll.status().images == 5  # each path is indexed
    # One photo, one result: its other paths are its copies, not results of their own
    # (before, a backup copy filled the results with the same picture).
    found = coll.search("red", k=3)
    assert len(found) == 3 and len(set(paths(found))) == 3
    assert found[0].path == str(photos / "red.jpg")
    assert sorted(found[0].copies) == [
        str(photos / "red-copy.jpg"),
        str(photos / "trip" / "red-backup.jpg"),
    ]
    assert all(r.copies == () for r in found[1:])
    red = (TextTerm("red"),)
    pages = [r.id for r in coll.rank(Query(red, k=1)).results]  # pages join up
    pages += [r.id for r in coll.rank(Query(red, k=1, offset=1)).results]
    assert pages == [r.id for r in found[:2]]
    # The example image's copies are left out with it: they are the same picture.
    like = coll.similar(photos / "red-copy.jpg", k=5)
    assert not {str(photos / "red.jpg"), str(photos / "red-copy.jpg")} & {r.path for r in like}
    assert len(like) == 2 and all(r.copies == () for r in like)


def test_failures_are_recorded_with_reasons(coll, photos):
    coll.index([photos])
    [failure] = coll.failures()
    assert failure.path.endswith("broken.jpg")
    assert failure.error
    assert coll.status().failed == 1


def test_a_fixed_file_is_indexed_on_the_next_run(coll, photos):
    coll.index([photos])
    solid(photos / "broken.jpg", YELLOW)
    report = coll.index([photos])
    assert report.updated == 1 and coll.failures() == []
    assert paths(coll.search("yellow", k=1)) == ["broken.jpg"]


def test_no_paths_rescans_known_roots(coll, photos):
    coll.index([photos])
    solid(photos / "yellow.jpg", YELLOW)
    assert coll.index().added == 1


def test_similar_excludes_the_example_and_accepts_unindexed_files(coll, photos, tmp_path):
    coll.index([photos])
    solid(photos / "red2.jpg", (240, 10, 10))
    coll.index()
    assert paths(coll.similar(photos / "red.jpg", k=1)) == ["red2.jpg"]
    outside = solid(tmp_path / "elsewhere" / "g.png", (10, 240, 10), fmt="PNG")
    assert paths(coll.similar(outside, k=1)) == ["green.png"]
    with pytest.raises(QueryError, match="example image"):
        coll.similar(photos / "broken.jpg")


def test_k_larger_than_collection(coll, photos):
    coll.index([photos])
    assert len(coll.search("red", k=50)) == 3


@pytest.mark.parametrize("query", ["", "   ", "\x00\x01", "\n\t"])
def test_empty_queries_are_refused(coll, photos, query):
    coll.index([photos])
    with pytest.raises(QueryError, match="empty"):
        coll.search(query)


def test_reconcile_after_an_interrupted_run(coll, photos, encoder, monkeypatch):
    """Batches committed after the index was last saved are replayed, not re-embedded."""
    from searchengine.vectors import FaissIndex

    coll.index([photos])
    solid(photos / "yellow.jpg", YELLOW)

    def killed(self, path):
        raise SystemExit("killed while saving the index")

    # The batch with yellow.jpg is committed to the catalog, then the process dies
    # while writing the index file: the file on disk still lacks yellow.jpg.
    with monkeypatch.context() as patch:
        patch.setattr(FaissIndex, "save", killed)
        with pytest.raises(SystemExit):
            coll.index()
    with Collection.open("photos", coll.config, encoder=encoder) as again:  # a new process
        # A reader of a shared catalog replays the committed batch in memory at once;
        # one of a SQLite catalog reads the saved file until a writer reconciles.
        assert len(again.vectors()) == (4 if again.catalog.shared else 3)
        encoded = encoder.images_encoded
        assert again.reconcile() == 1
        assert set(again.vectors().ids()) == again.catalog.ok_ids()
        report = again.index()
        assert (report.added, report.updated) == (0, 0)
        assert encoder.images_encoded == encoded
        assert paths(again.search("yellow", k=1)) == ["yellow.jpg"]


def test_orphan_vectors_are_removed_on_reconcile(coll, photos):
    coll.index([photos])
    coll.vectors().add(np.asarray([999]), np.ones((1, 4), dtype=np.float32) / 2)
    assert coll.reconcile() == 1
    assert 999 not in set(coll.vectors().ids())


def test_missing_collection_and_model_mismatch(tmp_path, encoder, database_url):
    config = Config(home=tmp_path / "idx", database_url=database_url)
    with pytest.raises(CollectionNotFoundError, match="searchengine index PATH"):
        Collection.open("nope", config)
    Collection.open("c", config, create=True, model="toy").close()
    with pytest.raises(ModelMismatchError, match="built with toy"):
        Collection.open("c", config, model="ViT-B-32:openai")
    # An encoder handed in (a warmed-up one, say) is held to the same rule.
    with pytest.raises(ModelMismatchError, match="the encoder given is fake"):
        Collection.open("c", config, encoder=encoder)


def test_stored_model_is_read_without_the_sql_layer(tmp_path):
    config = Config(home=tmp_path / "idx")
    Collection.open("c", config, create=True, model="toy").close()
    assert stored_model(tmp_path / "idx" / "c" / CATALOG_FILE) == ("toy", "fp32")
    assert stored_model(tmp_path / "idx" / "missing" / CATALOG_FILE) is None
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    assert stored_model(garbage) is None


def test_status(coll, photos):
    coll.index([photos])
    info = coll.status()
    assert (info.images, info.failed, info.vectors, info.dim) == (3, 1, 3, 4)
    assert info.index_type == "Flat" and info.size_bytes > 0
    assert info.roots == [str(photos)]


def test_a_query_image_is_encoded_once_for_both_scores(coll, photos, encoder):
    coll.index([photos])
    before = encoder.images_encoded, encoder.texts_encoded
    results = coll.search("red", k=3, plus=[str(photos / "trip" / "blue.webp")])
    # One example image and the text in both forms (plain, and CLIPScore's prefix).
    assert (encoder.images_encoded - before[0], encoder.texts_encoded - before[1]) == (1, 2)
    assert all(r.clip_score is not None for r in results)
    assert results == coll.search("red", k=3, plus=[str(photos / "trip" / "blue.webp")])


@pytest.mark.slow
def test_a_new_memory_budget_rebuilds_an_unchanged_collection(tmp_path, encoder):
    """An unchanged re-run skips loading the index, unless a memory budget is given:
    then the index is checked against it (and rebuilt smaller) all the same."""
    photos = tmp_path / "many"
    for i in range(4200):  # past the size where an approximate index may be chosen
        colour = (i % 251, (i * 7) % 253, (i * 13) % 255)
        solid(photos / str(i // 300) / f"{i}.png", colour, size=(8, 8), fmt="PNG")
    home = tmp_path / "idx"
    with Collection.open("many", Config(home=home, workers=2), create=True, encoder=encoder) as c:
        c.index([photos])
        assert c.status().index_type == "Flat"
    budget = Config(home=home, workers=2, index_memory_mb=0.12)  # ~30 bytes a vector
    with Collection.open("many", budget, encoder=encoder) as c:
        assert c.index([photos]).unchanged == 4200
        assert c.status().index_type.endswith(",SQ8")
        assert c.status().vectors == 4200


def test_lanes_give_each_file_the_vector_batches_give_it(tmp_path, database_url):
    """Lanes encode on their own threads and commit out of step with decoding; every
    file must still end up with its own vector, as one model call at a time gives."""
    folder = tmp_path / "photos"
    for i in range(30):
        solid(folder / f"{i:02d}.jpg", (8 * i, 250 - 8 * i, 40 + 5 * i))
    (folder / "07-broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    solid(folder / "copy-of-03.jpg", (24, 226, 55))  # same content as 03.jpg
    vectors = {}
    for lanes in (1, 2):
        encoder = FakeEncoder(lanes=lanes)
        config = Config(
            home=tmp_path / f"idx{lanes}", workers=2, batch_size=4, database_url=database_url
        )
        if database_url:  # two collections in one database, each its own
            config = replace(config, home=tmp_path / "idx")
        with Collection.open(f"photos{lanes}", config, create=True, encoder=encoder) as coll:
            report = coll.index([folder])
            assert (report.added, report.failed) == (31, 1)
            index = coll.vectors()
            vectors[lanes] = {
                os.path.basename(r.path): index.reconstruct(r.id) for r in coll.catalog.records(OK)
            }
        on_lanes = {name.startswith("lane") for name in encoder.encoding_threads}
        assert on_lanes == {lanes > 1}
    assert vectors[1].keys() == vectors[2].keys()
    for name, vector in vectors[1].items():
        np.testing.assert_allclose(vectors[2][name], vector, atol=1e-6, err_msg=name)
    distinct = {tuple(np.round(v, 5)) for v in vectors[2].values()}
    assert len(distinct) == 30  # all but the copy
