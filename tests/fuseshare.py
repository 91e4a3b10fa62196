"""A network share under an indexed folder, for real: a FUSE file system (Debian's
``bindfs``, which ``scripts/install_bindfs.sh`` installs) whose process the test kills
or stops.

To a program, a FUSE mount whose process was killed is what a dead sshfs or rclone
mount is: every call under it fails with "Transport endpoint is not connected"
(ENOTCONN). One whose process is stopped (SIGSTOP) is what a share whose server went
away is on an NFS hard mount: every call under it blocks in the kernel until the
process runs again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ShareUnavailable(Exception):
    """bindfs is missing, or this machine does not let it mount (no /dev/fuse)."""


class Share:
    """A bindfs mount of ``source`` at ``mountpoint``, its process in the foreground."""

    def __init__(self, source: Path, mountpoint: Path) -> None:
        self.source, self.mountpoint = source, mountpoint
        self.process: subprocess.Popen[bytes] | None = None

    def mount(self) -> None:
        self.process = subprocess.Popen(
            ["bindfs", "-f", "--no-allow-other", str(self.source), str(self.mountpoint)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                error = self._end()
                raise ShareUnavailable(f"bindfs could not mount: {error}")
            time.sleep(0.05)

    def die(self) -> None:
        """Kill the file system's process: calls under the mount fail with ENOTCONN."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The file system's process stopped for the block: calls under the mount block."""
        self.stop()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        """Stop the file system's process (``resume`` goes on): calls under it block."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def unmount(self) -> None:
        subprocess.run(["fusermount", "-u", "-z", str(self.mountpoint)], capture_output=True)
        self._end()

    def _end(self) -> str:
        if self.process is None:
            return ""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.process = None
        return err.decode(errors="replace").strip()


@contextmanager
def share(source: Path, mountpoint: Path) -> Iterator[Share]:
    """``source`` mounted at ``mountpoint`` (made if missing) for the block; raises
    ``ShareUnavailable`` saying why it cannot be."""
    if shutil.which("bindfs") is None or shutil.which("fusermount") is None:
        raise ShareUnavailable("no bindfs/fusermount (run scripts/install_bindfs.sh)")
    if not os.path.exists("/dev/fuse"):
        raise ShareUnavailable("no /dev/fuse on this machine")
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = Share(source, mountpoint)
    mounted.mount()
    try:
        yield mounted
    finally:
        mounted.unmount()
