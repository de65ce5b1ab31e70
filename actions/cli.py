"""The `ultrabase-doctor` console script: the exporter's commands plus the action commands.

    ultrabase-doctor repair ID [--dry-run] [--actions a,b] [--confirm]
    ultrabase-doctor restart ID [--component C] [--with-dependents]
    ultrabase-doctor config ID [--set key=value ...]
    ultrabase-doctor backup ID [--db-dump] [--reason R] [--list]
    ultrabase-doctor restore ID BACKUP
    ultrabase-doctor actions | serve

Each action runs through the same operation runner, instance lock and audit log as the
action API, by one of two ways:

- locally (no --url): with the config's store, Docker and backups, as the local user (the
  audit log says `local:<user>`, role admin: whoever can run this can read the store and
  drive Docker anyway);
- against a running action API (--url): with a token from $ULTRABASE_DOCTOR_TOKEN or
  --token-file, never from the command line, with that token's role and scope.

Steps are printed as they happen; the exit code is 0 when the operation succeeded (or
there was nothing to run), 1 when it failed or was rolled back, 2 for a refused request.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

import httpx

from actions import commands
from actions.models import (
    BackupCreateRequest,
    ConfigEditRequest,
    RepairRequest,
    RestartServiceRequest,
    SafeRestartRequest,
)
from exporter import cli as exporter_cli
from exporter.access import Principal
from exporter.config import Config, load_config, resolve_config_path
from exporter.errors import DoctorError

TOKEN_ENV = "ULTRABASE_DOCTOR_TOKEN"  # noqa: S105 - the variable's name, not a token
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
FINISHED = frozenset({"succeeded", "failed", "rolled_back"})
POLL_SECONDS = 0.5
DEFAULT_FOLLOW_SECONDS = 3600.0


class CliError(DoctorError):
    """A request the action commands refuse, with the reason (exit code 2)."""


# parser -----------------------------------------------------------------------------------


def add_action_commands(sub: Any) -> None:
    """The action subcommands (and the services that serve the action API)."""
    p = sub.add_parser("actions", help="serve the action API and the console")
    p.add_argument("--config", help="config file")
    p.set_defaults(handler=_serve_actions)

    p = sub.add_parser("serve", help="run the exporter and the action API in one process")
    p.add_argument("--config", help="config file")
    p.set_defaults(handler=_serve_all)

    p = sub.add_parser("repair", allow_abbrev=False,
                       help="diagnose afresh and run the repair plan")
    _target(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    p.add_argument("--actions", help="comma-separated action ids of the plan to run")
    p.add_argument("--confirm", action="store_true",
                   help="also run actions that need confirmation (new API keys)")
    p.set_defaults(run=_runner(cmd_repair))

    p = sub.add_parser("restart", allow_abbrev=False,
                       help="safe restart of the instance, or of one component")
    _target(p)
    p.add_argument("--component", help="restart this component only")
    p.add_argument("--with-dependents", action="store_true",
                   help="with --component: also the components that depend on it")
    p.set_defaults(run=_runner(cmd_restart))

    p = sub.add_parser("config", allow_abbrev=False,
                       help="show the editable settings, or change them")
    _target(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting to change (repeatable); none: show the settings")
    p.set_defaults(run=_runner(cmd_config))

    p = sub.add_parser("backup", allow_abbrev=False,
                       help="back up the instance's files (and database)")
    _target(p)
    p.add_argument("--db-dump", action="store_true", help="include a pg_dump of the database")
    p.add_argument("--reason", default="cli", help="recorded with the backup")
    p.add_argument("--list", action="store_true", help="list the backups instead")
    p.set_defaults(run=_runner(cmd_backup))

    p = sub.add_parser("restore", allow_abbrev=False,
                       help="restore one of the instance's backups")
    _target(p)
    p.add_argument("backup_id", help="the backup id (see backup ID --list)")
    p.set_defaults(run=_runner(cmd_restore))


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance_id", help="the instance id")
    p.add_argument("--config", help="config file (local runs)")
    p.add_argument("--url", help="a running action API, e.g. http://127.0.0.1:9647; the "
                                 f"token comes from ${TOKEN_ENV} or --token-file")
    p.add_argument("--token-file", type=Path, help="file holding the API token (with --url)")
    p.add_argument("--timeout", type=float, default=DEFAULT_FOLLOW_SECONDS,
                   help="seconds to follow the operation before giving up watching")
    p.add_argument("--json", action="store_true", help="print the final JSON instead")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand of the console script."""
    return exporter_cli.build_parser(add_action_commands)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the `ultrabase-doctor` console script."""
    return exporter_cli.main(argv, out, parser=build_parser())


def _serve_actions(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    from actions.service import serve

    return serve(config)


def _serve_all(args: argparse.Namespace, config: Config, out: TextIO) -> int:
    from actions.service import serve_all

    return serve_all(config)


# the two ways to run ------------------------------------------------------------------------


class Target:
    """Where an action runs: here, or at a remote action API."""

    def call(self, what: str, instance_id: str, **params: Any) -> dict[str, Any]:
        """Start (or ask) `what`; the operation or plan as the JSON API shows it."""
        raise NotImplementedError

    def operation(self, op_id: str) -> dict[str, Any]:
        """The operation as it stands."""
        raise NotImplementedError

    def close(self) -> None:
        """Let what was started end, then release what was opened."""


class Local(Target):
    """The action services built here from the config, as the local user."""

    def __init__(self, config: Config) -> None:
        from actions.service import build

        self.running = build(config)
        self.svc = self.running.services
        self.principal = Principal(name=f"local:{_user()}", role="admin", instances=None,
                                   source="local")

    def call(self, what: str, instance_id: str, **params: Any) -> dict[str, Any]:
        """Run the same command the JSON API runs."""
        svc = self.svc
        launch: commands.Launch | None
        if what == "repair":
            decision = commands.repair(svc, instance_id, _valid(RepairRequest, params))
            if decision.launch is None:
                return decision.plan
            launch = decision.launch
        elif what == "safe_restart":
            launch = commands.safe_restart(svc, instance_id, _valid(SafeRestartRequest, params))
        elif what == "restart_service":
            launch = commands.restart_service(svc, instance_id,
                                              _valid(RestartServiceRequest, params))
        elif what == "config":
            return {"instance_id": instance_id,
                    "config": commands.current_config(svc, instance_id)}
        elif what == "config_edit":
            launch = commands.config_edit(svc, instance_id, _valid(ConfigEditRequest, params))
        elif what == "backups":
            return {"instance_id": instance_id, "backups": [
                b.to_dict() for b in commands.list_backups(svc, instance_id)]}
        elif what == "backup":
            launch = commands.backup(svc, instance_id, _valid(BackupCreateRequest, params))
        elif what == "restore":
            launch = commands.restore(svc, instance_id, str(params["backup_id"]))
        else:  # pragma: no cover - the parser names every command
            raise CliError(f"unknown action {what}")
        return launch.start(svc, self.principal).to_dict()

    def operation(self, op_id: str) -> dict[str, Any]:
        """From the store, as the API reads it."""
        return commands.find_operation(self.svc, self.principal, op_id).to_dict()

    def close(self) -> None:
        """Operations in flight end (rollback included) before the process does."""
        self.running.close()


class Remote(Target):
    """A running action API, called with a bearer token."""

    ROUTES: Mapping[str, tuple[str, str]] = {
        "repair": ("POST", "/api/instances/{id}/repair"),
        "safe_restart": ("POST", "/api/instances/{id}/safe-restart"),
        "restart_service": ("POST", "/api/instances/{id}/restart-service"),
        "config": ("GET", "/api/instances/{id}/config"),
        "config_edit": ("PUT", "/api/instances/{id}/config"),
        "backups": ("GET", "/api/instances/{id}/backups"),
        "backup": ("POST", "/api/instances/{id}/backups"),
        "restore": ("POST", "/api/instances/{id}/backups/{backup_id}/restore"),
    }

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None
                 ) -> None:
        if not url.startswith(("http://", "https://")):
            raise CliError("--url must be an http:// or https:// URL")
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=120.0, trust_env=False,
                                   headers={"Authorization": f"Bearer {token}"},
                                   transport=transport)

    def call(self, what: str, instance_id: str, **params: Any) -> dict[str, Any]:
        """The JSON API's answer to the request."""
        method, path = self.ROUTES[what]
        backup_id = str(params.pop("backup_id", ""))
        url = path.format(id=_quote(instance_id), backup_id=_quote(backup_id))
        body = None if method == "GET" else params
        return self._answer(self.client.request(method, url, json=body))

    def operation(self, op_id: str) -> dict[str, Any]:
        """GET /api/operations/<id>."""
        return self._answer(self.client.get(f"/api/operations/{_quote(op_id)}"))

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            message = (error.get("message") if isinstance(error, dict) else None) \
                or f"HTTP {response.status_code}"
            running = data.get("running_operation_id") if isinstance(data, dict) else None
            if running:
                message += f" (the running operation: {running})"
            raise CliError(f"{response.status_code}: {message}")
        return data


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _valid(model: Any, params: Mapping[str, Any]) -> Any:
    """The request model the JSON API validates with, from the command's parameters."""
    from pydantic import ValidationError

    from actions.blueprints.common import describe_errors

    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise CliError(f"invalid request: {describe_errors(exc)}") from None


