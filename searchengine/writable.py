"""A collection that cannot be written: read-only media, another user's folder, a full disk.

Searching needs nothing written, so a collection this process may not write (a
snapshot, a read-only network share, a collection published by another user, a
container's read-only volume) is opened for reading: its SQLite catalog through a
read-only connection, and every writer (``index``, ``remove --folder``) refused with
one line that says why. A disk that fills during a run ends it with one line too;
what was committed before is kept, and the next run goes on from there.

A SQLite catalog in WAL mode is read through its ``-shm`` file, which a reader that
may not write the folder cannot create. Then, and only when no ``-wal`` file shows a
writer at work, the catalog is opened ``immutable``: SQLite reads the file as it is,
without the shared-memory index. Where a ``-wal`` file is there (its owner indexing
now), the usual read-only open works and sees the owner's latest commit.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from searchengine.errors import CollectionError, NoSpaceError, ReadOnlyCollectionError
from searchengine.fsutil import human_size

# A write that cannot fit: the disk is full, or the user's quota is.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def unwritable(folder: Path, *files: Path) -> str | None:
    """Why this process cannot write ``folder`` (and ``files`` in it), or None if it can.

    The reason completes "cannot be written here: ...".
    """
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only filesystem"
    except OSError:
        pass  # (no statvfs, or the folder is gone: the access check answers)
    for path in (folder, *files):
        if path.exists() and not os.access(path, os.W_OK):
            return f"this user may not write {path}"
    return None


def refuse_read_only(read_only: str | None, name: str) -> None:
    """Refuse to change collection ``name`` where its catalog says why it cannot be
    written here (``read_only``), in one line.

    Raises:
        ReadOnlyCollectionError: ``read_only`` is set.
    """
    if read_only:
        raise ReadOnlyCollectionError(
            f"collection {name!r} cannot be written here: {read_only}; searching it "
            "works. To index it, copy its folder to where this user can write and "
            "point --index-dir there"
        )


def check_can_make(folder: Path) -> None:
    """Refuse a new collection folder where it cannot be made, in one line.

    Raises:
        CollectionError: the nearest existing folder above it cannot be written.
    """
    above = next((p for p in folder.parents if p.exists()), None)
    why = unwritable(above) if above is not None and not folder.exists() else None
    if why:
        raise CollectionError(
            f"cannot make the collection folder {folder}: {why}; choose a folder this "
            "user can write with --index-dir (or SEARCHENGINE_HOME)"
        )


def sqlite_reader(file: Path, *, timeout: float = 10.0) -> sqlite3.Connection:
    """A read-only connection to a SQLite catalog, also where its folder cannot be
    written (see the module docstring)."""
    uri = f"{file.resolve().as_uri()}?mode=ro"
    if unwritable(file.parent) and not Path(f"{file}-wal").exists():
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)


def no_space_error(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk (or the catalog's database server) is full."""
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    original = getattr(exc, "orig", None) or exc
    if isinstance(original, sqlite3.Error):
        return getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return getattr(original, "sqlstate", None) == "53100"  # PostgreSQL's disk_full


def free_space(path: Path) -> str:
    """The free space of the disk holding ``path`` (or of its nearest existing folder)."""
    for place in (path, *path.parents):
        try:
            return human_size(shutil.disk_usage(place).free)
        except OSError:
            continue
    return "unknown"


@contextmanager
def space_for(folder: Path, what: str) -> Iterator[None]:
    """Turn a full disk met while writing ``folder`` into one ``NoSpaceError`` that
    says where, how much is free and what to do (``what``: what the user may keep
    elsewhere with ``--index-dir``)."""
    try:
        yield
    except Exception as exc:
        if not no_space_error(exc):
            raise
        raise NoSpaceError(no_space_message(exc, folder, what)) from exc


def no_space_message(exc: BaseException, folder: Path, what: str | None = None) -> str:
    """One line for a full disk: which disk, its free space, what to do, what is kept
    (``what``: what may be kept elsewhere with ``--index-dir``)."""
    original: Any = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) == "53100":
        return (
            "the catalog's database server has no space left on its disk; free some "
            "there, then run the same command again (what was committed is kept)"
        )
    where = Path(os.fsdecode(exc.filename)) if isinstance(exc, OSError) and exc.filename else folder
    elsewhere = f", or keep {what} elsewhere (--index-dir)" if what else ""
    return (
        f"no space left on the disk holding {where} ({free_space(where)} free); free "
        f"some space{elsewhere}, then run the same command again: what was saved before "
        "this is kept"
    )
