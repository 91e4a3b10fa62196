"""A corpus of broken and hostile files, generated on the fly, with what each should give.

``make_hostile_corpus(folder)`` returns ``{path: expected}`` where ``expected`` is
``"ok"`` for files that must be indexed, or a regular expression the recorded failure
reason must match. Paths are ``str`` as ``os.scandir`` yields them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG")
    return buf.getvalue()


def _animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (32, 24), c) for c in [(250, 0, 0), (0, 250, 0), (0, 0, 250)]]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=50)
    return buf.getvalue()


def make_hostile_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus under ``folder``; returns path → "ok" or a reason pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.new("RGB", (64, 48), (200, 120, 40))
    expected: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> Path:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[str(path)] = outcome
        return path

    full = _jpeg(Image.effect_noise((300, 200), 60).convert("RGB"))
    put("truncated.jpg", full[: len(full) // 2], r"cannot decode")
    put("zero.jpg", b"", r"empty file")
    put("text.png", b"just some notes, not a picture\n" * 20, r"not a recognised image format")
    put("html.webp", b"<html><body>hello</body></html>", r"not a recognised image format")
    # 40000 x 40000 pixels in a few hundred KB: refused before any pixel is decoded.
    put("bomb.png", _png(Image.new("1", (40000, 40000))), r"decompression bomb")
    put("huge.png", _png(Image.new("1", (12000, 9000))), r"over the 100 MP limit")
    put("thin.png", _png(Image.new("RGB", (6000, 2), (9, 9, 9))), "ok")
    put("cmyk.jpg", _jpeg(Image.new("CMYK", (40, 30), (0, 200, 200, 0))), "ok")
    put("sixteen.png", _png(Image.new("I;16", (40, 30), 40000)), "ok")
    put("palette.png", _png(good.convert("P", palette=Image.Palette.ADAPTIVE)), "ok")
    alpha = Image.new("RGBA", (40, 30), (0, 0, 250, 128))
    put("alpha.png", _png(alpha), "ok")
    put("animated.gif", _animated("GIF"), "ok")
    put("animated.webp", _animated("WEBP"), "ok")
    put("normal.jpg", _jpeg(good), "ok")
    locked = put("locked.jpg", _jpeg(good), r"cannot read: Permission denied")
    os.chmod(locked, 0)
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    expected[str(folder / "dangling.jpg")] = r"broken symbolic link"
    os.symlink(folder / "loop-b.png", folder / "loop-a.png")
    os.symlink(folder / "loop-a.png", folder / "loop-b.png")
    expected[str(folder / "loop-a.png")] = r"symbolic link loop"
    expected[str(folder / "loop-b.png")] = r"symbolic link loop"
    os.symlink(folder, folder / "cycle")  # a directory loop: not followed, not a file
    os.mkfifo(folder / "pipe.jpg")
    expected[str(folder / "pipe.jpg")] = r"not a regular file"
    latin1 = os.fsdecode(b"caf\xe9-\xff.jpg")  # not UTF-8
    put(latin1, _jpeg(Image.new("RGB", (30, 30), (10, 200, 10))), "ok")
    put("\u5199\u771f-\U0001f4f7-\u0444\u043e\u0442\u043e.png", _png(good), "ok")
    put("x" * 250 + ".png", _png(Image.new("RGB", (20, 20), (1, 2, 250))), "ok")
    put("deep/" * 40 + "nested.jpg", _jpeg(good), "ok")
    return expected
