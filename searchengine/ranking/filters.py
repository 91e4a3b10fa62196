"""Metadata filters, applied inside the vector search (never after truncating to k)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from searchengine.errors import QueryError
from searchengine.fsutil import folder_prefix, spelled_as_known
from searchengine.values import OK, ORIENTATIONS

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

    from searchengine.catalog import Catalog


@dataclass(frozen=True)
class Filters:
    """Which images a search may return.

    Attributes:
        path: a folder (images under it) or a glob on the full path; a glob that
            does not start with ``/`` or ``*`` matches anywhere (``trip/*.jpg``).
        after: earliest date (POSIX seconds), inclusive. The date is EXIF
            DateTimeOriginal, else the file's modification time.
        before: latest date (POSIX seconds), exclusive.
        min_width: minimum width in pixels (after EXIF orientation).
        min_height: minimum height in pixels.
        orientation: ``landscape``, ``portrait`` or ``square``.
    """

    path: str | None = None
    after: float | None = None
    before: float | None = None
    min_width: int | None = None
    min_height: int | None = None
    orientation: str | None = None

    def __post_init__(self) -> None:
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise QueryError(
                f"unknown orientation {self.orientation!r}; use one of {', '.join(ORIENTATIONS)}"
            )

    @classmethod
    def parse(
        cls,
        *,
        path: str | None = None,
        after: str | None = None,
        before: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        orientation: str | None = None,
    ) -> Filters:
        """Filters from what a user types: dates as ``YYYY[-MM[-DD]]``, a folder or glob.

        Raises:
            QueryError: a date that cannot be read, or a path with control characters.
        """
        if path and not path.isprintable():
            raise QueryError("the folder filter holds control characters; give a folder or glob")
        return cls(
            path=path or None,
            after=parse_date(after) if after else None,
            before=parse_date(before, end=True) if before else None,
            min_width=min_width,
            min_height=min_height,
            orientation=orientation,
        )

    @property
    def active(self) -> bool:
        return any(v is not None for v in self.__dict__.values())


def parse_date(text: str, *, end: bool = False) -> float:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (local time) as POSIX seconds.

    With ``end``, the first second after the period (for an exclusive upper bound).
    """
    parts = text.strip().split("-")
    try:
        nums = [int(p) for p in parts]
        if not 1 <= len(nums) <= 3:
            raise ValueError
        year, month, day = [*nums, 1, 1][:3]
        start = dt.datetime(year, month, day)
    except ValueError:
        raise QueryError(f"cannot read date {text!r}; use YYYY, YYYY-MM or YYYY-MM-DD") from None
    try:
        if end:
            if len(nums) == 1:
                start = start.replace(year=year + 1)
            elif len(nums) == 2:
                start = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            else:
                start += dt.timedelta(days=1)
        return start.timestamp()
    except (ValueError, OverflowError, OSError):
        raise QueryError(f"date {text!r} is out of range") from None


def date_expr() -> ColumnElement[float]:
    """The date a photo is sorted and filtered by: EXIF date, else file mtime."""
    from sqlalchemy import Float, cast, func

    from searchengine.schema import images_table

    mtime = cast(images_table.c.mtime_ns, Float) / 1e9
    return func.coalesce(images_table.c.taken_at, mtime)


def matching_ids(catalog: Catalog, filters: Filters) -> np.ndarray:
    """Ids of ok images passing every filter (SQL for numbers, Python for globs)."""
    # The SQL layer is imported here, not with the module: a query without filters
    # never needs it (``oneshot``).
    from sqlalchemy import and_, select

    from searchengine.schema import images_table

    t = images_table
    conditions = [t.c.status == OK]
    if filters.after is not None:
        conditions.append(date_expr() >= filters.after)
    if filters.before is not None:
        conditions.append(date_expr() < filters.before)
    if filters.min_width is not None:
        conditions.append(t.c.width >= filters.min_width)
    if filters.min_height is not None:
        conditions.append(t.c.height >= filters.min_height)
    if filters.orientation == "landscape":
        conditions.append(t.c.width > t.c.height)
    elif filters.orientation == "portrait":
        conditions.append(t.c.width < t.c.height)
    elif filters.orientation == "square":
        conditions.append(t.c.width == t.c.height)
    match = _path_matcher(filters.path, catalog.roots)
    with catalog.engine.connect() as conn:
        rows = conn.execute(select(t.c.id, t.c.path).where(and_(*conditions)))
        ids = [int(i) for i, p in rows if match(p)]
    return np.asarray(ids, dtype=np.int64)


def _path_matcher(pattern: str | None, roots: Callable[[], list[str]]) -> Callable[[str], bool]:
    if pattern is None:
        return lambda _path: True
    expanded = os.path.expanduser(pattern)
    if os.path.isdir(expanded):
        # A folder named another way (through a link) is the collection's name for it.
        prefix = folder_prefix(spelled_as_known(os.path.abspath(expanded), roots()))
        return lambda path: path.startswith(prefix)
    if not expanded.startswith(("/", "*")):
        expanded = "*/" + expanded
    return lambda path: fnmatch.fnmatchcase(path, expanded)
