"""What a collection leaves out of its folders: the patterns of ``index --exclude``.

A pattern is a shell glob (``*``, ``?``, ``[...]``), matched without regard to case
(``*.tif`` leaves out ``SCAN.TIF``; photo folders mix ``Raw`` and ``RAW``):

- without a ``/``, against the name of every file and folder below a collection's
  folders: ``Raw``, ``*.tif``, ``.thumbnails``, ``*-edited.jpg``;
- with a ``/`` inside, against the path below the collection's folder it was found
  under: ``2019/private``, ``*/exports``;
- starting with ``/``, against the absolute path: ``/home/me/Pictures/Screenshots``.

A folder that matches is not walked at all; a trailing ``/`` is dropped (``Raw/`` is
``Raw``). A folder named to ``index`` itself is walked whatever the patterns say, as
with the folders ``scan.SKIPPED_FOLDERS`` names.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Sequence

from searchengine.errors import ConfigError
from searchengine.fsutil import folder_prefix
from searchengine.values import MetaKey

MAX_PATTERNS = 1000
MAX_PATTERN_LENGTH = 4096


def _normal(pattern: str) -> str:
    """A pattern as it is kept: no surrounding blanks, no trailing ``/`` (``Raw/`` is
    ``Raw``; ``/`` stays ``/``)."""
    stripped = pattern.strip()
    return stripped.rstrip("/") or stripped


def clean_pattern(pattern: str) -> str:
    """``pattern`` as it is saved, or ConfigError saying what is wrong with it."""
    cleaned = _normal(pattern)
    if not cleaned:
        raise ConfigError(
            f"--exclude {pattern!r} is empty: give a folder or file name, or a glob such as '*.tif'"
        )
    if "\0" in cleaned or len(cleaned) > MAX_PATTERN_LENGTH:
        raise ConfigError(f"--exclude {pattern[:80]!r} is not a pattern of file names")
    probe = _compiled([cleaned])
    if cleaned == "/" or (probe is not None and all(probe.match(n) for n in _ANY_NAMES)):
        raise ConfigError(
            f"--exclude {pattern!r} would leave out every photo; to take a folder out of a "
            "collection use: searchengine remove --folder PATH"
        )
    return cleaned


_ANY_NAMES = ("a", "IMG_0001.JPG", "2019", "photo.png")


class Exclusions:
    """A collection's patterns, compiled once per walk."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(dict.fromkeys(_normal(p) for p in patterns))
        names = [p for p in self.patterns if "/" not in p]
        relative = [p for p in self.patterns if "/" in p and not p.startswith("/")]
        absolute = [p for p in self.patterns if p.startswith("/")]
        self._names = _compiled(names)
        self._relative = _compiled(relative)
        self._absolute = _compiled(absolute)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matcher(self, root_prefix: str) -> Callable[[str, str], bool]:
        """``leaves_out`` for the walk of one folder, as ``(path, name) -> bool``, with
        only the checks its patterns need (the walk calls it for every entry)."""
        names, relative, absolute = self._names, self._relative, self._absolute
        if relative is None and absolute is None and names is not None:
            match = names.match
            return lambda path, name: match(name) is not None
        return lambda path, name: self.leaves_out(path, name, root_prefix)

    def leaves_out(self, path: str, name: str, root_prefix: str) -> bool:
        """Whether the file or folder at ``path`` (named ``name``), found below the
        folder whose ``folder_prefix`` is ``root_prefix``, is left out."""
        if self._names is not None and self._names.match(name):
            return True
        if self._relative is not None and self._relative.match(path[len(root_prefix) :]):
            return True
        return self._absolute is not None and self._absolute.match(path) is not None

    def covers(self, path: str, roots: Sequence[str]) -> bool:
        """Whether ``path`` lies at or below something left out, seen from one of
        ``roots`` it is under (its rows leave the collection)."""
        for root in roots:
            prefix = folder_prefix(root)
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(len(parts)):
                below = prefix + "/".join(parts[: depth + 1])
                if self.leaves_out(below, parts[depth], prefix):
                    return True
        return False


def _compiled(patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns), re.IGNORECASE)


def saved_exclusions(meta: Callable[[str], str | None]) -> Exclusions:
    """A collection's patterns, read with ``meta`` (its catalog's ``get_meta``, or the
    one-shot reader's ``meta``)."""
    return Exclusions(parse_saved(meta(MetaKey.EXCLUDE)))


def parse_saved(value: str | None) -> list[str]:
    """The patterns a catalog's meta row holds (a JSON list; none when absent)."""
    if not value:
        return []
    found = json.loads(value)
    return [p for p in found if isinstance(p, str)] if isinstance(found, list) else []


def saved_value(patterns: Sequence[str]) -> str:
    return json.dumps(list(patterns))


def updated(saved: Sequence[str], add: Iterable[str], drop: Iterable[str]) -> list[str]:
    """``saved`` with the patterns ``add`` and without those of ``drop``; ConfigError for
    a pattern that is not a pattern, or one to drop that is not saved."""
    result = list(saved)
    for pattern in drop:
        cleaned = _normal(pattern)
        if cleaned not in result:
            have = ", ".join(repr(p) for p in result) or "none"
            raise ConfigError(
                f"--no-exclude {pattern!r}: the collection does not leave that out "
                f"(its patterns: {have})"
            )
        result.remove(cleaned)
    for pattern in add:
        cleaned = clean_pattern(pattern)
        if cleaned not in result:
            result.append(cleaned)
    if len(result) > MAX_PATTERNS:
        raise ConfigError(f"a collection holds at most {MAX_PATTERNS} --exclude patterns")
    return result
