"""How a catalog database that fails is told: one line for each way it fails.

A server that cannot be reached, refuses (wrong password, missing database, a
read-only role writing) or keeps a table locked too long, a disk that fills, and a
SQLite catalog file that is damaged each become one ``SearchEngineError`` (or a
command's line, ``command_problem``) with what to do, instead of a driver's traceback.
The SQLSTATE tests name the server conditions other modules act on.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from searchengine.backends import LOCK_TIMEOUT_S, POOLER, SERVE_LOCK_TIMEOUT_S
from searchengine.config import collection_command
from searchengine.errors import CatalogUnavailableError, NoSpaceError
from searchengine.writable import no_space_error, no_space_message

if TYPE_CHECKING:
    from searchengine.backends import CatalogLocation

# SQLite's result codes for a file that is not a whole database (cut short, overwritten).
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


@contextmanager
def reaching(location: CatalogLocation) -> Iterator[None]:
    """Turn a failure to reach or use the catalog's database into one clear line."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    try:
        yield
    except DBAPIError as exc:
        if (damaged := damaged_catalog(location, exc)) is not None:
            raise CatalogUnavailableError(damaged) from None
        if no_space_error(exc):
            folder = location.sqlite_file.parent if location.sqlite_file else Path.cwd()
            raise NoSpaceError(no_space_message(exc, folder, "collections")) from None
        if not isinstance(exc, (OperationalError, InterfaceError)) and not refused(exc):
            raise
        raise CatalogUnavailableError(connection_problem(location.shown, exc)) from None


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE code of a database error from the server (psycopg), if any."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def refused(exc: BaseException) -> bool:
    """Whether a database error is a write the server refuses this session: a read-only
    role's, or any on a server that takes no writes (``read_only_server``)."""
    return _sqlstate(exc) == "42501" or read_only_server(exc)


def read_only_server(exc: BaseException) -> bool:
    """Whether a database error is a write to a server that takes none: a standby (a
    replica of the primary), or a database with ``default_transaction_read_only``."""
    return _sqlstate(exc) == "25006"  # read_only_sql_transaction


def schema_gone(exc: BaseException) -> bool:
    """Whether a database error says a table is missing: on a server, the collection's
    schema was dropped (the collection removed) while it was open."""
    return _sqlstate(exc) == "42P01"


def lock_timed_out(exc: BaseException) -> bool:
    """Whether a statement gave up waiting for a lock another session held (the
    server's ``lock_timeout``, ``backends.LOCK_TIMEOUT_S`` unless the URL sets one)."""
    return _sqlstate(exc) == "55P03"  # lock_not_available


def statement_timed_out(exc: BaseException) -> bool:
    """Whether the server cancelled a statement at its ``statement_timeout`` (one an
    administrator set for the database or role; the product sets none)."""
    original = getattr(exc, "orig", None) or exc
    return _sqlstate(exc) == "57014" and "statement timeout" in str(original)


def no_connection_free(text: str) -> bool:
    """Whether the server turned a new connection away because its connection limits
    are reached: the role's or the database's ``CONNECTION LIMIT``, or its
    ``max_connections`` (a refusal at login carries no SQLSTATE, only the text)."""
    return "too many connections for" in text or "too many clients already" in text


def key_too_long(exc: BaseException) -> bool:
    """Whether a database error is PostgreSQL's limit on a B-tree key (~2,700 bytes)."""
    return _sqlstate(exc) == "54000"  # program_limit_exceeded


