#!/usr/bin/env bash
# Runs wfdash from a fresh clone: creates .venv and installs the project first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/wfdash ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e .
  # Bytecode now, as a wheel install writes it: an editable install has none, and with
  # PYTHONDONTWRITEBYTECODE set every start would compile wfdash again (~50 ms).
  .venv/bin/python -m compileall -q wfdash >/dev/null
fi
exec .venv/bin/wfdash "$@"
