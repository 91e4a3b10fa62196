"""Where the image data of a TIFF-based file ends, read from its IFDs alone.

Most camera RAW formats are TIFF inside (DNG, CR2, NEF, ARW, PEF, ORF, RW2, SRW ...):
IFD 0 and the IFDs chained after it, and the SubIFDs they name, each hold an image as
strips or tiles, at offsets with byte counts (TIFF 6.0, sections 2 and 15). A file
whose strips or tiles run past its end was cut short: a copy that stopped, a card
that lost its last blocks. Cameras write the sensor data last, so such a file often
keeps an intact preview, and reads without an error from it.

The file is untrusted: every offset is checked against its length, IFDs are visited
once each, and a bounded number of them and of their entries is read.
"""

from __future__ import annotations

import struct

# The byte orders and magic numbers of TIFF and the RAW formats built on it: TIFF's
# 42, Olympus ORF's "RO"/"RS"/"OR", Panasonic RW2's 0x55.
_MAGIC = {b"II*\0": "<", b"MM\0*": ">", b"IIRO": "<", b"IIRS": "<", b"MMOR": ">", b"IIU\0": "<"}
_SIZES = {3: 2, 4: 4, 13: 4}  # SHORT, LONG, IFD: the types offsets and counts come in
_PLACES = ((273, 279), (324, 325))  # StripOffsets/StripByteCounts, TileOffsets/TileByteCounts
_SUBIFDS = 330
MAX_IFDS = 64
MAX_ENTRIES = 1024
MAX_VALUES = 1 << 20  # strips or tiles of one image


def data_end(data: bytes) -> int | None:
    """The byte just past the last strip or tile of any image in ``data``; None when it
    is not TIFF inside or names no strip or tile whose place can be read."""
    order = _MAGIC.get(data[:4])
    if order is None or len(data) < 8:
        return None
    end: int | None = None
    todo = [struct.unpack_from(order + "I", data, 4)[0]]
    seen: set[int] = set()
    while todo and len(seen) < MAX_IFDS:
        at = todo.pop()
        if at in seen or at < 8 or at + 2 > len(data):
            continue
        seen.add(at)
        count = struct.unpack_from(order + "H", data, at)[0]
        entries: dict[int, tuple[int, int, int]] = {}
        for i in range(min(count, MAX_ENTRIES)):
            pos = at + 2 + 12 * i
            if pos + 12 > len(data):
                break
            tag, kind, n = struct.unpack_from(order + "HHI", data, pos)
            entries[tag] = (kind, n, pos + 8)
        for offsets_tag, counts_tag in _PLACES:
            offsets = _values(data, order, entries.get(offsets_tag))
            counts = _values(data, order, entries.get(counts_tag))
            if offsets and counts and len(offsets) == len(counts):
                last = max(o + c for o, c in zip(offsets, counts, strict=True))
                end = last if end is None else max(end, last)
        todo += _values(data, order, entries.get(_SUBIFDS)) or []
        after = at + 2 + 12 * count
        if after + 4 <= len(data):
            todo.append(struct.unpack_from(order + "I", data, after)[0])
    return end


def _values(data: bytes, order: str, entry: tuple[int, int, int] | None) -> list[int] | None:
    """An entry's numbers (SHORT, LONG or IFD), or None where they cannot be read."""
    if entry is None:
        return None
    kind, n, pos = entry
    size = _SIZES.get(kind)
    if size is None or not 0 < n <= MAX_VALUES:
        return None
    if n * size > 4:
        pos = struct.unpack_from(order + "I", data, pos)[0]
    if pos + n * size > len(data):
        return None
    return list(struct.unpack_from(f"{order}{n}{'H' if size == 2 else 'I'}", data, pos))
