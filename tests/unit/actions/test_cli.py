"""The action commands of the console script: local runs through the real runner, remote
runs against the action API's answers (httpx.MockTransport), tokens, steps and exit codes."""

from __future__ import annotations

import argparse
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from actions import cli
from actions.cli import CliError, Local, Remote, read_token
from exporter.access import Principal
from tests.unit.access_matrix import ALPHA
from tests.unit.actions.test_api import World, repair_action


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.close()


def local(world: World) -> Local:
    """A Local target over the world's services (Local() itself builds from a config)."""
    target = Local.__new__(Local)
    target.svc = world.services
    target.principal = Principal(name="local:tester", role="admin", instances=None,
                                 source="local")
    target.running = None  # type: ignore[assignment]
    return target


def args(**values: Any) -> argparse.Namespace:
    base = {"instance_id": ALPHA, "json": False, "timeout": 20.0, "component": None,
            "with_dependents": False, "dry_run": False, "actions": None, "confirm": False,
            "set": [], "db_dump": False, "reason": "cli", "list": False}
    return argparse.Namespace(**{**base, **values})


def test_local_restart_runs_through_the_runner_and_is_audited_as_local(world: World) -> None:
    world.plain.hold("restart_service")
    threading.Timer(1.5, world.plain.release).start()
    out = io.StringIO()
    code = cli.cmd_restart(local(world), args(component="auth", with_dependents=True), out)
    assert code == cli.EXIT_OK
    text = out.getvalue()
    assert "restart_service on alpha" in text and "[running] restart_service" in text
    assert "[ok" in text and text.rstrip().splitlines()[-1].startswith("succeeded")
    entry = world.store.audit(1, 0, instance_id=ALPHA)[0]
    assert (entry.who, entry.action, entry.result) == ("local:tester", "restart_service",
                                                      "succeeded")
    assert world.plain.calls == [("restart_service", ALPHA,
                                  {"component": "auth", "with_dependents": True})]


def test_local_failure_exits_non_zero(world: World) -> None:
    world.plain.fail = True
    out = io.StringIO()
    assert cli.cmd_backup(local(world), args(db_dump=True), out) == cli.EXIT_FAILED
    assert "[failed] backup" in out.getvalue()
    assert out.getvalue().rstrip().splitlines()[-1].startswith("failed")


def test_local_refusals_say_why(world: World) -> None:
    with pytest.raises(Exception, match="unknown component"):
        cli.cmd_restart(local(world), args(component="nope"), io.StringIO())
    with pytest.raises(CliError, match="--with-dependents goes with --component"):
        cli.cmd_restart(local(world), args(with_dependents=True), io.StringIO())
    with pytest.raises(CliError, match="KEY=VALUE"):
        cli.cmd_config(local(world), args(set=["no-equals"]), io.StringIO())
    assert world.operations() == 0


def test_local_repair_dry_run_prints_the_plan(world: World) -> None:
    world.plain.plan = [repair_action("start_container"),
                        repair_action("regenerate_jwt_keys", None, needs_confirm=True)]
    out = io.StringIO()
    assert cli.cmd_repair(local(world), args(dry_run=True), out) == cli.EXIT_OK
    text = out.getvalue()
    assert "start_container:auth" in text and "(needs --confirm)" in text
    assert "would run: start_container:auth" in text
    assert world.operations() == 0
    assert cli.cmd_repair(local(world), args(confirm=True), io.StringIO()) == cli.EXIT_OK
    assert world.plain.calls[-1][2]["actions"] == ["start_container:auth",
                                                  "regenerate_jwt_keys"]


def test_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert read_token(None, {"ULTRABASE_DOCTOR_TOKEN": " tok \n"}) == "tok"
    file = tmp_path / "token"
    file.write_text("from-file\n")
    assert read_token(file, {"ULTRABASE_DOCTOR_TOKEN": "env"}) == "from-file"
    with pytest.raises(CliError, match="ULTRABASE_DOCTOR_TOKEN"):
        read_token(None, {})
    with pytest.raises(CliError, match="cannot read the token file"):
        read_token(tmp_path / "missing", {})
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        # No such option, on purpose; and no abbreviation of --token-file either.
        parser.parse_args(["restart", ALPHA, "--token", "x"])


