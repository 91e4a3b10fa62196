"""A collection's folders: one name for each, and taking one out of the collection.

A folder can be reached by more than one name (a symbolic link along the way, a
bind mount, ``/tmp`` and ``/private/tmp``). The catalog keys photos on their paths,
so two names of one folder would be two sets of rows: every photo in it found twice.
Folders to index are therefore written the way the collection already writes them
(``fsutil.spelled_as_known``); a collection made before that rule may hold one
folder under two names, and ``forget`` takes one of them out.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from searchengine.catalog import Catalog
from searchengine.config import collection_command
from searchengine.errors import CollectionError
from searchengine.fsutil import display_path, folder_prefix, spelled_as_known, under
from searchengine.store import Store


def spell_roots(roots: Sequence[str], known: Sequence[str]) -> tuple[list[str], list[str]]:
    """``roots`` (absolute) named as the collection names them, and a line per renamed one.

    Each root is compared with the ``known`` ones and with those named before it, so
    ``index photos link-to-photos`` walks one folder once.
    """
    spelled: list[str] = []
    notes = []
    for root in roots:
        name = spelled_as_known(root, [*known, *spelled])
        if name != root:
            notes.append(
                f"{display_path(root)} is {display_path(name)} by another name; indexed "
                "as that, so that no photo is listed twice"
            )
        spelled.append(name)
    return list(dict.fromkeys(spelled)), notes


def aliases(known: Sequence[str]) -> dict[str, str]:
    """``{folder: its other name}`` for each known folder that is another known one.

    Such a pair is only left by a collection made before folders were compared by
    identity (device and inode); every photo in it is listed twice until one name is
    forgotten.
    """
    found: dict[str, str] = {}
    for i, folder in enumerate(known):
        others = [k for k in [*known[:i], *known[i + 1 :]] if k not in found]
        name = spelled_as_known(folder, [k for k in others if not _inside(folder, k)])
        if name != folder:
            found[folder] = name
    return found


def twice_named(known: Sequence[str], collection: Path) -> list[str]:
    """A line for each of ``aliases(known)``, with the command that mends it
    (``collection``: the collection's folder)."""
    return [
        f"{display_path(folder)} is {display_path(name)} by another name, so its photos "
        f"are listed twice; take one name out: {forget_command(collection, folder)}"
        for folder, name in aliases(known).items()
    ]


def away_note(collection: Path, folder: str, exists: bool, kept: int, shared: bool) -> str:
    """The line for a folder of the collection found gone or empty (``plan.IngestPlan.away``);
    ``collection``: the collection's folder."""
    state = "holds no image" if exists else "is not there"
    where = (
        "; a collection shared between hosts needs its folders at the same paths on each"
        if shared
        else ""
    )
    return (
        f"{display_path(folder)} {state} (a drive or share not mounted?{where}): its {kept} "
        f"photos are kept. If they are gone for good: {forget_command(collection, folder)}"
    )


def unlisted_note(path: str, why: str, kept: int) -> str:
    """The line for a folder or file the walk could not read, or that did not answer
    (``plan.IngestPlan.unlisted``)."""
    photos = f"its {kept} photo{'s are' if kept != 1 else ' is'} kept as before"
    return (
        f"{display_path(path)} could not be read ({why}; a network share that is away?): "
        f"{photos if kept else 'nothing in it was indexed'}; the next index reads it again"
    )


def unread_notes(unread: Sequence[tuple[str, str]]) -> list[str]:
    """A line for each reason files could not be read now (``load.Unread``): the file,
    or how many under which folder and the first of them."""
    by_reason: dict[str, list[str]] = {}
    for path, why in unread:
        by_reason.setdefault(why, []).append(path)
    notes = []
    for why, paths in by_reason.items():
        if len(paths) == 1:
            what, them = display_path(paths[0]), "it"
        else:
            folder = display_path(os.path.commonpath(paths))
            what = f"{len(paths)} photos under {folder} (the first: {display_path(paths[0])})"
            them = "them"
        notes.append(
            f"{what}: {why}; nothing of {them} changed in the collection, "
            f"the next index reads {them} again"
        )
    return notes


def forget_command(collection: Path, folder: str) -> str:
    """The command that takes ``folder`` out of the collection in the folder
    ``collection``, ready to paste (with ``--index-dir`` unless it is the default)."""
    where = shlex.quote(display_path(folder))
    return f"{collection_command(collection, 'remove')} --folder {where}"


@dataclass
class ForgetReport:
    """What ``forget`` takes out of a collection (the files on disk are not touched)."""

    folders: list[str]  # the collection's folders that go
    images: int  # catalog rows (with their vectors and caches) that go
    ids: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {"folders": [display_path(f) for f in self.folders], "images": self.images}


def forgetting(catalog: Catalog, collection: str, folder: str) -> ForgetReport:
    """What ``forget(folder)`` would take out; nothing is written.

    ``folder`` (absolute, under any of its names) must be one of the collection's
    folders or hold some of them.

    Raises:
        CollectionError: ``folder`` is none of the collection's folders (the message
            lists them), or lies inside one (the next ``index`` would bring it back).
    """
    known = catalog.roots()
    name = spelled_as_known(folder, known)
    # Also a folder that is one of the collection's, inside another of them: its
    # photos would stay under the outer one, and the next index walk it again.
    holder = next((k for k in known if _inside(name, k)), None)
    if holder is not None:
        raise CollectionError(
            f"{display_path(name)} is inside the collection's folder "
            f"{display_path(holder)}, which the next index walks again; take out "
            f"{display_path(holder)} instead, or move the photos out of it"
        )
    going = [k for k in known if under(k, name)]
    if not going:
        listed = ", ".join(display_path(k) for k in known) or "none yet"
        raise CollectionError(
            f"{display_path(name)} is not a folder of collection {collection!r}; its "
            f"folders: {listed}"
        )
    ids = [
        state[0]
        for path, state in catalog.file_states().items()
        if any(under(path, k) for k in going)
    ]
    return ForgetReport(going, len(ids), ids)


def forget(store: Store, folder: str) -> ForgetReport:
    """Take ``folder`` (see ``forgetting``) and every photo under it out of the collection.

    Its photos leave the catalog and the vector index in one batch, as deleted files
    do, and its folders leave the list that an ``index`` with no paths walks, in the
    same transaction. Runs inside ``store.writing()``.
    """
    report = forgetting(store.catalog, store.name, folder)
    with store.batch() as batch:  # every change to the images table is a batch
        batch.remove(report.ids)
        batch.drop_roots(report.folders)
    store.checkpoint()
    return report


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder_prefix(folder))
