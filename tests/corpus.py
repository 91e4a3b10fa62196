"""The hostile corpus run end to end: build it, ask the oracle, index it with the CLI.

``run_corpus(workdir)`` builds the corpus (third-party test images from PyPI sdists,
``thirdparty.py``, plus the generated classes, ``hostile.py``), asks the oracle
(``oracle.py``) about every plain file, runs ``searchengine index`` twice on it in a
subprocess and reads back what was recorded. ``tests/e2e/test_corpus.py`` asserts on
the result; ``scripts/corpus_report.py`` prints its verdict table for
``docs/reliability.md``.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hostile import OK, Expect, make_hostile_corpus
from oracle import verdicts
from thirdparty import third_party_corpus
from unprivileged import without_file_override

from searchengine import Collection, Config
from searchengine.ingest.decode import MAX_PIXELS

COLLECTION = "corpus"
TABLE = Path(__file__).resolve().parent / "corpus_verdicts.json"  # per-file outcomes
# Every reason starts with its cause; the rest of the sentence gives the detail.
CAUSES = {
    "truncated": r"truncated",
    "corrupt": r"corrupt",
    "unsupported": r"unsupported",
    "too large": r"too large",
    "not an image": r"not an image|empty file",
    "took too long": r"took too long",
    "crashed": r"crashed the image decoder",
    "unreadable": r"cannot read|could not be loaded",
    "special file": r"not a regular file|broken symbolic link|symbolic link loop",
}
CAUSE_RE = re.compile(r"^(?:" + "|".join(CAUSES.values()) + r")\b")


def cause_of(reason: str) -> str:
    """The cause a reason starts with (a key of ``CAUSES``)."""
    for name, pattern in CAUSES.items():
        if re.match(pattern, reason):
            return name
    return "?"


def one_sentence(reason: str) -> bool:
    """One line, one sentence: no line break, no full stop followed by another sentence."""
    return "\n" not in reason and "\r" not in reason and not re.search(r"[.!?]\s+\S", reason)


@dataclass
class CorpusRun:
    root: Path
    origin: dict[str, str]  # third-party path -> "package version: file"
    generated: dict[str, Expect]
    oracle: dict[str, str]  # path -> "ok" or why Pillow could not decode it
    exit_codes: list[int]
    stderr: str
    reports: list[dict]
    indexed: dict[str, tuple[int | None, int | None]]  # path -> (width, height)
    failed: dict[str, str]  # path -> reason
    warned: dict[str, str] = field(default_factory=dict)  # indexed path -> warnings
    # path -> why: files that could not be read (a permission), left for the next run
    unread: dict[str, str] = field(default_factory=dict)

    @property
    def scanned(self) -> int:
        return len(self.origin) + len(self.generated)

    def expected_ok(self, path: str) -> bool:
        if path in self.generated:
            return self.generated[path].verdict == OK
        return self.oracle[path] == OK


def run_corpus(workdir: Path, model: str = "toy") -> CorpusRun:
    """Build the corpus under ``workdir``, ask the oracle, index it twice, read back."""
    photos, home = workdir / "photos", workdir / "home"
    origin = third_party_corpus(photos / "third-party")
    generated = make_hostile_corpus(photos / "generated")
    plain = [*origin, *(p for p, e in generated.items() if e.oracle)]
    oracle = verdicts(plain, MAX_PIXELS)
    exit_codes, reports, stderr = [], [], ""
    for _ in range(2):
        done = _index(photos, home, model)
        exit_codes.append(done.returncode)
        stderr += done.stderr
        if done.returncode == 0:
            reports.append(json.loads(done.stdout))
    indexed, failed, warned = {}, {}, {}
    with Collection.open(COLLECTION, Config(home=home)) as coll:
        for record in coll.catalog.records():
            if record.status == OK:
                indexed[record.path] = (record.width, record.height)
                if record.error:
                    warned[record.path] = record.error
            else:
                failed[record.path] = record.error or ""
    unread = dict(reports[0]["unread"]) if reports else {}
    return CorpusRun(
        photos, origin, generated, oracle, exit_codes, stderr, reports, indexed, failed, warned,
        unread,
    )  # fmt: skip


def _index(photos: Path, home: Path, model: str) -> subprocess.CompletedProcess[str]:
    """``searchengine index`` in a child process that cannot read unreadable files.

    As root, the child drops the capabilities that let root read any file (util-linux
    ``setpriv``): only then is an unreadable file met for real.
    """
    exe = str(Path(sys.executable).with_name("searchengine"))
    command = [exe, "index", str(photos), "--model", model, "--index-dir", str(home),
               "--collection", COLLECTION, "--json"]  # fmt: skip
    command = without_file_override(command)
    return subprocess.run(command, capture_output=True, text=True, timeout=1800)


def verdict_table(run: CorpusRun) -> str:
    """Markdown: files by source and outcome (indexed, or the cause of the failure)."""
    rows: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in [*run.origin, *run.generated]:
        if path in run.origin:
            source = run.origin[path].split(":", 1)[0]
        else:
            source = f"generated: {run.generated[path].group}"
        outcome = (
            "indexed"
            if path in run.indexed
            else cause_of(run.failed.get(path, run.unread.get(path, "?")))
        )
        rows[source][outcome] += 1
    columns = ["indexed", *CAUSES]
    used = [c for c in columns if any(r[c] for r in rows.values())]
    lines = [
        "| source | files | " + " | ".join(used) + " |",
        "|---|---:|" + "---:|" * len(used),
    ]
    total: collections.Counter[str] = collections.Counter()
    for source in sorted(rows, key=lambda s: (s.startswith("generated"), s)):
        counts = rows[source]
        total.update(counts)
        cells = [str(counts[c] or "") for c in used]
        lines.append(f"| {source} | {sum(counts.values())} | " + " | ".join(cells) + " |")
    cells = [f"**{total[c]}**" for c in used]
    lines.append(f"| **all** | **{sum(total.values())}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def outcomes(run: CorpusRun) -> dict[str, str]:
    """Path relative to the corpus -> ``indexed`` or the cause of the failure (or of
    its not being read)."""
    return {
        str(Path(path).relative_to(run.root)): (
            "indexed" if path in run.indexed else cause_of({**run.failed, **run.unread}[path])
        )
        for path in [*run.origin, *run.generated]
    }
