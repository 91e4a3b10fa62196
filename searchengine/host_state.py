"""What one host's index file holds when the catalog is shared (on a database server).

Each host keeps its own ``vectors.faiss``, a cache of the shared catalog's vectors
(``store.py`` explains the scheme). Beside it, ``vectors.state.json`` records the
newest batch and the vector count the file holds, and the identity of the catalog it
was made for. The identity matters because a removed collection can be made again
under the same name: its image ids start from 1 again, for other photos, so a file
made for the old catalog must never be taken for one of the new (``docs/scale.md``).

Reading the catalog's identity and newest batch is also where a reader learns that
the collection was removed while it was open (its schema is gone).
"""

from __future__ import annotations

import json
from pathlib import Path

from searchengine.catalog import Catalog, read_meta
from searchengine.catalog_errors import schema_gone
from searchengine.errors import CollectionNotFoundError
from searchengine.fsutil import atomic_write
from searchengine.values import MetaKey

__all__ = ["STATE_FILE", "catalog_version", "read_state", "recorded_file", "write_state"]

STATE_FILE = "vectors.state.json"


def read_state(folder: Path) -> tuple[int, int | None, str | None]:
    """(batch, vector count, catalog identity) recorded for the folder's index file;
    ``(0, None, None)`` if unknown (the whole catalog is then replayed).

    A file or a catalog from before catalogs had an identity has none: it is trusted,
    as it was.
    """
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        return int(state["batch"]), int(state["vectors"]), state.get("catalog")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return 0, None, None


def write_state(
    folder: Path, batch: int, count: int, catalog_id: str | None, file: str | None = None
) -> None:
    """Record what the index file just saved in ``folder`` holds (after the file), and
    the file as it was written (``file``: ``Store`` tells a replaced file by it)."""
    state: dict[str, int | str] = {"batch": batch, "vectors": count}
    if catalog_id is not None:
        state["catalog"] = catalog_id
    if file is not None:
        state["file"] = file
    with atomic_write(folder / STATE_FILE, durable=True) as handle:
        handle.write(json.dumps(state).encode())


def recorded_file(folder: Path) -> str | None:
    """The index file in ``folder`` as ``write_state`` last recorded it, if it did."""
    try:
        file = json.loads((folder / STATE_FILE).read_text()).get("file")
    except (OSError, ValueError, AttributeError):
        return None
    return file if isinstance(file, str) else None


def catalog_version(catalog: Catalog, name: str) -> tuple[str | None, int]:
    """A shared catalog's identity and newest batch, read together.

    Raises:
        CollectionNotFoundError: collection ``name`` was removed (its schema is gone)
            since it was opened, from this host or another.
    """
    try:
        with catalog.engine.connect() as conn:
            catalog_id = read_meta(conn, MetaKey.CATALOG_ID)
            return catalog_id, int(read_meta(conn, MetaKey.LAST_BATCH) or 0)
    except Exception as exc:
        if not schema_gone(exc):
            raise
        location = catalog.location
        raise CollectionNotFoundError(
            f"collection {name!r} was removed from {location.shown} (schema "
            f"{location.schema}) while open; index it again to make a new one"
        ) from None
