"""The collections under one home folder: what each holds, and removing one.

Listing opens each catalog for its counts and model; no model or vector index is
loaded, so listing a hundred collections costs a catalog query each. Each collection
is read where its folder says its catalog is, so a ``SEARCHENGINE_DATABASE_URL`` set for
a team's collections does not stop a personal SQLite one from being listed or removed,
and a server that does not answer marks its collections unavailable, not the listing.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from searchengine.backends import CatalogLocation, create_catalog_engine, locate
from searchengine.catalog import open_catalog
from searchengine.catalog_errors import reaching
from searchengine.config import CATALOG_FILE, LOCATION_FILE, Config
from searchengine.errors import (
    CatalogUnavailableError,
    CollectionError,
    CollectionLockedError,
    CollectionNotFoundError,
    ReadOnlyCollectionError,
)
from searchengine.fsutil import FileLock
from searchengine.server_catalog import DatabaseLock, drop_schema
from searchengine.store import LOCK_FILE
from searchengine.values import OK, MetaKey
from searchengine.writable import unwritable


@dataclass(frozen=True)
class CollectionSummary:
    """One line of ``searchengine collections``."""

    name: str
    folder: str
    model: str | None
    images: int
    failed: int
    size_bytes: int  # the collection's folder (a server catalog is not counted)
    unavailable: str | None = None  # why its catalog could not be read (a server down)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def collection_summaries(config: Config) -> list[CollectionSummary]:
    """Every collection under ``config.home`` with its model, counts and size on disk.

    A collection whose catalog server cannot be reached is listed with ``unavailable``
    saying why (and no counts); a folder whose server catalog is gone is left out.
    """
    out = []
    for name in list_collections(config):
        folder = config.home / name
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        try:
            catalog = open_catalog(folder, catalog_location(name, config), False)
        except CatalogUnavailableError as exc:
            out.append(CollectionSummary(name, str(folder.resolve()), None, 0, 0, size, str(exc)))
            continue
        if catalog is None:
            continue
        try:
            counts = catalog.counts()
            model = catalog.get_meta(MetaKey.MODEL)
        finally:
            catalog.close()
        failed = sum(n for status, n in counts.items() if status != OK)
        out.append(
            CollectionSummary(name, str(folder.resolve()), model, counts.get(OK, 0), failed, size)
        )
    return out


def catalog_location(name: str, config: Config) -> CatalogLocation:
    """Where collection ``name`` under ``config.home`` keeps its catalog.

    The configured database URL when the collection's catalog is there (it may carry
    the password); otherwise what the collection's folder records.
    """
    folder = config.home / name
    try:
        return locate(name, folder, config.database_url)
    except CollectionError:
        if config.database_url is None:
            raise
        return locate(name, folder, None)


def remove_collection(name: str, config: Config, *, local: bool = False) -> Path:
    """Delete a collection: its folder (vector index, caches) and its catalog, whether a
    file in that folder or a schema on a database server. Photos are untouched.

    A catalog on a server is dropped for every host that shares it; the other hosts'
    folders then hold a collection that is not found (``remove`` there deletes them).
    With ``local`` only this host's folder goes and the server is not contacted: for a
    host leaving a team, or a server that is gone. Returns the folder that was removed.

    Raises:
        CollectionNotFoundError: there is no such collection.
        CollectionLockedError: a process (on any host) is indexing it.
        CatalogUnavailableError: the server cannot be reached, or the role may not drop.
        CollectionError: ``local`` for a collection whose catalog is in its folder.
        ReadOnlyCollectionError: this user may not delete its folder.
    """
    if name not in list_collections(config):
        raise CollectionNotFoundError(
            f"no collection {name!r} in {config.home.resolve()}; see them with "
            "`searchengine collections`"
        )
    folder = config.home / name
    if why := unwritable(config.home, folder):
        raise ReadOnlyCollectionError(f"cannot remove collection {name!r}: {why}")
    location = catalog_location(name, config)
    if local and not location.shared:
        raise CollectionError(
            f"collection {name!r} keeps its catalog in its folder, so --local would "
            "delete it too; remove it without --local"
        )
    if location.shared and not local:
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
    except CatalogUnavailableError as exc:
        raise CatalogUnavailableError(
            f"{exc}; to delete only this host's folder and leave the catalog, use --local"
        ) from None
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
