"""The catalog's tables, their versions, and the stepwise upgrades between them.

SQLAlchemy Core with portable types only, so the same schema runs on SQLite and
PostgreSQL. A path is unique through ``path_hash`` (BLAKE2b-128 of its bytes), not
through an index on the path itself: a B-tree entry has a size limit (about 2,700
bytes in PostgreSQL) that a deep path can exceed, and a 32-character key fits any
path.
"""

from __future__ import annotations

from typing import Any

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
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from searchengine.backends import CatalogLocation
from searchengine.errors import SchemaVersionError
from searchengine.rows import path_from_db, path_key, path_to_db
from searchengine.server_catalog import ensure_schema
from searchengine.values import MetaKey

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
        return None if value is None else path_to_db(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else path_from_db(value)


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


# A shared catalog's random mark per batch, written with it (``history.py``): a host's
# index file records its newest batch's mark, so a file made from another history of
# the catalog (a restored backup, commits a server lost) is not taken for this one. An
# addition, not a new version: writers make it where it is missing, and every release
# reads past it.
batch_marks_table = Table(
    "batch_marks",
    metadata,
    Column("batch", Integer, primary_key=True, autoincrement=False),
    Column("mark", String(32), nullable=False),
)


def prepare_schema(conn: Connection, location: CatalogLocation, writable: bool) -> bool:
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
            row["path"] = path_from_db(row["path"])
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


def read_meta(conn: Connection, key: str) -> str | None:
    return conn.scalar(select(meta_table.c.value).where(meta_table.c.key == key))


def write_meta(conn: Connection, key: str, value: str) -> None:
    done = conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value))
    if done.rowcount == 0:
        conn.execute(insert(meta_table).values(key=key, value=value))
