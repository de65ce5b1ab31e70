#!/usr/bin/env bash
# The main job: a demo fleet of 3 Supabase-shaped instances in the Ultrabase layout, one of
# them broken, with Ultrabase Doctor run against it. Ctrl-C (or the end, with --once)
# removes everything this script created.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

ONCE=""
[[ "${1:-}" == "--once" ]] && ONCE=1
DEMO_ROOT="${DEMO_ROOT:-/tmp/ultrabase-doctor-demo}"
BROKEN_FAULT="${BROKEN_FAULT:-auth-db-password}"

cleanup() {
  say "removing the demo fleet"
  (cd "$DOCTOR_ROOT" && python -m tests.fleet down --root "$DEMO_ROOT") || true
  stop_docker_if_started
}

setup_all
cd "$DOCTOR_ROOT"
if [[ -e "$DEMO_ROOT" ]]; then
  say "removing a demo left over at $DEMO_ROOT"
  python -m tests.fleet down --root "$DEMO_ROOT" || rm -rf "$DEMO_ROOT"
fi
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a fleet of 3 instances under $DEMO_ROOT"
python -m tests.fleet up --instances 3 --root "$DEMO_ROOT" > "$DEMO_ROOT.json"
CONFIG=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"])' "$DEMO_ROOT.json")
BROKEN=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["instances"][0])' "$DEMO_ROOT.json")
rm -f "$DEMO_ROOT.json"

say "breaking instance $BROKEN with fault $BROKEN_FAULT"
python -m tests.fleet break "$BROKEN" "$BROKEN_FAULT" --root "$DEMO_ROOT"

say "what discovery finds"
ultrabase-doctor instances --config "$CONFIG"

say "a first diagnostic of every instance"
ultrabase-doctor diagnose --all --config "$CONFIG" || true

cat <<EOT

Try next:
  ultrabase-doctor instances --config $CONFIG --json
  ultrabase-doctor diagnose $BROKEN --config $CONFIG --json
  ultrabase-doctor diagnose $BROKEN --config $CONFIG --checks auth_service,database_connection
  python -m tests.fleet faults
  python -m tests.fleet heal $BROKEN $BROKEN_FAULT --root $DEMO_ROOT
(the virtualenv is $DOCTOR_VENV: run 'source $DOCTOR_VENV/bin/activate' first)
EOT

if [[ -z "$ONCE" ]]; then
  say "the demo runs until Ctrl-C"
  while true; do sleep 3600; done
fi
