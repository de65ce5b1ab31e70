"""The `ultrabase-doctor` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from exporter import __version__
from exporter.config import Config, load_config, resolve_config_path
from exporter.discovery import Discovery, discover
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine, RunOutcome
from exporter.errors import DoctorError
from exporter.logsafe import configure_logging
from exporter.redaction import install_fingerprint_key
from exporter.render import render_diagnostic, render_instances
from exporter.reports import load_report, render_report
from exporter.store import Store

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line message, as every other usage error does."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


Subcommands = Any  # argparse's _SubParsersAction, private in typeshed's terms


def build_parser(*more: Callable[[Subcommands], None]) -> argparse.ArgumentParser:
    """The argument parser with the exporter's subcommands, and those `more` adds."""
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

    p = sub.add_parser("diagnose", help="diagnose one instance or all of them")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("instance_id", nargs="?", help="the instance id")
    target.add_argument("--all", action="store_true", help="every discovered instance")
    p.add_argument("--config", help="config file")
    p.add_argument("--json", action="store_true", help="print the diagnostic JSON")
    p.add_argument("--checks", help="comma-separated subset of checks to run")
    p.add_argument("--no-cache", action="store_true",
                   help="run now even if a fresh cached diagnostic exists")
    p.set_defaults(handler=cmd_diagnose)

    p = sub.add_parser("report", help="health report of an instance from its stored history")
    p.add_argument("instance_id")
    p.add_argument("--days", type=int, default=7, help="period in days (1-365)")
    p.add_argument("--config", help="config file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("exporter", help="serve /metrics and the diagnostics API")
    p.add_argument("--config", help="config file")
    p.set_defaults(handler=cmd_exporter)

    p = sub.add_parser("engine-proxy",
                       help="serve the Docker API calls the exporter makes on a unix socket")
    p.add_argument("--config", help="config file (which instances' containers qualify)")
    p.add_argument("--listen", required=True, type=Path, help="the unix socket to create")
    p.add_argument("--engine", default="/var/run/docker.sock",
                   help="the Docker engine's socket (default /var/run/docker.sock)")
    p.add_argument("--check", action="store_true",
                   help="exit 0 when the proxy on --listen answers, 1 otherwise")
    p.set_defaults(run=cmd_engine_proxy)

    for add in more:
        add(sub)
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


def cmd_diagnose(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """`diagnose`: run checks; exit 0 healthy, 1 unhealthy."""
    checks = [c.strip() for c in args.checks.split(",") if c.strip()] if args.checks else None
    store = open_store(config)
    engine = DiagnosticsEngine(config, open_docker(config), store)
    try:
        if args.all:
            outcomes = [RunOutcome(d) for d in engine.sweep("on_demand", checks=checks)]
        else:
            outcomes = [engine.run(args.instance_id, use_cache=not args.no_cache,
                                   checks=checks)]
    finally:
        engine.close()
        store.close()
    if args.json:
        payload: Any = [o.to_dict() for o in outcomes] if args.all else outcomes[0].to_dict()
        json.dump(payload, out, indent=2)
        out.write("\n")
    else:
        for outcome in outcomes:
            out.write(render_diagnostic(outcome.diagnostic, cached=outcome.cached,
                                        rate_limited=outcome.rate_limited))
            out.write("\n")
    return EXIT_OK if all(o.diagnostic.healthy for o in outcomes) else EXIT_UNHEALTHY


def open_store(config: Config) -> Store:
    """The shared store, so CLI runs show in /metrics and history like any other."""
    return Store(config.store.path, config.store.history_limit)


def cmd_report(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """`report`: uptime, trend, common issues and recovery time from stored history."""
    if not 1 <= args.days <= 365:
        raise DoctorError("--days must be from 1 to 365")
    store = open_store(config)
    try:
        report = load_report(store, args.instance_id, args.days,
                             limit=config.store.max_report_diagnostics)
    finally:
        store.close()
    if args.json:
        json.dump(report.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(render_report(report))
    return EXIT_OK


def cmd_exporter(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    """`exporter`: the long-running service."""
    from exporter.service import serve

    return serve(config)


def cmd_engine_proxy(args: argparse.Namespace, out: TextIO) -> int:
    """`engine-proxy`: the containerized exporter's only way to the engine (or --check it)."""
    from exporter import engineproxy

    if args.check:
        return EXIT_OK if engineproxy.check(args.listen) else EXIT_UNHEALTHY
    # No fingerprint key: the proxy shows no secret's tag, and has no store to keep one.
    config = load_config(resolve_config_path(args.config))
    return engineproxy.serve(config, args.listen, args.engine)


def discovery_json(found: Discovery) -> dict[str, Any]:
    """The JSON shape of `instances --json`."""
    return {
        "docker_ok": found.docker_ok,
        "docker_error": found.docker_error,
        "instances": [i.to_dict() for i in found.instances.values()],
        "problems": [p.to_dict() for p in found.problems],
    }


Handler = Callable[[argparse.Namespace, Config, TextIO], int]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         parser: argparse.ArgumentParser | None = None) -> int:
    """Entry point of the exporter's commands; returns the exit code.

    The console script is actions.cli:main, which passes a parser with the action
    commands too. A subcommand that sets `run` instead of `handler` reads the config
    itself (or needs none, e.g. when it talks to a remote action API).
    """
    out = out or sys.stdout
    args = (parser or build_parser()).parse_args(argv)
    configure_logging(args.log_level, sys.stderr)
    try:
        run: Callable[[argparse.Namespace, TextIO], int] | None = getattr(args, "run", None)
        if run is not None:
            return run(args, out)
        config = load_config(resolve_config_path(getattr(args, "config", None)))
        # Fingerprints the CLI prints match the services' (the key beside the store).
        install_fingerprint_key(config.store.path)
        handler: Handler = args.handler
        return handler(args, config, out)
    except DoctorError as exc:
        sys.stderr.write(f"ultrabase-doctor: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
