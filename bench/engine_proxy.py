"""The engine proxy's cost: Docker API calls and whole diagnostics, direct and through it.

Brings up a test fleet of one instance (or uses one given with --config), starts
`ultrabase-doctor engine-proxy` on a temporary unix socket against the host's engine, then
times, direct and through the proxy taking turns, each call the exporter makes (ping, the
container listing, an inspect of an instance's container, one in-network TCP probe by exec)
--calls times, and a full diagnostic of the instance --repeat times. Prints the medians;
writes nothing into the tree.
Run: python -m bench.engine_proxy [--calls 30] [--repeat 5] [--config FLEET/doctor.yaml]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

from bench.sweep import _fleet
from exporter.checks.probes import probe_tcp
from exporter.config import Config, load_config
from exporter.discovery import discover
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine

ENGINE = "/var/run/docker.sock"


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def _calls(host: DockerHost, config: Config) -> dict[str, Callable[[], object]]:
    """The exporter's calls against one instance, through `host`."""
    (instance,) = discover(config, host).instances.values()
    kong, db = instance.components["kong"].container, instance.components["db"].container
    assert kong is not None and db is not None, "the instance is not up"
    return {
        "ping": host.ping,
        "container listing": host.list_containers,
        "inspect": lambda: host.inspect(db.id),
        "exec probe (kong -> db:5432)": lambda: probe_tcp(host, kong.id, "db", 5432, 5.0),
    }


def _diagnose(config: Config, url: str, instance_id: str) -> Callable[[], object]:
    engine = DiagnosticsEngine(config, DockerHost(url, config.docker.timeout_seconds))

    def run() -> object:
        return engine.run(instance_id, use_cache=False, limited=False)
    return run


def _measure(config: Config, proxy_url: str, calls: int, repeat: int) -> list[tuple[str,
                                                                                   float,
                                                                                   float]]:
    direct, proxied = DockerHost(f"unix://{ENGINE}", 10.0), DockerHost(proxy_url, 10.0)
    rows = []
    pairs = zip(_calls(direct, config).items(), _calls(proxied, config).values(), strict=True)
    for (name, plain), through in pairs:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(calls):
            times[False].append(_timed(plain))
            times[True].append(_timed(through))
        rows.append((name, median(times[False]), median(times[True])))
    (instance_id,) = discover(config, direct).instances
    plain = _diagnose(config, f"unix://{ENGINE}", instance_id)
    through = _diagnose(config, proxy_url, instance_id)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeat):
        runs[False].append(_timed(plain))
        runs[True].append(_timed(through))
    rows.append(("full diagnostic", median(runs[False]), median(runs[True])))
    return rows


def _print(rows: list[tuple[str, float, float]]) -> None:
    print(f"{'call':<30} {'direct ms':>10} {'proxy ms':>10} {'extra ms':>10}")
    for name, plain, through in rows:
        print(f"{name:<30} {plain * 1000:>10.1f} {through * 1000:>10.1f} "
              f"{(through - plain) * 1000:>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--config", type=Path, help="an existing fleet's doctor.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-engine-proxy-") as tmp:
        work = Path(tmp)
        fleet_root = None
        config_path = args.config
        if config_path is None:
            fleet_root = work / "fleet"
            up = json.loads(_fleet(["up", "--instances", "1", "--root", str(fleet_root)]))
            config_path = Path(up["config"])
        sock = work / "engine.sock"
        proxy = subprocess.Popen([sys.executable, "-m", "actions.cli", "engine-proxy",
                                  "--config", str(config_path), "--listen", str(sock)])
        try:
            while not sock.exists():
                if proxy.poll() is not None:
                    raise SystemExit("the engine proxy did not start")
                time.sleep(0.1)
            _print(_measure(load_config(config_path), f"unix://{sock}", args.calls,
                            args.repeat))
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
            if fleet_root is not None:
                _fleet(["down", "--root", str(fleet_root)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
