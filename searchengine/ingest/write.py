"""Ingest stage 4, write: loaded items and their vectors become catalog rows.

Runs where the store is (the main thread of a local run, the driver of a cluster
run): it decides per file between insert and update, a move that keeps its vector,
a copy that reuses one, a touch, or a failure, writes through ``Store.batch()`` and
keeps the run's ``IndexReport``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from searchengine.batch import Batch
from searchengine.catalog import ImageRecord
from searchengine.errors import ImageError
from searchengine.folders import away_note, unlisted_note, unread_notes
from searchengine.fsutil import under
from searchengine.ingest.load import Failed, Item, Jpeg, Known, Pixels, Unread
from searchengine.ingest.plan import IngestPlan
from searchengine.store import Store
from searchengine.values import FAILED, OK


@dataclass
class IndexReport:
    """What one ``index`` run did."""

    added: int = 0
    updated: int = 0
    moved: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    excluded: int = 0  # rows of files left out by the collection's --exclude patterns
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    # Files whose bytes could not be had now (a share away, a permission): nothing was
    # written for them, so the next run reads them again. (path, why) each.
    unread: list[tuple[str, str]] = field(default_factory=list)
    warned: int = 0  # files indexed whose decoder had something to say (damage, oddities)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    precision: str = "fp32"  # the image tower the collection embeds with
    notes: list[str] = field(default_factory=list)  # one line each, for the user

    @property
    def embedded(self) -> int:
        return self.added + self.updated


class Writer:
    """Applies one run's loaded items to the store, batch by batch.

    Args:
        store: the collection's store, held for writing.
        plan: the run's plan (which rows exist, which files are gone).
    """

    def __init__(self, store: Store, plan: IngestPlan) -> None:
        self.store = store
        self.report = IndexReport(unchanged=plan.unchanged)
        self._known = plan.known
        self._missing = dict(plan.missing)
        self._away = plan.away
        self._unlisted = plan.unlisted
        self._kept = dict(plan.kept)  # rows of folders away: moved from, never removed
        self._excluded = list(plan.excluded.values())
        self._claimed: set[int] = set()
        self._by_hash: dict[str, ImageRecord] = {}
        if plan.candidates:  # an unchanged re-run reads no more of the catalog
            self._by_hash = {
                r.content_hash: r for r in store.catalog.records(OK) if r.content_hash is not None
            }

    @property
    def known_hashes(self) -> frozenset[str]:
        """Contents that already have a vector: loading need not decode them again."""
        return frozenset(self._by_hash)

    def commit(self, items: Sequence[Item], vectors: np.ndarray | None) -> None:
        """Write one batch; ``vectors`` holds the decoded items' vectors, in item order."""
        rows = iter(vectors if vectors is not None else ())
        with self.store.batch() as batch:
            for item in items:
                vector = next(rows) if isinstance(item, (Pixels, Jpeg)) else None
                self._apply(batch, item, vector)

    def remove_missing(self) -> None:
        """Drop the rows whose files are gone (and were not moved) or now left out;
        name folders away and files that could not be read."""
        self.report.notes.extend(unread_notes(self.report.unread))
        shared = self.store.catalog.shared
        for folder, (exists, _) in self._away.items():
            kept = sum(1 for path in self._kept if under(path, folder))
            if kept:  # what did not move elsewhere
                note = away_note(self.store.folder, folder, exists, kept, shared)
                self.report.notes.append(note)
        for path, (why, held) in self._unlisted.items():
            kept = sum(1 for p in self._kept if p == path or under(p, path)) if held else 0
            self.report.notes.append(unlisted_note(path, why, kept))
        ids = list(self._missing.values())
        if not ids and not self._excluded:
            return
        with self.store.batch() as batch:  # every change to the images table is a batch
            batch.remove(ids + self._excluded)
        self.report.removed += len(ids)
        self.report.excluded += len(self._excluded)

    def _apply(self, batch: Batch, item: Item, vector: np.ndarray | None) -> None:
        entry = item.entry
        if isinstance(item, Unread):  # its row, if any, stays as it was
            self.report.unread.append((entry.path, item.reason))
            return
        state = self._known.get(entry.path)
        known_id = None if state is None else state[0]
        base = {"path": entry.path, "size": entry.size, "mtime_ns": entry.mtime_ns}
        if isinstance(item, Failed):
            values = {**base, "content_hash": item.digest, "status": FAILED, "error": item.reason}
            batch.put(known_id, values)
            self.report.failed += 1
            self.report.failures.append((entry.path, item.reason))
            return
        if isinstance(item, Known):
            self._apply_known(batch, item, known_id, base)
            return
        assert vector is not None, "decoded items are written with their vectors"
        meta = {"width": item.width, "height": item.height, "taken_at": item.taken_at}
        note = _warnings(item.warnings) if isinstance(item, Pixels) else None
        if note is not None:
            self.report.warned += 1
            self.report.warnings.append((entry.path, note))
        values = {**base, **meta, "content_hash": item.digest, "status": OK, "error": note}
        image_id = self._put(batch, known_id, values, vector)
        self._by_hash.setdefault(item.digest, _record(image_id, values, batch.number))

    def _apply_known(
        self, batch: Batch, item: Known, known_id: int | None, base: dict[str, Any]
    ) -> None:
        source = self._by_hash[item.digest]
        if known_id == source.id:
            batch.touch(known_id, base)  # touched, same content
            self.report.unchanged += 1
            return
        gone = self._missing.get(source.path, self._kept.get(source.path))
        if known_id is None and gone is not None and source.id not in self._claimed:
            # Renamed or moved: the row (and its vector) follows the file.
            self._claimed.add(source.id)
            self._missing.pop(source.path, None)
            self._kept.pop(source.path, None)
            batch.touch(source.id, base)
            self.report.moved += 1
            return
        vector = batch.vector_of(source.id)
        if vector is None:  # vector lost; cannot happen after reconcile, but be safe
            raise ImageError(f"no stored vector for content of {source.path}")
        meta = {"width": source.width, "height": source.height, "taken_at": source.taken_at}
        values = {**base, **meta, "content_hash": item.digest, "status": OK, "error": None}
        self._put(batch, known_id, values, vector)

    def _put(
        self, batch: Batch, known_id: int | None, values: dict[str, Any], vector: np.ndarray
    ) -> int:
        if known_id is None:
            self.report.added += 1
        else:
            self.report.updated += 1
        return batch.put(known_id, values, vector)


def _warnings(messages: Sequence[str], limit: int = 500) -> str | None:
    """An indexed file's decoder warnings, kept in its row's ``error`` column."""
    if not messages:
        return None
    text = "decoded with warnings: " + "; ".join(messages)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _record(image_id: int, values: dict[str, Any], batch: int) -> ImageRecord:
    return ImageRecord(
        id=image_id,
        path=values["path"],
        size=values["size"],
        mtime_ns=values["mtime_ns"],
        content_hash=values["content_hash"],
        width=values["width"],
        height=values["height"],
        taken_at=values["taken_at"],
        status=values["status"],
        error=values["error"],
        batch=batch,
    )
