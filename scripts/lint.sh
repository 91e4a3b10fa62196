#!/usr/bin/env bash
# Lint, format check and type check: the one command that keeps the tree clean.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
