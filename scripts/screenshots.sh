#!/usr/bin/env bash
# Regenerates docs/img/console-*.png: runs the console's browser test (one fleet, headless
# Chromium) with its screenshots going to docs/img. Needs Docker and Debian's chromium.
# Tears down only the fleet the test itself makes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${DOCTOR_VENV:-$ROOT/.venv}"
mkdir -p docs/img
UBD_SCREENSHOTS="$ROOT/docs/img" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
  tests/integration/test_console_browser.py -k operator_flow "$@"
ls -l docs/img/console-*.png
