"""Which folders are on a file system that may stop answering: a network share or FUSE.

A walk reads a folder on a local disk on its own thread, as fast as it can; a folder
on a network or FUSE file system it reads on a thread it can leave behind
(``reading.Reading``), which costs 1.24x the CPU (``scripts/bench_walk.py``). So the
walk asks this table, read once a walk from ``/proc/self/mountinfo``, which devices are local and
where other file systems are mounted: those mount points are left out of their
parent folder's reading (their own ``lstat`` would block in it) and walked apart.
Where the table cannot be read (not Linux), every folder is treated as remote.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# Disk and memory file systems: a call on them ends (at worst with an I/O error).
# FUSE (``fuse.*``, ``fuseblk``) is not among them: its answers come from a process.
LOCAL_TYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "bcachefs", "f2fs", "jfs", "reiserfs",
     "nilfs2", "tmpfs", "ramfs", "overlay", "vfat", "msdos", "exfat", "ntfs", "ntfs3",
     "hfs", "hfsplus", "apfs", "squashfs", "erofs", "iso9660", "udf", "devtmpfs"}
)  # fmt: skip
MOUNTINFO = "/proc/self/mountinfo"
_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


@dataclass(frozen=True)
class MountTable:
    """The file systems mounted here, as far as a walk needs them.

    Attributes:
        known: whether the table was read; if not, every folder counts as remote.
        local: the devices (``st_dev``) of local file systems.
        remote: the mount points of the others.
        points: every mount point, the longest first.
    """

    known: bool
    local: frozenset[int] = field(default_factory=frozenset)
    remote: frozenset[str] = field(default_factory=frozenset)
    points: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: str = MOUNTINFO) -> MountTable:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                lines = file.read().splitlines()
        except OSError:
            return cls(known=False)
        local, remote, points = set(), set(), set()
        for line in lines:
            fields = line.split()
            try:
                kind = fields[fields.index("-") + 1]
                major, minor = (int(n) for n in fields[2].split(":"))
            except (ValueError, IndexError):
                continue
            point = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            points.add(point)
            if kind in LOCAL_TYPES:
                local.add(os.makedev(major, minor))
            else:
                remote.add(point)
        longest_first = tuple(sorted(points, key=len, reverse=True))
        return cls(True, frozenset(local), frozenset(remote), longest_first)

    def mount_of(self, path: str) -> str:
        """The mount point ``path`` (absolute) lies under, read from the table alone
        (a call on the path could block); its folder where the table is unknown."""
        for point in self.points:
            if path == point or path.startswith(point if point == "/" else point + "/"):
                return point
        return os.path.dirname(path)

    def watched(self, device: int) -> bool:
        """Whether a folder on ``device`` is read where the walk can leave it."""
        return not self.known or device not in self.local
