#!/usr/bin/env bash
# Install Debian's nginx for the reverse-proxy tests (tests/e2e/test_behind_proxy.py),
# if missing. The tests start nginx processes of their own (tests/nginx.py: a
# configuration in a temporary folder, 127.0.0.1, a free port) and stop them at the end;
# the package's own server (port 80) is kept from starting during the install.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
if [ -x /usr/sbin/nginx ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_nginx: no /usr/sbin/nginx and cannot apt-get it; the proxy tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# Without an init system the package's scripts start nginx through invoke-rc.d, which
# asks policy-rc.d first: 101 means "not now".
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold nginx >/dev/null
echo "installed: $(/usr/sbin/nginx -v 2>&1)"
