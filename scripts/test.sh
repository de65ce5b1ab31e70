#!/usr/bin/env bash
# The test command: installs what it needs, starts dockerd if none runs, lints, runs the
# whole suite (unit and integration) and cleans up. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

cleanup() {
  remove_leftover_fleets
  stop_docker_if_started
}
trap cleanup EXIT

setup_all
cd "$DOCTOR_ROOT"
say "ruff"
ruff check exporter actions fleet tests bench grafana deploy
say "mypy"
mypy
say "pytest"
set +e
# Three workers: the two lanes of live tests in one each, everything else in the third
# (tests/conftest.py, tests/integration/lanes.py).
pytest -p no:cacheprovider -n 3 "$@"
status=$?
set -e
# pytest's 5 means no test ran: that is a failure here, not a pass.
if [[ $status -eq 5 ]]; then
  say "no test was collected"
  exit 1
fi
exit $status
