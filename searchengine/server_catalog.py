"""A collection's catalog on a PostgreSQL server: its schema, its size, its writer lock.

``backends.py`` chooses and connects to the database; this module holds what a
collection then does in it, beside its tables.

- **The writer lock is a PostgreSQL advisory lock** keyed on the collection's schema,
  taken on a connection held for the whole run: any host asking for it is refused
  while it is held, and the server drops it with the session when the writer dies.
- **A schema is made and dropped under an advisory lock of its own**, so two hosts
  making one collection at once do not race, and a drop waits for a search on another
  host for at most 30 s.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any

from searchengine.backends import SCHEMA_RE, CatalogLocation
from searchengine.catalog_errors import reaching
from searchengine.errors import CollectionLockedError

# PostgreSQL advisory locks of this application: the first key names the purpose,
# the second the collection (a 31-bit hash of its schema name).
_WRITER_LOCK = 0x5EA2C4
_SCHEMA_LOCK = 0x5EA2C5


def ensure_schema(conn: Any, schema: str) -> None:
    """Create a collection's schema if missing, serialised with other hosts doing so."""
    from sqlalchemy import text

    conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), _keys(_SCHEMA_LOCK, schema))
    if not schema_exists(conn, schema):  # a role may write a schema made for it by others
        conn.execute(text(f"CREATE SCHEMA {schema}"))


def drop_schema(conn: Any, schema: str) -> None:
    """Drop a collection's schema and everything in it (nothing if it is already gone)."""
    from sqlalchemy import text

    if not SCHEMA_RE.match(schema):  # never quoted into SQL otherwise
        raise ValueError(f"not a collection schema: {schema!r}")
    # A search on another host may hold a table for a moment; a stuck one must not
    # hang the removal: the drop then fails with the server's "lock timeout".
    conn.execute(text("SET LOCAL lock_timeout = '30s'"))
    conn.execute(text("SELECT pg_advisory_xact_lock(:a, :b)"), _keys(_SCHEMA_LOCK, schema))
    conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def schema_exists(conn: Any, schema: str) -> bool:
    from sqlalchemy import text

    query = text("SELECT 1 FROM pg_namespace WHERE nspname = :s")
    return conn.scalar(query, {"s": schema}) is not None


def catalog_bytes(conn: Any, location: CatalogLocation) -> int:
    """The size of a server catalog's tables, with their indexes and TOAST data."""
    from sqlalchemy import text

    query = text(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :s AND c.relkind = 'r'"
    )
    return int(conn.scalar(query, {"s": location.schema}) or 0)


def _keys(purpose: int, schema: str) -> dict[str, int]:
    digest = hashlib.blake2b(schema.encode(), digest_size=4).digest()
    return {"a": purpose, "b": int.from_bytes(digest, "big") & 0x7FFFFFFF}


class DatabaseLock:
    """The writer lock of a collection whose catalog is on a server: every host sees it.

    A session-level advisory lock on a connection of its own, in autocommit (so the
    run never holds a transaction open). The server releases it when that session
    ends, which is also when a killed writer's connection drops. The session may also
    end under a live run: a server's ``idle_session_timeout`` ended it two seconds in
    (the connection is idle while photos are embedded), and a second writer on another
    host then started beside the first. So the session opts out of that time-out, and
    ``check`` runs before each batch commits: a run whose session ended stops there.
    """

    def __init__(self, engine: Any, location: CatalogLocation) -> None:
        assert location.schema is not None
        self._engine = engine
        self._location = location
        self._keys = _keys(_WRITER_LOCK, location.schema)
        self._conn: Any = None

    def acquire(self) -> bool:
        """Take the lock; False at once if another session (on any host) holds it."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        with reaching(self._location):
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = conn.scalar(text("SELECT pg_try_advisory_lock(:a, :b)"), self._keys)
            except BaseException:
                conn.close()
                raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        with contextlib.suppress(DBAPIError):  # PostgreSQL 14 and later have it
            conn.execute(text("SET idle_session_timeout = 0"))
        return True

    def check(self) -> None:
        """Raise ``CollectionLockedError`` if the session holding the lock has ended
        (an administrator's ``pg_terminate_backend``, a server time-out, a connection
        dropped on the way): the server has released the lock, and another host may be
        writing. One round trip; it keeps the session busy, too."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        try:
            self._conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            said = (str(exc.orig).strip().splitlines() or ["it is gone"])[0]
            raise CollectionLockedError(
                f"this run lost the writer lock of {self._location.schema}: the database "
                f"session that held it ended ({said}), and another host may be writing; "
                "what was committed is kept: run the same command again"
            ) from None

    def holder(self) -> str:
        """Who holds the lock, for messages: ``process PID on HOST`` when it can be seen."""
        from sqlalchemy import text

        query = text(
            "SELECT a.application_name FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.classid = :a AND l.objid = :b AND l.objsubid = 2"
        )
        try:
            with self._engine.connect() as conn:
                name = conn.scalar(query, self._keys)
        except Exception:
            name = None
        match = re.match(r"^searchengine (\d+)@(.+)$", name or "")
        return f"process {match[1]} on {match[2]}" if match else "another process"

    def release(self) -> None:
        if self._conn is None:
            return
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), self._keys)
        except Exception:
            pass  # the connection is gone, and the lock with it
        finally:
            self._conn.close()
            self._conn = None
