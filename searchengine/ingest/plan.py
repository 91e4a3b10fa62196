"""Ingest stage 1, plan: what changed on disk since the catalog last saw it.

Stat only, no file is opened: an unchanged re-run of 100k files ends here. The plan
is a plain value, so a driver can make it once and hand its candidates to workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from searchengine.fsutil import folder_prefix, under
from searchengine.ingest.answering import FolderReader, NotAnswering
from searchengine.ingest.exclude import Exclusions
from searchengine.ingest.scan import FileEntry, scan


@dataclass
class IngestPlan:
    """The diff between disk and catalog for the scanned roots."""

    candidates: list[FileEntry]  # new or changed on disk
    known: dict[str, tuple[int, int, int]]  # (id, size, mtime_ns) of the rows under the roots
    missing: dict[str, int]  # catalog ids of the rows whose file is gone, by path
    unchanged: int
    # Roots found absent or without a single image, whose rows are kept: root -> (whether
    # it exists, rows kept). See ``plan``.
    away: dict[str, tuple[bool, int]] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # ids of those rows, by path
    # Rows whose file is there but now left out by the collection's ``--exclude``
    # patterns: they leave the collection as ``missing`` ones do, counted apart.
    excluded: dict[str, int] = field(default_factory=dict)
    # Photos met that this installation cannot read (``scan``), but for those named
    # directly: those get a verdict.
    unreadable: list[str] = field(default_factory=list)
    # Folders and files that could not be read or did not answer (``scan``), whose rows
    # are kept as they were (in ``kept``): path -> (why, rows kept).
    unlisted: dict[str, tuple[str, int]] = field(default_factory=dict)


def plan(
    file_states: Mapping[str, tuple[int, int, int]],
    roots: Sequence[str],
    elsewhere: Sequence[str] = (),
    exclusions: Exclusions | None = None,
) -> IngestPlan:
    """Scan ``roots`` and compare with the catalog's ``path -> (id, size, mtime_ns)``.

    A root that is gone, or holds not one image file, while the catalog has photos
    under it, is taken to be away (a drive unplugged, a share not mounted, a mount
    point left empty) rather than emptied: its rows are kept, not counted missing, and
    the plan names it in ``away``. Deleting every photo of a folder the user indexed is
    rare and has its own command (``remove --folder``); re-embedding a whole drive
    because it was not plugged in is hours. A root inside another root that holds
    images is not away: that walk sees the folder's real state. A kept row is still
    a moved file's source (``kept``): a drive mounted again at another path moves.
    So are the rows under the collection's other folders (``elsewhere``, not walked
    in this run) that are gone: ``index /media/usb1`` finds what was ``/media/usb``.
    What ``exclusions`` leave out is not walked; a folder where they left something
    out is not away, and its rows that they cover are ``excluded``. A folder or file
    the walk could not read, or that did not answer (a network share whose server is
    away), keeps its rows too (``unlisted``): nothing says its photos are gone.
    """
    reader = FolderReader()
    try:
        return _plan(file_states, roots, elsewhere, exclusions, reader)
    finally:
        reader.close()


def _plan(
    file_states: Mapping[str, tuple[int, int, int]],
    roots: Sequence[str],
    elsewhere: Sequence[str],
    exclusions: Exclusions | None,
    reader: FolderReader,
) -> IngestPlan:
    prefixes = tuple(folder_prefix(r) for r in roots)
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
    found = {}
    unreadable: list[str] = []
    unlisted: dict[str, str] = {}
    for root in roots:
        count = 0
        left_out: list[str] = []
        walk = scan(
            [root],
            exclusions=exclusions,
            left_out=left_out,
            unreadable=unreadable,
            unlisted=unlisted,
            reader=reader,
        )
        for entry in walk:
            count += 1
            state = unseen.pop(entry.path, None)
            if state is not None and state[1] == entry.size and state[2] == entry.mtime_ns:
                unchanged += 1
            elif state is not None or not nested or entry.path not in seen:
                candidates.append(entry)
            if nested:
                seen.add(entry.path)
        found[root] = count + len(left_out)
    unreadable = [path for path in unreadable if path not in root_set]
    away = _away(roots, found, unseen, unlisted, reader)
    missing: dict[str, int] = {}
    kept: dict[str, int] = {}
    excluded: dict[str, int] = {}
    held = {path: 0 for path in unlisted}
    away_prefixes = tuple(folder_prefix(r) for r in away)
    for path, state in unseen.items():
        if exclusions and exclusions.covers(path, roots):
            excluded[path] = state[0]
            continue
        if unlisted and (holder := _holder(path, unlisted)) is not None:
            held[holder] += 1
            kept[path] = state[0]
            continue
        is_away = bool(away) and (path in away or path.startswith(away_prefixes))
        (kept if is_away else missing)[path] = state[0]
    gone = [r for r in elsewhere if r not in root_set and not _exists(reader, r, True)]
    if gone:
        inside = tuple(folder_prefix(r) for r in gone)
        for path, state in file_states.items():
            if path not in states and (path in gone or path.startswith(inside)):
                kept[path] = state[0]
    unlisted_kept = {path: (why, held[path]) for path, why in unlisted.items()}
    return IngestPlan(
        candidates, states, missing, unchanged, away, kept, excluded, unreadable, unlisted_kept
    )


def _holder(path: str, unlisted: Mapping[str, str]) -> str | None:
    """The path of ``unlisted`` that ``path`` is, or is under; None if none."""
    if path in unlisted:
        return path
    folder = os.path.dirname(path)
    while True:  # up the folders: an unlisted one is usually a few levels up, if any
        if folder in unlisted:
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _exists(reader: FolderReader, path: str, otherwise: bool) -> bool:
    """``os.path.exists(path)``, or ``otherwise`` if it does not answer."""
    try:
        return reader.call(lambda _progress, p: os.path.exists(p), path)
    except NotAnswering:
        return otherwise


def _away(
    roots: Sequence[str],
    found: Mapping[str, int],
    unseen: Mapping[str, tuple[int, int, int]],
    unlisted: Mapping[str, str],
    reader: FolderReader,
) -> dict[str, tuple[bool, int]]:
    walked = [r for r in roots if found[r]]
    away = {}
    for root in roots:
        if found[root] or root in unlisted:
            continue
        if any(root.startswith(folder_prefix(w)) for w in walked):
            continue
        kept = sum(1 for path in unseen if under(path, root))
        if kept:
            away[root] = (_exists(reader, root, True), kept)
    # Said once, of the outermost folder that is away.
    return {r: v for r, v in away.items() if not any(r.startswith(folder_prefix(o)) for o in away)}
