"""The SQL catalog: what files a collection holds and what became of each.

SQLAlchemy Core with portable types only, so the same schema runs on SQLite (the
default, one file per collection) and PostgreSQL. Catalog image ids are the FAISS
ids, so an image keeps its id across moves and re-embeds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
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

SCHEMA_VERSION = 1

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
    Column("path", String(4096), primary_key=True),
)

images_table = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(4096), nullable=False, unique=True),
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

OK = "ok"
FAILED = "failed"


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
        metadata.create_all(self.engine)
        self._check_version()

    def _check_version(self) -> None:
        with self.engine.begin() as conn:
            found = read_meta(conn, "schema_version")
            if found is None:
                write_meta(conn, "schema_version", str(SCHEMA_VERSION))
            elif int(found) > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"this collection was written by a newer searchengine (schema {found}, "
                    f"this release reads up to {SCHEMA_VERSION}); upgrade searchengine"
                )

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
            return set(conn.scalars(query))

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