def connection_problem(shown: str | None, exc: BaseException) -> str:
    """One line for a database error: the server's first line, and what to check."""
    original = getattr(exc, "orig", None) or exc
    text = " ".join(str(original).split())
    text = re.sub(r"^connection failed: ", "", text)
    if len(text) > 240:
        text = text[:237] + "…"
    where = f"the catalog database {shown}" if shown else "the catalog database"
    if isinstance(original, sqlite3.Error):  # the collection's own file: no server
        return f"cannot use {where}: {text} (check the collection's folder and its disk)"
    if _sqlstate(exc) == "42501":  # insufficient_privilege: the role, not the server
        return (
            f"cannot use {where}: {text}: this database role may not do that; to index, "
            "a role needs its collection's schema (an administrator runs CREATE SCHEMA "
            "se_<collection> AUTHORIZATION <role>, or grants it CREATE on the database), "
            "and a role that only searches needs SELECT on that schema's tables"
        )
    if read_only_server(exc):
        return (
            f"cannot use {where}: {text}: the server takes no writes (a standby, i.e. a "
            "replica of the primary, or default_transaction_read_only is on); run index "
            "and remove against the primary server (searches may use a standby)"
        )
    if lock_timed_out(exc):
        return (
            f"cannot use {where}: another session held a lock on the collection's tables "
            f"for longer than the lock time-out ({LOCK_TIMEOUT_S} s, {SERVE_LOCK_TIMEOUT_S} s "
            "in a web server, unless the URL sets one): maintenance such as VACUUM FULL, "
            "ALTER TABLE or REINDEX, or the "
            "collection being removed; try again once it is done (to wait longer, add "
            "?options=-c%20lock_timeout%3D5min to the URL)"
        )
    if statement_timed_out(exc):
        return (
            f"cannot use {where}: {text}: the server's statement_timeout (set for this "
            "database or role by its administrator) ended a statement that ran, or waited "
            "for another session's lock, longer; on a large collection some of the "
            "catalog's statements take longer than a short limit. Raise it for this role "
            "(ALTER ROLE <role> SET statement_timeout = '10min'), or lift it for "
            "searchengine alone: add ?options=-c%20statement_timeout%3D0 to the URL"
        )
    if no_connection_free(text):
        return (
            f"cannot use {where}: {text}: the server has no connection free for this role "
            "or database (its connection limit, or max_connections, is reached by other "
            "sessions: other hosts' commands and web servers); try again once fewer are "
            "open, or ask its administrator to raise the limit"
        )
    if "unsupported startup parameter: options" in text:  # PgBouncer's own refusal
        return f"cannot use {where}: {text}: {POOLER}"
    if "timeout expired" in text:  # ``backends.CONNECT_TIMEOUT_S``, or the URL's own
        return (
            f"cannot use {where}: {text}: the server did not answer (check that it is up "
            "and reachable; to wait longer, add ?connect_timeout=SECONDS to the URL)"
        )
    return (
        f"cannot use {where}: {text} "
        "(check --database-url / SEARCHENGINE_DATABASE_URL and that the server is up)"
    )


def damaged_catalog(location: CatalogLocation | None, exc: BaseException) -> str | None:
    """One line for a SQLite catalog file that is damaged, or None for other errors."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlite_errorcode", None) not in _DAMAGED:
        return None
    file = None if location is None else location.sqlite_file
    if file is None:
        return (
            f"the collection's catalog is damaged ({original}); restore the collection's "
            "folder from a backup, or remove the collection and index its folders again"
        )
    return (
        f"the catalog {file} is damaged ({original}); restore the collection's folder "
        f"from a backup, or remove it (`{collection_command(file.parent, 'remove')}`) and "
        "index its folders again; the photos are untouched"
    )


def command_problem(exc: BaseException, resumes: bool = False) -> str | None:
    """A command's one line for a database error (a lost or locked server, a refused
    privilege, a damaged SQLite file), or None for an error that is not one of those.
    ``resumes``: the command keeps what it committed (``index``), and says so."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if (damaged := damaged_catalog(None, exc)) is not None:
        return damaged
    if not isinstance(exc, (OperationalError, InterfaceError)) and not refused(exc):
        return None
    line = connection_problem(None, exc)
    if not resumes or refused(exc) or isinstance(getattr(exc, "orig", None), sqlite3.Error):
        return line  # nothing to wait for: a refused privilege, the collection's own file
    if lock_timed_out(exc):  # the line already says when: once the other session is done
        return line + "; what was committed is kept"
    return line + "; what was committed is kept: run the same command again once it is up"
