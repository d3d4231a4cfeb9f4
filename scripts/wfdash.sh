#!/usr/bin/env bash
# Runs wfdash from a fresh clone: creates .venv and installs the project first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/wfdash ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
fi
exec .venv/bin/wfdash "$@"
