"""The same collection through the real CLI on both catalog backends: every command
gives the same answer, scores included, before and after changes on disk.

A toy world indexed with the shipped ``toy`` model (and ``toy-large`` reranking
vectors) into a SQLite collection and into one on a live PostgreSQL server; index,
search (filters, rerank, combined terms), similar, status, re-runs, renames and
deletions are compared result for result.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from click.testing import CliRunner

from searchengine.cli import main
from searchengine.toy import world as toyworld

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

QUERIES = [
    ["a red circle"],
    ["a blue square", "--rerank", "toy-large", "-k", "5"],
    ["a green triangle", "--minus", "red", "--orientation", "landscape"],
    ["a yellow star", "--path", "*/photos/*", "--min-score", "0.2", "-k", "20"],
]


def run(*args: str) -> dict | list:
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_same(sqlite: dict[str, object], postgresql: dict[str, object]) -> None:
    """The same answers: the same files in the same order, the same counts, and scores
    equal to float32 precision. (A search on SQLite may embed its query with the
    one-shot text tower, whose unpacked weights change the last bit of a cosine; the
    catalog has no part in it.)"""
    assert sqlite.keys() == postgresql.keys()
    for key, ours in sqlite.items():
        theirs = postgresql[key]
        if not isinstance(ours, list):
            assert ours == theirs, key
            continue
        assert [hit[0] for hit in ours] == [hit[0] for hit in theirs], key
        for a, b in zip(ours, theirs, strict=True):
            assert a[1:] == pytest.approx(b[1:], abs=1e-6), (key, a[0])


def answers(base: list[str], photos) -> dict[str, object]:
    found: dict[str, object] = {}
    for query in QUERIES:
        found[query[0]] = [
            (h["path"], h["score"], h["cosine"]) for h in run("search", *query, *base)
        ]
    example = sorted(photos.rglob("*.png"))[3]
    found["similar"] = [(h["path"], h["score"]) for h in run("similar", str(example), *base)]
    status = run("status", *base)
    found["status"] = {k: status[k] for k in ("images", "failed", "vectors", "dim", "model")}
    return found


def test_every_command_answers_the_same_on_sqlite_and_postgresql(tmp_path, pg_cluster):
    photos = tmp_path / "photos"
    toyworld.generate(photos, 120, 4344)
    url = pg_cluster.new_database()
    backends = {
        "sqlite": ["-c", "toy", "--index-dir", str(tmp_path / "sq")],
        "postgresql": ["-c", "toy", "--index-dir", str(tmp_path / "pg"), "--database-url", url],
    }
    found = {}
    for name, base in backends.items():
        summary = run("index", str(photos), "-m", "toy", "-m", "toy-large", *base)
        assert summary["added"] == 120 and summary["precomputed"] == {"toy-large": 120}
        found[name] = answers(base, photos)
    assert_same(found["sqlite"], found["postgresql"])
    assert run("status", *backends["postgresql"])["backend"] == "postgresql"

    # Changes on disk: a rename, a deletion, a copy; both re-runs do the same.
    files = sorted(photos.rglob("*.png"))
    os.rename(files[0], files[0].with_name("renamed.png"))
    os.remove(files[1])
    shutil.copy(files[2], photos / "copy.png")
    for name, base in backends.items():
        summary = run("index", *base)
        assert (summary["moved"], summary["removed"], summary["added"]) == (1, 1, 1), name
        found[name] = answers(base, photos)
    assert_same(found["sqlite"], found["postgresql"])
