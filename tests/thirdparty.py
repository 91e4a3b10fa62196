"""Public third-party test images, fetched from PyPI source distributions and Debian
source packages.

Several packages ship the images their own test suites feed to image decoders: fuzzer
crash files, truncated and corrupt files of every format, odd modes and bit depths.
Nobody on this project wrote them, which is the point: they show what files in the
wild do to the indexer. Each source is pinned to a version and the sha256 of its
archive (as listed on the package's PyPI page, or in its Debian ``.dsc``); ``pip
download`` (the ordinary client) or a plain download from Debian's archive fetches it
once into ``.cache/corpus/`` (git-ignored), and the image files are unpacked next to it.

``camera_files(dest)`` copies, under their own names, the test files of ExifTool
(Debian's source package ``libimage-exiftool-perl``, pinned the same way by the sha256
its ``.dsc`` lists, fetched from Debian's archive): files from real cameras of about
thirty makers, JPEGs with their maker notes and the RAW files of ten formats, their
image data cut down to a few bytes when the file was made small enough to ship.

``third_party_corpus(dest)`` copies the images under ``dest/<package>/...``. A file
whose extension the indexer does not scan (``.dds``, ``.fli``, no extension ...) gets
``.jpg`` appended, so every file is met by the decoder, as a file under the wrong
extension would be.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "corpus"
SCANNED = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class Source:
    """One sdist and the folders in it that hold test images."""

    package: str
    version: str
    sha256: str
    folders: tuple[str, ...]  # inside the sdist, below its top folder
    license: str

    @property
    def archive(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}.tar.gz"


@dataclass(frozen=True)
class DebianSource:
    """One Debian source package's upstream tarball and the folders in it that hold
    test files."""

    package: str
    version: str  # the upstream version, as the tarball is named
    pool: str  # its folder in Debian's pool
    sha256: str  # as the package's .dsc lists it
    folders: tuple[str, ...]
    license: str
    compression: str = "xz"

    @property
    def archive(self) -> str:
        return f"{self.package}_{self.version}.orig.tar.{self.compression}"


DEBIAN = "http://deb.debian.org/debian/pool"  # the archive apt uses here (plain HTTP, as apt)

# ExifTool's test files (the Perl licence: Artistic or GPL). Debian 12 (bookworm).
EXIFTOOL = DebianSource(
    "libimage-exiftool-perl",
    "12.57+dfsg",
    "main/libi/libimage-exiftool-perl",
    "9de7ccd6ed6adf92038c8d943b1960d087b58c00b3924d19f61a1d774b7610fc",
    ("t/images",),
    "Artistic or GPL (as Perl)",
)


# exiv2's test files (GPL-2.0-or-later), Debian 12: photos with odd metadata of every
# format exiv2 reads, and the proof-of-concept files of its security reports (crafted
# JPEG, PNG, TIFF, PSD, WebP, JPEG 2000, CRW, RAF, RW2 ...), from the fuzzers that
# found them. Its upstream tarball is .tar.gz.
EXIV2 = DebianSource(
    "exiv2",
    "0.27.6",
    "main/e/exiv2",
    "f16ee5ff08b6994c66106109417857f13e711fca100ac43c6a403d4f02b59602",
    ("test/data",),
    "GPL-2.0-or-later",
    compression="gz",
)


# libheif's fuzzing corpus (LGPL-3.0-or-later), Debian 12: the crash reproducers its
# fuzzers and bug reports found (out-of-bounds, use-after-free, division by zero, huge
# sizes), read here through pillow-heif's own libheif, and four good HEIF photos.
LIBHEIF = DebianSource(
    "libheif",
    "1.15.1",
    "main/libh/libheif",
    "28d5a376fe7954d2d03453f983aaa0b7486f475c27c7806bda31df9102325556",
    ("fuzzing/corpus",),
    "LGPL-3.0-or-later",
    compression="gz",
)


SOURCES = (
    # Pillow's own test images: every format it reads, with the crash, timeout and
    # out-of-memory reproducers its fuzzers found (HPND licence; images: see
    # Tests/images/README in the sdist).
    Source(
        "pillow",
        "13.0.0",
        "cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510",
        ("Tests/images",),
        "MIT-CMU (HPND)",
    ),
    # pillow-heif's: HEIF/AVIF in many bit depths plus corrupt, truncated and 200 MP
    # files, and PNGs of 16-bit greyscale with alpha.
    Source(
        "pillow-heif",
        "1.8.1",
        "521ebffb8a181d56c3904e5a61f20903edee0d9d3275967b8fb345f866215c06",
        ("tests/images",),
        "BSD-3-Clause",
    ),
    # imagesize's: EXIF-rotated JPEG and TIFF, multi-page TIFF, netpbm, SVG, JPEG 2000.
    Source(
        "imagesize",
        "2.0.1",
        "b2ba6a4dea487a7ebcd53248d3476aca449d30db12a2dde5e0c5ca9624fd77e5",
        ("test/images",),
        "MIT",
    ),
    # filetype's: documents, archives, audio and video next to a few images, each
    # under its own extension (the non-images are copied under .jpg: not images).
    Source(
        "filetype",
        "1.2.0",
        "66b56cd6474bf41d8c54660347d37afcc3f7d1970648de365c102ef77548aadb",
        ("tests/fixtures",),
        "MIT",
    ),
    # pypng's copy of PngSuite (every PNG colour type and bit depth, interlaced or
    # not), stored as hex strings in code/pngsuite.py.
    Source(
        "pypng",
        "0.20220715.0",
        "739c433ba96f078315de54c0db975aee537cbc3e1d0ae4ed9aab0ca1e427e2c1",
        ("code/pngsuite.py",),
        "MIT",
    ),
    EXIV2,
    LIBHEIF,
)


class FetchError(RuntimeError):
    """A source could not be downloaded or did not match its pinned hash."""


def fetch(source: Source | DebianSource, cache: Path = CACHE) -> Path:
    """The archive of ``source`` in ``cache``, downloaded (an sdist with pip, a Debian
    tarball from the archive) and checked by sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / source.archive
    stale = not archive.exists() or _sha256(archive) != source.sha256
    if stale and isinstance(source, DebianSource):
        _download(f"{DEBIAN}/{source.pool}/{source.archive}", archive)
    elif stale:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", "--dest", str(cache),
            f"{source.package}=={source.version}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not archive.exists():
            raise FetchError(f"pip could not download {source.package}: {done.stderr[-2000:]}")
    digest = _sha256(archive)
    if digest != source.sha256:
        raise FetchError(f"{archive.name} has sha256 {digest}, expected {source.sha256}")
    return archive


