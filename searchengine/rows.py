"""Catalog rows as plain values, importable without the SQL layer.

The catalog (``catalog.py``, SQLAlchemy) writes and reads them; the one-shot search
(``oneshot.py``) reads them with the standard library's ``sqlite3``, and ranking
handles them, neither needing SQLAlchemy for that.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote, unquote_to_bytes

# How ``catalog.FsPath`` stores a path whose name is not UTF-8: this prefix plus its
# percent-encoded bytes (absolute paths start with "/", so the forms never collide).
BYTES_PREFIX = "bytes:"


@dataclass(frozen=True)
class ImageRecord:
    """One catalog row."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    taken_at: float | None
    status: str
    error: str | None
    indexed_at: float = 0.0
    batch: int = 0


def path_to_db(path: str) -> str:
    """How a catalog path column holds ``path`` (see ``BYTES_PREFIX``)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return BYTES_PREFIX + quote(os.fsencode(path), safe="/ ")


def path_key(path: str) -> str:
    """The unique key of a path: BLAKE2b-128 of its bytes, hex (32 characters)."""
    return hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()


def path_from_db(value: str) -> str:
    """The ``str`` path (as ``os.scandir`` gave it) a catalog path column holds."""
    if not value.startswith(BYTES_PREFIX):
        return value
    return os.fsdecode(unquote_to_bytes(value[len(BYTES_PREFIX) :]))


class RowReader(Protocol):
    """What ranking reads of a catalog: rows by id and by path. ``Catalog`` is one;
    ``oneshot.SqliteRows`` another, without the SQL layer."""

    def get(self, ids: Sequence[int]) -> dict[int, ImageRecord]: ...

    def by_path(self, path: str) -> ImageRecord | None: ...

    def roots(self) -> list[str]: ...


def find_file(rows: RowReader, path: str) -> ImageRecord | None:
    """The row of the file at ``path`` (absolute), also when it is named another way.

    A photo named through a symbolic link, or inside a folder the collection knows by
    another name, is looked up under the collection's name for it
    (``fsutil.spelled_as_known``), so an example image that is indexed is found.
    """
    from searchengine.fsutil import spelled_as_known

    record = rows.by_path(path)
    if record is None and os.path.exists(path):
        known = spelled_as_known(path, rows.roots())
        if known != path:
            record = rows.by_path(known)
    return record
