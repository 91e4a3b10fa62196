"""Ingest stage 2, load: read each file once, hash it, decode what is new.

A worker turns a ``FileEntry`` into one of four plain, picklable items: ``Pixels``
(decoded and preprocessed, ready for the model), ``Jpeg`` (checked, left for a GPU to
decode), ``Known`` (content already has a vector), or ``Failed`` (with the reason).
Nothing here touches the catalog or the index, so the stage runs unchanged in a
thread, a lane or a remote task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from searchengine.errors import ImageError
from searchengine.fsutil import content_hash
from searchengine.ingest.decode import decode_bytes
from searchengine.ingest.scan import FileEntry
from searchengine.ingest.tensor_decode import JPEG_MAGIC, read_header


class Preprocessor(Protocol):
    """What loading needs of a model: its input size and its preprocessing."""

    image_size: int

    def preprocess(self, image: Image.Image) -> np.ndarray: ...


@dataclass
class Pixels:
    entry: FileEntry
    digest: str
    pixels: np.ndarray
    width: int
    height: int
    taken_at: float | None


@dataclass
class Jpeg:  # a JPEG left for the device to decode (see ``tensor_decode``)
    entry: FileEntry
    digest: str
    data: bytes
    width: int
    height: int
    taken_at: float | None
    orientation: int


@dataclass
class Known:  # content already has a vector in the index
    entry: FileEntry
    digest: str


@dataclass
class Failed:
    entry: FileEntry
    digest: str | None
    reason: str


Item = Pixels | Jpeg | Known | Failed


def load(
    entry: FileEntry,
    model: Preprocessor,
    known_hashes: frozenset[str],
    on_device: bool = False,
) -> Item:
    """Read, hash, and (for unseen content) decode and preprocess one file.

    With ``on_device``, a JPEG is only checked (header, size limit, orientation, date)
    and handed on as bytes for the device to decode.
    """
    if entry.error is not None:
        return Failed(entry, None, entry.error)
    try:
        with open(entry.path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return Failed(entry, None, f"cannot read: {exc.strerror or exc}")
    digest = content_hash(data)
    if digest in known_hashes:
        return Known(entry, digest)
    if on_device and data.startswith(JPEG_MAGIC):
        try:
            head = read_header(data)
        except ImageError:
            pass  # Pillow below says what is wrong with it
        else:
            return Jpeg(entry, digest, data, head.width, head.height, head.taken_at,
                        head.orientation)  # fmt: skip
    return decode_with_pillow(entry, digest, data, model)


def decode_with_pillow(entry: FileEntry, digest: str, data: bytes, model: Preprocessor) -> Item:
    """Decode bytes with Pillow (at reduced size where the format allows) and preprocess."""
    try:
        decoded = decode_bytes(data, min_side=model.image_size)
        pixels = model.preprocess(decoded.image)
    except ImageError as exc:
        return Failed(entry, digest, str(exc))
    return Pixels(entry, digest, pixels, decoded.width, decoded.height, decoded.taken_at)


def load_batch(
    entries: list[FileEntry], model: Preprocessor, known_hashes: frozenset[str]
) -> list[Item]:
    """``load`` over a batch, in order."""
    return [load(entry, model, known_hashes) for entry in entries]


def stack_pixels(items: list[Item]) -> np.ndarray | None:
    """The decoded items' pixels as one (N, 3, H, W) batch, in item order; None if none."""
    pixels = [it.pixels for it in items if isinstance(it, Pixels)]
    return np.stack(pixels) if pixels else None
