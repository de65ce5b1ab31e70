"""The `ultrabase-doctor` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from exporter import __version__
from exporter.config import Config, load_config, resolve_config_path
from exporter.discovery import Discovery, discover
from exporter.dockerhost import DockerHost
from exporter.errors import DoctorError

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message, as every other usage error does."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="ultrabase-doctor",
                     description="Diagnose, monitor and safely repair Supabase instances "
                                 "run by Ultrabase.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("instances", help="list discovered instances and their problems")
    p.add_argument("--config", help="config file (default $ULTRABASE_DOCTOR_CONFIG or "
                                    "/etc/ultrabase-doctor/config.yaml)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_instances)
    return parser


def open_docker(config: Config) -> DockerHost:
    """The Docker reader the config asks for."""
    return DockerHost(config.docker.base_url, timeout=config.docker.timeout_seconds)


def cmd_instances(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """`instances`: what discovery found."""
    found = discover(config, open_docker(config))
    if args.json:
        json.dump(discovery_json(found), out, indent=2)
        out.write("\n")
        return EXIT_OK
    out.write(render_instances(found))
    return EXIT_OK


def discovery_json(found: Discovery) -> dict[str, Any]:
    """The JSON shape of `instances --json`."""
    return {
        "docker_ok": found.docker_ok,
        "docker_error": found.docker_error,
        "instances": [i.to_dict() for i in found.instances.values()],
        "problems": [p.to_dict() for p in found.problems],
    }


def render_instances(found: Discovery) -> str:
    """A human table of instances, components and problems."""
    lines: list[str] = []
    if not found.docker_ok:
        lines.append(f"Docker unreachable: {found.docker_error}")
    if not found.instances:
        lines.append("No instances found.")
    header = f"{'ID':<12} {'NAME':<24} {'SOURCE':<9} {'RUNNING':<8} {'GATEWAY':<24} PROBLEMS"
    if found.instances:
        lines.append(header)
    for inst in found.instances.values():
        running = sum(1 for c in inst.components.values() if c.running)
        count = f"{running}/{len(inst.components)}" if inst.runtime_known else "?"
        codes = ",".join(sorted({p.code for p in inst.problems})) or "-"
        lines.append(f"{inst.id:<12} {inst.name[:24]:<24} {inst.source:<9} {count:<8} "
                     f"{(inst.endpoints.gateway_url or '-'):<24} {codes}")
        down = [f"{c.name}={c.state}" for c in inst.components.values()
                if inst.runtime_known and not c.running]
        if down:
            lines.append(f"{'':<12} not running: {', '.join(down)}")
        for p in inst.problems:
            lines.append(f"{'':<12} {p.severity.upper()} {p.code}: {p.message}")
    for p in found.problems:
        lines.append(f"{p.severity.upper()} {p.code}: {p.message}")
    return "\n".join(lines) + "\n"


Handler = Callable[[argparse.Namespace, Config, TextIO], int]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(resolve_config_path(getattr(args, "config", None)))
        handler: Handler = args.handler
        return handler(args, config, out)
    except DoctorError as exc:
        sys.stderr.write(f"ultrabase-doctor: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
