"""Regenerate grafana/dashboards/*.json: `python -m grafana.dashboards_src [--check]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana.dashboards_src import DASHBOARDS_DIR, stale, write_all


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with --check report the stale ones (exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboards_src",
                                     description=__doc__)
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR,
                        help="output directory (default: grafana/dashboards)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from the code")
    args = parser.parse_args(argv)
    if args.check:
        differing = stale(args.out)
        for name in differing:
            print(f"stale: {args.out / name}", file=sys.stderr)
        return 1 if differing else 0
    for path in write_all(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
