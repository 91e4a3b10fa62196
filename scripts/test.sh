#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, lint, type-check, pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/install_browser.sh  # Debian's Chromium, for the `browser` tests
scripts/install_postgres.sh  # Debian's PostgreSQL server, for the `postgres` tests
scripts/install_nginx.sh  # Debian's nginx, for the reverse-proxy tests
scripts/install_bindfs.sh  # Debian's bindfs (FUSE), for the tests of a share that dies
scripts/lint.sh
# Two workers, a test file each at a time (its module fixtures stay in one worker): much
# of the suite waits on child processes, servers and the network, so two workers take
# ~0.6 of one's time on two cores. SEARCHENGINE_TEST_WORKERS=0 runs it in this process
# (needed for -s to show what tests print); a later -n in the arguments wins too.
workers=${SEARCHENGINE_TEST_WORKERS:-$(( $(nproc) >= 2 ? 2 : 0 ))}
.venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
