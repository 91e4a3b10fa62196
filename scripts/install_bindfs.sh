#!/usr/bin/env bash
# Install Debian's bindfs (a FUSE file system) for the tests of a network share that
# dies or stops answering under an indexed folder (tests/e2e/test_unreachable_share.py):
# a bindfs mount whose process is killed or stopped is what a dead sshfs, rclone or
# SMB/NFS mount looks like to a program. The tests mount and unmount their own.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"
if command -v bindfs >/dev/null && command -v fusermount >/dev/null; then
    exit 0
fi
apt_install install_bindfs --no-install-recommends bindfs fuse3 || exit 0
echo "installed: $(bindfs --version 2>&1 | head -1)"