def _user() -> str:
    with suppress(Exception):
        return getpass.getuser()
    return str(os.getuid())


def open_target(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Target:
    """Local (the config's services) or remote (--url with a token from env or file)."""
    if args.url:
        return Remote(args.url, read_token(args.token_file, environ))
    if args.token_file:
        raise CliError("--token-file goes with --url; local runs need no token")
    return Local(load_config(resolve_config_path(args.config)))


def read_token(path: Path | None, environ: Mapping[str, str] = os.environ) -> str:
    """The API token: from the file when given, else from $ULTRABASE_DOCTOR_TOKEN."""
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(f"cannot read the token file {path}: "
                           f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    else:
        token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise CliError(f"--url needs a token: set ${TOKEN_ENV} or give --token-file")
    return token


# following an operation ---------------------------------------------------------------------


class StepPrinter:
    """Prints each step when it starts and when its status changes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._seen: dict[int, str] = {}

    def update(self, operation: Mapping[str, Any]) -> None:
        """Print what changed since the last call."""
        for n, step in enumerate(operation.get("steps") or []):
            status = str(step.get("status"))
            if self._seen.get(n) == status:
                continue
            self._seen[n] = status
            line = f"  [{status}] {step.get('name')}"
            if step.get("duration_seconds") is not None and status != "running":
                line += f" ({float(step['duration_seconds']):.1f}s)"
            error = (step.get("detail") or {}).get("error")
            if error and status == "failed":
                line += f": {error}"
            self.out.write(line + "\n")
            self.out.flush()


def follow(target: Target, operation: dict[str, Any], out: TextIO, *, timeout: float,
           quiet: bool = False, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The operation once it ended (or as it stands at `timeout`), steps printed meanwhile."""
    printer = StepPrinter(out)
    if not quiet:
        out.write(f"operation {operation['id']}: {operation['kind']} on "
                  f"{operation['instance_id']}\n")
    deadline = clock() + timeout
    while True:
        if not quiet:
            printer.update(operation)
        if operation.get("status") in FINISHED or clock() >= deadline:
            return operation
        sleep(POLL_SECONDS)
        operation = target.operation(str(operation["id"]))


def _finish(operation: Mapping[str, Any], out: TextIO, as_json: bool) -> int:
    status = operation.get("status")
    if as_json:
        json.dump(operation, out, indent=2)
        out.write("\n")
    else:
        line = f"{status}"
        if operation.get("duration_seconds") is not None:
            line += f" in {float(operation['duration_seconds']):.1f}s"
        if operation.get("error"):
            line += f": {operation['error']}"
        if status not in FINISHED:
            line = (f"still {status} after the timeout; follow it with GET "
                    f"/api/operations/{operation.get('id')}")
        out.write(line + "\n")
    return EXIT_OK if status == "succeeded" else EXIT_FAILED


def _runner(command: Callable[[Target, argparse.Namespace, TextIO], int]
            ) -> Callable[[argparse.Namespace, TextIO], int]:
    """Open the target, run the command, close the target (waiting for local operations)."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        try:
            target = open_target(args)
        except CliError as exc:
            sys.stderr.write(f"ultrabase-doctor: error: {exc}\n")
            return EXIT_REFUSED
        try:
            return command(target, args, out)
        except (DoctorError, httpx.HTTPError) as exc:
            sys.stderr.write(f"ultrabase-doctor: error: {exc}\n")
            return EXIT_REFUSED
        except KeyboardInterrupt:
            if isinstance(target, Local):
                sys.stderr.write("interrupted: the operation goes on until it ends "
                                 "(rollback included); waiting for it\n")
            raise
        finally:
            target.close()

    return run


def _started(target: Target, args: argparse.Namespace, out: TextIO,
             answer: dict[str, Any]) -> int:
    final = follow(target, answer, out, timeout=args.timeout, quiet=args.json)
    return _finish(final, out, args.json)


# the commands -------------------------------------------------------------------------------


def cmd_repair(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """`repair`: diagnose, plan, run (or only print the plan)."""
    actions = [a.strip() for a in args.actions.split(",") if a.strip()] if args.actions \
        else None
    answer = target.call("repair", args.instance_id, dry_run=args.dry_run,
                         confirm=args.confirm, actions=actions)
    if "steps" in answer:
        return _started(target, args, out, answer)
    if args.json:
        json.dump(answer, out, indent=2)
        out.write("\n")
        return EXIT_OK
    out.write(render_plan(answer))
    return EXIT_OK


def render_plan(plan: Mapping[str, Any]) -> str:
    """A repair plan as text."""
    lines = [f"repair plan of {plan.get('instance_id')}"
             + (f" (diagnostic of {plan['diagnostic_at']})" if plan.get("diagnostic_at")
                else "")]
    if plan.get("root_cause"):
        lines.append(f"  root cause: {plan['root_cause']}")
    for action in plan.get("actions") or []:
        mark = " (needs --confirm)" if action.get("needs_confirm") else ""
        lines.append(f"  - {action.get('id')}: {action.get('description')}{mark}")
    if not plan.get("actions"):
        lines.append("  nothing to repair automatically")
    for item in plan.get("manual") or []:
        lines.append(f"  manual: {item.get('code')} ({item.get('component') or '-'}): "
                     f"{item.get('hint')}")
    if plan.get("would_run") is not None:
        lines.append(f"  would run: {', '.join(plan['would_run']) or 'nothing'}")
    if plan.get("message"):
        lines.append(f"  {plan['message']}")
    return "\n".join(lines) + "\n"


def cmd_restart(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """`restart`: safe restart of the instance, or restart of one component."""
    if args.component:
        answer = target.call("restart_service", args.instance_id, component=args.component,
                             with_dependents=args.with_dependents)
    else:
        if args.with_dependents:
            raise CliError("--with-dependents goes with --component")
        answer = target.call("safe_restart", args.instance_id)
    return _started(target, args, out, answer)


def cmd_config(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """`config`: print the settings, or change those given with --set."""
    current = target.call("config", args.instance_id)
    fields = current.get("config", {}).get("fields", {})
    if not args.set:
        if args.json:
            json.dump(current, out, indent=2)
            out.write("\n")
        else:
            for name, spec in fields.items():
                value = spec.get("value") if isinstance(spec, Mapping) else spec
                sync = "" if not isinstance(spec, Mapping) or spec.get("in_sync", True) \
                    else "  (files disagree)"
                out.write(f"{name} = {'' if value is None else value}{sync}\n")
        return EXIT_OK
    given: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set takes KEY=VALUE, got {commands.shown(item)!r}")
        given[key.strip()] = value
    changes = commands.typed_settings(given, fields)
    if not changes:
        raise CliError("--set names no change (empty values mean unchanged)")
    return _started(target, args, out, target.call("config_edit", args.instance_id,
                                                    changes=changes))


def cmd_backup(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """`backup`: take one (or --list them)."""
    if args.list:
        listed = target.call("backups", args.instance_id)
        if args.json:
            json.dump(listed, out, indent=2)
            out.write("\n")
        else:
            for b in listed.get("backups", []):
                dump = " +db" if b.get("has_db_dump") else ""
                out.write(f"{b.get('id')}  {b.get('created_at')}  {b.get('reason')}{dump}\n")
        return EXIT_OK
    return _started(target, args, out, target.call("backup", args.instance_id,
                                                    db_dump=args.db_dump, reason=args.reason))


def cmd_restore(target: Target, args: argparse.Namespace, out: TextIO) -> int:
    """`restore`: put a backup back (verified, current state backed up first)."""
    return _started(target, args, out, target.call("restore", args.instance_id,
                                                    backup_id=args.backup_id))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
