"""Indexed files for the web page: the original bytes, verified, and cached JPEG thumbnails.

A request names an image only by catalog id; the file read is the catalog's path for it.
Before any byte is served, the file is checked to still hold the content that was
indexed (same size, same BLAKE2b hash as the catalog's ``content_hash``). So what the
server hands out is exactly what the user indexed: a file swapped for something else
since (another file, a symbolic link to ``/etc/shadow``) is refused, not served.

Thumbnails are made once from those verified bytes by the ingest's safe decoder and
kept under ``<collection folder>/thumbs/<size>/<id>-<content hash>.jpg``, written
atomically (temporary file, then rename). A re-indexed file whose content changed has a
new hash, so it gets a new thumbnail; ``prune`` drops the ones nothing refers to.
A collection folder this user may not write (read-only media, another user's) keeps
its thumbnails in the user's cache instead (``$XDG_CACHE_HOME/searchengine/thumbs``),
and a thumbnail that cannot be written at all (a full disk) is served from memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO, Protocol

from PIL import Image

from searchengine.catalog import OK, Catalog, ImageRecord
from searchengine.config import user_cache_dir
from searchengine.errors import ImageError
from searchengine.fsutil import atomic_write, content_hash, open_regular
from searchengine.ingest.decode import Decoded, decode_bytes, decode_memory, open_image
from searchengine.ingest.raw import is_raw
from searchengine.server.workers import OverBudget
from searchengine.writable import unwritable

THUMBS_DIR = "thumbs"
# Longest side in pixels. "small" fills a grid cell on a high-density screen, "large"
# a viewer on most monitors; both are far smaller than camera originals.
SIZES = {"small": 384, "large": 1280}
_HEX = re.compile(r"^[0-9a-f]{8,128}$")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


class FileUnavailable(ImageError):
    """An indexed image's file cannot be served as indexed.

    Attributes:
        status: the HTTP status that says why: 404 gone, 409 changed since indexing.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def read_indexed(record: ImageRecord) -> bytes:
    """The bytes of an indexed image, provided they are still the ones indexed.

    Raises:
        FileUnavailable: the file is gone or unreadable (404), or its content is not
            what was indexed (409): re-running ``searchengine index`` fixes the catalog.
    """
    if record.status != OK or not record.content_hash:
        raise FileUnavailable(f"no image with id {record.id}", 404)
    # A FIFO put where the image was must not hang the request: refused before a byte
    # is read, as anything that is not a regular file.
    try:
        handle, info = open_regular(record.path)
    except (OSError, ValueError) as exc:
        raise FileUnavailable(
            f"image {record.id} can no longer be read ({_reason(exc)}): it was moved or "
            "deleted (re-run `searchengine index` to update the collection), or its drive "
            "or share is not mounted",
            404,
        ) from exc
    with handle:
        if not stat.S_ISREG(info.st_mode) or info.st_size != record.size:
            raise _changed(record)
        data = handle.read(record.size + 1)
    if len(data) != record.size or content_hash(data) != record.content_hash:
        raise _changed(record)
    return data


def media_type(data: bytes, name: str | None = None) -> str:
    """The MIME type of image bytes, from their header (not from the file name); a
    camera RAW file (told by ``name``) is bytes: most are TIFF inside, and a browser
    would show at most their preview."""
    if is_raw(name):
        return "application/octet-stream"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_image(data) as image:
                fmt = image.format or ""
    except Exception:  # verified bytes decoded at ingest; this is only a label
        return "application/octet-stream"
    return _MIME.get(fmt) or Image.MIME.get(fmt) or "application/octet-stream"


class Budget(Protocol):
    """Memory reserved while an image decodes (``workers.MemoryBudget``)."""

    def hold(self, amount: int) -> AbstractContextManager[None]: ...


class ThumbnailCache:
    """JPEG thumbnails of indexed images, made on first request and kept on disk.

    Args:
        collection_folder: where ``thumbs/`` lives.
        budget: memory each decode reserves first (a large original takes hundreds of
            MB, and a page asks for dozens of thumbnails at once); none: no limit.
    """

    def __init__(self, collection_folder: Path, budget: Budget | None = None) -> None:
        self.root = collection_folder / THUMBS_DIR
        if unwritable(collection_folder) or (self.root.exists() and unwritable(self.root)):
            key = hashlib.blake2b(os.fsencode(collection_folder.resolve()), digest_size=8)
            self.root = user_cache_dir() / THUMBS_DIR / key.hexdigest()
        self.budget = budget

    def path(self, record: ImageRecord, size: str) -> Path:
        """Where the thumbnail of ``record`` at ``size`` lives (it may not exist yet)."""
        digest = record.content_hash or ""
        if size not in SIZES or not _HEX.match(digest):  # names come from our data only
            raise FileUnavailable(f"no thumbnail for image {record.id}", 404)
        return self.root / size / f"{int(record.id)}-{digest}.jpg"

    def make(self, record: ImageRecord, size: str, data: bytes) -> Path | bytes:
        """The thumbnail file, made now from ``data``, the original's bytes as
        ``read_indexed`` gives them, if missing (its bytes, where it cannot be kept).

        Raises:
            FileUnavailable: the original no longer decodes.
        """
        target = self.path(record, size)
        if target.is_file():  # also when made by another request while this one waited
            return target
        side = SIZES[size]
        try:
            cost = decode_memory(data, min_side=side, name=record.path)
            with self.budget.hold(cost) if self.budget else nullcontext():
                image = decode_bytes(data, min_side=side, name=record.path).image
                image.thumbnail((side, side), Image.Resampling.LANCZOS)
        except ImageError as exc:
            raise FileUnavailable(f"image {record.id} cannot be decoded: {exc}", 409) from exc
        try:
            _write_atomic(target, image)
        except OSError:  # a full disk, or a cache that cannot be written: not cached
            out = io.BytesIO()
            _save(image, out)
            return out.getvalue()
        return target

    def prune(self, catalog: Catalog) -> int:
        """Delete thumbnails of images no longer indexed (or indexed with other content).

        Returns:
            How many files were removed.
        """
        if not self.root.is_dir():
            return 0
        keep = {f"{r.id}-{r.content_hash}.jpg" for r in catalog.records(OK)}
        removed = 0
        for size in SIZES:
            folder = self.root / size
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name not in keep:
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed


def decode_indexed(record: ImageRecord, data: bytes, side: int, budget: Budget) -> Decoded:
    """An indexed file's bytes (``read_indexed``) decoded at ``side`` or more, within
    ``budget``.

    Raises:
        FileUnavailable: the file no longer decodes (409).
        OverBudget: decoding it would take more memory than the budget allows.
    """
    try:
        with budget.hold(decode_memory(data, min_side=side, name=record.path)):
            return decode_bytes(data, min_side=side, name=record.path)
    except OverBudget:
        raise
    except ImageError as exc:
        raise FileUnavailable(f"image {record.id} cannot be decoded: {exc}", 409) from exc


def _write_atomic(target: Path, image: Image.Image) -> None:
    with atomic_write(target) as out:
        _save(image, out)


def _save(image: Image.Image, out: BinaryIO) -> None:
    # No EXIF copied: a thumbnail carries no GPS position or camera serial.
    image.save(out, "JPEG", quality=85, optimize=True, progressive=True)


def _changed(record: ImageRecord) -> FileUnavailable:
    return FileUnavailable(
        f"image {record.id} changed on disk since it was indexed; "
        "re-run `searchengine index` to update the collection",
        409,
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "unusable path"
