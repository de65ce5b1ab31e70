"""Safe restart against a plain `docker stop` + `docker start` of the same containers.

Brings up a test fleet of one instance (or uses one given with --config), then, --repeat
times: stops every container of the instance and starts them again through the Docker API
with nothing else (all at once, the fastest a plain restart can be) and times it until
every container is healthy again (running, when it has no healthcheck); then runs the
safe restart (backup, capture, ordered stop, volume check, ordered start with health
waits, quick health, state comparison) and times it. Prints a table with the ratio; the
goal is at most 1.5x. Writes nothing into the tree (backups and the store go to a temp
dir). Run: python -m bench.restart [--repeat R] [--config F --instance ID]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.operations.restart import safe_restart_body
from actions.operations.runner import OperationRunner
from actions.store import ActionStore
from exporter.access import Principal
from exporter.config import Config, load_config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine

_HEALTH_TIMEOUT = 180.0
_SETTLE_SECONDS = 3.0


def _fleet(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "fleet", *command], check=True,
                          stdout=subprocess.PIPE, text=True)
    return done.stdout


def _all_up(client: docker.DockerClient, ids: Sequence[str]) -> bool:
    for container_id in ids:
        state = client.api.inspect_container(container_id)["State"]
        health = (state.get("Health") or {}).get("Status")
        if state["Status"] != "running" or health not in (None, "healthy"):
            return False
    return True


def _wait_up(client: docker.DockerClient, ids: Sequence[str]) -> None:
    deadline = time.monotonic() + _HEALTH_TIMEOUT
    while not _all_up(client, ids):
        if time.monotonic() > deadline:
            raise SystemExit("the instance did not come back up; giving up")
        time.sleep(0.1)


def _plain(client: docker.DockerClient, ids: Sequence[str],
           stop_timeout: float) -> tuple[float, float]:
    """Seconds until stop+start returned, and until everything was up again."""
    began = time.monotonic()
    with ThreadPoolExecutor(len(ids)) as pool:
        list(pool.map(lambda c: client.api.stop(c, timeout=int(stop_timeout)), ids))
        list(pool.map(client.api.start, ids))
    returned = time.monotonic() - began
    _wait_up(client, ids)
    return returned, time.monotonic() - began


def _safe(runner: OperationRunner, instance_id: str) -> tuple[float, str]:
    principal = Principal("bench", "admin", None, "token")
    began = time.monotonic()
    operation = runner.run_inline("safe_restart", instance_id, principal, {},
                                  safe_restart_body(None))
    took = time.monotonic() - began
    if operation.status != "succeeded":
        raise SystemExit(f"safe restart {operation.status} at {operation.failed_step}: "
                         f"{operation.error}")
    return took, " ".join(f"{s.name}={s.duration_seconds:.1f}" for s in operation.steps
                          if s.duration_seconds and s.duration_seconds >= 0.05)


def _measure(config: Config, instance_id: str, repeat: int, work: Path) -> None:
    host = DockerHost(config.docker.base_url, config.docker.timeout_seconds)
    store = ActionStore(work / "store.sqlite3")
    engine = DiagnosticsEngine(config, host, store)
    runner = OperationRunner(config, engine, store, host, ComposeRunner.from_config(config),
                             BackupStore(work / "backups"), None)
    client = docker.DockerClient(base_url=config.docker.base_url, timeout=120)
    try:
        instance = engine.instance(instance_id, fresh=True)
        ids = [c.container.id for c in instance.components.values() if c.container]
        _wait_up(client, ids)
        rows = []
        for run in range(1, repeat + 1):
            time.sleep(_SETTLE_SECONDS)
            returned, plain = _plain(client, ids, config.actions.stop_timeout_seconds)
            time.sleep(_SETTLE_SECONDS)
            safe, steps = _safe(runner, instance_id)
            rows.append((run, returned, plain, safe, steps))
            print(f"run {run}: plain {plain:.1f}s, safe {safe:.1f}s ({steps})",
                  file=sys.stderr)
    finally:
        engine.close()
        store.close()
        client.close()
    print(f"instance {instance_id}: {len(ids)} containers, {repeat} runs")
    print(f"{'run':>6} {'plain returned s':>17} {'plain until up s':>17} "
          f"{'safe restart s':>15} {'ratio':>7}")
    for run, returned, plain, safe, _ in rows:
        print(f"{run:>6} {returned:>17.2f} {plain:>17.2f} {safe:>15.2f} {safe / plain:>6.2f}x")
    median_plain = statistics.median(r[2] for r in rows)
    median_safe = statistics.median(r[3] for r in rows)
    print(f"{'median':>6} {statistics.median(r[1] for r in rows):>17.2f} {median_plain:>17.2f} "
          f"{median_safe:>15.2f} {median_safe / median_plain:>6.2f}x   (goal <= 1.50x)")


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind")
    parser.add_argument("--config", help="use an existing fleet's config instead")
    parser.add_argument("--instance", help="with --config: the instance to restart")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ubd-bench-restart-"))
    own_fleet = args.config is None
    try:
        if own_fleet:
            print(f"bringing up 1 instance under {work} ...", file=sys.stderr)
            up = json.loads(_fleet(["up", "--instances", "1", "--root", str(work / "fleet")]))
            config_path, instance_id = up["config"], up["instances"][0]
        else:
            if not args.instance:
                parser.error("--config needs --instance")
            config_path, instance_id = args.config, args.instance
        _measure(load_config(config_path), instance_id, args.repeat, work)
    finally:
        if own_fleet:
            _fleet(["down", "--root", str(work / "fleet")])
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
