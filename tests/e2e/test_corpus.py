"""Every file of a hostile corpus gets a verdict, and the right one.

About 1,900 files: the test images that Pillow, pillow-heif, imagesize, filetype
and pypng ship in their source distributions and exiv2 and libheif in Debian's
source packages (fuzzer crash files, truncated and corrupt files of every format, bombs,
odd modes, crafted metadata; fetched from PyPI and Debian's archive, pinned by version
and sha256, cached in ``.cache/corpus``), plus the generated
classes they lack (special files, odd names, EXIF rotation, wrong extensions, ...).

The expected verdict of each third-party file comes from an independent oracle:
Pillow on its own, in a child process, decoding the file fully under the indexer's
pixel limit. Generated files carry their own expectation. The committed table
``tests/corpus_verdicts.json`` also pins each file's cause of failure, for the Pillow
version it was made with (``python scripts/corpus_report.py --write-table``).
"""

from __future__ import annotations

import json
import re

import PIL
import pytest
from corpus import CAUSE_RE, TABLE, one_sentence, outcomes, run_corpus, verdict_table
from hostile import OK

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_corpus(tmp_path_factory.mktemp("corpus"))


def test_index_exits_cleanly_and_prints_nothing_but_its_hint(run):
    assert run.exit_codes == [0, 0], run.stderr[-3000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    # No library warning, log record or libtiff message reaches the terminal: only the
    # hint, and in each run the line naming the file it could not read.
    unread = [line for line in lines if not line.startswith("see why: searchengine status")]
    said = "nothing of it changed in the collection, the next index reads it again"
    assert unread == [f"{path}: {why}; {said}" for path, why in run.unread.items()] * 2, lines
    # What the decoders said of files they read is in the report, once: the second run
    # reads no file again.
    warned = [r["warned"] for r in run.reports]
    assert warned == [len(run.warned), 0] and sorted(run.warned) == sorted(
        path for path, _ in run.reports[0]["warnings"]
    )


def test_every_scanned_file_has_exactly_one_verdict(run):
    """Indexed, failed, or not read (for a reason of where it lies, not of the file:
    a permission), each file exactly one of them."""
    first = run.reports[0]
    assert len(run.indexed) + len(run.failed) + len(run.unread) == run.scanned
    assert set(run.indexed).isdisjoint(run.failed)
    assert not set(run.unread) & (set(run.indexed) | set(run.failed))
    assert first["added"] + first["failed"] + len(first["unread"]) == run.scanned
    everything = set(run.indexed) | set(run.failed) | set(run.unread)
    assert everything == {*run.origin, *run.generated}
    assert set(run.unread) == {p for p, e in run.generated.items() if e.unread}


def test_indexed_exactly_when_pillow_decodes_it_fully(run):
    wrong = {
        path: run.oracle.get(path) or run.generated[path].verdict
        for path in [*run.origin, *run.generated]
        if run.expected_ok(path) != (path in run.indexed)
    }
    assert wrong == {}, {p: (w, run.failed.get(p)) for p, w in wrong.items()}
    print(f"\n{len(run.indexed)} indexed, {len(run.failed)} failed of {run.scanned} scanned")
    print(verdict_table(run))


def test_generated_files_get_their_reason_and_upright_size(run):
    for path, expect in run.generated.items():
        if expect.verdict == OK:
            if expect.size is not None:
                assert run.indexed[path] == expect.size, path
        else:
            reason = (run.unread if expect.unread else run.failed)[path]
            assert re.search(expect.verdict, reason), (path, reason)


def test_every_reason_is_one_sentence_naming_a_cause(run):
    for path, reason in {**run.failed, **run.unread}.items():
        assert CAUSE_RE.match(reason), (path, reason)
        assert one_sentence(reason), (path, reason)
        assert not re.search(r": decoder error -?\d+$", reason), (path, reason)  # a bare number
        assert "cannot identify image file" not in reason
        assert "178,956,970" not in reason and "178956970" not in reason  # Pillow's limit


def test_a_rerun_embeds_and_retries_nothing_but_what_it_could_not_read(run):
    """A file that could not be read is tried again (and here cannot be read again)."""
    second = run.reports[1]
    assert (second["embedded"], second["failed"], second["removed"]) == (0, 0, 0)
    assert second["unchanged"] == run.scanned - len(run.unread)
    assert dict(second["unread"]) == run.unread


def test_causes_match_the_committed_table(run):
    table = json.loads(TABLE.read_text())
    now = outcomes(run)
    assert set(now) == set(table["files"])  # the corpus is what the table describes
    if table["pillow"] != PIL.__version__:
        # Another Pillow decodes some files differently; the oracle tests above hold
        # either way. Regenerate the table to pin this version's causes.
        pytest.skip(f"table made with Pillow {table['pillow']}, running {PIL.__version__}")
    changed = {p: (table["files"][p], o) for p, o in now.items() if table["files"][p] != o}
    assert changed == {}
