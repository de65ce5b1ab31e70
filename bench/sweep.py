"""Sweep wall time against instance count, with normal concurrency and with concurrency 1.

Brings up a test fleet (or uses one given with --config), then for N = 1, 3, 5, ...
diagnoses N instances with the engine's normal concurrency and with concurrency 1, and
reports the slowest single check of those runs as the floor. Prints a table; writes
nothing into the tree. Run: python -m bench.sweep [--max N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exporter.config import Config, load_config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine


def _fleet(command: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "tests.fleet", *command], check=True,
                          stdout=subprocess.PIPE, text=True)
    return done.stdout


def _measure(config: Config, ids: list[str], concurrency: int) -> tuple[float, float]:
    tuned = config.model_copy(update={"diagnostics": config.diagnostics.model_copy(
        update={"concurrency": concurrency})})
    engine = DiagnosticsEngine(tuned, DockerHost(config.docker.base_url,
                                                 config.docker.timeout_seconds))
    try:
        engine.sweep("on_demand", ids)  # warm: imports, inspect cache, connections
        started = time.monotonic()
        diagnostics = engine.sweep("on_demand", ids)
        wall = time.monotonic() - started
    finally:
        engine.close()
    slowest = max(r.duration_seconds for d in diagnostics for r in d.results.values())
    return wall, slowest


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=5, help="largest N (fleet size)")
    parser.add_argument("--config", help="use an existing fleet's config instead")
    args = parser.parse_args()
    sizes = [n for n in (1, 3, 5, 10, 25) if n <= args.max]
    root = Path(tempfile.mkdtemp(prefix="ubd-bench-"))
    own_fleet = args.config is None
    try:
        if own_fleet:
            print(f"bringing up {args.max} instances under {root} ...", file=sys.stderr)
            up = json.loads(_fleet(["up", "--instances", str(args.max), "--root",
                                    str(root / "fleet")]))
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
            wall, slowest = _measure(config, ids[:n], config.diagnostics.concurrency)
            serial, _ = _measure(config, ids[:n], 1)
            rows.append((n, wall, serial, slowest))
        base = rows[0][1]
        print(f"{'N':>3} {'concurrent s':>13} {'vs N=1':>7} {'concurrency 1 s':>16} "
              f"{'speed-up':>9} {'slowest check s':>16}")
        for n, wall, serial, slowest in rows:
            print(f"{n:>3} {wall:>13.2f} {wall / base:>6.2f}x {serial:>16.2f} "
                  f"{serial / wall:>8.2f}x {slowest:>16.2f}")
    finally:
        if own_fleet:
            _fleet(["down", "--root", str(root / "fleet")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
