#!/usr/bin/env bash
# The test suite. Usable on a fresh clone: creates .venv and installs the project first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  . .venv/bin/activate
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[test]"
fi
# Each test run gets its own state dir: never the user's event history.
export WFDASH_STATE_DIR="${WFDASH_STATE_DIR:-$(mktemp -d)}"
exec python -m pytest "$@"
