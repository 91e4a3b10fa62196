#!/usr/bin/env bash
# Install searchengine and its development tools into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The ray extra too: the tests run --engine ray on a one-node Ray cluster.
.venv/bin/python -m pip install --quiet -e ".[dev,ray]"
# The recall-parity tests call CLIP_benchmark's own metric code; its declared
# dependencies (~150 MB, e.g. pycocoevalcap) are not needed for that module.
.venv/bin/python -m pip install --quiet --no-deps "clip-benchmark>=1.6"
echo "installed: $(.venv/bin/searchengine --version)"
