"""What a walk finds: a ``FileEntry`` for each photo, made from the directory read."""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

GONE = frozenset({errno.ENOENT, errno.ENOTDIR})  # vanished during the walk: not kept


class FileEntry(NamedTuple):
    """One file found by a scan (a tuple: a re-run of 100k files makes 100k of them)."""

    path: str  # absolute
    size: int
    mtime_ns: int
    error: str | None = None  # set when the name exists but cannot be a file to read


def entry_of(entry: os.DirEntry[str]) -> FileEntry:
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError as exc:
        # A link to nowhere, or a loop, is the file's verdict; a link into a share that
        # cannot be read now is not (the walk keeps its row, as the share's own).
        if not entry.is_symlink() or exc.errno not in (*GONE, errno.ELOOP):
            raise
        return FileEntry(entry.path, 0, 0, link_failure(exc))
    return checked(entry.path, st)


def checked(path: str, st: os.stat_result) -> FileEntry:
    # Regular files only: reading a FIFO or device named x.jpg would block forever.
    if not stat.S_ISREG(st.st_mode):
        return FileEntry(path, 0, 0, f"not a regular file ({kind(st.st_mode)})")
    return FileEntry(path, st.st_size, st.st_mtime_ns)


def link_failure(exc: OSError) -> str:
    return "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"


def kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def extension(name: str) -> str:
    """``os.path.splitext(name)[1].lower()`` (leading dots are no extension), cheaper."""
    dot = name.rfind(".")
    if dot <= 0 or not name[:dot].lstrip("."):
        return ""
    return name[dot:].lower()


def reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
