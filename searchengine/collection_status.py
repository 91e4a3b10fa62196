"""What ``searchengine status`` and ``/api/status`` show of a collection."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from searchengine.catalog import OK
from searchengine.config import CATALOG_FILE
from searchengine.errors import DamagedIndexError
from searchengine.fsutil import display_path
from searchengine.ingest.awaiting import waiting
from searchengine.precision import FP32, describe
from searchengine.schema import SCHEMA_VERSION
from searchengine.values import MetaKey

if TYPE_CHECKING:
    from searchengine.collection import Collection


@dataclass(frozen=True)
class CollectionStatus:
    """What ``searchengine status`` shows (and the HTTP API's ``/api/status``)."""

    name: str
    folder: str
    model: str
    dim: int | None
    index_type: str
    images: int
    failed: int
    vectors: int
    size_bytes: int
    roots: list[str]
    schema_version: int
    accelerator: str | None = None  # fast-scan index that answers queries first, if any
    backend: str = "sqlite"  # where the catalog lives: sqlite or postgresql
    catalog: str = ""  # the catalog's file or URL (password hidden)
    catalog_bytes: int = 0  # the catalog's size (counted in size_bytes too)
    precision: str = FP32  # the image tower the vectors came from
    precision_check: str | None = None  # what the int8 tower's check measured, if asked for
    read_only: str | None = None  # why this process may not write it (it can be searched)
    # What is wrong with a folder in ``roots``, by folder: "not there: photos kept" (a
    # drive unplugged), "= OTHER: photos listed twice" (another folder's other name).
    folder_notes: dict[str, str] = field(default_factory=dict)
    damaged: str | None = None  # why the vector index file cannot be read, if it cannot
    exclude: list[str] = field(default_factory=list)  # what walks of ``roots`` leave out
    # Failed files that an optional decoder would read, by the extra that installs it
    # ("raw": 3): the next ``index`` after it is installed reads them again.
    waiting: dict[str, int] = field(default_factory=dict)
    # Photos indexed whose decoder had something to say: a RAW file cut short in its
    # sensor data (indexed from the camera's preview), corrupt EXIF, a truncated PNG.
    warned: int = 0

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def collection_status(collection: Collection) -> CollectionStatus:
    """``collection``'s status, read from its catalog and index (the index is loaded
    if it was built)."""
    counts, warned = collection.catalog.counts_and_warned()
    files = collection.folder.iterdir() if collection.folder.exists() else iter(())
    size = sum(p.stat().st_size for p in files if p.is_file())
    location = collection.catalog.location
    catalog_bytes = collection.catalog.size_bytes()
    if location.shared:  # not in the folder: count it as well
        size += catalog_bytes
    # A host sharing a server catalog builds its index from it even without a file.
    built = collection.index_path.exists() or (location.shared and collection.store.dim is not None)
    index, damaged = None, None
    try:
        index = collection.vectors() if built else None
    except DamagedIndexError as exc:  # status is where a user looks for what is wrong
        damaged = str(exc)
    schema = collection.catalog.get_meta(MetaKey.SCHEMA_VERSION)
    failed = sum(n for s, n in counts.items() if s != OK)
    roots = collection.catalog.roots()
    return CollectionStatus(
        name=collection.name,
        folder=str(collection.folder.resolve()),
        model=collection.model,
        dim=collection.store.dim,
        index_type=collection.store.index_type() if damaged is None else "-",
        images=counts.get(OK, 0),
        failed=failed,
        vectors=0 if index is None else len(index),
        size_bytes=size,
        roots=roots,
        schema_version=int(schema or SCHEMA_VERSION),
        accelerator=None if index is None else index.accelerator,
        backend=location.backend,
        catalog=location.shown if location.shared else str(collection.folder / CATALOG_FILE),
        catalog_bytes=catalog_bytes,
        precision=collection.precision,
        precision_check=describe(collection.precision_check)
        if collection.precision_check
        else None,
        read_only=collection.catalog.read_only,
        folder_notes=folder_notes(roots),
        damaged=damaged,
        exclude=collection.exclusions(),
        waiting=waiting(collection.catalog) if failed else {},
        warned=warned,
    )


def folder_notes(roots: list[str]) -> dict[str, str]:
    """What ``status`` says of a collection's folders that are not as they should be."""
    from searchengine.folders import aliases

    twice = aliases(roots)
    notes = {}
    for folder in roots:
        if not os.path.exists(folder):
            notes[folder] = "not there: photos kept"
        elif folder in twice:
            notes[folder] = f"= {display_path(twice[folder])}: photos listed twice"
    return notes
