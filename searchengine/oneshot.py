"""A one-shot search without the SQL layer: what a cold ``searchengine search`` runs.

A search from the command line starts a process, answers one query and ends. Its
answer needs a few rows of the catalog, yet opening the catalog the usual way
(``Collection``) imports SQLAlchemy first: ~0.17 s of CPU, a third of what a
cold search costs on two cores. For the everyday query (words or example images,
scored by the collection's own model, on a SQLite catalog) and for ``similar`` (an
example image or a part of one), ``OneShot`` reads those rows with the standard
library's ``sqlite3`` instead, read-only, and runs the same ``Ranker`` as every
other caller, so its answers are the same. Anything else goes the full way through
``Collection``: filters and another reranking model (SQL queries), captions, a
database server, a catalog of another schema version, a collection not indexed yet,
and ``--refresh`` when a file did change (a write).
``search --refresh`` with nothing changed on disk (the ingest plan, made from the
same stat-only walk, finds nothing to do) is a one-shot search too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from searchengine.config import CATALOG_FILE, INDEX_FILE, LOCATION_FILE, Config
from searchengine.ingest.awaiting import decoder_awaited
from searchengine.ingest.exclude import saved_exclusions
from searchengine.ingest.plan import plan
from searchengine.ingest.scan import missing_codecs_note
from searchengine.models.base import Encoder
from searchengine.ranking import (
    Calibration,
    Filters,
    ImageVectors,
    Query,
    Ranker,
    SearchResult,
    Term,
    calibrate,
    query_terms,
)
from searchengine.rows import ImageRecord, path_from_db, path_key
from searchengine.values import MetaKey
from searchengine.vectors import FaissIndex
from searchengine.writable import sqlite_reader

READS_SCHEMA = 3  # the catalog schema these queries read (``schema.SCHEMA_VERSION``)
_COLUMNS = (
    "id, path, size, mtime_ns, content_hash, width, height, taken_at, status, error, "
    "indexed_at, batch"
)


class SqliteRows:
    """Catalog rows of a SQLite catalog, read-only, through the standard library.

    A ``rows.RowReader``: what ranking reads of a catalog.
    """

    def __init__(self, catalog_file: Path) -> None:
        self._db = sqlite_reader(catalog_file)

    def close(self) -> None:
        self._db.close()

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def get(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        found: dict[int, ImageRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = [int(i) for i in ids[start : start + 500]]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT {_COLUMNS} FROM images WHERE id IN ({marks})"
            for row in self._db.execute(query, chunk):
                found[int(row[0])] = _record(row)
        return found

    def roots(self) -> list[str]:
        return [path_from_db(row[0]) for row in self._db.execute("SELECT path FROM roots")]

    def file_states(self) -> dict[str, tuple[int, int, int]]:
        """``path -> (id, size, mtime_ns)`` of every row, as ``Catalog.file_states``."""
        rows = self._db.execute("SELECT path, id, size, mtime_ns FROM images")
        return {path_from_db(path): (i, size, mtime) for path, i, size, mtime in rows}

    def by_path(self, path: str) -> ImageRecord | None:
        query = f"SELECT {_COLUMNS} FROM images WHERE path_hash = ?"
        row = self._db.execute(query, (path_key(path),)).fetchone()
        return None if row is None else _record(row)


def _changed(rows: SqliteRows) -> tuple[bool, list[str]]:
    """Whether indexing the collection's folders now would change anything (including
    replaying batches a killed run committed but did not save in the index file), and
    what such a run would say even so (photos this installation cannot read)."""
    roots = rows.roots()
    if not roots or rows.meta(MetaKey.LAST_BATCH) != rows.meta(MetaKey.INDEX_BATCH):
        return True, []  # the full path refreshes, or says what is wrong
    if decoder_awaited(rows.meta(MetaKey.AWAITING)):
        return True, []  # failed files wait for a decoder that is there now
    diff = plan(rows.file_states(), roots, exclusions=saved_exclusions(rows.meta))
    note = missing_codecs_note(diff.unreadable)
    return bool(diff.candidates or diff.missing or diff.excluded), [note] if note else []


class Unchanged(NamedTuple):
    """What ``OneShot.update`` found: nothing to index; ``notes`` as ``IndexReport``'s."""

    notes: list[str]


def _record(row: tuple[Any, ...]) -> ImageRecord:
    values = list(row)
    values[1] = path_from_db(values[1])
    return ImageRecord(*values)


