"""Image files for tests, made on the fly (no binary fixtures in the repo)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003


def solid(
    path: Path,
    colour: tuple[int, int, int],
    size: tuple[int, int] = (64, 48),
    *,
    orientation: int | None = None,
    taken: str | None = None,
    fmt: str | None = None,
) -> Path:
    """Write a solid-colour image; JPEGs may carry EXIF orientation and date."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = taken
    kwargs = {"exif": exif.tobytes()} if len(exif) or taken else {}
    image.save(path, format=fmt, **kwargs)
    return path


def half_and_half(
    path: Path,
    top: tuple[int, int, int],
    bottom: tuple[int, int, int],
    size: tuple[int, int] = (60, 40),
    orientation: int | None = None,
) -> Path:
    """Top half one colour, bottom half another: shows whether rotation was applied."""
    image = Image.new("RGB", size, bottom)
    image.paste(Image.new("RGB", (size[0], size[1] // 2), top), (0, 0))
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, exif=exif.tobytes())
    return path


def noise(path: Path, seed: int, size: tuple[int, int] = (96, 72), fmt: str | None = None) -> Path:
    """A distinct random-texture image per seed (smooth blobs, so resizing keeps it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)
    return path
