"""Pillow plugins that misbehave on purpose: crash the process, hang, or raise oddly.

``install(folder)`` writes them as a ``sitecustomize`` module into ``folder``; a
Python process with ``folder`` on its ``PYTHONPATH`` registers them at start-up, so
a real ``searchengine`` subprocess (and any child process it starts) meets them as it
would meet a buggy codec. Each claims files by their first bytes (``CRASH``, ``HANG``,
``RAISE``), which no real format starts with.
"""

from __future__ import annotations

from pathlib import Path

CRASH = b"BADPLUGIN-CRASH\n"
HANG = b"BADPLUGIN-HANG\n"
RAISE = b"BADPLUGIN-RAISE\n"

SITECUSTOMIZE = r"""
import ctypes
import time

from PIL import Image, ImageFile


class _Bad(ImageFile.ImageFile):
    def _open(self):
        self._size = (8, 8)
        self._mode = "RGB"
        self.tile = []

    def load(self):
        kind = self.format
        if kind == "BADCRASH":
            ctypes.string_at(0)  # a real segfault, as a native codec bug gives
        if kind == "BADHANG":
            while True:  # never returns
                time.sleep(0.2)
        raise SystemExit("a plugin that calls sys.exit")


for _name, _magic in [("BADCRASH", CRASH), ("BADHANG", HANG), ("BADRAISE", RAISE)]:
    _cls = type(_name, (_Bad,), {"format": _name})
    Image.register_open(_name, _cls, lambda prefix, m=_magic: prefix.startswith(m[:16]))
"""


def install(folder: Path) -> Path:
    """Write the plugins as ``folder/sitecustomize.py``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    magic = f"CRASH, HANG, RAISE = {CRASH!r}, {HANG!r}, {RAISE!r}\n"
    (folder / "sitecustomize.py").write_text(magic + SITECUSTOMIZE)
    return folder
