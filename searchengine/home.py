"""The collections under one home folder: which exist, what each holds, removing one.

A collection exists once its catalog does: ``<home>/<name>/catalog.sqlite``, or, with
a database URL, its folder (the catalog lives in the database). Opening one is
``Collection.open``'s job; this module never loads a model or a vector index, so
listing a hundred collections costs a catalog query each.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import exc as sql_errors
from sqlalchemy.engine import make_url

from searchengine.catalog import Catalog
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
    size_bytes: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def exists(folder: Path, config: Config) -> bool:
    """Whether ``folder`` holds a collection (its catalog, or with a database, itself)."""
    if config.database_url is not None:
        return folder.is_dir()
    return (folder / CATALOG_FILE).is_file()


def list_collections(config: Config) -> list[str]:
    """Names of the collections under ``config.home``, sorted."""
    home = config.home
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if p.is_dir() and exists(p, config))


def collection_summaries(config: Config) -> list[CollectionSummary]:
    """Every collection under ``config.home`` with its model, counts and size on disk."""
    out = []
    for name in list_collections(config):
        folder = config.home / name
        catalog = open_catalog(catalog_url(folder, config))
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
        CollectionError: its catalog is in a database, which this does not drop.
    """
    folder = config.home / name
    if not name or "/" in name or name in (".", "..") or not exists(folder, config):
        raise CollectionNotFoundError(
            f"no collection {name!r} in {config.home.resolve()}; see them with "
            "`searchengine collections`"
        )
    if config.database_url is not None:
        raise CollectionError(
            f"collection {name!r} keeps its catalog in the database "
            f"{safe_url(config.database_url)}; drop that database yourself, then delete {folder}"
        )
    lock = FileLock(folder / LOCK_FILE, blocking=False)
    if not lock.acquire():
        raise CollectionLockedError(
            f"collection {name!r} is being indexed by process {lock.holder()}; wait for it "
            "to finish, or stop it, then remove the collection"
        )
    try:
        # A removed folder is gone for good: move it aside first, so a crash midway
        # leaves a name that no longer counts as a collection, never half of one.
        doomed = folder.with_name(f".{name}.removing")
        shutil.rmtree(doomed, ignore_errors=True)
        folder.rename(doomed)
    finally:
        lock.release()
    shutil.rmtree(doomed)
    return folder


def catalog_url(folder: Path, config: Config) -> str:
    """Where a collection's catalog is: the configured database, or its SQLite file."""
    return config.database_url or f"sqlite:///{(folder / CATALOG_FILE).resolve()}"


def open_catalog(url: str) -> Catalog:
    """Connect to a catalog; a database that cannot be reached is one clear error.

    Raises:
        CollectionError: the database is unreachable, its driver is missing, or the
            URL names no database SQLAlchemy knows.
    """
    try:
        return Catalog(url)
    except ImportError as exc:
        raise CollectionError(
            f"cannot open the catalog database {safe_url(url)}: its driver is not installed "
            f"({exc.name or exc}); install it, or check SEARCHENGINE_DATABASE_URL"
        ) from exc
    except (sql_errors.ArgumentError, sql_errors.NoSuchModuleError) as exc:
        raise CollectionError(
            f"cannot open the catalog database {safe_url(url)}: not a database URL "
            "SQLAlchemy knows; check SEARCHENGINE_DATABASE_URL"
        ) from exc
    except sql_errors.OperationalError as exc:
        cause = " ".join(str(exc.orig).split()) if exc.orig is not None else "unreachable"
        raise CollectionError(
            f"cannot open the catalog database {safe_url(url)} ({cause}); check that it "
            "is running and reachable, or SEARCHENGINE_DATABASE_URL"
        ) from exc


def safe_url(url: str) -> str:
    """A database URL fit for a message: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(an unparsable URL)"
