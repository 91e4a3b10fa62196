"""Ingest stage 1, plan: what changed on disk since the catalog last saw it.

Stat only, no file is opened: an unchanged re-run of 100k files ends here. The plan
is a plain value, so a driver can make it once and hand its candidates to workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from searchengine.ingest.scan import FileEntry, scan


@dataclass
class IngestPlan:
    """The diff between disk and catalog for the scanned roots."""

    candidates: list[FileEntry]  # new or changed on disk
    known: dict[str, tuple[int, int, int]]  # (id, size, mtime_ns) of the rows under the roots
    missing: dict[str, int]  # catalog ids of the rows whose file is gone, by path
    unchanged: int


def plan(file_states: Mapping[str, tuple[int, int, int]], roots: Sequence[str]) -> IngestPlan:
    """Scan ``roots`` and compare with the catalog's ``path -> (id, size, mtime_ns)``."""
    prefixes = tuple(r.rstrip(os.sep) + os.sep for r in roots)
    root_set = set(roots)
    states = {
        path: state
        for path, state in file_states.items()
        if path.startswith(prefixes) or path in root_set
    }
    candidates: list[FileEntry] = []
    unseen = dict(states)  # what is left when the walk ends is gone from disk
    nested = len(roots) > 1  # then a file may show up twice
    seen: set[str] = set()
    unchanged = 0
    for entry in scan(roots):
        state = unseen.pop(entry.path, None)
        if state is not None and state[1] == entry.size and state[2] == entry.mtime_ns:
            unchanged += 1
        elif state is not None or not nested or entry.path not in seen:
            candidates.append(entry)
        if nested:
            seen.add(entry.path)
    missing = {path: state[0] for path, state in unseen.items()}
    return IngestPlan(candidates, states, missing, unchanged)
