"""Sweep wall time against instance count, with normal concurrency and with concurrency 1.

Brings up a test fleet (or uses one given with --config), then for N = 1, 3, 5, ...
diagnoses N instances with the engine's normal concurrency and with concurrency 1, and
reports the slowest single check of those runs as the floor, the CPU time the tool
itself spent on the concurrent sweep (steady under load, unlike wall times), and the CPU
time the whole host spent on it above its idle background (the tool, the instances'
containers, dockerd): divided by the cores, that is the shortest wall time any engine could
reach on this host. Each figure is the median of --repeat sweeps, the two concurrencies
taking turns so that load from elsewhere falls on both alike. The fleet's healthchecks run
every --health-interval (10s, as most of the reference template's do; the test suite's
fleets use 5s). With --fault, every instance measured first gets that fleet fault (say
pause:auth, a hanging component: the case where a diagnostic waits rather than computes),
healed at the end. Prints a table; writes nothing into the tree.
Run: python -m bench.sweep [--max N] [--repeat R] [--health-interval 10s] [--fault F]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from bench.hostcpu import background_rate, host_busy, own_cpu
from exporter.config import Config, load_config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine


def _fleet(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "fleet", *command], check=True,
                          stdout=subprocess.PIPE, text=True)
    return done.stdout


def _engine(config: Config, concurrency: int) -> DiagnosticsEngine:
    tuned = config.model_copy(update={"diagnostics": config.diagnostics.model_copy(
        update={"concurrency": concurrency})})
    return DiagnosticsEngine(tuned, DockerHost(config.docker.base_url,
                                               config.docker.timeout_seconds))


@dataclass(frozen=True)
class Sample:
    """One sweep: wall time, slowest check, the tool's CPU and the host's busy CPU."""

    wall: float
    slowest: float
    tool_cpu: float
    host_cpu: float


@dataclass(frozen=True)
class Row:
    """The medians for one N."""

    n: int
    wall: float
    serial: float
    slowest: float
    tool_cpu: float
    host_cpu: float


def _sweep(engine: DiagnosticsEngine, ids: list[str]) -> Sample:
    """Measure one sweep."""
    started, cpu, busy = time.monotonic(), own_cpu(), host_busy()
    diagnostics = engine.sweep("on_demand", ids)
    wall = time.monotonic() - started
    return Sample(wall, max(r.duration_seconds for d in diagnostics for r in d.results.values()),
                  own_cpu() - cpu, host_busy() - busy)


def _measure(config: Config, ids: list[str], repeat: int) -> Row:
    """Medians of both concurrencies; host CPU is net of the idle background rate."""
    engines = (_engine(config, config.diagnostics.concurrency), _engine(config, 1))
    samples: tuple[list[Sample], list[Sample]] = ([], [])
    try:
        for engine in engines:
            engine.sweep("on_demand", ids)  # warm: imports, inspect cache, connections
        background = background_rate()
        for _ in range(repeat):
            for n, engine in enumerate(engines):
                samples[n].append(_sweep(engine, ids))
    finally:
        for engine in engines:
            engine.close()
    concurrent = samples[0]
    return Row(len(ids), median(s.wall for s in concurrent),
               median(s.wall for s in samples[1]), median(s.slowest for s in concurrent),
               median(s.tool_cpu for s in concurrent),
               median(max(0.0, s.host_cpu - background * s.wall) for s in concurrent))


def _print(rows: list[Row]) -> None:
    """The table, then what it bounds."""
    cores = os.cpu_count() or 1
    base = rows[0].wall
    print(f"load average {os.getloadavg()[0]:.1f} on {cores} cores")
    print(f"{'N':>3} {'concurrent s':>13} {'vs N=1':>7} {'concurrency 1 s':>16} "
          f"{'speed-up':>9} {'slowest check s':>16} {'tool CPU s':>11} {'host CPU s':>11} "
          f"{'CPU floor s':>12}")
    for row in rows:
        print(f"{row.n:>3} {row.wall:>13.2f} {row.wall / base:>6.2f}x {row.serial:>16.2f} "
              f"{row.serial / row.wall:>8.2f}x {row.slowest:>16.2f} {row.tool_cpu:>11.2f} "
              f"{row.host_cpu:>11.2f} {row.host_cpu / cores:>12.2f}")
    one = rows[0]
    print(f"one diagnostic keeps {one.host_cpu / one.wall:.2f} of {cores} cores busy; "
          f"at that cost N instances need at least N x {one.host_cpu / cores:.2f} s "
          f"= N x {one.host_cpu / cores / base:.2f} x the N=1 time on this host")


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=5, help="largest N (fleet size)")
    parser.add_argument("--config", help="use an existing fleet's config instead")
    parser.add_argument("--repeat", type=int, default=3, help="sweeps per figure (median)")
    parser.add_argument("--health-interval", default="10s",
                        help="the fleet's healthcheck interval (own fleet only)")
    parser.add_argument("--fault", help="a fleet fault (python -m fleet faults) to "
                        "inject into every instance measured, e.g. pause:auth")
    args = parser.parse_args()
    sizes = [n for n in (1, 3, 5, 10, 25) if n <= args.max]
    own_fleet = args.config is None
    # A fleet's config sits at the root of its directory (fleet up writes it there).
    fleet_root = (Path(tempfile.mkdtemp(prefix="ubd-bench-")) / "fleet" if own_fleet
                  else Path(args.config).resolve().parent)
    broken: list[str] = []
    try:
        if own_fleet:
            print(f"bringing up {args.max} instances under {fleet_root} ...", file=sys.stderr)
            up = json.loads(_fleet(["up", "--instances", str(args.max), "--root",
                                    str(fleet_root), "--health-interval",
                                    args.health_interval]))
            config_path = up["config"]
        else:
            config_path = args.config
        config = load_config(config_path)
        engine = DiagnosticsEngine(config, DockerHost(config.docker.base_url))
        ids = sorted(engine.discover().instances)[:sizes[-1]]
        engine.close()
        if args.fault:
            for instance_id in ids:
                _fleet(["break", "--root", str(fleet_root), instance_id, args.fault])
                broken.append(instance_id)
            print(f"fault {args.fault} in every instance measured", file=sys.stderr)
        rows = [_measure(config, ids[:n], max(1, args.repeat)) for n in sizes if n <= len(ids)]
        _print(rows)
    finally:
        for instance_id in broken:
            _fleet(["heal", "--root", str(fleet_root), instance_id, args.fault])
        if own_fleet:
            _fleet(["down", "--root", str(fleet_root)])
            with suppress(OSError):
                fleet_root.parent.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
