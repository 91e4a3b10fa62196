"""What the saved index file holds, as recorded, and whether it is still that file.

``Store`` saves ``vectors.faiss`` at checkpoints and records, after the file, the
newest batch and the vector count it holds, and the file itself as it was written
(inode, mtime, size). With a SQLite catalog the record is in the catalog (which then
trims its vector log); with a shared catalog on a database server each host keeps its
own file, so the record is beside it, in ``vectors.state.json``, with the identity of
the catalog the file was made for. The identity matters because a removed collection
can be made again under the same name: its image ids start from 1 again, for other
photos, so a file made for the old catalog must never be taken for one of the new
(``docs/scale.md``). Nor may a file made from another history of the same catalog
(restored from a backup, or commits the server lost): the record holds the mark of the
file's newest batch, which the catalog's batch of that number must still have
(``history.py``). The recorded file tells one replaced or cut short since (a
restored backup, a partial copy), which is then read in full before it is trusted.

Reading the catalog's identity and newest batch is also where a reader learns that
the collection was removed while it was open (its schema is gone).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from searchengine.catalog import Catalog, read_meta, trim_vector_log, write_meta
from searchengine.catalog_errors import refused, schema_gone
from searchengine.config import INDEX_FILE
from searchengine.errors import CollectionNotFoundError
from searchengine.fsutil import atomic_write
from searchengine.history import batch_mark, read_mark, same_history, version_query
from searchengine.values import MetaKey

__all__ = ["STATE_FILE", "SavedIndex", "catalog_version", "read_state", "write_state"]

STATE_FILE = "vectors.state.json"


def read_state(folder: Path) -> tuple[int, int | None, str | None, str | None]:
    """(batch, vector count, catalog identity, the batch's mark) recorded for the
    folder's index file; ``(0, None, None, None)`` if unknown (the whole catalog is then
    replayed).

    A file or a catalog from before catalogs had an identity, or a file saved before
    batches had marks, has none: it is trusted, as it was.
    """
    state = _read_state(folder)
    mark = state.get("mark")
    try:
        batch, count = int(state["batch"]), int(state["vectors"])
    except (ValueError, KeyError, TypeError):
        return 0, None, None, None
    return batch, count, state.get("catalog"), mark if isinstance(mark, str) else None


def _read_state(folder: Path) -> dict[str, Any]:
    """What ``vectors.state.json`` in ``folder`` holds; empty if it holds nothing usable."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(
    folder: Path,
    batch: int,
    count: int,
    catalog_id: str | None,
    file: str | None = None,
    mark: str | None = None,
) -> None:
    """Record what the index file just saved in ``folder`` holds (after the file), the
    file as it was written (``file``: ``Store`` tells a replaced file by it) and the
    mark of its newest batch (``mark``: ``history.py``)."""
    state: dict[str, int | str] = {"batch": batch, "vectors": count}
    for key, value in (("catalog", catalog_id), ("file", file), ("mark", mark)):
        if value:
            state[key] = value
    with atomic_write(folder / STATE_FILE, durable=True) as handle:
        handle.write(json.dumps(state).encode())


def catalog_version(catalog: Catalog, name: str) -> tuple[str | None, int, str | None]:
    """A shared catalog's identity and newest batch, read together, and that batch's
    mark (``history.py``).

    Raises:
        CollectionNotFoundError: collection ``name`` was removed (its schema is gone)
            since it was opened, from this host or another.
    """
    try:
        try:  # one round trip (a web server asks before every query)
            with catalog.engine.connect() as conn:
                catalog_id, last, mark = conn.execute(version_query()).one()
                return catalog_id, int(last or 0), mark
        except DBAPIError as exc:
            if not (refused(exc) or schema_gone(exc)):
                raise
        with catalog.engine.connect() as conn:  # marks missing or unreadable, or no schema
            catalog_id = read_meta(conn, MetaKey.CATALOG_ID)
            last = int(read_meta(conn, MetaKey.LAST_BATCH) or 0)
            return catalog_id, last, batch_mark(conn, last)
    except Exception as exc:
        if not schema_gone(exc):
            raise
        location = catalog.location
        raise CollectionNotFoundError(
            f"collection {name!r} was removed from {location.shown} (schema "
            f"{location.schema}) while open; index it again to make a new one"
        ) from None


