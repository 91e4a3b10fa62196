"""The collections under one home folder: what each holds, and removing one.

Listing opens each catalog for its counts and model; no model or vector index is
loaded, so listing a hundred collections costs a catalog query each.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from searchengine.backends import (
    LOCATION_FILE,
    CatalogLocation,
    DatabaseLock,
    create_catalog_engine,
    drop_schema,
    locate,
    reaching,
)
from searchengine.catalog import open_catalog
from searchengine.config import CATALOG_FILE, Config
from searchengine.errors import CollectionLockedError, CollectionNotFoundError
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
    """Delete a collection: its folder (vector index, caches) and its catalog, whether a
    file in that folder or a schema on a database server. Photos are untouched.

    A catalog on a server is dropped for every host that shares it; the other hosts'
    folders then hold a collection that is not found (``remove`` there deletes them).
    Returns the folder that was removed.

    Raises:
        CollectionNotFoundError: there is no such collection.
        CollectionLockedError: a process (on any host) is indexing it.
        CatalogUnavailableError: the server cannot be reached, or the role may not drop.
    """
    if name not in list_collections(config):
        raise CollectionNotFoundError(
            f"no collection {name!r} in {config.home.resolve()}; see them with "
            "`searchengine collections`"
        )
    folder = config.home / name
    location = locate(name, folder, config.database_url)
    if location.shared:
        _drop_server_catalog(name, location)
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


def _drop_server_catalog(name: str, location: CatalogLocation) -> None:
    """Drop a collection's schema, under its writer lock (no host may be indexing it)."""
    assert location.schema is not None
    engine = create_catalog_engine(location)
    try:
        lock = DatabaseLock(engine, location)
        if not lock.acquire():
            raise CollectionLockedError(
                f"collection {name!r} is being indexed by {lock.holder()}; wait for it to "
                "finish, or stop it, then remove the collection"
            )
        try:
            with reaching(location), engine.begin() as conn:
                drop_schema(conn, location.schema)
        finally:
            lock.release()
    finally:
        engine.dispose()


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
