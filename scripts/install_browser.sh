#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/e2e/test_browser.py), if missing.
# Playwright only drives it: `playwright install` downloads browsers, which CI cannot.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
apt_install install_browser chromium || exit 0
echo "installed: $(/usr/bin/chromium --version)"
