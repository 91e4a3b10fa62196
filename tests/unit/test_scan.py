import os

import pytest

from searchengine.ingest.scan import BASE_EXTENSIONS, scan


def test_scan_finds_images_recursively_and_ignores_others(tmp_path):
    for rel in ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/d.tiff", "notes.txt", "e.jpeg.bak"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 3)
    found = sorted(os.path.relpath(e.path, tmp_path) for e in scan([tmp_path], BASE_EXTENSIONS))
    assert found == ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/d.tiff"]


def test_thumbnails_trash_and_collections_below_a_root_are_not_photos(tmp_path):
    """What a NAS, an OS or searchengine itself keeps beside photos: Synology's and
    QNAP's thumbnails (one JPEG per photo, and more), recycle bins, trash on a removable
    drive, Synology snapshots, macOS ``._`` metadata, a collection's own thumbnails."""
    layout = [
        "album/IMG_1.jpg",
        "album/@eaDir/IMG_1.jpg/SYNOPHOTO_THUMB_XL.jpg",
        "album/.@__thumb/default.IMG_1.jpg",
        "album/._IMG_1.jpg",
        "#recycle/IMG_0.jpg",
        "@Recycle/IMG_0.jpg",
        "$RECYCLE.BIN/S-1-5-21/$RIMG_0.jpg",
        ".Trash-1000/files/IMG_0.jpg",
        ".Trashes/501/IMG_0.jpg",
        "#snapshot/GMT+00_2026.11.30-00.00.00/album/IMG_1.jpg",
        "indexes/default/catalog.sqlite",
        "indexes/default/vectors.faiss",
        "indexes/default/thumbs/small/1-0123456789abcdef.jpg",
        "indexes/team/catalog.json",
        "indexes/team/vectors.faiss",
        "indexes/team/thumbs/large/2-0123456789abcdef.jpg",
        "not-a-collection/vectors.faiss",  # one marker alone is only a name
        "not-a-collection/thumbs/kept.jpg",
        "Trash/kept.jpg",  # a folder of the user's own, by that name
        "my.Trash-photos/kept.jpg",
    ]
    for rel in layout:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = sorted(os.path.relpath(e.path, tmp_path) for e in scan([tmp_path], BASE_EXTENSIONS))
    assert found == [
        "Trash/kept.jpg",
        "album/IMG_1.jpg",
        "my.Trash-photos/kept.jpg",
        "not-a-collection/thumbs/kept.jpg",
    ]
    # Named directly, such a folder is walked: the user asked for it.
    again = [e.path for e in scan([tmp_path / "#recycle"], BASE_EXTENSIONS)]
    assert again == [str(tmp_path / "#recycle" / "IMG_0.jpg")]


