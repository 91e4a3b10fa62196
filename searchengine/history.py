"""Batch marks: a host's index of another history of a shared catalog is not used.

A host's index file records the newest batch it holds (``saved_index.py``), and a
reader's index in memory the newest it was caught up to; both then replay only newer
batches from the catalog's log. That trusts a batch number to name the same batch for
ever, and it does not when the catalog goes back in time: restored from a backup, or
a server that lost its last commits in a crash (``synchronous_commit = off``, a
failover to a replica that was behind). The batches written next reuse the numbers,
and the image ids too (the id sequence went back with the rest), for other photos. A
host whose file was ahead would replay nothing, answer queries with the old vectors
under ids that now name other photos, and delete the rows it has no vector for.

So every batch written to a shared catalog gets a random mark, in its transaction. A
host's file (and a reader's index in memory) records the mark of its newest batch and
is used only while the catalog's batch of that number has that mark; otherwise it is
of another history, and the index is built again from the catalog's log, which is of
this one.

The marks table is an addition, not a new schema version: a writer of this release
makes it where it is missing, and any release reads a catalog that has it. An index
recorded without a mark (by an earlier release, or of batches written by one) is
trusted, as it was; so is one whose catalog this role may not read the marks of (a
read-only role granted ``SELECT`` before the table existed: grant it again).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Integer, cast, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from searchengine.catalog import Catalog
from searchengine.catalog_errors import refused, schema_gone
from searchengine.schema import batch_marks_table, meta_table, read_meta
from searchengine.values import MetaKey

__all__ = [
    "UNREADABLE",
    "batch_mark",
    "mark_batch",
    "prepare_marks",
    "read_mark",
    "same_history",
    "still_held",
    "version_query",
]

UNREADABLE = ""  # this role may not read the marks: nothing can be told (a mark is 32 hex)


def prepare_marks(catalog: Catalog) -> bool:
    """Make the marks table where it is missing, and drop the marks of batches past the
    catalog's newest (another history's, where the table was not part of a restored
    backup), for this writer's batches to take their numbers; it holds the write lock.
    Returns whether its batches are marked: a role that may write rows but not make
    tables writes them unmarked, as an earlier release did."""
    try:
        with catalog.engine.begin() as conn:
            batch_marks_table.create(conn, checkfirst=True)
            last = int(read_meta(conn, MetaKey.LAST_BATCH) or 0)
            conn.execute(delete(batch_marks_table).where(batch_marks_table.c.batch > last))
    except DBAPIError as exc:
        if refused(exc):
            return False
        raise
    return True


def mark_batch(conn: Connection, batch: int) -> str:
    """Give batch ``batch`` a new mark, in its own transaction, and return it."""
    mark = uuid.uuid4().hex
    conn.execute(insert(batch_marks_table).values(batch=batch, mark=mark))
    return mark


def batch_mark(conn: Connection, batch: int) -> str | None:
    """The catalog's mark of batch ``batch``: None where the batch has none (no such
    batch, one written by an earlier release, a catalog without the table) and
    ``UNREADABLE`` where this role may not read it. The last statement of ``conn``'s
    transaction: on a server, one that fails ends it."""
    if batch <= 0:
        return None
    query = select(batch_marks_table.c.mark).where(batch_marks_table.c.batch == batch)
    try:
        return conn.scalar(query)
    except DBAPIError as exc:
        if refused(exc):
            return UNREADABLE
        if schema_gone(exc):  # the table is missing (or the collection was just removed)
            return None
        raise


def version_query() -> Select[Any]:
    """The catalog's identity, newest batch and that batch's mark, in one statement.
    It fails where the marks table is missing or unreadable (then ask ``batch_mark``)."""

    def meta(key: str) -> Any:
        return select(meta_table.c.value).where(meta_table.c.key == key).scalar_subquery()

    last = meta(MetaKey.LAST_BATCH)
    marks = batch_marks_table.c
    mark = select(marks.mark).where(marks.batch == cast(last, Integer)).scalar_subquery()
    return select(meta(MetaKey.CATALOG_ID), last, mark)


def read_mark(catalog: Catalog, batch: int) -> str | None:
    """``batch_mark`` in a connection of its own."""
    with catalog.engine.connect() as conn:
        return batch_mark(conn, batch)


def same_history(recorded: str | None, current: str | None) -> bool:
    """Whether an index that recorded mark ``recorded`` for its newest batch is of the
    catalog whose batch of that number has mark ``current`` (``batch_mark``)."""
    return recorded is None or current == UNREADABLE or recorded == current


def still_held(
    catalog: Catalog, held: int, held_mark: str | None, last: int, last_mark: str | None
) -> bool:
    """Whether an index in memory caught up to batch ``held`` (mark ``held_mark``) is
    still of the catalog, whose newest batch is now ``last`` (mark ``last_mark``). One
    caught up to a batch without a readable mark is trusted while the number stands."""
    if not held_mark or last < held:
        return last >= held
    return same_history(held_mark, last_mark if last == held else read_mark(catalog, held))
