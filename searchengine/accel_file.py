"""The vector index file: its main index read and checked, and where it keeps its
accelerator (after the main index, found by a trailer).

``vectors.faiss`` holds the main index as FAISS writes it; an IVF index with a
fast-scan accelerator (``FaissIndex.build_accelerator``) is followed by the
accelerator, the ids removed since it was filled (8 bytes each), and a 32-byte tail:
the accelerator's offset, the removed-id count and the refine factor (8 bytes each,
little-endian), then ``SEACCEL2``. FAISS reads the main index and ignores what
follows, so a file is always a valid index whether or not it has an accelerator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from searchengine.config import collection_command
from searchengine.errors import DamagedIndexError

__all__ = ["read_accelerator", "read_main_index", "write_accelerator"]

TRAILER = b"SEACCEL2"  # ends a file that holds an accelerator after the main index
TAIL = 24 + len(TRAILER)  # accelerator offset, removed-id count, refine factor, trailer


def read_main_index(path: Path, dim: int | None = None) -> Any:
    """The main index in ``path``; ``dim``: the collection's vector size, if known.

    Raises:
        DamagedIndexError: the file is not a whole index (cut short, overwritten), its
            parts disagree on the vector size (a damaged header: FAISS reads each
            part's size and checks none against another), or its vectors are not
            ``dim``-d (another collection's file).
    """
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # FAISS's own check failed: a file cut short, or not one
        reason = " ".join(str(exc).rsplit("Error: ", 1)[-1].split())
        raise _damaged(path, reason.replace(str(path), "the file")[:200]) from None
    if len(sizes := vector_sizes(faiss, index)) > 1:
        raise _damaged(path, f"its parts disagree on the vector size: {sorted(sizes)}")
    if dim is not None and index.d != dim:
        raise _damaged(path, f"it holds {index.d}-d vectors, the collection {dim}-d ones")
    return index


def _damaged(path: Path, reason: str) -> DamagedIndexError:
    return DamagedIndexError(
        f"the vector index {path} is damaged and cannot be read ({reason}); "
        f"`{collection_command(path.parent, 'index')}` rebuilds it (the catalog is intact)",
        reason,
    )


def vector_sizes(faiss: Any, index: Any) -> set[int]:
    """The vector size each part of a read index records (an id map, its inner index,
    an IVF's coarse quantizer, a refined index's two halves): one, if it is whole."""
    sizes, parts = set(), [index]
    while parts:
        part = faiss.downcast_index(parts.pop())
        sizes.add(int(part.d))
        for name in ("index", "quantizer", "base_index", "refine_index"):
            inner = getattr(part, name, None)
            if inner is not None:
                parts.append(inner)
    return sizes


def read_accelerator(path: Path, faiss: Any, dim: int) -> tuple[Any, np.ndarray, int, bool] | None:
    """The accelerator that follows the main index (of ``dim``-d vectors) in ``path``, the
    ids removed since it was filled, its refine factor and whether it was read whole;
    None if the file has none, or a damaged one (the main index then answers alone)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < TAIL:
            return None
        handle.seek(size - TAIL)
        tail = handle.read()
        if tail[24:] != TRAILER:
            return None
        handle.seek(int.from_bytes(tail[:8], "little"))
        try:
            accel = faiss.read_index(faiss.PyCallbackIOReader(handle.read))
        except RuntimeError:
            return None
        if vector_sizes(faiss, accel) != {dim}:
            return None
        gone = handle.read(8 * int.from_bytes(tail[8:16], "little"))
        complete = handle.tell() == size - len(tail)
    removed = np.frombuffer(gone[: len(gone) // 8 * 8], dtype="<i8").astype(np.int64)
    return accel, removed, max(1, int.from_bytes(tail[16:24], "little")), complete


def write_accelerator(
    handle: BinaryIO, faiss: Any, accel: Any, removed: np.ndarray, refine_factor: int
) -> None:
    """Append ``accel``, the ``removed`` ids and the tail to a file whose main index was
    just written to ``handle``."""
    start = handle.tell()
    faiss.write_index(accel, faiss.PyCallbackIOWriter(handle.write))
    handle.write(removed.astype("<i8").tobytes())
    numbers = (start, len(removed), refine_factor)
    handle.write(b"".join(x.to_bytes(8, "little") for x in numbers) + TRAILER)
