"""Sweep wall time against instance count, with normal concurrency and with concurrency 1.

Brings up a test fleet (or uses one given with --config), then for N = 1, 3, 5, ...
diagnoses N instances with the engine's normal concurrency and with concurrency 1, and
reports the slowest single check of those runs as the floor, and the CPU time the tool
itself spent on the concurrent sweep (steady under load, unlike wall times). Each figure
is the median of --repeat sweeps, the two concurrencies taking turns so that load from
elsewhere falls on both alike. The fleet's healthchecks run every --health-interval (10s,
as most of the reference template's do; the test suite's fleets use 2s). Prints a table;
writes nothing into the tree.
Run: python -m bench.sweep [--max N] [--repeat R] [--health-interval 10s]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from exporter.config import Config, load_config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine


def _fleet(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "tests.fleet", *command], check=True,
                          stdout=subprocess.PIPE, text=True)
    return done.stdout


def _engine(config: Config, concurrency: int) -> DiagnosticsEngine:
    tuned = config.model_copy(update={"diagnostics": config.diagnostics.model_copy(
        update={"concurrency": concurrency})})
    return DiagnosticsEngine(tuned, DockerHost(config.docker.base_url,
                                               config.docker.timeout_seconds))


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _sweep(engine: DiagnosticsEngine, ids: list[str]) -> tuple[float, float, float]:
    """Wall time of one sweep, its slowest single check, and this process's CPU time."""
    started, cpu = time.monotonic(), _cpu()
    diagnostics = engine.sweep("on_demand", ids)
    wall, cpu = time.monotonic() - started, _cpu() - cpu
    return wall, max(r.duration_seconds for d in diagnostics for r in d.results.values()), cpu


def _measure(config: Config, ids: list[str], repeat: int
             ) -> tuple[float, float, float, float]:
    """Medians: wall with normal concurrency and with 1, slowest check, the tool's CPU."""
    engines = (_engine(config, config.diagnostics.concurrency), _engine(config, 1))
    walls: tuple[list[float], list[float]] = ([], [])
    slowest: list[float] = []
    cpus: list[float] = []
    try:
        for engine in engines:
            engine.sweep("on_demand", ids)  # warm: imports, inspect cache, connections
        for _ in range(repeat):
            for n, engine in enumerate(engines):
                wall, slow, cpu = _sweep(engine, ids)
                walls[n].append(wall)
                if n == 0:
                    slowest.append(slow)
                    cpus.append(cpu)
    finally:
        for engine in engines:
            engine.close()
    return median(walls[0]), median(walls[1]), median(slowest), median(cpus)


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=5, help="largest N (fleet size)")
    parser.add_argument("--config", help="use an existing fleet's config instead")
    parser.add_argument("--repeat", type=int, default=3, help="sweeps per figure (median)")
    parser.add_argument("--health-interval", default="10s",
                        help="the fleet's healthcheck interval (own fleet only)")
    args = parser.parse_args()
    sizes = [n for n in (1, 3, 5, 10, 25) if n <= args.max]
    root = Path(tempfile.mkdtemp(prefix="ubd-bench-"))
    own_fleet = args.config is None
    try:
        if own_fleet:
            print(f"bringing up {args.max} instances under {root} ...", file=sys.stderr)
            up = json.loads(_fleet(["up", "--instances", str(args.max), "--root",
                                    str(root / "fleet"), "--health-interval",
                                    args.health_interval]))
            config_path = up["config"]
        else:
            config_path = args.config
        config = load_config(config_path)
        engine = DiagnosticsEngine(config, DockerHost(config.docker.base_url))
        ids = sorted(engine.discover().instances)
        engine.close()
        rows = []
        for n in sizes:
            if n > len(ids):
                break
            rows.append((n, *_measure(config, ids[:n], max(1, args.repeat))))
        base = rows[0][1]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'N':>3} {'concurrent s':>13} {'vs N=1':>7} {'concurrency 1 s':>16} "
              f"{'speed-up':>9} {'slowest check s':>16} {'tool CPU s':>11}")
        for n, wall, serial, slowest, cpu in rows:
            print(f"{n:>3} {wall:>13.2f} {wall / base:>6.2f}x {serial:>16.2f} "
                  f"{serial / wall:>8.2f}x {slowest:>16.2f} {cpu:>11.2f}")
    finally:
        if own_fleet:
            _fleet(["down", "--root", str(root / "fleet")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