class FakeApi:
    """The action API's answers for one restart that ends as `outcome`."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.polls = 0
        self.requests: list[httpx.Request] = []

    def operation(self, status: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": "a" * 32, "kind": "safe_restart", "instance_id": ALPHA,
                "status": status, "steps": steps, "error": None if status != self.outcome
                or status == "succeeded" else "start failed: auth unhealthy; rolled back",
                "duration_seconds": 3.2 if status in cli.FINISHED else None}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Authorization") != "Bearer tok-secret":
            return httpx.Response(401, json={"error": {"code": "unauthorized",
                                                       "message": "missing or invalid"}})
        if request.method == "POST":
            return httpx.Response(202, json=self.operation("running", [
                {"name": "backup", "status": "running", "duration_seconds": None,
                 "detail": {}}]))
        self.polls += 1
        steps = [{"name": "backup", "status": "ok", "duration_seconds": 0.4, "detail": {}},
                 {"name": "start", "status": "failed" if self.outcome != "succeeded"
                  else "ok", "duration_seconds": 2.0, "detail": {"error": "auth unhealthy"}}]
        return httpx.Response(200, json=self.operation(
            "running" if self.polls < 2 else self.outcome, steps))


@pytest.mark.parametrize(("outcome", "code"), [("succeeded", 0), ("rolled_back", 1)])
def test_remote_restart_follows_the_steps(outcome: str, code: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi(outcome)
    target = Remote("http://127.0.0.1:9647", "tok-secret",
                    transport=httpx.MockTransport(api.handler))
    monkeypatch.setattr(cli, "POLL_SECONDS", 0.0)
    out = io.StringIO()
    assert cli.cmd_restart(target, args(), out) == code
    lines = out.getvalue().splitlines()
    assert lines[1:4] == ["  [running] backup", "  [ok] backup (0.4s)",
                          "  [ok] start (2.0s)" if outcome == "succeeded"
                          else "  [failed] start (2.0s): auth unhealthy"]
    assert lines[-1].startswith(outcome)
    assert api.requests[0].url.path == f"/api/instances/{ALPHA}/safe-restart"
    assert json.loads(api.requests[0].content) == {}
    assert "tok-secret" not in out.getvalue()


def test_remote_refusal_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": {"code": "operation_running",
                                                   "message": "operation b is running"},
                                         "running_operation_id": "b" * 32})

    target = Remote("http://127.0.0.1:9647", "tok", transport=httpx.MockTransport(handler))
    with pytest.raises(CliError, match="409: operation b is running"):
        cli.cmd_backup(target, args(), io.StringIO())
    with pytest.raises(CliError, match="--url must be"):
        Remote("file:///etc/passwd", "tok")


def test_config_set_is_typed_by_the_instance_settings() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/config"):
            return httpx.Response(200, json={"instance_id": ALPHA, "config": {"fields": {
                "disable_signup": {"type": "bool", "value": False},
                "jwt_expiry": {"type": "int", "value": 3600},
                "name": {"type": "str", "value": "A"}}}})
        if request.method == "PUT":
            seen.append(json.loads(request.content))
            return httpx.Response(202, json={"id": "c" * 32, "kind": "config_edit",
                                             "instance_id": ALPHA, "status": "succeeded",
                                             "steps": [], "duration_seconds": 1.0})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "x"}})

    target = Remote("http://127.0.0.1:9647", "tok", transport=httpx.MockTransport(handler))
    out = io.StringIO()
    code = cli.cmd_config(target, args(set=["disable_signup=true", "jwt_expiry=7200",
                                            "name=New name"]), out)
    assert code == 0
    assert seen == [{"changes": {"disable_signup": True, "jwt_expiry": 7200,
                                 "name": "New name"}}]
    with pytest.raises(Exception, match="jwt_expiry must be an integer"):
        cli.cmd_config(target, args(set=["jwt_expiry=soon"]), io.StringIO())


def test_the_exporter_parser_has_no_action_commands() -> None:
    from exporter import cli as exporter_cli

    exporter_commands = exporter_cli.build_parser()._subparsers._group_actions[0].choices
    action_commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"actions", "serve", "repair", "restart"}.isdisjoint(exporter_commands)
    assert {"instances", "diagnose", "report", "exporter", "actions", "serve", "repair",
            "restart", "config", "backup", "restore"} <= set(action_commands)
    source = Path(exporter_cli.__file__).read_text()
    assert "actions" not in {line.split()[1].split(".")[0] for line in source.splitlines()
                             if line.strip().startswith(("import ", "from "))}
