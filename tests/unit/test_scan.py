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
    from searchengine.ingest.scan import _extension

    assert _extension(name) == os.path.splitext(name)[1].lower()


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
