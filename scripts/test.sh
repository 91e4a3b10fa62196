#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, lint, type-check, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/install_browser.sh  # Debian's Chromium, for the `browser` tests
scripts/install_postgres.sh  # Debian's PostgreSQL server, for the `postgres` tests
scripts/lint.sh
.venv/bin/python -m pytest "$@"
