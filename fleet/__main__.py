"""CLI of the test fleet: `python -m fleet up|break|heal|faults|status|down`.

Results are JSON on stdout; progress and errors go to stderr. The fleet's root directory
comes from --root, else from $ULTRABASE_FLEET_ROOT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from fleet import engine
from fleet.fleet import BREAK_TIMEOUT, HEAL_TIMEOUT, UP_TIMEOUT, Fleet, teardown
from fleet.model import COMPONENTS, FleetError
from fleet.render import DEFAULT_HEALTH_INTERVAL

ROOT_ENV = "ULTRABASE_FLEET_ROOT"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=None,
                        help=f"the fleet's directory (default: ${ROOT_ENV})")
    parser = argparse.ArgumentParser(prog="python -m fleet",
                                     description="The Ultrabase Doctor test fleet.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="create N healthy instances")
    up.add_argument("--instances", type=int, default=2, metavar="N")
    up.add_argument("--timeout", type=float, default=UP_TIMEOUT)
    up.add_argument("--health-interval", default=DEFAULT_HEALTH_INTERVAL, metavar="2s",
                    help="every Docker healthcheck's interval (the reference uses 5-30s)")
    up.add_argument("--kong-dns-ttl", type=int, default=None, metavar="SECONDS",
                    help="how long Kong keeps a DNS answer (fleet-only; default: Docker's "
                         "600 s TTL, as in production)")
    up.add_argument("--manager-exact", action="store_true",
                    help="write the files exactly as the real Ultrabase manager does, its "
                         "defects included (ports on all interfaces, every pooler asking "
                         "for host port 5432, admin/admin, ...)")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="leave a failed fleet in place for inspection")
    for name, timeout, text in (("break", BREAK_TIMEOUT, "inject a fault"),
                                ("heal", HEAL_TIMEOUT, "undo a fault")):
        cmd = sub.add_parser(name, parents=[common], help=text)
        cmd.add_argument("instance_id")
        cmd.add_argument("fault")
        cmd.add_argument("--timeout", type=float, default=timeout)
    sub.add_parser("faults", parents=[common], help="list the faults")
    sub.add_parser("status", parents=[common], help="container states of every instance")
    sub.add_parser("down", parents=[common], help="remove everything the fleet created")
    return parser


def _root(args: argparse.Namespace) -> Path:
    root = args.root or (Path(os.environ[ROOT_ENV]) if os.environ.get(ROOT_ENV) else None)
    if root is None:
        raise FleetError(f"give --root DIR or set ${ROOT_ENV}")
    return Path(root)


def _status(fleet: Fleet) -> dict[str, object]:
    out: dict[str, object] = {}
    for instance in fleet.instances:
        found = engine.containers(instance)
        components = {}
        for component in COMPONENTS:
            item = found.get(component)
            state = engine.state_of(item) if item else None
            components[component] = ({"status": state.status, "health": state.health,
                                      "restarts": state.restart_count}
                                     if state else {"status": "missing"})
        out[instance.id] = {"components": components,
                            "faults": list(fleet.active_faults().get(instance.id, ()))}
    return out


def run(argv: list[str]) -> int:
    """Run one command; the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "faults":
        for spec in Fleet.faults():
            expect = spec.expect
            stated = (f"{expect.root()}, repair {expect.repair or 'none'}" if expect
                      else "-")
            print(f"{spec.name}\t{spec.description}\t{stated}")
        return 0
    root = _root(args)
    if args.command == "up":
        fleet = Fleet.up(root, args.instances, timeout=args.timeout,
                         keep_on_failure=args.keep_on_failure,
                         health_interval=args.health_interval,
                         kong_dns_ttl=args.kong_dns_ttl,
                         manager_exact=args.manager_exact)
        assert fleet.up_result is not None
        print(json.dumps(fleet.up_result.as_json()))
    elif args.command == "break":
        print(json.dumps(Fleet.open(root).break_(args.instance_id, args.fault,
                                                 timeout=args.timeout).as_json()))
    elif args.command == "heal":
        print(json.dumps(Fleet.open(root).heal(args.instance_id, args.fault,
                                               timeout=args.timeout).as_json()))
    elif args.command == "status":
        print(json.dumps(_status(Fleet.open(root)), indent=2))
    elif args.command == "down":
        teardown(root)
    return 0


def main() -> None:
    """Entry point: log progress to stderr, turn FleetError into exit status 1."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s fleet: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        sys.exit(run(sys.argv[1:]))
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
