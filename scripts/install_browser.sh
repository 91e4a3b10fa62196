#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/e2e/test_browser.py), if missing.
# Playwright only drives it: `playwright install` downloads browsers, which CI cannot.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_browser: no /usr/bin/chromium and cannot apt-get it; browser tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
echo "installed: $(/usr/bin/chromium --version)"
