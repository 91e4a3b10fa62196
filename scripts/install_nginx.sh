#!/usr/bin/env bash
# Install Debian's nginx for the reverse-proxy tests (tests/e2e/test_behind_proxy.py),
# if missing. The tests start nginx processes of their own (tests/nginx.py: a
# configuration in a temporary folder, 127.0.0.1, a free port) and stop them at the end;
# the package's own server (port 80) is not started.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"
if [ -x /usr/sbin/nginx ]; then
    exit 0
fi
apt_install install_nginx --no-install-recommends -o Dpkg::Options::=--force-confold nginx || exit 0
echo "installed: $(/usr/sbin/nginx -v 2>&1)"