def _download(url: str, archive: Path) -> None:
    partial = archive.with_name(archive.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=120) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as exc:
        raise FetchError(f"could not download {url}: {exc}") from exc
    partial.replace(archive)


def unpack(source: Source | DebianSource, cache: Path = CACHE) -> Path:
    """The test images of ``source``, unpacked once under ``cache/<package>-<version>/``."""
    target = cache / f"{source.package}-{source.version}"
    done = target / ".complete"
    if done.exists():
        return target
    archive = fetch(source, cache)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            inside = member.name.split("/", 1)[1] if "/" in member.name else ""
            folder = next((f for f in source.folders if inside.startswith(f)), None)
            if not member.isfile() or folder is None:
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            data = handle.read()
            if inside.endswith("pngsuite.py"):
                for name, png in _pngsuite(data).items():
                    (partial / f"{name}.png").write_bytes(png)
                continue
            out = partial / inside[len(folder) :].lstrip("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
    (partial / ".complete").write_text(source.sha256)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def third_party_corpus(dest: Path, cache: Path = CACHE) -> dict[str, str]:
    """Copy every source's images under ``dest``; returns path -> where it came from."""
    origin: dict[str, str] = {}
    for source in SOURCES:
        root = unpack(source, cache)
        for dirpath, _dirs, files in os.walk(root):
            for name in sorted(files):
                if name == ".complete":
                    continue
                src = Path(dirpath) / name
                rel = src.relative_to(root)
                if os.path.splitext(name)[1].lower() not in SCANNED:
                    rel = rel.with_name(rel.name + ".jpg")
                out = dest / source.package / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, out)
                origin[str(out)] = f"{source.package} {source.version}: {src.relative_to(root)}"
    return origin


def crafted_raw_files(dest: Path, cache: Path = CACHE) -> dict[str, str]:
    """Copy the camera RAW files among exiv2's test files under ``dest``, each under its
    own name (in ``third_party_corpus`` they are met under ``.jpg``); returns path ->
    where it came from."""
    from searchengine.ingest.raw import RAW_EXTENSIONS

    return _under_own_names(EXIV2, "exiv2", dest, cache, RAW_EXTENSIONS)


def camera_files(dest: Path, cache: Path = CACHE) -> dict[str, str]:
    """Copy ExifTool's test files under ``dest``, each under its own name; returns
    path -> where it came from."""
    return _under_own_names(EXIFTOOL, "exiftool", dest, cache)


def _under_own_names(
    source: DebianSource,
    label: str,
    dest: Path,
    cache: Path,
    suffixes: frozenset[str] | None = None,
) -> dict[str, str]:
    """The files of ``source`` (those with one of ``suffixes``, if given) copied into
    ``dest`` as they are named there."""
    origin: dict[str, str] = {}
    for src in sorted(unpack(source, cache).iterdir()):
        if not src.is_file() or src.name == ".complete":
            continue
        if suffixes is None or src.suffix.lower() in suffixes:
            shutil.copyfile(src, dest / src.name)
            origin[str(dest / src.name)] = f"{label} {source.version}: {src.name}"
    return origin


def _pngsuite(module_source: bytes) -> dict[str, bytes]:
    """The ``png`` dict of pypng's pngsuite.py, read from its syntax tree (not run)."""
    tree = ast.parse(module_source)
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "png" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            out = {}
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                assert isinstance(key, ast.Constant) and isinstance(value, ast.Call)
                arg = value.args[0]
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
                out[key.value] = bytes.fromhex(arg.value.decode("ascii").replace("\n", ""))
            return out
    raise FetchError("pngsuite.py has no `png = {...}` table")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
