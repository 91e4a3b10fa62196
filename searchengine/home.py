"""The collections under one home folder: what each holds, and removing one.

Listing opens each catalog for its counts and model; no model or vector index is
loaded, so listing a hundred collections costs a catalog query each.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from searchengine.backends import LOCATION_FILE, locate
from searchengine.catalog import open_catalog
from searchengine.config import CATALOG_FILE, Config
from searchengine.errors import CollectionError, CollectionLockedError, CollectionNotFoundError
from searchengine.fsutil import FileLock
from searchengine.store import LOCK_FILE
from searchengine.values import OK, MetaKey


@dataclass(frozen=True)
class CollectionSummary:
    """One line of ``searchengine collections``."""

    name: str
    folder: str
    model: str | None
    images: int
    failed: int
    size_bytes: int  # the collection's folder (a server catalog is not counted)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def collection_summaries(config: Config) -> list[CollectionSummary]:
    """Every collection under ``config.home`` with its model, counts and size on disk."""
    out = []
    for name in list_collections(config):
        folder = config.home / name
        catalog = open_catalog(folder, locate(name, folder, config.database_url), False)
        if catalog is None:
            continue
        try:
            counts = catalog.counts()
            model = catalog.get_meta(MetaKey.MODEL)
        finally:
            catalog.close()
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        failed = sum(n for status, n in counts.items() if status != OK)
        out.append(
            CollectionSummary(name, str(folder.resolve()), model, counts.get(OK, 0), failed, size)
        )
    return out


def remove_collection(name: str, config: Config) -> Path:
    """Delete a collection's folder: catalog, vector index, caches. Photos are untouched.

    Returns the folder that was removed.

    Raises:
        CollectionNotFoundError: there is no such collection.
        CollectionLockedError: a process is indexing it.
        CollectionError: its catalog is on a database server (not dropped here).
    """
    if name not in list_collections(config):
        raise CollectionNotFoundError(
            f"no collection {name!r} in {config.home.resolve()}; see them with "
            "`searchengine collections`"
        )
    folder = config.home / name
    location = locate(name, folder, config.database_url)
    if location.shared:
        raise CollectionError(
            f"collection {name!r} keeps its catalog on {location.shown} (schema "
            f"{location.schema}); drop that schema there, then delete {folder}"
        )
    lock = FileLock(folder / LOCK_FILE, blocking=False)
    if not lock.acquire():
        raise CollectionLockedError(
            f"collection {name!r} is being indexed by process {lock.holder()}; wait for it "
            "to finish, or stop it, then remove the collection"
        )
    try:
        # Moved aside first: a crash midway leaves a name that no longer counts as a
        # collection, never half of one.
        doomed = folder.with_name(f".{name}.removing")
        shutil.rmtree(doomed, ignore_errors=True)
        folder.rename(doomed)
    finally:
        lock.release()
    shutil.rmtree(doomed)
    return folder


def list_collections(config: Config) -> list[str]:
    """Names of the collections under the home folder."""
    home = config.home
    if not home.is_dir():
        return []
    return sorted(
        p.name
        for p in home.iterdir()
        if (p / CATALOG_FILE).exists() or (p / LOCATION_FILE).exists()
    )
