"""Broken and hostile files: each gets a clear reason, the run continues, the rest is found."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from hostile import OK, make_hostile_corpus
from unprivileged import without_file_override

# The indexing runs in a child process that, when the tests run as root, gives up the
# capabilities that let root read any file (util-linux setpriv): only then can an
# unreadable file be met for real.
CHILD = r"""
import json, sys
from pathlib import Path
from searchengine import Collection, Config
from searchengine.models.fake import FakeEncoder
photos, home = sys.argv[1], sys.argv[2]
with Collection.open("h", Config(home=Path(home), batch_size=4), create=True,
                     encoder=FakeEncoder()) as coll:
    first = coll.index([photos])
    second = coll.index([photos])
    out = {
        "first": {k: v for k, v in first.__dict__.items() if k != "failures"},
        "second": {k: v for k, v in second.__dict__.items() if k != "failures"},
        "failed": {r.path: r.error for r in coll.failures()},
        "ok": [r.path for r in coll.catalog.records("ok")],
        "found": [r.path for r in coll.search("orange", k=1000)],
    }
print(json.dumps(out, ensure_ascii=True))
"""


def run_child(photos: Path, home: Path) -> dict:
    command = without_file_override([sys.executable, "-c", CHILD, str(photos), str(home)])
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_hostile_corpus(tmp_path):
    photos, home = tmp_path / "photos", tmp_path / "home"
    expected = make_hostile_corpus(photos)
    result = run_child(photos, home)
    want_ok = {p for p, e in expected.items() if e.verdict == OK}
    want_failed = {p: e.verdict for p, e in expected.items() if e.verdict != OK and not e.unread}
    want_unread = {p: e.verdict for p, e in expected.items() if e.unread}
    assert set(result["ok"]) == want_ok
    assert set(result["found"]) == want_ok  # every good image is searchable
    assert set(result["failed"]) == set(want_failed)
    for path, pattern in want_failed.items():
        assert re.search(pattern, result["failed"][path]), (path, result["failed"][path])
    assert result["first"]["failed"] == len(want_failed)
    unread = dict(result["first"]["unread"])
    assert set(unread) == set(want_unread)
    for path, pattern in want_unread.items():
        assert re.search(pattern, unread[path]), (path, unread[path])
    # Nothing is retried or lost on a second run over the same files, but for what could
    # not be read, which is tried again (a permission put right brings it in).
    second = result["second"]
    assert (second["added"], second["updated"], second["removed"], second["failed"]) == (0,) * 4
    assert second["unchanged"] == len(expected) - len(want_unread)
    assert dict(second["unread"]) == unread