def test_scan_survives_symlink_loops_and_broken_links(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "loop")  # a directory loop is simply not followed
    os.symlink(tmp_path / "missing.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    found = {os.path.basename(e.path): e.error for e in scan([tmp_path], BASE_EXTENSIONS)}
    assert found == {
        "x.jpg": None,
        "broken.jpg": "broken symbolic link",
        "a.png": "symbolic link loop",
        "b.png": "symbolic link loop",
        "pipe.jpg": "not a regular file (a FIFO)",
    }


def test_single_file_root(tmp_path):
    (tmp_path / "x.png").write_bytes(b"abc")
    [entry] = scan([tmp_path / "x.png"], BASE_EXTENSIONS)
    assert entry.size == 3 and entry.path == str(tmp_path / "x.png")


def test_paths_named_directly_always_get_a_verdict(tmp_path):
    """A FIFO, a device link, a link loop or any file named as a PATH is not skipped."""
    os.mkfifo(tmp_path / "pipe")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    (tmp_path / "notes.txt").write_text("not a picture")
    names = ["pipe", "zero.jpg", "a", "dangling", "notes.txt"]
    found = {
        os.path.basename(e.path): e.error
        for e in scan([tmp_path / n for n in names], BASE_EXTENSIONS)
    }
    assert found == {
        "pipe": "not a regular file (a FIFO)",
        "zero.jpg": "not a regular file (a character device)",
        "a": "symbolic link loop",
        "dangling": "broken symbolic link",
        "notes.txt": None,  # decoded, and recorded as not an image
    }


def test_a_missing_root_yields_nothing(tmp_path):
    assert list(scan([tmp_path / "gone"], BASE_EXTENSIONS)) == []


@pytest.mark.parametrize(
    "name",
    ["a.JPG", ".jpg", "..jpg", "a..jpg", "...", "a.", "noext", "a.b.Png", ".x.jpeg", "é.WebP"],
)
def test_extension_agrees_with_splitext(name):
    from searchengine.ingest.entries import extension

    assert extension(name) == os.path.splitext(name)[1].lower()


def test_a_folder_mounted_twice_in_the_tree_is_walked_once(tmp_path):
    import subprocess

    (tmp_path / "2020").mkdir()
    (tmp_path / "2020" / "a.jpg").write_bytes(b"x")
    (tmp_path / "shared").mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", str(tmp_path / "2020"), str(tmp_path / "shared")], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"no bind mount here: {mounted.stderr.decode().strip()}")
    try:
        assert (tmp_path / "shared" / "a.jpg").exists()
        found = [os.path.relpath(e.path, tmp_path) for e in scan([tmp_path], BASE_EXTENSIONS)]
        assert found == ["2020/a.jpg"]
    finally:
        subprocess.run(["umount", str(tmp_path / "shared")], check=True)


def test_photos_this_installation_cannot_read_are_counted_not_dropped_silently(tmp_path):
    """An iPhone library without pillow-heif, or AVIF photos under a Pillow that lacks
    its plugin: the walk leaves them out but counts them, so ``index`` can say what to
    install; what the user excluded and macOS ``._`` files are not counted."""
    from searchengine.ingest.exclude import Exclusions
    from searchengine.ingest.scan import missing_codecs_note

    for rel in ["IMG_1.HEIC", "IMG_2.heic", "sub/IMG_3.heif", "._IMG_4.heic", "Raw/IMG_5.heic",
                "web/a.avif", "b.jpg"]:  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    left: list[str] = []
    found = list(scan([tmp_path], BASE_EXTENSIONS, Exclusions(["raw"]), unreadable=left))
    assert [os.path.basename(e.path) for e in found] == ["b.jpg"]
    assert sorted(os.path.relpath(p, tmp_path) for p in left) == [
        "IMG_1.HEIC", "IMG_2.heic", "sub/IMG_3.heif", "web/a.avif"]  # fmt: skip
    note = missing_codecs_note(left)
    assert note == (
        "3 HEIC/HEIF photos left out: reading them needs pillow-heif (pip install "
        "'searchengine[heif]'); 1 AVIF photo left out: reading them needs Pillow 11.3 or "
        "newer (pip install -U pillow); the next index adds them"
    )
    # Where a decoder is there, its photos are walked and not counted.
    left = []
    found = list(scan([tmp_path], BASE_EXTENSIONS | {".avif"}, unreadable=left))
    assert sorted(os.path.basename(e.path) for e in found) == ["a.avif", "b.jpg"]
    assert not any(p.endswith(".avif") for p in left) and missing_codecs_note([]) is None


def test_knowing_which_extensions_to_walk_imports_no_optional_decoder():
    """``search --refresh`` walks the folders before it knows whether there is anything
    to decode: finding pillow-heif and rawpy must not import them (pillow-heif loads
    libheif and its codecs: 40-140 ms a search)."""
    import importlib.util

    from importcheck import imported_after

    code = "from searchengine.ingest.scan import image_extensions; image_extensions()"
    loaded = imported_after(code, ["pillow_heif", "rawpy"])
    assert loaded == []
    assert importlib.util.find_spec("pillow_heif") is not None  # installed: found, not loaded


def test_the_mount_table_tells_local_disks_from_shares(tmp_path):
    """Read from mountinfo's own format (proc(5)): a disk and tmpfs are local, NFS,
    SMB, sshfs and any FUSE file system are not, and a mount point's escaped space is
    read back; without a table every folder counts as remote."""
    from searchengine.ingest.mounts import MountTable

    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
        "30 22 0:27 / /tmp rw,nosuid - tmpfs tmpfs rw\n"
        "41 22 0:45 / /mnt/nas rw,relatime shared:9 - nfs4 nas:/photos rw,vers=4.2\n"
        "42 22 0:46 / /mnt/My\\040Photos rw - cifs //box/photos rw\n"
        "43 22 0:47 / /home/me/remote rw,nosuid - fuse.sshfs me@host: rw,user_id=0\n"
        "44 22 0:48 / /media/usb rw - fuseblk /dev/sdb1 rw\n"
        "a line that is not a mount\n"
    )
    mounts = MountTable.read(str(table))
    assert mounts.known
    assert not mounts.watched(os.makedev(259, 2)) and not mounts.watched(os.makedev(0, 27))
    assert mounts.watched(os.makedev(0, 45)) and mounts.watched(os.makedev(0, 99))
    assert mounts.remote == {"/mnt/nas", "/mnt/My Photos", "/home/me/remote", "/media/usb"}
    missing = MountTable.read(str(tmp_path / "none"))
    assert not missing.known and missing.watched(os.makedev(259, 2))
    # The mount a path lies under, from the table alone: the deepest one that holds it.
    assert mounts.mount_of("/mnt/nas/2024/a.jpg") == "/mnt/nas"
    assert mounts.mount_of("/mnt/nas") == "/mnt/nas"
    assert mounts.mount_of("/mnt/nasty/a.jpg") == "/"  # a name that only starts alike
    assert mounts.mount_of("/mnt/My Photos/a.jpg") == "/mnt/My Photos"
    assert mounts.mount_of("/tmp/x/a.jpg") == "/tmp"
    assert missing.mount_of("/mnt/nas/2024/a.jpg") == "/mnt/nas/2024"  # unknown: its folder
