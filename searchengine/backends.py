"""Where a collection's catalog lives: a SQLite file in its folder, or a database server.

The catalog tables are the same on every backend (``catalog.py``); this module owns
what differs: how a URL is read, shown and connected to, how collections sharing one
server database are kept apart, and how a failed connection is reported
(``server_catalog.py`` has what a collection does on the server itself: its schema,
its size, the writer lock).

Decisions, with the reasons (``docs/scale.md`` has the measurements):

- **One PostgreSQL schema per collection** (``se_<name>``), chosen by the connection's
  ``search_path``. Every table, index and unique constraint is then per collection by
  construction, with no collection column to forget in a query or a constraint, and
  the same SQL (including the raw-cursor fast paths) runs on SQLite and PostgreSQL.
  Dropping a collection is ``DROP SCHEMA … CASCADE``; a read-only role is granted one
  schema.
- **The folder records where its catalog lives** (``catalog.json``: backend, URL
  without the password, schema). Opening the collection with another URL is refused
  instead of reading some other catalog; opening it with no URL uses the recorded
  one (the password then comes from libpq: ``PGPASSWORD`` or ``~/.pgpass``).
- **Every connection failure is one line** (``CatalogUnavailableError``): a missing
  driver, a refused connection, a wrong password, a missing database
  (``catalog_errors.py`` words them).
- **A server that does not answer is given up on** after ``CONNECT_TIMEOUT_S`` (libpq's
  ``connect_timeout``; the URL's own ``?connect_timeout=`` wins): libpq waits for ever
  by default, so a stalled server or a black-holed address hung every command.
- **A network that stops carrying packets is noticed** on a connection already open
  (``SOCKET_SETTINGS``: libpq's ``tcp_user_timeout`` and keepalives; the URL's own
  win): a firewall or NAT that drops an idle connection silently, or a partition,
  left a web server's next search waiting ~15 min for the kernel to give up.
- **A server that stops answering while its connections stay open is noticed**
  (``catalog_watch``): a round trip waiting ``STALL_CHECK_S`` has the server checked
  with a new connection, and is cut when that gets no answer.
- **A statement waits for a table lock at most** ``LOCK_TIMEOUT_S`` (the server's
  ``lock_timeout``; the URL's ``?options=-c lock_timeout=…`` wins): a table locked by
  maintenance (``VACUUM FULL``, ``ALTER TABLE``) hung every search on every host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchengine.config import CATALOG_FILE, LOCATION_FILE, collection_command
from searchengine.errors import CatalogUnavailableError, CollectionError, ConfigError
from searchengine.fsutil import atomic_write

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

SCHEMA_RE = re.compile(r"^[a-z0-9_]+$")  # a collection schema's name, never quoted
CONNECT_TIMEOUT_S = 10  # libpq's connect_timeout, unless the URL sets it
# How an open connection finds out that the network between it and the server is gone
# (libpq's settings; the URL's own win): data unacknowledged for 10 s ends it, and so do
# three unanswered probes 5 s apart after 10 s without a word from the server. Linux's
# defaults are ~15 min of retransmission and probes after 2 h.
SOCKET_SETTINGS = {
    "tcp_user_timeout": 10_000,  # ms
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
LOCK_TIMEOUT_S = 30  # the server's lock_timeout, unless the URL's options set it
# A web server's: its searches queue for one worker, so each waiting the 30 s of a
# command held the ones behind it for minutes, and its health check too.
SERVE_LOCK_TIMEOUT_S = 3
# A pooler in front of the server that refuses libpq's options, or drops them.
POOLER = (
    "a connection pooler such as PgBouncer in front of the server does not pass "
    "libpq's options, which keep each collection in a schema of its own and bound its "
    "waits; connect to the PostgreSQL server directly"
)
_MISSING_DRIVER = (
    "the PostgreSQL catalog needs the postgres extra: pip install 'searchengine[postgres]'"
)


@dataclass(frozen=True)
class CatalogLocation:
    """A catalog's address: the SQLAlchemy URL and, on a server, the collection's schema.

    Attributes:
        url: the URL to connect with (it may hold a password: never print it, use
            ``shown``).
        schema: the PostgreSQL schema holding the collection's tables; ``None`` for
            SQLite, where the file is the collection's own.
        lock_timeout_s: on a server, how long a statement waits for a table lock
            another session holds (unless the URL's options set ``lock_timeout``).
    """

    url: str
    schema: str | None = None
    lock_timeout_s: float = LOCK_TIMEOUT_S

    @property
    def backend(self) -> str:
        return self.url.split(":", 1)[0].split("+", 1)[0]

    @property
    def shared(self) -> bool:
        """Whether the catalog lives on a server that other hosts may reach."""
        return self.backend != SQLITE

    @property
    def sqlite_file(self) -> Path | None:
        """The catalog's file, for a SQLite catalog."""
        if self.backend != SQLITE:
            return None
        from sqlalchemy.engine import make_url

        name = make_url(self.url).database
        return Path(name) if name and name != ":memory:" else None

    @property
    def shown(self) -> str:
        """The URL with its password replaced by ``***``."""
        return redact(self.url)

    def record(self) -> dict[str, str | None]:
        """What ``catalog.json`` holds: enough to find the catalog again, no password."""
        return {"backend": self.backend, "url": _without_password(self.url), "schema": self.schema}


def sqlite_location(folder: Path) -> CatalogLocation:
    """The catalog file inside a collection's folder."""
    return CatalogLocation(f"sqlite:///{(folder / CATALOG_FILE).resolve()}")


def server_location(url: str, collection: str) -> CatalogLocation:
    """A collection's catalog in a server database given by ``url``.

    ``postgresql://`` means psycopg (version 3), the driver the ``postgres`` extra
    installs. A SQLite URL names one file, which holds one collection as it is.

    Raises:
        ConfigError: the URL cannot be read, or names a backend other than SQLite or
            PostgreSQL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "--database-url / SEARCHENGINE_DATABASE_URL is not a database URL; "
            "expected postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    backend = parsed.get_backend_name()
    if backend == SQLITE:
        return CatalogLocation(url)
    if backend != POSTGRESQL:
        raise ConfigError(
            f"unsupported catalog database {backend!r} in {redact(url)}; use postgresql:// "
            "(or leave the URL out for a SQLite file in the collection's folder)"
        )
    if parsed.drivername == POSTGRESQL:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return CatalogLocation(parsed.render_as_string(hide_password=False), schema_name(collection))


def schema_name(collection: str) -> str:
    """The PostgreSQL schema of a collection: ``se_`` and its name, kept readable.

    Names that are not already lower-case letters, digits and ``_`` (or too long for a
    PostgreSQL identifier) get a hash of the exact name appended, so ``Trip``,
    ``trip`` and ``t.rip`` stay three schemas.
    """
    plain = "se_" + collection
    if SCHEMA_RE.match(plain) and len(plain) <= 63:
        return plain
    digest = hashlib.blake2b(collection.encode(), digest_size=4).hexdigest()
    readable = re.sub(r"[^a-z0-9_]", "_", collection.lower())[:48]
    return f"se_{readable}_{digest}"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and ``status``)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show its scheme only
        return url.split("://", 1)[0] + "://…" if "://" in url else "…"


def _without_password(url: str) -> str:
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)  # (URL.set treats password=None as "unchanged")
    bare = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
    return bare.render_as_string(hide_password=False)


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database (drivers and passwords aside)."""
    from sqlalchemy.engine import make_url

    def key(url: str) -> tuple[Any, ...]:
        u = make_url(url)
        return (u.get_backend_name(), u.username, u.host, u.port, u.database)

    return key(a) == key(b)


# -- the collection folder's note ------------------------------------------------------
def read_location(folder: Path) -> dict[str, Any] | None:
    """What ``catalog.json`` in a collection's folder says, or None if there is none."""
    try:
        data = json.loads((folder / LOCATION_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CollectionError(f"cannot read {folder / LOCATION_FILE}: {exc}") from None
    return data if isinstance(data, dict) else None


def write_location(folder: Path, location: CatalogLocation) -> None:
    with atomic_write(folder / LOCATION_FILE) as handle:
        handle.write(json.dumps(location.record(), indent=2).encode() + b"\n")


# -- choosing ------------------------------------------------------------------------
def locate(name: str, folder: Path, url: str | None) -> CatalogLocation:
    """Where collection ``name`` (in ``folder``) keeps its catalog, given a database URL.

    Without a URL, a folder whose ``catalog.json`` names a server uses that server;
    otherwise the catalog is the folder's SQLite file.

    Raises:
        CollectionError: the URL is not where this collection's catalog was made.
        ConfigError: the URL cannot be used.
    """
    recorded = read_location(folder)
    if url is None:
        if recorded is None or recorded.get("backend") == SQLITE:
            return sqlite_location(folder)
        url = str(recorded["url"])  # the password, if any, comes from PGPASSWORD/.pgpass
    location = server_location(url, name)
    if not location.shared:
        raise ConfigError(
            "a SQLite catalog lives in its collection's folder; leave out --database-url "
            "(and SEARCHENGINE_DATABASE_URL), or give a postgresql:// URL"
        )
    if (folder / CATALOG_FILE).exists():
        raise CollectionError(
            f"collection {name!r} keeps its catalog in {folder / CATALOG_FILE}, not in "
            f"{location.shown}; leave out --database-url (and SEARCHENGINE_DATABASE_URL) "
            "to use it, or choose another --collection name"
        )
    if recorded is not None and (
        not same_database(str(recorded.get("url")), location.url)
        or recorded.get("schema") != location.schema
    ):
        raise CollectionError(
            f"collection {name!r} in {folder} keeps its catalog in {recorded.get('url')}, "
            f"not in {location.shown}; use that URL, or another --collection name (or "
            "--index-dir) for this database; if the catalog has moved there (a failover "
            f"to a standby, a restore onto another server), `"
            f"{collection_command(folder, 'remove')} --local` lets this host open it at "
            "the new URL (its vector index is then built from the catalog: nothing is "
            "embedded again)"
        )
    return location


# -- engines ----------------------------------------------------------------------
def create_catalog_engine(location: CatalogLocation, *, read_only: bool = False) -> Any:
    """A SQLAlchemy engine for ``location`` (no connection is made yet); ``read_only``:
    for a SQLite catalog this process may not write (``writable.sqlite_reader``).

    Raises:
        CatalogUnavailableError: the database driver is not installed.
    """
    import socket  # ~13 ms to import, which a cold search on SQLite need not pay

    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    kwargs: dict[str, Any] = {}
    if read_only and location.sqlite_file is not None:
        from sqlalchemy.pool import NullPool

        from searchengine.writable import sqlite_reader

        file = location.sqlite_file
        # A connection a query: each sees whether the owner is writing now (a -wal).
        return create_engine("sqlite://", creator=lambda: sqlite_reader(file), poolclass=NullPool)
    if location.schema is not None:
        # Every connection sees only this collection's schema; the name is plain
        # [a-z0-9_], so it needs no quoting inside libpq's options.
        app = f"searchengine {os.getpid()}@{socket.gethostname()}"[:63]
        kwargs["connect_args"] = {"options": _options(location), "application_name": app}
        theirs = make_url(location.url).query
        defaults = {"connect_timeout": CONNECT_TIMEOUT_S, **SOCKET_SETTINGS}
        kwargs["connect_args"].update((k, v) for k, v in defaults.items() if k not in theirs)
        # A pooled connection the server ended while it sat idle (idle_session_timeout,
        # a restart) is replaced when it is taken, not failed on: one round trip.
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(location.url, **kwargs)
    except ModuleNotFoundError as exc:
        raise CatalogUnavailableError(f"{_MISSING_DRIVER} ({exc.name} is missing)") from None
    if location.backend == SQLITE:
        event.listen(engine, "connect", _sqlite_pragmas)
    elif location.schema is not None:
        event.listen(engine, "connect", lambda conn, _record: _check_schema(conn, location))
        if engine.dialect.driver == "psycopg":
            event.listen(engine, "do_connect", _watched_connect)
    return engine


def _watched_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect through ``catalog_watch``: a server whose processes stop answering while
    its connections stay open ends a statement in seconds, not never."""
    from searchengine.catalog_watch import connect

    return connect(tuple(cargs), dict(cparams))


def _options(location: CatalogLocation) -> str:
    """libpq's ``options`` for a server catalog: the lock time-out, then the URL's own
    ``?options=`` (which would otherwise be replaced, not added to), then the schema,
    last, so that nothing in a URL points a collection at another one's tables."""
    from sqlalchemy.engine import make_url

    theirs = make_url(location.url).query.get("options", "")
    theirs = " ".join(theirs) if isinstance(theirs, tuple) else theirs
    wait = f"{round(location.lock_timeout_s * 1000)}ms"
    return f"-c lock_timeout={wait} {theirs} -c search_path={location.schema}"


def _check_schema(dbapi_conn: Any, location: CatalogLocation) -> None:
    """Refuse a session that is not in the collection's schema alone: a connection
    pooler in front of the server (PgBouncer's ``ignore_startup_parameters = options``)
    drops libpq's ``options``, and every collection's tables would then be made, read
    and dropped in one shared schema. One round trip, once a connection."""
    with dbapi_conn.cursor() as cursor:
        cursor.execute("SELECT current_setting('search_path')")
        (path,) = cursor.fetchone()
    dbapi_conn.rollback()
    if path != location.schema:
        raise CatalogUnavailableError(
            f"cannot use the catalog database {location.shown}: its sessions do not keep "
            f"the collection's settings (search_path is {path!r}, not {location.schema!r}): "
            f"{POOLER}"
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets searches read a consistent snapshot while an index run writes.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
