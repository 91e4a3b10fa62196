"""Walk folders for image files: path, size and mtime only (no file is opened)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from searchengine.config import CATALOG_FILE, INDEX_FILE, LOCATION_FILE
from searchengine.fsutil import folder_prefix
from searchengine.ingest.exclude import Exclusions
from searchengine.ingest.raw import RAW_EXTENSIONS

BASE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
AVIF_EXTENSIONS = frozenset({".avif"})
# Photos of a format this installation may lack the decoder for: a walk without it
# lists them (``scan``'s ``unreadable``), so that ``index`` can say what to install
# instead of leaving them out without a word (an iPhone library is mostly HEIC).
CODEC_EXTENSIONS = HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS


# Folders below a root that hold no photos of the user's own, by name: NAS thumbnails
# (Synology ``@eaDir``, QNAP ``.@__thumb``), recycle bins and trash (Synology, QNAP,
# Windows, macOS and Linux on removable drives), and Synology snapshots (a copy of
# everything). Walking them would list each photo again as its thumbnails, and bring
# deleted photos back. A root named directly is walked whatever its name.
SKIPPED_FOLDERS = frozenset(
    {"@eaDir", ".@__thumb", "#recycle", "@Recycle", "$RECYCLE.BIN", ".Trashes", ".Trash",
     "#snapshot", "@Recently-Snapshot"}
)  # fmt: skip
# A searchengine collection's folder (its thumbnails are JPEGs), not walked either, is
# told by its index file beside a catalog file or a server catalog's note.
_MARKERS = frozenset({INDEX_FILE, CATALOG_FILE, LOCATION_FILE})


def image_extensions() -> frozenset[str]:
    """Extensions indexed: HEIC/HEIF only when pillow-heif is installed, AVIF only when
    Pillow reads it (its wheels do from 11.3 on), camera RAW only when rawpy is."""
    from searchengine.ingest.decode import avif_available, heif_installed
    from searchengine.ingest.raw import raw_available

    found = BASE_EXTENSIONS
    if heif_installed():
        found |= HEIF_EXTENSIONS
    if avif_available():
        found |= AVIF_EXTENSIONS
    if raw_available():
        found |= RAW_EXTENSIONS
    return found


def missing_codecs_note(unreadable: Iterable[str]) -> str | None:
    """What ``index`` says of the photos a walk met that this installation cannot read
    (``scan``'s ``unreadable`` paths); None when there were none."""
    exts = [_extension(os.path.basename(path)) for path in unreadable]
    heif = sum(ext in HEIF_EXTENSIONS for ext in exts)
    avif = sum(ext in AVIF_EXTENSIONS for ext in exts)
    raw = sum(ext in RAW_EXTENSIONS for ext in exts)
    parts = []
    if heif:
        parts.append(
            f"{heif} HEIC/HEIF photo{'s' if heif != 1 else ''} left out: reading them needs "
            "pillow-heif (pip install 'searchengine[heif]')"
        )
    if avif:
        parts.append(
            f"{avif} AVIF photo{'s' if avif != 1 else ''} left out: reading them needs "
            "Pillow 11.3 or newer (pip install -U pillow)"
        )
    if raw:
        parts.append(
            f"{raw} camera RAW photo{'s' if raw != 1 else ''} left out: reading them needs "
            "rawpy (pip install 'searchengine[raw]')"
        )
    if not parts:
        return None
    return "; ".join(parts) + "; the next index adds them"


class FileEntry(NamedTuple):
    """One file found by a scan (a tuple: a re-run of 100k files makes 100k of them)."""

    path: str  # absolute
    size: int
    mtime_ns: int
    error: str | None = None  # set when the name exists but cannot be a file to read


def scan(
    roots: Iterable[str | Path],
    extensions: frozenset[str] | None = None,
    exclusions: Exclusions | None = None,
    left_out: list[str] | None = None,
    unreadable: list[str] | None = None,
) -> Iterator[FileEntry]:
    """Yield every image file under ``roots``; a root that is not a folder is yielded too.

    Directory symlinks are not followed, so link loops cannot trap the walk; file
    symlinks are followed. In a folder, only names with an image extension are
    considered, and not macOS's ``._`` metadata files; a path named directly is
    always considered, whatever its name, so that it gets a verdict (a FIFO, a
    device, a broken link or a text file named on the command line is recorded with
    a reason, not skipped). Below a root, ``SKIPPED_FOLDERS`` and searchengine's own
    collection folders are not walked, nor what ``exclusions`` (the collection's
    ``index --exclude`` patterns) leave out; the paths of those it met go to
    ``left_out``. Photos of a format this installation cannot read (``CODEC_EXTENSIONS``
    outside ``extensions``) go to ``unreadable``, but for a RAW file a photo of the
    same name stands for. Entries that
    vanish during the walk are skipped.
    """
    exts = image_extensions() if extensions is None else extensions
    for root in roots:
        root = os.path.abspath(root)
        try:
            st = os.stat(root)
        except OSError as exc:
            if os.path.lexists(root):  # a symbolic link to nowhere, or a loop
                yield FileEntry(root, 0, 0, _link_failure(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, exts, (st.st_dev, st.st_ino), exclusions, left_out, unreadable)
        else:
            yield _checked(root, st)


def _entry(entry: os.DirEntry[str]) -> FileEntry:
    try:
        st = entry.stat(follow_symlinks=True)
    except OSError as exc:
        if not entry.is_symlink():
            raise
        return FileEntry(entry.path, 0, 0, _link_failure(exc))
    return _checked(entry.path, st)


def _checked(path: str, st: os.stat_result) -> FileEntry:
    # Regular files only: reading a FIFO or device named x.jpg would block forever.
    if not stat.S_ISREG(st.st_mode):
        return FileEntry(path, 0, 0, f"not a regular file ({_kind(st.st_mode)})")
    return FileEntry(path, st.st_size, st.st_mtime_ns)


def _link_failure(exc: OSError) -> str:
    return "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _extension(name: str) -> str:
    """``os.path.splitext(name)[1].lower()`` (leading dots are no extension), cheaper."""
    dot = name.rfind(".")
    if dot <= 0 or not name[:dot].lstrip("."):
        return ""
    return name[dot:].lower()


def _walk(
    folder: str,
    exts: frozenset[str],
    identity: tuple[int, int],
    exclusions: Exclusions | None,
    left_out: list[str] | None,
    unreadable: list[str] | None,
) -> Iterator[FileEntry]:
    # An explicit stack of scandir iterators: os.scandir gives type and stat from the
    # directory read itself, which keeps an unchanged re-run close to a bare walk.
    # A folder met again under another name (a bind mount of one inside the tree) is
    # walked once, or every photo in it would be listed twice: one lstat a folder.
    walked = {identity}  # ``folder``'s (device, inode), and each folder's below it
    stack = [folder]
    prefix = folder_prefix(folder)
    leaves_out = exclusions.matcher(prefix) if exclusions else None
    cannot_read = CODEC_EXTENSIONS - exts if unreadable is not None else frozenset()
    cannot: list[str] = unreadable if unreadable is not None else []
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                subdirs, files = [], set()
                named: list[str] = []  # the photos yielded here, for RAW+JPEG pairs
                raws: list[tuple[os.DirEntry[str], str]] = []
                for entry in entries:
                    try:
                        name = entry.name
                        if entry.is_dir(follow_symlinks=False):
                            if name in SKIPPED_FOLDERS or name.startswith(".Trash-"):
                                continue
                            if leaves_out is not None and leaves_out(entry.path, name):
                                _note(left_out, entry.path)
                                continue
                            info = entry.stat(follow_symlinks=False)
                            subdirs.append((entry.path, (info.st_dev, info.st_ino)))
                        elif (ext := _extension(name)) in exts and not name.startswith("._"):
                            if leaves_out is not None and leaves_out(entry.path, name):
                                _note(left_out, entry.path)
                                continue
                            if ext in RAW_EXTENSIONS:
                                raws.append((entry, ext))
                                continue
                            named.append(name)
                            yield _entry(entry)
                        elif name in _MARKERS:
                            files.add(name)
                        elif (
                            ext in cannot_read
                            and not name.startswith("._")
                            and (leaves_out is None or not leaves_out(entry.path, name))
                        ):
                            raws.append((entry, ext))  # counted, unless a pair's
                    except OSError:
                        continue
                if raws:
                    yield from _raw_entries(raws, named, exts, cannot)
        except OSError:
            continue
        if current != folder and _collection(files):
            continue  # its thumbnails are not photos
        new = []
        for path, key in sorted(subdirs):  # in name order: the same name wins each run
            if key not in walked:
                walked.add(key)
                new.append(path)
        stack.extend(reversed(new))


def _raw_entries(
    raws: list[tuple[os.DirEntry[str], str]],
    named: list[str],
    exts: frozenset[str],
    unreadable: list[str],
) -> Iterator[FileEntry]:
    """The camera RAW files of one folder that no other photo of the same name stands
    for (a camera set to RAW+JPEG writes both; the JPEG is its rendering of the shot),
    and a count of the photos of a format this installation cannot read."""
    stems = {n[: n.rfind(".")].lower() for n in named}
    for entry, ext in raws:
        name = entry.name
        if ext in RAW_EXTENSIONS and name[: name.rfind(".")].lower() in stems:
            continue
        if ext in exts:
            try:
                yield _entry(entry)
            except OSError:
                continue
        else:
            unreadable.append(entry.path)


def _note(left_out: list[str] | None, path: str) -> None:
    if left_out is not None:
        left_out.append(path)


def _collection(names: set[str]) -> bool:
    """Whether a folder holding ``names`` (of ``_MARKERS``) is a collection's."""
    return INDEX_FILE in names and len(names) > 1