class SavedIndex:
    """The record of a collection's saved index file (see the module docstring).

    Args:
        folder: the collection's folder, where ``vectors.faiss`` is.
        catalog: its catalog.
    """

    def __init__(self, folder: Path, catalog: Catalog) -> None:
        self.folder = folder
        self.catalog = catalog
        self.path = folder / INDEX_FILE
        self.rejected: list[str] = []  # why the last ``host_state`` did not use the file

    def version(self) -> tuple[int, int, int] | None:
        """The file as it is now (inode, mtime, size), or None if there is none."""
        try:
            info = self.path.stat()
        except OSError:
            return None
        # Saves replace the file (a new inode), so this changes even within one mtime tick.
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def state(self) -> tuple[int, int | None]:
        """(batch, vector count) the saved index file holds, as last recorded."""
        if not self.catalog.shared:
            count = self.catalog.get_meta(MetaKey.INDEX_VECTORS)
            batch = int(self.catalog.get_meta(MetaKey.INDEX_BATCH) or 0)
            return batch, None if count is None else int(count)
        held, vectors, _ = self.host_state(self.catalog.get_meta(MetaKey.CATALOG_ID))
        return held, vectors

    def host_state(self, catalog_id: str | None) -> tuple[int, int | None, bool]:
        """(batch, vector count) this host's index file holds, and whether it may be used
        at all (a shared catalog). A file made for another catalog of this name (one
        removed, then made again: its ids mean other images) is not; nor is a file of
        another history of this catalog (``history.py``). Either counts as no file, and
        the index is built from the catalog.
        """
        self.rejected = []
        if not self.path.exists():
            return 0, None, False
        batch, count, made_for, recorded = read_state(self.folder)
        if made_for is not None and catalog_id is not None and made_for != catalog_id:
            return 0, None, False
        if recorded is not None and not same_history(recorded, read_mark(self.catalog, batch)):
            self.rejected = [
                f"this host's vector index {self.path} is of another history of the "
                f"catalog (its batch {batch} is not the catalog's: a restored backup, or "
                "commits the database server lost): built again from the catalog"
            ]
            return 0, None, False
        return batch, count, True

    def record(self, batch: int, count: int) -> None:
        """Record what the file just saved holds: in the catalog (SQLite, which then
        trims its vector log) or beside the file (shared catalogs keep every vector)."""
        version = self.version()
        file = None if version is None else _written(version)
        if self.catalog.shared:
            catalog_id = self.catalog.get_meta(MetaKey.CATALOG_ID)
            mark = read_mark(self.catalog, batch)
            write_state(self.folder, batch, count, catalog_id, file, mark)
            return
        with self.catalog.transaction() as conn:
            write_meta(conn, MetaKey.INDEX_BATCH, str(batch))
            write_meta(conn, MetaKey.INDEX_VECTORS, str(count))
            if file is not None:
                write_meta(conn, MetaKey.INDEX_FILE, file)
            trim_vector_log(conn, batch)

    def as_saved(self) -> bool:
        """Whether the file is the one last recorded, not replaced or cut short since;
        a file never recorded (saved by an earlier release) is not."""
        if self.catalog.shared:
            recorded = _read_state(self.folder).get("file")
        else:
            recorded = self.catalog.get_meta(MetaKey.INDEX_FILE)
        version = self.version()
        return version is not None and recorded == _written(version)

    def matches(self, saved: int, last: int, count: int | None) -> bool:
        """Whether the saved file holds exactly the catalog's vectors, from the record."""
        if not self.path.exists():
            return False
        return saved == last and count is not None and count == self.catalog.ok_count()

    def set_aside(self, reason: str) -> str:
        """Move a damaged index file aside (kept, not deleted) for a new one to be
        built; returns what was mended, for the run's report."""
        aside = self.path.with_name(self.path.name + ".damaged")
        os.replace(self.path, aside)
        return (
            f"the vector index {self.path} was damaged ({reason}): kept as {aside.name} "
            "and built again; photos whose vectors were only in it are embedded again"
        )


def _written(version: tuple[int, int, int]) -> str:
    return ":".join(str(v) for v in version)
