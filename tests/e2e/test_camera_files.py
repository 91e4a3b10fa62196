"""ExifTool's test files, from real cameras, indexed with the CLI (``thirdparty.camera_files``).

176 files of ExifTool 12.57 (Debian's source package, pinned by sha256): JPEGs of
about thirty makers' cameras with their maker notes, and RAW files of ten formats
(CR2, CR3, CRW, DNG, RAF, MRW, NEF, RW2, IIQ, X3F) whose image data ExifTool cut
down to a few bytes, so that every one of them is a damaged camera file; plus
documents, audio and video under their own extensions. None of it was written here.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from clirunner import cli
from corpus import one_sentence
from oracle import OK, verdicts
from thirdparty import camera_files, crafted_raw_files

from searchengine import Collection, Config
from searchengine.ingest.decode import MAX_PIXELS
from searchengine.ingest.raw import RAW_EXTENSIONS
from searchengine.ingest.scan import image_extensions

pytestmark = pytest.mark.slow

CANNOT_READ = "truncated or corrupt RAW file: its image data cannot be read"
# What each RAW file gets, by the cause LibRaw meets in it; None: indexed.
RAW_VERDICTS: dict[str, str | None] = {
    "CanonRaw.cr2": "unsupported or corrupt RAW file: LibRaw ",  # no raw IFD left
    "CanonRaw.cr3": CANNOT_READ,
    "CanonRaw.crw": CANNOT_READ,
    # Its raw tile is the text "<Dummy raw image data>": LibRaw skips it and says nothing.
    "DNG.dng": "truncated or corrupt RAW file: it holds no sensor data (every pixel is 0)",
    # The camera's own 160x120 rendering is left in it, and the toy model's input (64 px)
    # is smaller: indexed from that, as a camera's preview is (a 224 px model reads the
    # sensor data, and fails as the others do).
    "FujiFilm.raf": None,
    "Minolta.mrw": CANNOT_READ,
    "Nikon.nef": CANNOT_READ,
    # 22 bytes of sensor data for 10 MP: LibRaw reads on past the end without a word.
    "Panasonic.rw2": "truncated or corrupt RAW file: its sensor data is missing from the bottom",
    "PhaseOne.iiq": CANNOT_READ,
    "Sigma.x3f": CANNOT_READ,
    "SigmaDP2.x3f": CANNOT_READ,
}


def index(folder, home) -> dict:
    done = cli("index", str(folder), "-c", "cam", "--index-dir", str(home), "-m", "toy", "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def outcomes(home) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """name -> (width, height) of each file indexed, name -> reason of each failed."""
    indexed, failed = {}, {}
    with Collection.open("cam", Config(home=home)) as collection:
        for record in collection.catalog.records():
            name = os.path.basename(record.path)
            if record.status == OK:
                indexed[name] = (record.width, record.height)
            else:
                failed[name] = record.error or ""
    return indexed, failed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exiftool")
    return folder, camera_files(folder)


def test_every_damaged_camera_raw_file_is_refused_with_its_cause(files, tmp_path):
    """Each RAW file on its own (beside its JPEG it would be left to the JPEG): none
    is indexed from its damaged sensor data, not even the two LibRaw reads without an
    error into a black or striped picture, and each says why in one sentence."""
    folder, _ = files
    alone = tmp_path / "raw"
    alone.mkdir()
    for name in RAW_VERDICTS:
        shutil.copyfile(folder / name, alone / name)
    report = index(alone, tmp_path / "home")
    assert (report["added"], report["failed"]) == (1, len(RAW_VERDICTS) - 1), report
    indexed, failed = outcomes(tmp_path / "home")
    assert indexed == {"FujiFilm.raf": (3552, 3551)}  # the sensor's size, from the header
    wrong = {n: r for n, r in failed.items() if not r.startswith(RAW_VERDICTS[n] or "?")}
    assert wrong == {}
    assert all(one_sentence(reason) for reason in failed.values()), failed


def test_the_whole_folder_indexes_as_pillow_and_libraw_read_it(files, tmp_path):
    """Every file of a scanned kind gets one verdict: the images Pillow decodes fully
    are indexed, the others fail; a RAW file beside its camera's JPEG of the same name
    is left to the JPEG; the second run reads nothing again."""
    folder, origin = files
    scanned = {p for p in origin if os.path.splitext(p)[1].lower() in image_extensions()}
    raw = {p for p in scanned if os.path.splitext(p)[1].lower() in RAW_EXTENSIONS}
    paired = {p for p in raw if os.path.exists(os.path.splitext(p)[0] + ".jpg")}
    assert {os.path.basename(p) for p in paired} == {
        "FujiFilm.raf", "Minolta.mrw", "Nikon.nef", "Panasonic.rw2", "Sigma.x3f",
    }  # fmt: skip
    first = index(folder, tmp_path / "home")
    indexed, failed = outcomes(tmp_path / "home")
    names = {os.path.basename(p) for p in scanned - paired}
    assert set(indexed) | set(failed) == names and not set(indexed) & set(failed)
    assert first["added"] + first["failed"] == len(names)
    oracle = verdicts(sorted(scanned - raw), MAX_PIXELS)
    disagree = {
        os.path.basename(p): (verdict, failed.get(os.path.basename(p)))
        for p, verdict in oracle.items()
        if (verdict == OK) != (os.path.basename(p) in indexed)
    }
    assert disagree == {}
    assert {n for n in failed if n in RAW_VERDICTS} == {
        n for n, v in RAW_VERDICTS.items() if v is not None
    } - {os.path.basename(p) for p in paired}
    assert len(indexed) >= 40, sorted(indexed)  # the makers' JPEGs
    again = index(folder, tmp_path / "home")
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, len(names))


def test_exiv2s_crafted_and_pruned_raw_files_are_refused(tmp_path):
    """The RAW files among exiv2's test files: the proofs of concept of its security
    reports (crafted CRW, RAF and RW2 files that crashed or overran exiv2's parsers) and
    three real cameras' files pruned to a few kilobytes, among them an iPhone's ProRAW
    DNG (a linear DNG: three channels) whose tiles lie past the end of the file, which
    LibRaw reads as all 0 without a word. None is indexed, none stops the run."""
    folder = tmp_path / "raw"
    folder.mkdir()
    origin = crafted_raw_files(folder)
    assert len(origin) == 17
    report = index(folder, tmp_path / "home")
    assert (report["added"], report["failed"]) == (0, 17), report
    indexed, failed = outcomes(tmp_path / "home")
    assert indexed == {}
    assert failed["IMG_1361.dng"] == (
        "truncated or corrupt RAW file: it holds no sensor data (every pixel is 0)"
    )
    causes = ("truncated or corrupt RAW file: ", "unsupported or corrupt RAW file: ")
    assert all(r.startswith(causes) and one_sentence(r) for r in failed.values()), failed