class OneShot:
    """One collection, opened for queries only: its rows, saved index and model.

    Use ``OneShot.open``, which says None wherever the full ``Collection`` is needed.
    """

    def __init__(
        self, rows: SqliteRows, index: FaissIndex, encoder: Encoder, notes: Sequence[str] = ()
    ) -> None:
        self.rows = rows
        self.index = index
        self.encoder = encoder
        self._notes = list(notes)  # what the refresh check found to say

    def calibration(self) -> Calibration | None:
        """The weak-match line ``Collection.calibration`` would use: the stored one when
        it was measured on this index, else measured now (never written: read-only)."""
        stored = Calibration.from_json(self.rows.meta(MetaKey.CALIBRATION))
        if stored is not None and stored.fits(self.encoder.spec, len(self.index)):
            return stored
        return calibrate(self.index, self.encoder)

    @classmethod
    def open(
        cls, config: Config, name: str, encoder: Encoder | None, *, refresh: bool = False
    ) -> OneShot | None:
        """``name``'s rows and index with ``encoder`` (its model, already loaded), or
        None when this collection or this query setup needs the full ``Collection``.

        With ``refresh``, also None when a file under the collection's folders is new,
        changed or gone since it was indexed: ``Collection.update`` has work to do.
        """
        folder = config.home / name
        catalog_file, index_file = folder / CATALOG_FILE, folder / INDEX_FILE
        if encoder is None or config.database_url is not None:
            return None
        if (folder / LOCATION_FILE).exists():
            return None  # its catalog is on a database server
        if not catalog_file.is_file() or not index_file.is_file():
            return None
        try:
            rows = SqliteRows(catalog_file)
            same = (
                rows.meta(MetaKey.SCHEMA_VERSION) == str(READS_SCHEMA)
                and rows.meta(MetaKey.MODEL) == encoder.spec
                and (rows.meta(MetaKey.PRECISION) or "fp32")
                == getattr(encoder, "precision", "fp32")
            )
            notes: list[str] = []
            if same and refresh:
                changed, notes = _changed(rows)
                same = not changed
        except sqlite3.Error:
            return None
        if not same:
            rows.close()
            return None
        return cls(rows, FaissIndex.load(index_file, dim=encoder.dim), encoder, notes)

    def update(self, progress: object = None) -> Unchanged:
        """``Collection.update`` where ``open(refresh=True)`` found nothing to index."""
        return Unchanged(self._notes)

    def vectors(self) -> FaissIndex:
        """The collection's vector index, as ``Collection.vectors``."""
        return self.index

    def close(self) -> None:
        self.rows.close()
        self.encoder.close()

    def __enter__(self) -> OneShot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def search(
        self,
        query: str | Term,
        k: int = 10,
        *,
        plus: Sequence[str | Term] = (),
        minus: Sequence[str | Term] = (),
        rerank: bool | str | Encoder | None = None,
        candidates: int | None = None,
        min_score: float | None = None,
        filters: Filters | None = None,
        sort: str = "relevance",
        caption: str | bool | None = None,
    ) -> list[SearchResult]:
        """``Collection.search``, for what a one-shot search serves (see the module).

        Raises:
            ValueError: filters, captions or another reranking model were asked for.
        """
        if (
            (filters is not None and filters.active)
            or caption
            or not isinstance(rerank, bool | None)
        ):
            raise ValueError("filters, captions and other reranking models need a Collection")
        prepared = Query(
            tuple(query_terms(query, plus, minus)),
            k,
            rerank=bool(rerank),
            candidates=candidates,
            min_score=min_score,
            sort=sort,
        )
        return self._rank(prepared)

    def similar(
        self,
        image: str | Path,
        k: int = 10,
        *,
        region: tuple[int, int, int, int] | None = None,
        region_method: str = "falip",
    ) -> list[SearchResult]:
        """``Collection.similar``: images like an example image or a part of it."""
        from searchengine.region import similar_term

        term, exclude = similar_term(
            image, region, region_method, self.rows, self.index, self.encoder
        )
        return self._rank(Query((term,), k, exclude=exclude, clip_score=False))

    def _rank(self, query: Query) -> list[SearchResult]:
        scorer = ImageVectors(None, self.encoder, index=self.index)
        ranker = Ranker(self.rows, self.index, self.encoder, scorer, self.calibration())
        return ranker.run(query).results
