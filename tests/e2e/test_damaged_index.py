"""A vector index file that is damaged or not the one saved, through the real CLI.

The index file is written atomically, but it can still be damaged from outside: cut
short by a partial copy or a sync tool, overwritten, or replaced by an older backup.
Before, a search then ended in a FAISS traceback, and ``index`` said "unchanged" and
left it so (an unchanged run never reads the index): the collection stayed broken
until it was removed. Now readers say what is wrong and what to run, ``status`` shows
it, and ``index`` notices a file that is not the one it saved, reads it in full, and
rebuilds it when it is damaged (the damaged file is kept aside).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from clirunner import cli, ok_json

from searchengine.toy import world as toyworld

pytestmark = pytest.mark.slow

QUERY = "a red circle"


def ranking(hits: list) -> list[tuple[str, float]]:
    return [(h["path"], round(h["score"], 5)) for h in hits]


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, list[str], list[tuple[str, float]]]:
    """A toy collection "c" of 24 photos; returns the index file, the collection
    options, and the ranking a query gets from it."""
    photos, home = tmp_path / "photos", tmp_path / "home"
    toyworld.generate(photos, 24, 4801)
    options = ["-c", "c", "--index-dir", str(home)]
    ok_json("index", str(photos), "-m", "toy", *options)
    return home / "c" / "vectors.faiss", options, ranking(ok_json("search", QUERY, *options))


def test_a_cut_short_index_is_named_and_rebuilt(built):
    index_file, options, expected = built
    size = index_file.stat().st_size
    with index_file.open("r+b") as handle:  # a partial copy
        handle.truncate(size // 2)

    command = f"`searchengine index -c c --index-dir {index_file.parent.parent}` rebuilds it"
    for args in (
        ["search", QUERY],
        ["search", QUERY, "--min-width", "1"],
        ["similar", expected[0][0]],
    ):
        result = cli(*args, *options)
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1 and f"{index_file} is damaged" in result.output
        assert command in result.output
    status = ok_json("status", *options)  # status still answers, and says what is wrong
    assert status["damaged"].startswith(f"the vector index {index_file} is damaged")
    assert (status["images"], status["vectors"]) == (24, 0)

    repaired = ok_json("index", *options)
    assert repaired["added"] == 24  # no other copy of the vectors: embedded again
    reason = "'ret == (size)' failed: read error in the file"
    assert repaired["notes"][0].startswith(f"the vector index {index_file} was damaged ({reason}")
    assert repaired["notes"][0].endswith(
        "): kept as vectors.faiss.damaged and built again; photos whose vectors were only "
        "in it are embedded again"
    )
    assert ranking(ok_json("search", QUERY, *options)) == expected
    assert (index_file.parent / "vectors.faiss.damaged").stat().st_size == size // 2
    assert ok_json("index", *options)["unchanged"] == 24  # and quiet from then on


def flip_vector_size(raw: bytearray, at: int) -> None:
    """Flip the top bit of the vector size in the FAISS index header at ``at``: FAISS
    writes a part's four-byte type, then its size as a 32-bit integer (``d``; 64 for the
    toy model, 192 once flipped), and checks it against nothing when it reads."""
    size = int.from_bytes(raw[at + 4 : at + 8], "little")
    raw[at + 4 : at + 8] = (size ^ 0x80).to_bytes(4, "little")


def test_a_header_whose_vector_size_was_flipped_is_named_and_rebuilt(built):
    """One flipped bit in the id map's header: FAISS reads the file without a word, and
    a search ended in ``ValueError: cannot reshape array of size 64 into shape (192)``
    and its traceback. Now it is damaged like a file cut short, and ``index`` mends it."""
    index_file, options, expected = built
    raw = bytearray(index_file.read_bytes())
    assert raw[:4] == b"IxM2"  # IndexIDMap2 around the Flat index
    flip_vector_size(raw, 0)
    index_file.write_bytes(bytes(raw))
    for args in (["search", QUERY], ["similar", expected[0][0]]):
        result = cli(*args, *options)
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert f"{index_file} is damaged and cannot be read (its parts disagree on the " in (
            result.output
        )
        assert "vector size: [64, 192])" in result.output and "Traceback" not in result.output
    repaired = ok_json("index", *options)
    assert repaired["added"] == 24 and "was damaged (its parts disagree" in repaired["notes"][0]
    assert ranking(ok_json("search", QUERY, *options)) == expected


def test_another_collections_index_file_is_named_and_rebuilt(built, tmp_path):
    """A ``vectors.faiss`` copied in from a collection of another model (96-d vectors,
    ``toy-large``'s) is whole to FAISS; a search ended in a traceback. Now it is named
    as not this collection's, and ``index`` sets it aside and builds the right one."""
    index_file, options, expected = built
    other = ["-c", "other", "--index-dir", str(tmp_path / "home")]
    ok_json("index", str(tmp_path / "photos"), "-m", "toy-large", *other)
    shutil.copy2(tmp_path / "home" / "other" / "vectors.faiss", index_file)
    result = cli("search", QUERY, *options)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "(it holds 96-d vectors, the collection 64-d ones)" in result.output
    repaired = ok_json("index", *options)
    assert repaired["added"] == 24 and "it holds 96-d vectors" in repaired["notes"][0]
    assert ranking(ok_json("search", QUERY, *options)) == expected


def test_an_index_overwritten_in_place_is_rebuilt_also_for_an_older_collection(built):
    index_file, options, expected = built
    catalog = index_file.parent / "catalog.sqlite"
    with sqlite3.connect(catalog) as db:  # an earlier release recorded no file
        db.execute("DELETE FROM meta WHERE key = 'index_file'")
    stat = index_file.stat()
    index_file.write_bytes(os.urandom(stat.st_size))  # same size, not an index
    os.utime(index_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cli("search", QUERY, *options).exit_code == 1
    repaired = ok_json("index", *options)
    assert repaired["added"] == 24 and "was damaged" in repaired["notes"][0]
    assert ranking(ok_json("search", QUERY, *options)) == expected


def test_an_older_index_restored_from_a_backup_is_brought_up_to_date(tmp_path, built):
    index_file, options, _ = built
    photos = tmp_path / "photos"
    backup = tmp_path / "vectors.faiss.bak"
    shutil.copy2(index_file, backup)
    toyworld.generate(photos / "more", 6, 4802)
    assert ok_json("index", *options)["added"] == 6
    shutil.copy2(backup, index_file)  # the backup holds 24 of the 30 vectors
    repaired = ok_json("index", *options)
    assert repaired["unchanged"] == 24 and repaired["added"] == 6
    status = ok_json("status", *options)
    assert status["images"] == status["vectors"] == 30
    assert len({h["path"] for h in ok_json("search", QUERY, "-k", "30", *options)}) == 30


@pytest.mark.postgres
def test_a_damaged_index_on_a_shared_catalog_is_rebuilt_from_the_catalog(tmp_path, pg_cluster):
    photos = tmp_path / "photos"
    toyworld.generate(photos, 24, 4803)
    url = pg_cluster.new_database()
    options = ["-c", "team", "--index-dir", str(tmp_path / "h1"), "--database-url", url]
    ok_json("index", str(photos), "-m", "toy", *options)
    expected = ranking(ok_json("search", QUERY, *options))
    index_file = tmp_path / "h1" / "team" / "vectors.faiss"
    with index_file.open("r+b") as handle:
        handle.truncate(100)
    assert "is damaged" in cli("search", QUERY, *options).output
    repaired = ok_json("index", *options)
    assert (repaired["added"], repaired["unchanged"]) == (0, 24)  # the catalog has them all
    assert "was damaged" in repaired["notes"][0]
    assert ranking(ok_json("search", QUERY, *options)) == expected


def test_a_damaged_catalog_is_named_listed_and_can_be_removed(built):
    index_file, options, _ = built
    catalog = index_file.parent / "catalog.sqlite"
    remove = f"`searchengine remove -c c --index-dir {index_file.parent.parent}`"
    for damage in (
        lambda: catalog.write_bytes(catalog.read_bytes()[:20000]),
        lambda: catalog.write_bytes(os.urandom(4096)),
    ):
        damage()
        for args in (["search", QUERY], ["status"], ["index"]):
            result = cli(*args, *options)
            assert result.exit_code == 1, result.output
            assert result.output.count("\n") == 1, result.output
            assert f"the catalog {catalog} is damaged" in result.output and remove in result.output
        listed = ok_json("collections", *options[2:])  # the list goes on: one unavailable
        assert listed[0]["unavailable"].startswith(f"the catalog {catalog} is damaged")
    assert cli("remove", "--yes", *options).exit_code == 0
    assert not index_file.parent.exists()
