"""The SQL catalog: what files a collection holds and what became of each.

SQLAlchemy Core with portable types only, so the same schema runs on SQLite (the
default, one file per collection) and PostgreSQL. Catalog image ids are the FAISS
ids, so an image keeps its id across moves and re-embeds.
"""

from __future__ import annotations

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
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from searchengine.errors import SchemaVersionError
from searchengine.values import OK, MetaKey

SCHEMA_VERSION = 2


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
    Column("path", FsPath, nullable=False, unique=True),
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
    """A collection's catalog behind a SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        with self.engine.begin() as conn:
            _prepare_schema(conn)

    def close(self) -> None:
        self.engine.dispose()

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
                yield ImageRecord(**row._mapping)

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
                    found[row.id] = ImageRecord(**row._mapping)
        return found

    def by_path(self, path: str) -> ImageRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(images_table).where(images_table.c.path == path)).first()
        return ImageRecord(**row._mapping) if row else None

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


def insert_image(conn: Connection, values: dict[str, Any]) -> int:
    """Insert one image row and return its id."""
    values = {"indexed_at": time.time(), **values}
    result = conn.execute(insert(images_table).values(**values))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def update_image(conn: Connection, image_id: int, values: dict[str, Any]) -> None:
    values = {"indexed_at": time.time(), **values}
    conn.execute(update(images_table).where(images_table.c.id == image_id).values(**values))


def delete_images(conn: Connection, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start : start + 500]]
        conn.execute(delete(images_table).where(images_table.c.id.in_(chunk)))
        conn.execute(delete(embeddings_table).where(embeddings_table.c.image_id.in_(chunk)))
        conn.execute(delete(captions_table).where(captions_table.c.image_id.in_(chunk)))
        conn.execute(delete(pending_table).where(pending_table.c.image_id.in_(chunk)))


def _prepare_schema(conn: Connection) -> None:
    """Create a new catalog, or migrate an older one in place, in one transaction.

    Only the tables of schema 1 are created directly; later ones come from the
    migrations, so a new catalog and an upgraded one go through the same steps,
    and a failed migration leaves the catalog as it was.
    """
    for table in (meta_table, roots_table, images_table):
        table.create(conn, checkfirst=True)
    found = read_meta(conn, MetaKey.SCHEMA_VERSION)
    version = 1 if found is None else int(found)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"this collection was written by a newer searchengine (schema {version}, "
            f"this release reads up to {SCHEMA_VERSION}); upgrade searchengine"
        )
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
    write_meta(conn, MetaKey.SCHEMA_VERSION, str(version))


def _migrate_1_to_2(conn: Connection) -> None:
    # Version 2 adds the reranker-vector and caption caches and the vector log.
    embeddings_table.create(conn, checkfirst=True)
    captions_table.create(conn, checkfirst=True)
    pending_table.create(conn, checkfirst=True)


MIGRATIONS = {1: _migrate_1_to_2}


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets searches read a consistent snapshot while an index run writes.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def blob(vector: np.ndarray) -> bytes:
    """A vector as the catalog stores it: float32 bytes."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
