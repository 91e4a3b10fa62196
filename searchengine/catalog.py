"""The SQL catalog: what files a collection holds and what became of each.

SQLAlchemy Core with portable types only, so the same schema runs on SQLite (the
default, one file per collection) and PostgreSQL (one schema per collection; see
``backends.py``). Catalog image ids are the FAISS ids, so an image keeps its id across
moves and re-embeds.

A path is unique through ``path_hash`` (BLAKE2b-128 of its bytes), not through an
index on the path itself: a B-tree entry has a size limit (about 2,700 bytes in
PostgreSQL) that a deep path can exceed, and a 32-character key fits any path.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine

from searchengine.backends import (
    SQLITE,
    CatalogLocation,
    catalog_bytes,
    create_catalog_engine,
    ensure_schema,
    reaching,
)
from searchengine.errors import SchemaVersionError
from searchengine.values import OK, MetaKey

SCHEMA_VERSION = 3


class FsPath(TypeDecorator[str]):
    """A file system path stored as text, reversibly, whatever bytes its name has.

    Linux file names are bytes; Python shows undecodable ones with surrogate escapes,
    which no database text column accepts. Such paths are stored as ``bytes:`` plus
    the percent-encoded bytes (absolute paths start with ``/``, so the forms never
    collide) and come back as the same ``str`` that ``os.scandir`` produced.
    """

    impl = String(4096)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return _BYTES_PREFIX + quote(os.fsencode(value), safe="/ ")

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else _path_from_db(value)


def _path_from_db(value: str) -> str:
    if not value.startswith(_BYTES_PREFIX):
        return value
    return os.fsdecode(unquote_to_bytes(value[len(_BYTES_PREFIX) :]))


_BYTES_PREFIX = "bytes:"


def path_key(path: str) -> str:
    """The unique key of a path: BLAKE2b-128 of its bytes, hex (32 characters)."""
    return hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()


metadata = MetaData()

meta_table = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

roots_table = Table(
    "roots",
    metadata,
    Column("path", FsPath, primary_key=True),
)

images_table = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", FsPath, nullable=False),
    Column("path_hash", String(32), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=True, index=True),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("taken_at", Float, nullable=True),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text, nullable=True),
    Column("indexed_at", Float, nullable=False),
    # Ingest batch that last wrote this row's vector; the index file records the
    # last batch it contains, so rows newer than that are known not to be in it.
    Column("batch", Integer, nullable=False, default=0),
)

# Per-image data computed by other models than the collection's own: reranker
# vectors and captions. Each row remembers the content hash it was computed from,
# so a changed file never serves a stale vector or caption.
embeddings_table = Table(
    "embeddings",
    metadata,
    Column("image_id", Integer, primary_key=True),
    Column("model", String(512), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("vector", LargeBinary, nullable=False),
)

captions_table = Table(
    "captions",
    metadata,
    Column("image_id", Integer, primary_key=True),
    Column("model", String(512), primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Vectors committed with their batch but not yet in the saved index file. The
# catalog transaction is the single commit point of an ingest batch; this log lets
# the index be brought up to date after a crash without re-embedding anything.
pending_table = Table(
    "pending_vectors",
    metadata,
    Column("image_id", Integer, primary_key=True),
    Column("batch", Integer, nullable=False, index=True),
    Column("vector", LargeBinary, nullable=False),
)


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


class Catalog:
    """A collection's catalog behind a SQLAlchemy engine.

    Args:
        url: SQLAlchemy URL of the database.
        schema: the PostgreSQL schema holding this collection's tables (``None`` for
            SQLite, whose file is the collection's own).
        writable: whether this open may create or upgrade the tables. A reader writes
            nothing (a read-only role or a replica can search); it finds an empty
            catalog as ``found`` false and refuses one that needs an upgrade.

    Raises:
        CatalogUnavailableError: the database cannot be reached or used.
        SchemaVersionError: the catalog's schema is newer than this release, or older
            and the open is not writable.
    """

    def __init__(self, url: str, *, schema: str | None = None, writable: bool = True) -> None:
        self.url = url
        self.location = CatalogLocation(url, schema)
        self.engine: Engine = create_catalog_engine(self.location)
        try:
            with reaching(self.location), self.engine.begin() as conn:
                self.found = _prepare_schema(conn, self.location, writable)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def shared(self) -> bool:
        """Whether the catalog is on a server other hosts may write to."""
        return self.location.shared

    def close(self) -> None:
        self.engine.dispose()

    def size_bytes(self) -> int:
        """The catalog's size on disk (a SQLite file with its log, or a server's tables)."""
        if self.location.backend == SQLITE:
            name = self.engine.url.database or ""
            return sum(
                os.path.getsize(name + suffix)
                for suffix in ("", "-wal", "-shm")
                if os.path.exists(name + suffix)
            )
        with reaching(self.location), self.engine.connect() as conn:
            return catalog_bytes(conn, self.location)

    # -- collection identity ------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return read_meta(conn, key)

    def set_meta(self, values: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            for key, value in values.items():
                write_meta(conn, key, value)

    def roots(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.scalars(select(roots_table.c.path).order_by(roots_table.c.path)))

    def add_roots(self, paths: Iterable[str]) -> None:
        known = set(self.roots())
        new = [{"path": p} for p in paths if p not in known]
        if new:
            with self.engine.begin() as conn:
                conn.execute(insert(roots_table), new)

    # -- images ---------------------------------------------------------------
    def records(self, status: str | None = None) -> Iterator[ImageRecord]:
        query = select(images_table).order_by(images_table.c.id)
        if status is not None:
            query = query.where(images_table.c.status == status)
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                yield _record(row)

    def file_states(self) -> dict[str, tuple[int, int, int]]:
        """``path -> (id, size, mtime_ns)`` for every row: all an unchanged re-run reads.

        Plain tuples, not ``ImageRecord``s: at 100k files building full rows cost more
        than walking the disk.
        """
        # Plain SQL on the driver's cursor, fetched in one call: SQLAlchemy's per-row
        # result handling was a third of a 100k-file re-run.
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(f"SELECT path, id, size, mtime_ns FROM {images_table.name}")
            rows = cursor.fetchall()
            cursor.close()
        finally:
            raw.close()
        prefix = _BYTES_PREFIX
        return {
            (_path_from_db(path) if path.startswith(prefix) else path): (i, size, mtime)
            for path, i, size, mtime in rows
        }

    def get(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        found: dict[int, ImageRecord] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start : start + 500]]
                rows = conn.execute(select(images_table).where(images_table.c.id.in_(chunk)))
                for row in rows:
                    found[row.id] = _record(row)
        return found

    def by_path(self, path: str) -> ImageRecord | None:
        query = select(images_table).where(images_table.c.path_hash == path_key(path))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _record(row) if row else None

    def ok_ids(self) -> set[int]:
        with self.engine.connect() as conn:
            query = select(images_table.c.id).where(images_table.c.status == OK)
            return set(conn.scalars(query).all())

    def ok_count(self) -> int:
        """How many images are indexed (status ok)."""
        query = select(func.count()).select_from(images_table).where(images_table.c.status == OK)
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def counts(self) -> dict[str, int]:
        query = select(images_table.c.status, func.count()).group_by(images_table.c.status)
        with self.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(query)}

    def transaction(self) -> Any:
        """A connection in a transaction: committed on success, rolled back on error."""
        return self.engine.begin()


def _record(row: Any) -> ImageRecord:
    values = dict(row._mapping)
    values.pop("path_hash", None)
    return ImageRecord(**values)


def _with_key(values: dict[str, Any]) -> dict[str, Any]:
    if "path" in values:
        return {**values, "path_hash": path_key(values["path"])}
    return values


def insert_image(conn: Connection, values: dict[str, Any]) -> int:
    """Insert one image row and return its id."""
    values = _with_key({"indexed_at": time.time(), **values})
    result = conn.execute(insert(images_table).values(**values))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def update_image(conn: Connection, image_id: int, values: dict[str, Any]) -> None:
    values = _with_key({"indexed_at": time.time(), **values})
    conn.execute(update(images_table).where(images_table.c.id == image_id).values(**values))


def delete_images(conn: Connection, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start : start + 500]]
        conn.execute(delete(images_table).where(images_table.c.id.in_(chunk)))
        conn.execute(delete(embeddings_table).where(embeddings_table.c.image_id.in_(chunk)))
        conn.execute(delete(captions_table).where(captions_table.c.image_id.in_(chunk)))
        conn.execute(delete(pending_table).where(pending_table.c.image_id.in_(chunk)))


def _prepare_schema(conn: Connection, location: CatalogLocation, writable: bool) -> bool:
    """Check the catalog's schema version; a writer creates or upgrades it.

    A new catalog is created at the current version in one go; an older one is
    upgraded step by step (``MIGRATIONS``), all in the caller's transaction, so a
    failed upgrade leaves the catalog as it was. Returns whether a catalog was there
    (or has been made).
    """
    if writable and location.schema is not None:
        ensure_schema(conn, location.schema)
    if not inspect(conn).has_table(meta_table.name):
        if not writable:
            return False
        metadata.create_all(conn)
        write_meta(conn, MetaKey.SCHEMA_VERSION, str(SCHEMA_VERSION))
        return True
    found = read_meta(conn, MetaKey.SCHEMA_VERSION)
    version = 1 if found is None else int(found)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"this collection was written by a newer searchengine (schema {version}, "
            f"this release reads up to {SCHEMA_VERSION}); upgrade searchengine"
        )
    if version < SCHEMA_VERSION and not writable:
        name = read_meta(conn, MetaKey.NAME) or "NAME"
        raise SchemaVersionError(
            f"collection {name!r} has catalog schema {version} and this release reads "
            f"{SCHEMA_VERSION}; upgrade it once with `searchengine index --collection "
            f"{name}` (a writer; searches never change the catalog)"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
        write_meta(conn, MetaKey.SCHEMA_VERSION, str(version))
    return True


def _migrate_1_to_2(conn: Connection) -> None:
    # Version 2 adds the reranker-vector and caption caches and the vector log.
    for name in ("embeddings", "captions", "pending_vectors"):
        metadata.tables[name].create(conn, checkfirst=True)


_V2_COLUMNS = (
    "id, path, size, mtime_ns, content_hash, width, height, taken_at, status, error, "
    "indexed_at, batch"
)


def _migrate_2_to_3(conn: Connection) -> None:
    """Version 3 makes a path unique by its hash (``path_hash``), not by a B-tree on
    the path, which refuses paths over ~2,700 bytes on PostgreSQL.

    SQLite cannot drop a column's UNIQUE, so the table is rebuilt the same way on
    both backends: renamed aside, made anew, rows copied with their ids, dropped.
    """
    conn.execute(text("ALTER TABLE images RENAME TO images_v2"))
    for index in images_table.indexes:  # index names are per schema: free them
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    images_table.create(conn)
    rows = conn.execute(text(f"SELECT {_V2_COLUMNS} FROM images_v2")).mappings().all()
    for start in range(0, len(rows), 1000):
        chunk = [dict(r) for r in rows[start : start + 1000]]
        for row in chunk:
            row["path"] = _path_from_db(row["path"])
            row["path_hash"] = path_key(row["path"])
        conn.execute(insert(images_table), chunk)
    conn.execute(text("DROP TABLE images_v2"))
    if conn.dialect.name == "postgresql":  # the new id sequence starts past the copied ids
        conn.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('images', 'id'), "
                "(SELECT coalesce(max(id), 0) + 1 FROM images), false)"
            )
        )


MIGRATIONS = {1: _migrate_1_to_2, 2: _migrate_2_to_3}


def log_vectors(conn: Connection, batch: int, ids: Sequence[int], vectors: np.ndarray) -> None:
    """Record a batch's vectors in the same transaction as its catalog rows."""
    if not len(ids):
        return
    conn.execute(delete(pending_table).where(pending_table.c.image_id.in_([int(i) for i in ids])))
    rows = [
        {"image_id": int(i), "batch": batch, "vector": blob(v)}
        for i, v in zip(ids, vectors, strict=True)
    ]
    conn.execute(insert(pending_table), rows)


def pending_vectors(conn: Connection, after_batch: int) -> dict[int, np.ndarray]:
    """Logged vectors of batches newer than the saved index, by image id."""
    query = select(pending_table.c.image_id, pending_table.c.vector).where(
        pending_table.c.batch > after_batch
    )
    return {int(i): np.frombuffer(data, dtype=np.float32).copy() for i, data in conn.execute(query)}


def trim_vector_log(conn: Connection, up_to_batch: int) -> None:
    """Forget logged vectors that the saved index file now contains."""
    conn.execute(delete(pending_table).where(pending_table.c.batch <= up_to_batch))


def read_meta(conn: Connection, key: str) -> str | None:
    return conn.scalar(select(meta_table.c.value).where(meta_table.c.key == key))


def write_meta(conn: Connection, key: str, value: str) -> None:
    done = conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value))
    if done.rowcount == 0:
        conn.execute(insert(meta_table).values(key=key, value=value))


def blob(vector: np.ndarray) -> bytes:
    """A vector as the catalog stores it: float32 bytes."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
