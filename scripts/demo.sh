#!/usr/bin/env bash
# The main job: a demo fleet of 3 Supabase-shaped instances in the Ultrabase layout, one of
# them broken, with the exporter and the action API (one `ultrabase-doctor serve` process),
# Prometheus with the shipped rules and Alertmanager, all on 127.0.0.1. Prints the operator
# console's URL and a sign-in token first, then a first diagnostic with its root cause and
# the same actions from the shell and with curl. Ctrl-C or SIGTERM (or the end, with
# --once) stops and removes everything this script created.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

ONCE=""
[[ "${1:-}" == "--once" ]] && ONCE=1
DEMO_ROOT="${DEMO_ROOT:-/tmp/ultrabase-doctor-demo}"
BROKEN_FAULT="${BROKEN_FAULT:-auth-db-password}"
EXPORTER_PORT="${EXPORTER_PORT:-9646}"
ACTIONS_PORT="${ACTIONS_PORT:-9647}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
PIDS=()
SLEEPER=""

cleanup() {
  if [[ -n "$SLEEPER" ]]; then kill "$SLEEPER" 2>/dev/null || true; fi
  say "stopping the demo"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  (cd "$DOCTOR_ROOT" && python -m fleet down --root "$DEMO_ROOT/fleet") || true
  rm -rf "$DEMO_ROOT"
  stop_docker_if_started
}

wait_http() {  # URL, what
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  say "$2 did not come up; its log is in $DEMO_ROOT"
  return 1
}

setup_all
cd "$DOCTOR_ROOT"
if [[ -e "$DEMO_ROOT" ]]; then
  say "removing a demo left over at $DEMO_ROOT"
  python -m fleet down --root "$DEMO_ROOT/fleet" 2>/dev/null || true
  rm -rf "$DEMO_ROOT"
fi
mkdir -p "$DEMO_ROOT"
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a fleet of 3 instances under $DEMO_ROOT/fleet"
python -m fleet up --instances 3 --root "$DEMO_ROOT/fleet" > "$DEMO_ROOT/fleet.json"
read -r FLEET_CONFIG TOKEN BROKEN HEALTHY < <(python - "$DEMO_ROOT/fleet.json" <<'EOF'
import json, sys
up = json.load(open(sys.argv[1]))
print(up["config"], up["admin_token"], up["instances"][0], up["instances"][1])
EOF
)

say "breaking instance $BROKEN with fault $BROKEN_FAULT"
python -m fleet break "$BROKEN" "$BROKEN_FAULT" --root "$DEMO_ROOT/fleet"

CONFIG="$DEMO_ROOT/doctor.yaml"
python - "$FLEET_CONFIG" "$CONFIG" "$DEMO_ROOT" "$EXPORTER_PORT" "$ACTIONS_PORT" \
  "$ALERTMANAGER_PORT" <<'EOF'
import sys, yaml
source, target, root, exporter, actions, am = sys.argv[1:]
config = yaml.safe_load(open(source))
config["store"] = {"path": f"{root}/store.sqlite3"}
config["exporter"] = {"host": "127.0.0.1", "port": int(exporter)}
config["actions"] = {"host": "127.0.0.1", "port": int(actions),
                     "backups_dir": f"{root}/backups"}
config["alertmanager"] = {"url": f"http://127.0.0.1:{am}"}
config["schedule"] = {"sweep_interval_seconds": 60}
with open(target, "w") as out:
    yaml.safe_dump(config, out)
EOF
chmod 600 "$CONFIG"

say "starting the exporter and the action API (ultrabase-doctor serve)"
ultrabase-doctor serve --config "$CONFIG" > "$DEMO_ROOT/doctor.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$EXPORTER_PORT/healthz" "the exporter"
wait_http "http://127.0.0.1:$ACTIONS_PORT/healthz" "the action API"
CONSOLE="http://127.0.0.1:$ACTIONS_PORT/"
say "the console is up: $CONSOLE  (sign in with the admin token: $TOKEN)"

