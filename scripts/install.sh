#!/usr/bin/env bash
# Install searchengine and its development tools into ./.venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# Where pip's configuration names package folders that do not exist, it warns once per
# package; those lines would bury what matters in a CI log.
pip_install() {
    .venv/bin/python -m pip install --quiet "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
pip_install --upgrade pip
# The ray extra too: the tests run --engine ray on a one-node Ray cluster.
pip_install -e ".[dev,ray]"
# An editable install leaves the package uncompiled, and where PYTHONDONTWRITEBYTECODE
# is set (as on these machines and in CI) Python never caches what it compiles: every
# command would compile the modules it imports again (~0.1 s of a ~0.5 s search).
.venv/bin/python -m compileall -q searchengine
# The recall-parity tests call CLIP_benchmark's own metric code; its declared
# dependencies (~150 MB, e.g. pycocoevalcap) are not needed for that module.
pip_install --no-deps "clip-benchmark>=1.6"
echo "installed: $(.venv/bin/searchengine --version)"
