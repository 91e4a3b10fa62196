"""Run a child process without root's power to read and write any file.

Tests that meet a file or folder this user may not read or write (an unreadable
photo, another user's collection) must not run as root with it: root ignores file
permissions. As root, the child gives up the capabilities that let it do so
(util-linux ``setpriv``); as any other user it runs as it is.
"""

from __future__ import annotations

import os
import shutil

_DROP = "-dac_override,-dac_read_search"


def without_file_override(command: list[str]) -> list[str]:
    """``command``, run so that file permissions apply to it even as root."""
    if os.getuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root needs util-linux setpriv to drop DAC override"
    return [setpriv, f"--bounding-set={_DROP}", f"--inh-caps={_DROP}", "--", *command]