say "starting Prometheus and Alertmanager with the shipped rules"
mkdir -p "$DEMO_ROOT/prometheus" "$DEMO_ROOT/alertmanager"
cp -r prometheus/rules "$DEMO_ROOT/prometheus/"
printf '%s' "$TOKEN" > "$DEMO_ROOT/alertmanager/actions_token"
chmod 600 "$DEMO_ROOT/alertmanager/actions_token"
python - "$DEMO_ROOT" "$EXPORTER_PORT" "$ACTIONS_PORT" "$ALERTMANAGER_PORT" <<'EOF'
import sys, yaml
root, exporter, actions, am = sys.argv[1:]
prometheus = yaml.safe_load(open("prometheus/prometheus.yml"))
prometheus["global"].update(scrape_interval="15s", evaluation_interval="15s")
prometheus["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [f"127.0.0.1:{am}"]}]}]
prometheus["scrape_configs"] = [
    dict(job, static_configs=[{"targets": [f"127.0.0.1:{exporter}"]}])
    if job["job_name"] == "ultrabase-doctor-exporter" else
    dict(job, static_configs=[{"targets": [f"127.0.0.1:{actions}"]}])
    for job in prometheus["scrape_configs"]
    if job["job_name"] in ("ultrabase-doctor-exporter", "ultrabase-doctor-actions")]
yaml.safe_dump(prometheus, open(f"{root}/prometheus/prometheus.yml", "w"))
# The shipped alertmanager.yml sends to Slack, email and Telegram; the demo keeps its
# routing for auto-repair (to the action API) and sends nothing off this machine.
alertmanager = {
    "route": {"receiver": "demo-log", "group_by": ["alertname", "host", "instance_id"],
              "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h",
              "routes": [{"receiver": "ultrabase-actions", "continue": True,
                          "matchers": ['auto_repair="true"']}]},
    "receivers": [
        {"name": "demo-log"},
        {"name": "ultrabase-actions", "webhook_configs": [{
            "url": f"http://127.0.0.1:{actions}/api/alerts", "send_resolved": False,
            "http_config": {"authorization": {
                "credentials_file": f"{root}/alertmanager/actions_token"}}}]},
    ],
}
yaml.safe_dump(alertmanager, open(f"{root}/alertmanager/alertmanager.yml", "w"))
EOF
prometheus --config.file="$DEMO_ROOT/prometheus/prometheus.yml" \
  --storage.tsdb.path="$DEMO_ROOT/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" > "$DEMO_ROOT/prometheus.log" 2>&1 &
PIDS+=($!)
prometheus-alertmanager --config.file="$DEMO_ROOT/alertmanager/alertmanager.yml" \
  --storage.path="$DEMO_ROOT/alertmanager/data" --cluster.listen-address= \
  --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" > "$DEMO_ROOT/alertmanager.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" "Prometheus"
wait_http "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" "Alertmanager"

say "what discovery finds"
ultrabase-doctor instances --config "$CONFIG"

say "a first diagnostic of every instance"
ultrabase-doctor diagnose --all --config "$CONFIG" || true

E="http://127.0.0.1:$EXPORTER_PORT"
A="http://127.0.0.1:$ACTIONS_PORT"
cat <<EOT

Operator console     $CONSOLE
  sign in with this admin token:  $TOKEN
  the broken instance ($BROKEN, fault $BROKEN_FAULT) leads the fleet with its root cause;
  open it, then "Repair…" to fix it and watch the steps.

URLs
  exporter metrics   $E/metrics
  action API spec    $A/openapi.json
  Prometheus         http://127.0.0.1:$PROMETHEUS_PORT  (alerts: /alerts)
  Alertmanager       http://127.0.0.1:$ALERTMANAGER_PORT
  Grafana            where images can be pulled: docker compose up -d grafana (see deploy/README.md)

The same from the shell (steps shown as they happen; non-zero exit on failure or rollback)
  export ULTRABASE_DOCTOR_TOKEN=$TOKEN
  ultrabase-doctor repair $BROKEN --url $A --dry-run
  ultrabase-doctor repair $BROKEN --url $A
  ultrabase-doctor restart $HEALTHY --url $A --component rest
  ultrabase-doctor backup $HEALTHY --url $A --db-dump
  ultrabase-doctor config $HEALTHY --url $A --set site_url=http://localhost:3000
  (without --url, on this host: ultrabase-doctor repair $BROKEN --config $CONFIG)

And with curl (long operations answer 202 with an operation; add ?wait=true to block)
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" $E/api/instances/$BROKEN/run-diagnostics | jq .root_cause
  curl -s -H "Authorization: Bearer \$TOKEN" "$E/api/instances/$BROKEN/diagnostic-logs?services=auth,db&level=error&range=1h"
  curl -s -H "Authorization: Bearer \$TOKEN" $E/api/instances/$BROKEN/health-report?days=7
  curl -s -H "Authorization: Bearer \$TOKEN" $A/api/instances/$BROKEN/repair-plan
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{}' "$A/api/instances/$BROKEN/repair?wait=true"
  curl -s -X POST -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{}' "$A/api/instances/$HEALTHY/safe-restart?wait=true"
  curl -s -H "Authorization: Bearer \$TOKEN" "$A/api/audit?limit=20"

Fleet
  python -m fleet faults
  python -m fleet heal $BROKEN $BROKEN_FAULT --root $DEMO_ROOT/fleet
(the virtualenv is $DOCTOR_VENV: 'source $DOCTOR_VENV/bin/activate' first)
EOT

if [[ -z "$ONCE" ]]; then
  say "the demo runs until Ctrl-C or SIGTERM"
  # A trap runs only between commands: `wait` returns at once on a signal, a foreground
  # `sleep` would hold a TERM for up to an hour.
  while true; do
    sleep 3600 &
    SLEEPER=$!
    wait "$SLEEPER" || true
  done
fi
