#!/usr/bin/env python
"""Write a deterministic, photo-like benchmark corpus of any size.

Mostly camera-sized JPEGs (12 MP by default) with EXIF (DateTimeOriginal, camera
make/model) and every EXIF orientation, plus ~2% PNGs, ~1% truncated JPEGs and a
text file named like a photo, in ``YYYY/MM`` folders of at most 500 files. The
pixels are smooth colour fields with shapes and sensor-like noise, so files are
camera-sized (2-5 MB at 12 MP) and decode like photos. The same ``--seed`` and
``--n`` always give byte-identical files.

Examples:
    python scripts/make_bench_corpus.py /tmp/corpus -n 300              # 300 x 12 MP
    python scripts/make_bench_corpus.py /tmp/small -n 300 --megapixels 1.9
    python scripts/make_bench_corpus.py /tmp/tree -n 100000 --megapixels 0.003 --no-broken
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ORIENTATIONS = (1, 1, 1, 6, 8, 3, 2, 4, 5, 7)  # mostly upright, every tag present
FILES_PER_FOLDER = 500


def plan(n: int, broken: bool, first: int = 0) -> list[tuple[int, str]]:
    """(index, kind) for each file: 'jpeg', 'png', 'truncated' or 'text'."""
    kinds = []
    for i in range(first, first + n):
        if broken and i % 100 == 37:
            kinds.append((i, "truncated"))
        elif broken and i % 250 == 111:
            kinds.append((i, "text"))
        elif i % 50 == 7:
            kinds.append((i, "png"))
        else:
            kinds.append((i, "jpeg"))
    return kinds


def relative_path(i: int, kind: str) -> str:
    year = 2015 + (i // FILES_PER_FOLDER) // 12
    month = (i // FILES_PER_FOLDER) % 12 + 1
    suffix = ".png" if kind == "png" else ".jpg"
    return f"{year}/{month:02d}/IMG_{i:06d}{suffix}"


def photo(i: int, megapixels: float, seed: int) -> Image.Image:
    """A smooth colour field with shapes and noise, 4:3, about ``megapixels``."""
    rng = np.random.default_rng([seed, i])
    width = max(8, int(math.sqrt(megapixels * 1e6 * 4 / 3)))
    height = max(6, width * 3 // 4)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 20 + 1, width // 4 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    # Sensor-like noise: a small tile repeated, so 12 MP costs no 12 MP of random draws.
    tile = rng.normal(0, 6, (min(height, 256), min(width, 256), 3))
    reps = (math.ceil(height / tile.shape[0]), math.ceil(width / tile.shape[1]), 1)
    noise = np.tile(tile, reps)[:height, :width]
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def exif_bytes(i: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Model 12"  # Model
    exif[0x0112] = ORIENTATIONS[i % len(ORIENTATIONS)]  # Orientation
    day = i % 28 + 1
    stamp = f"{2015 + i % 9}:{i % 12 + 1:02d}:{day:02d} {i % 24:02d}:{i % 60:02d}:00"
    exif[0x0132] = stamp  # DateTime
    exif.get_ifd(0x8769)[0x9003] = stamp  # DateTimeOriginal
    return exif.tobytes()


def write_one(args: tuple[Path, int, str, float, int]) -> int:
    root, i, kind, megapixels, seed = args
    path = root / relative_path(i, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "text":
        data = b"<html><body>not a photo</body></html>\n"
    elif kind == "png":
        buf = io.BytesIO()
        photo(i, min(megapixels, 2.0), seed).save(buf, "PNG", compress_level=1)
        data = buf.getvalue()
    else:
        buf = io.BytesIO()
        photo(i, megapixels, seed).save(buf, "JPEG", quality=90, exif=exif_bytes(i))
        data = buf.getvalue()
        if kind == "truncated":
            data = data[: len(data) // 2]
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return len(data)


def make_corpus(
    root: Path,
    n: int,
    megapixels: float = 12.0,
    seed: int = 0,
    broken: bool = True,
    jobs: int | None = None,
    first: int = 0,
) -> dict[str, int]:
    """Write the corpus (skipping files already there); returns counts by kind.

    ``first`` numbers the files from there: files ``first`` to ``first + n - 1`` of
    the corpus that ``n + first`` files would make (photos to add to it later).
    """
    root.mkdir(parents=True, exist_ok=True)
    todo = [
        (root, i, kind, megapixels, seed)
        for i, kind in plan(n, broken, first)
        if not (root / relative_path(i, kind)).exists()
    ]
    jobs = jobs or os.cpu_count() or 1
    if todo:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(write_one, todo, chunksize=16))
    counts: dict[str, int] = {}
    for _, kind in plan(n, broken, first):
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write the corpus")
    parser.add_argument("-n", type=int, default=48, help="number of files (default 48)")
    parser.add_argument("--megapixels", type=float, default=12.0, help="JPEG size (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true", help="leave out broken files")
    parser.add_argument("--jobs", type=int, default=None, help="writer processes")
    args = parser.parse_args(argv)
    counts = make_corpus(
        args.folder, args.n, args.megapixels, args.seed, not args.no_broken, args.jobs
    )
    print(f"{args.n} files in {args.folder}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
