"""The action API over plain bodies: access table, validation, operations, webhook, limits.

The runner, store, engine and access control are the real ones; the operation bodies are
small plain ones registered here (what restart, repair and config edits do is tested with
their modules), and Docker answers from plain data.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from actions.alertmanager import AlertmanagerClient, AlertmanagerError
from actions.app import create_app
from actions.audit import AuditEntry
from actions.backups import Backup, BackupNotFound
from actions.compose import ComposeRunner
from actions.context import ActionServices, Bodies
from actions.operations.repair import RepairAction
from actions.operations.runner import Body, OperationContext, OperationRunner
from actions.store import ActionStore
from exporter.access import AccessControl
from exporter.config import Config, parse_config
from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.engine import DiagnosticsEngine
from exporter.metrics.render import MetricsRenderer
from exporter.store import InstanceInfo
from tests.unit.access_matrix import (
    ALPHA,
    BETA,
    CALLERS,
    MATRIX_OWNERS,
    Route,
    matrix_api,
    run_matrix,
    write_matrix_users,
)
from tests.unit.plaindocker import PlainDocker, containers_for
from tests.unit.test_engine import PlainCheck

ADMIN = {"Authorization": "Bearer tok-admin-3f8e62aa"}
OPERATOR = {"Authorization": "Bearer tok-operator-9d2a4c11"}
OPERATOR_BETA = {"Authorization": "Bearer tok-operator-beta-77e0"}
VIEWER = {"Authorization": "Bearer tok-viewer-5b1c0e7f"}
BACKUP_ID = "20250101T000000Z-abcdef"
SECRET = "n3w-Dashb0ard-secret-value"


# the world --------------------------------------------------------------------------------


class PlainBackups:
    """A backup store answering from plain data: one backup per instance."""

    def list(self, instance_id: str) -> list[Backup]:
        return [Backup(BACKUP_ID, instance_id, datetime(2025, 1, 1, tzinfo=UTC), "manual",
                       ("env", "compose.yml"), 1234, False, True)]

    def get(self, instance_id: str, backup_id: str) -> Backup:
        for backup in self.list(instance_id):
            if backup.id == backup_id:
                return backup
        raise BackupNotFound()


@dataclass
class Plain:
    """Plain operation bodies: each records its call; held kinds wait for release()."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    plan: list[RepairAction] = field(default_factory=list)
    fail: bool = False
    gates: dict[str, threading.Event] = field(default_factory=dict)

    def hold(self, kind: str) -> None:
        self.gates[kind] = threading.Event()

    def release(self) -> None:
        for gate in self.gates.values():
            gate.set()

    def body(self, kind: str, **detail: Any) -> Body:
        def run(ctx: OperationContext) -> Mapping[str, Any]:
            with ctx.step(kind, **detail):
                self.calls.append((kind, ctx.instance.id, detail))
                gate = self.gates.get(kind)
                assert gate is None or gate.wait(20), "gate never opened"
                if self.fail:
                    raise RuntimeError("plain body failed")
            return {"done": kind}
        return run

    def bodies(self) -> Bodies:
        def repair(actions: Sequence[RepairAction], confirm: bool) -> Body:
            return self.body("repair", actions=[a.id for a in actions], confirm=confirm)

        def plan_repairs(diagnostic: Diagnostic, instance: Instance) -> list[RepairAction]:
            return list(self.plan)

        def validate(changes: Mapping[str, Any]) -> dict[str, Any]:
            return dict(changes)

        return Bodies(
            safe_restart=lambda components: self.body("safe_restart", components=components),
            restart_service=lambda c, deps: self.body("restart_service", component=c,
                                                      with_dependents=deps),
            plan_repairs=plan_repairs, repair=repair,
            config_edit=lambda changes: self.body("config_edit", keys=sorted(changes)),
            validate_changes=validate,
            current_config=lambda inst: {"name": inst.name, "dashboard_password": "********"},
            backup=lambda reason, dump: self.body("backup", reason=reason, db_dump=dump),
            restore=lambda backup_id: self.body("restore", backup_id=backup_id),
            plan_details=lambda d, i: {"root_cause": None, "manual": []})


def repair_action(action: str, component: str | None = "auth", *,
                  needs_confirm: bool = False) -> RepairAction:
    return RepairAction(id=f"{action}:{component}" if component else action, action=action,
                        component=component, issue_codes=("CONTAINER_NOT_RUNNING",),
                        needs_confirm=needs_confirm, description=f"{action} {component}",
                        verify_check="container_status")


class World:
    """An action app over a real runner, store and engine, with plain bodies and Docker."""

    def __init__(self, tmp: Path, *, rate_limit: str = "100000/minute", budget: int = 2,
                 alertmanager: AlertmanagerClient | None = None, protect: bool = False,
                 store: ActionStore | None = None, bodies: Mapping[str, Any] | None = None) -> None:
        users = tmp / "users.json"
        write_matrix_users(users)
        api = matrix_api(users, protect_metrics=protect)
        self.config: Config = parse_config({
            "discovery": {"sources": ["static"], "static": [{"id": ALPHA}, {"id": BETA}]},
            "store": {"path": str(tmp / "store.sqlite3")},
            "actions": {"backups_dir": str(tmp / "backups"), "rate_limit": rate_limit,
                        "auto_repair_budget_per_hour": budget},
        }, environ={}).model_copy(update={"api": api})
        self.docker = PlainDocker(containers_for(ALPHA) + containers_for(BETA, kong_port=8101,
                                                                         db_port=5434))
        self.store = store or ActionStore(self.config.store.path)
        self.check = PlainCheck("container_status")
        self.engine = DiagnosticsEngine(self.config, self.docker, self.store,
                                        checks={"container_status": self.check})
        self.plain = Plain()
        self.runner = OperationRunner(self.config, self.engine, self.store, self.docker,
                                      ComposeRunner(["false"]), PlainBackups(),  # type: ignore[arg-type]
                                      alertmanager)
        self.services = ActionServices(
            config=self.config, engine=self.engine, store=self.store, runner=self.runner,
            backups=PlainBackups(),  # type: ignore[arg-type]
            renderer=MetricsRenderer(self.store, config=self.config),
            bodies=replace(self.plain.bodies(), **(bodies or {})), alertmanager=alertmanager)
        access = AccessControl(api, users_file=users, owners=lambda: MATRIX_OWNERS)
        self.app = create_app(self.services, access)
        self.store.set_instances([InstanceInfo(ALPHA, "Alpha", "dora"),
                                  InstanceInfo(BETA, "Beta", "admin")])
        self.engine.sweep("scheduled")

    def close(self) -> None:
        self.plain.release()
        assert self.runner.join(20), "operations still running"
        self.engine.close()
        self.store.close()

    def operations(self) -> int:
        return sum(self.store.operation_counts().values())


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    yield made
    made.close()


@pytest.fixture
def client(world: World) -> FlaskClient:
    return world.app.test_client()


def webhook(*alerts: Mapping[str, Any], status: str = "firing") -> dict[str, Any]:
    """An Alertmanager v4 webhook payload."""
    return {"version": "4", "groupKey": "{}:{alertname=\"AuthDown\"}", "truncatedAlerts": 0,
            "status": status, "receiver": "ultrabase-doctor",
            "groupLabels": {"alertname": "AuthDown"}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts)}


def alert(instance_id: str | None = ALPHA, *, auto: bool = True, status: str = "firing",
          name: str = "AuthDown") -> dict[str, Any]:
    labels = {"alertname": name, "severity": "critical"}
    if instance_id is not None:
        labels["instance_id"] = instance_id
    if auto:
        labels["auto_repair"] = "true"
    return {"status": status, "labels": labels, "annotations": {"summary": "auth is down"},
            "startsAt": "2025-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": "0123456789abcdef"}


# access -----------------------------------------------------------------------------------

WAIT = "?wait=true&timeout=20"
ACTION_ROUTES = [
    Route("GET", "/metrics", None),
    Route("GET", "/healthz", None),
    Route("POST", "/api/instances/{instance_id}/safe-restart" + WAIT, "operator", body={}),
    Route("POST", "/api/instances/{instance_id}/restart-service" + WAIT, "operator",
          body={"component": "auth"}),
    Route("GET", "/api/instances/{instance_id}/repair-plan", "viewer"),
    Route("POST", "/api/instances/{instance_id}/repair" + WAIT, "operator", body={}),
    Route("GET", "/api/instances/{instance_id}/config", "viewer"),
    Route("PUT", "/api/instances/{instance_id}/config" + WAIT, "operator",
          body={"changes": {"name": "Renamed"}}),
    Route("GET", "/api/instances/{instance_id}/backups", "viewer"),
    Route("POST", "/api/instances/{instance_id}/backups" + WAIT, "operator", body={}),
    Route("POST", f"/api/instances/{{instance_id}}/backups/{BACKUP_ID}/restore" + WAIT,
          "operator", body={}),
    Route("GET", "/api/audit", "admin"),
    Route("POST", "/api/alerts", "webhook", body=webhook(alert(auto=False))),
]


def test_every_role_route_and_scope(client: FlaskClient, world: World) -> None:
    assert run_matrix(client, ACTION_ROUTES) == []
    # Every let-through operation ran to its end, one at a time.
    assert world.operations() > 0
    assert all(s == "succeeded" for (_, s) in world.store.operation_counts())


def test_open_routes_protected_by_config(tmp_path: Path) -> None:
    world = World(tmp_path, protect=True)
    try:
        routes = [r for r in ACTION_ROUTES if r.needed is None]
        assert run_matrix(world.app.test_client(), routes, protect_open=True) == []
        assert world.app.test_client().get("/openapi.json").status_code == 200
    finally:
        world.close()


def test_operation_visible_only_within_scope(client: FlaskClient, world: World) -> None:
    started = client.post(f"/api/instances/{ALPHA}/backups", json={}, headers=ADMIN)
    assert started.status_code == 202
    op_id = started.json["id"]
    for caller in CALLERS:
        headers = {"Authorization": caller.authorization} if caller.authorization else {}
        response = client.get(f"/api/operations/{op_id}?wait=true&timeout=10",
                              headers=headers)
        want = (401 if caller.role is None else 403 if caller.role == "webhook"
                else 200 if caller.sees(ALPHA) else 404)
        assert response.status_code == want, (caller.name, response.json)
        if want == 404:
            # Indistinguishable from an operation that does not exist.
            assert response.json == client.get(f"/api/operations/{'0' * 32}",
                                               headers=headers).json


# operations -------------------------------------------------------------------------------


def test_202_location_progress_conflict_and_wait(client: FlaskClient, world: World) -> None:
    world.plain.hold("safe_restart")
    started = client.post(f"/api/instances/{ALPHA}/safe-restart",
                          json={"components": ["auth", "rest"], "stop_timeout_seconds": 5},
                          headers=OPERATOR)
    assert started.status_code == 202, started.json
    op_id = started.json["id"]
    assert started.headers["Location"] == f"/api/operations/{op_id}"
    assert started.json["inputs"] == {"components": ["auth", "rest"],
                                      "stop_timeout_seconds": 5}
    deadline = time.monotonic() + 10
    while world.plain.calls == [] and time.monotonic() < deadline:
        time.sleep(0.02)
    running = client.get(f"/api/operations/{op_id}", headers=VIEWER)
    assert running.status_code == 200 and running.json["status"] == "running"
    assert running.json["steps"][0]["name"] == "safe_restart"
    assert running.json["steps"][0]["status"] == "running"
    busy = client.post(f"/api/instances/{ALPHA}/restart-service", json={"component": "kong"},
                       headers=ADMIN)
    assert busy.status_code == 409
    assert busy.json["error"]["code"] == "operation_running"
    assert busy.json["running_operation_id"] == op_id
    assert busy.headers["Location"] == f"/api/operations/{op_id}"
    other = client.post(f"/api/instances/{BETA}/backups?wait=true", json={}, headers=ADMIN)
    assert other.status_code == 200 and other.json["status"] == "succeeded"
    still = client.get(f"/api/operations/{op_id}?wait=true&timeout=0.2", headers=VIEWER)
    assert still.status_code == 200 and still.json["status"] == "running"
    world.plain.release()
    done = client.get(f"/api/operations/{op_id}?wait=true", headers=VIEWER)
    assert done.status_code == 200 and done.json["status"] == "succeeded"
    assert done.json["steps"][0]["status"] == "ok"
    assert done.json["result"] == {"done": "safe_restart"}
    assert [c[0] for c in world.plain.calls] == ["safe_restart", "backup"]
    conflicts = world.store.audit(10, action="restart_service")
    assert [e.result for e in conflicts] == ["conflict"]
    assert conflicts[0].operation_id == op_id


def test_wait_true_returns_the_finished_operation(client: FlaskClient, world: World) -> None:
    world.plain.fail = True
    response = client.post(f"/api/instances/{ALPHA}/restart-service?wait=true",
                           json={"component": "auth", "with_dependents": True},
                           headers=OPERATOR)
    assert response.status_code == 200
    assert response.json["status"] == "failed" and response.json["failed_step"] == \
        "restart_service"
    assert world.plain.calls == [("restart_service", ALPHA,
                                  {"component": "auth", "with_dependents": True})]
    entry = world.store.audit(1, action="restart_service")[0]
    assert entry.result == "failed" and entry.who == "operator"


def test_unknown_operation_ids_are_404(client: FlaskClient) -> None:
    for op_id in ("0" * 32, "..%2F..%2Fetc", "x" * 65, "ZZ"):
        response = client.get(f"/api/operations/{op_id}", headers=ADMIN)
        assert response.status_code == 404, op_id
        assert response.json["error"]["code"] == "not_found"


# validation -------------------------------------------------------------------------------

MUTATING = [
    ("POST", f"/api/instances/{ALPHA}/safe-restart"),
    ("POST", f"/api/instances/{ALPHA}/restart-service"),
    ("POST", f"/api/instances/{ALPHA}/repair"),
    ("PUT", f"/api/instances/{ALPHA}/config"),
    ("POST", f"/api/instances/{ALPHA}/backups"),
    ("POST", f"/api/instances/{ALPHA}/backups/{BACKUP_ID}/restore"),
    ("POST", "/api/alerts"),
]
BAD_BODIES: list[tuple[str, bytes]] = [
    ("unknown field", b'{"surprise": 1}'),
    ("not json", b'{"components": ['),
    ("array", b"[1, 2]"),
    ("string", b'"restart"'),
    ("nan", b'{"stop_timeout_seconds": NaN}'),
    ("not utf-8", b'{"component": "\xff"}'),
]


@pytest.mark.parametrize(("method", "path"), MUTATING)
@pytest.mark.parametrize(("label", "raw"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_400_and_start_nothing(client: FlaskClient, world: World, method: str,
                                              path: str, label: str, raw: bytes) -> None:
    response = client.open(path, method=method, data=raw, headers=ADMIN,
                           content_type="application/json")
    assert response.status_code == 400, (label, response.get_data(as_text=True))
    assert set(response.json) == {"error"} and response.json["error"]["code"] == "bad_request"
    assert world.plain.calls == [] and world.operations() == 0
    refusals = world.store.audit(10)
    assert [e.result for e in refusals] == ["refused"]
    assert refusals[0].error is not None and refusals[0].error.startswith("400 bad_request")


@pytest.mark.parametrize(("method", "path"), MUTATING)
def test_oversized_bodies_are_413_and_start_nothing(client: FlaskClient, world: World,
                                                   method: str, path: str) -> None:
    raw = b'{"reason": "' + b"x" * world.config.api.max_body_bytes + b'"}'
    response = client.open(path, method=method, data=raw, headers=ADMIN,
                           content_type="application/json")
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"
    assert world.plain.calls == [] and world.operations() == 0


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("safe-restart", {"components": []}, "components"),
    ("safe-restart", {"components": ["auth"] * 21}, "components"),
    ("safe-restart", {"components": ["../db"]}, "pattern"),
    ("safe-restart", {"components": ["nosuch"]}, "unknown component"),
    ("safe-restart", {"stop_timeout_seconds": 0}, "stop_timeout_seconds"),
    ("safe-restart", {"stop_timeout_seconds": 601}, "stop_timeout_seconds"),
    ("safe-restart", {"stop_timeout_seconds": "30"}, "stop_timeout_seconds"),
    ("restart-service", {}, "component: required"),
    ("restart-service", {"component": "auth", "with_dependents": "yes"}, "with_dependents"),
    ("restart-service", {"component": "auth; rm -rf /"}, "pattern"),
    ("repair", {"actions": ["nope:auth"]}, "not in the current repair plan"),
    ("repair", {"actions": "start_container:auth"}, "actions"),
    ("repair", {"confirm": 1}, "confirm"),
    ("config", {}, "changes: required"),
    ("config", {"changes": {}}, "at least one"),
    ("config", {"changes": {"nosuch": "x"}}, "unknown field"),
    ("config", {"changes": {"site_url": "http://x\nEVIL=1"}}, "site_url"),
    ("config", {"changes": {"name": "nul\x00byte"}}, "name"),
    ("config", {"changes": {"dashboard_password": "multi\nline"}}, "control characters"),
    ("config", {"changes": {"smtp_port": 70000}}, "smtp_port"),
    ("config", {"changes": {"disable_signup": "true"}}, "disable_signup"),
    ("config", {"changes": {"jwt_expiry": 3.5}}, "jwt_expiry"),
    ("config", {"changes": {"name": "x" * 101}}, "name"),
    ("backups", {"reason": "a\nb"}, "reason"),
    ("backups", {"reason": "x" * 201}, "reason"),
    ("backups", {"db_dump": "no"}, "db_dump"),
])
def test_invalid_values_are_400_and_start_nothing(client: FlaskClient, world: World,
                                                  path: str, body: dict[str, Any],
                                                  needle: str) -> None:
    world.plain.plan = [repair_action("start_container")]
    method = "PUT" if path == "config" else "POST"
    response = client.open(f"/api/instances/{ALPHA}/{path}", method=method, json=body,
                           headers=ADMIN)
    assert response.status_code == 400, response.json
    assert needle in response.json["error"]["message"]
    assert world.plain.calls == [] and world.operations() == 0
    text = response.get_data(as_text=True)
    # Values are never repeated back (they may be secrets or hostile).
    assert "rm -rf" not in text and "EVIL" not in text and "multi" not in text


@pytest.mark.parametrize("query", ["wait=maybe", "timeout=0", "timeout=3601", "timeout=x",
                                   "surprise=1", "wait=true&wait=false"])
def test_bad_query_strings_are_400(client: FlaskClient, world: World, query: str) -> None:
    response = client.post(f"/api/instances/{ALPHA}/backups?{query}", json={},
                           headers=ADMIN)
    assert response.status_code == 400, response.json
    assert world.plain.calls == []


@pytest.mark.parametrize("backup_id", ["..%2F..%2Fetc", "..", "20250101T000000Z-abcdeg",
                                       "20250101T000000Z-ABCDEF", "20990101T000000Z-abcdef",
                                       "%00"])
def test_unknown_or_hostile_backup_ids_are_404(client: FlaskClient, world: World,
                                               backup_id: str) -> None:
    response = client.post(f"/api/instances/{ALPHA}/backups/{backup_id}/restore", json={},
                           headers=ADMIN)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    if "%2F" not in backup_id:  # with a slash no route matches at all
        assert response.json["error"]["message"] == "backup not found"
    assert world.plain.calls == []


def test_repair_plan_dry_run_confirm_and_selection(client: FlaskClient, world: World) -> None:
    start = repair_action("start_container")
    keys = repair_action("regenerate_jwt_keys", None, needs_confirm=True)
    world.plain.plan = [start, keys]
    plan = client.get(f"/api/instances/{ALPHA}/repair-plan", headers=VIEWER)
    assert plan.status_code == 200
    assert [a["id"] for a in plan.json["actions"]] == [start.id, keys.id]
    assert plan.json["manual"] == [] and plan.json["diagnostic_at"]
    dry = client.post(f"/api/instances/{ALPHA}/repair", json={"dry_run": True},
                      headers=OPERATOR)
    assert dry.status_code == 200 and dry.json["would_run"] == [start.id]
    assert dry.json["held_back"] == [keys.id]
    unconfirmed = client.post(f"/api/instances/{ALPHA}/repair",
                              json={"actions": [keys.id]}, headers=OPERATOR)
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.json["error"]["message"]
    assert world.plain.calls == []
    run = client.post(f"/api/instances/{ALPHA}/repair?wait=true", json={}, headers=OPERATOR)
    assert run.status_code == 200 and run.json["inputs"]["actions"] == [start.id]
    confirmed = client.post(f"/api/instances/{ALPHA}/repair?wait=true",
                            json={"actions": [keys.id, start.id], "confirm": True},
                            headers=OPERATOR)
    assert confirmed.status_code == 200
    # Plan order, not request order.
    assert world.plain.calls[-1][2] == {"actions": [start.id, keys.id], "confirm": True}
    world.plain.plan = []
    nothing = client.post(f"/api/instances/{ALPHA}/repair", json={}, headers=OPERATOR)
    assert nothing.status_code == 200 and nothing.json["message"] == "nothing to repair"
    assert len(world.plain.calls) == 2


def test_config_edit_keeps_secrets_out(client: FlaskClient, world: World) -> None:
    current = client.get(f"/api/instances/{ALPHA}/config", headers=VIEWER)
    assert current.json == {"instance_id": ALPHA,
                            "config": {"name": ALPHA, "dashboard_password": "********"}}
    response = client.put(f"/api/instances/{ALPHA}/config?wait=true",
                          json={"changes": {"dashboard_password": SECRET, "name": "A x_q-2"}},
                          headers=OPERATOR)
    assert response.status_code == 200 and response.json["status"] == "succeeded"
    assert world.plain.calls == [("config_edit", ALPHA,
                                  {"keys": ["dashboard_password", "name"]})]
    assert SECRET not in response.get_data(as_text=True)
    audit = client.get("/api/audit?action=config_edit", headers=ADMIN)
    assert audit.json["count"] == 1 and SECRET not in audit.get_data(as_text=True)
    assert audit.json["entries"][0]["inputs"]["changes"]["name"] == "A x_q-2"


def test_audit_filters(client: FlaskClient, world: World) -> None:
    client.post(f"/api/instances/{ALPHA}/backups?wait=true", json={}, headers=OPERATOR)
    client.post(f"/api/instances/{BETA}/backups?wait=true", json={"reason": "nightly"},
                headers=ADMIN)
    every = client.get("/api/audit", headers=ADMIN).json
    assert every["count"] == 2 and every["entries"][0]["instance_id"] == BETA
    beta = client.get(f"/api/audit?instance_id={BETA}&who=admin&action=backup",
                      headers=ADMIN).json
    assert [e["inputs"]["reason"] for e in beta["entries"]] == ["nightly"]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert client.get(f"/api/audit?since={future}", headers=ADMIN).json["count"] == 0
    assert client.get("/api/audit?limit=1&offset=1", headers=ADMIN).json["entries"][0][
        "instance_id"] == ALPHA
    for bad in ("limit=0", "limit=1001", "since=yesterday", "instance_id=../x", "x=1"):
        assert client.get(f"/api/audit?{bad}", headers=ADMIN).status_code == 400, bad


def test_metrics_count_operations(client: FlaskClient, world: World) -> None:
    client.post(f"/api/instances/{ALPHA}/backups?wait=true", json={}, headers=OPERATOR)
    text = client.get("/metrics").get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("ultrabase_operations_total",
                    (("operation", "backup"), ("result", "succeeded")))] == 1
    assert ("ultrabase_up", ()) in samples
    assert client.get("/healthz").json["status"] == "ok"


def test_errors_are_json(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404 and set(response.json) == {"error"}
    response = client.delete(f"/api/instances/{ALPHA}/safe-restart", headers=ADMIN)
    assert response.status_code == 405 and response.json["error"]["code"]


# rate limits ------------------------------------------------------------------------------


def test_rate_limits_per_caller_and_per_instance(tmp_path: Path) -> None:
    world = World(tmp_path, rate_limit="3/minute")
    client = world.app.test_client()
    try:
        # Anonymous and badly authenticated floods use up nothing.
        for _ in range(5):
            assert client.post(f"/api/instances/{ALPHA}/backups", json={}).status_code == 401
        for _ in range(3):
            ok = client.post(f"/api/instances/{ALPHA}/backups?wait=true", json={},
                             headers=ADMIN)
            assert ok.status_code == 200
        over = client.post(f"/api/instances/{BETA}/backups", json={}, headers=ADMIN)
        assert over.status_code == 429 and over.json["error"]["code"] == "rate_limited"
        assert "caller" in over.json["error"]["message"]
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        # alpha's own allowance is spent too, whoever asks.
        busy = client.post(f"/api/instances/{ALPHA}/backups", json={}, headers=OPERATOR)
        assert busy.status_code == 429 and "instance" in busy.json["error"]["message"]
        fresh = client.post(f"/api/instances/{BETA}/backups?wait=true", json={},
                            headers=OPERATOR)
        assert fresh.status_code == 200
        # Reads are never limited.
        assert client.get(f"/api/instances/{ALPHA}/backups", headers=ADMIN).status_code == 200
        assert len(world.plain.calls) == 4
    finally:
        world.close()


# Alertmanager webhook ---------------------------------------------------------------------


def post_webhook(client: FlaskClient, payload: Mapping[str, Any],
                 headers: Mapping[str, str] = OPERATOR) -> Any:
    response = client.post("/api/alerts", json=payload, headers=dict(headers))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json


def test_webhook_ignores_what_is_not_an_auto_repair(client: FlaskClient, world: World) -> None:
    world.plain.plan = [repair_action("start_container")]
    answer = post_webhook(client, webhook(alert(auto=False), alert(status="resolved"),
                                          status="firing"))
    assert answer == {"received": 2, "ignored": 2, "results": []}
    assert world.plain.calls == []
    entries = world.store.audit(10)
    assert [(e.action, e.result) for e in entries] == [("alert_webhook", "ignored")]


def test_webhook_refusals_are_audited(client: FlaskClient, world: World) -> None:
    answer = post_webhook(client, webhook(alert(None), alert("ghost"), alert("../x"),
                                          alert(BETA)))
    reasons = [(r["instance_id"], r["reason"]) for r in answer["results"]]
    # No instance_id; unknown; not an id at all; beta with nothing to repair.
    assert reasons == [(None, "no_instance_id"), ("ghost", "unknown_instance"),
                       (None, "unknown_instance"), (BETA, "nothing_to_repair")]
    entries = world.store.audit(10, action="auto_repair")
    # Unknown ids are refused without being written under the id.
    assert sorted((e.instance_id or "", e.result) for e in entries) == [
        ("", "refused"), ("", "refused"), ("", "refused"), (BETA, "refused")]
    assert all(e.who == "operator" and e.error for e in entries)
    assert world.plain.calls == []


def test_webhook_scope_and_roles(client: FlaskClient, world: World) -> None:
    world.plain.plan = [repair_action("start_container")]
    # An operator of beta only cannot have alpha repaired, and cannot tell it exists.
    answer = post_webhook(client, webhook(alert(ALPHA)), OPERATOR_BETA)
    assert answer["results"][0]["reason"] == "unknown_instance"
    assert client.post("/api/alerts", json=webhook(alert()), headers=VIEWER).status_code == 403
    assert client.post("/api/alerts", json=webhook(alert())).status_code == 401
    assert world.plain.calls == []


def test_webhook_budget_holds_and_survives_a_restart(tmp_path: Path) -> None:
    world = World(tmp_path, budget=2)
    client = world.app.test_client()
    try:
        world.plain.plan = [repair_action("start_container"),
                            repair_action("regenerate_jwt_keys", None, needs_confirm=True)]
        # An old start outside the window does not count, nor does a "started" audit
        # entry: the budget is the store's own table.
        with sqlite3.connect(world.store.path) as conn:
            conn.execute("INSERT INTO auto_repairs (instance_id, at) VALUES (?, ?)",
                         (ALPHA, time.time() - 7200))
        world.store.append_audit(AuditEntry(
            at=datetime.now(UTC), who="operator", role="operator",
            action="auto_repair", instance_id=ALPHA, inputs={}, result="started"))
        for _ in range(2):
            # Two alerts of one instance in one webhook make one repair.
            answer = post_webhook(client, webhook(alert(name="AuthDown"),
                                                  alert(name="RestDown")))
            result = answer["results"][0]
            assert result["outcome"] == "started", answer
            assert result["alerts"] == ["AuthDown", "RestDown"]
            assert result["actions"] == ["start_container:auth"]
            assert result["held_back"] == ["regenerate_jwt_keys"]
            op = world.runner.wait(result["operation_id"], 10)
            assert op.kind == "repair" and op.status == "succeeded"
            assert op.inputs["source"] == "alertmanager"
        over = post_webhook(client, webhook(alert()))["results"][0]
        assert over["outcome"] == "refused" and over["reason"] == "over_budget"
        assert [c[0] for c in world.plain.calls] == ["repair", "repair"]
        assert world.plain.calls[0][2] == {"actions": ["start_container:auth"],
                                           "confirm": False}
        # The diagnostic behind the first started repair ran with trigger "operation"; the
        # second webhook came within the instance's rate-limit window and reused it.
        assert world.store.run_counts()[("operation", "healthy")] == 1
        assert "diagnostic_reused" not in result or result["diagnostic_reused"] is True
        store = world.store
        world.close()
        # The count lives in the store: a restarted service still refuses.
        again = World(tmp_path, budget=2, store=ActionStore(store.path))
        try:
            again.plain.plan = [repair_action("start_container")]
            refused = post_webhook(again.app.test_client(), webhook(alert()))["results"][0]
            assert refused["reason"] == "over_budget" and again.plain.calls == []
            beta = post_webhook(again.app.test_client(), webhook(alert(BETA)))["results"][0]
            assert beta["outcome"] == "started"
        finally:
            again.close()
    finally:
        world.plain.release()


def test_webhook_refuses_while_an_operation_runs(client: FlaskClient, world: World) -> None:
    world.plain.plan = [repair_action("start_container")]
    world.plain.hold("safe_restart")
    running = client.post(f"/api/instances/{ALPHA}/safe-restart", json={}, headers=ADMIN)
    assert running.status_code == 202
    answer = post_webhook(client, webhook(alert()))
    result = answer["results"][0]
    assert result["reason"] == "operation_running"
    assert result["running_operation_id"] == running.json["id"]
    world.plain.release()
    # A refusal for a busy instance spends no budget.
    world.runner.wait(running.json["id"], 10)
    assert post_webhook(client, webhook(alert()))["results"][0]["outcome"] == "started"


def test_webhook_payload_validation(client: FlaskClient, world: World) -> None:
    bad = webhook(alert())
    bad["alerts"][0]["status"] = "burning"
    assert client.post("/api/alerts", json=bad, headers=OPERATOR).status_code == 400
    missing = webhook(alert())
    del missing["alerts"]
    assert client.post("/api/alerts", json=missing, headers=OPERATOR).status_code == 400
    too_many = webhook(*[{"status": "firing"} for _ in range(1001)])
    assert client.post("/api/alerts", json=too_many, headers=OPERATOR).status_code == 400
    # Fields a later Alertmanager may add are ignored, not refused.
    newer = webhook(alert(auto=False))
    newer["someNewField"] = {"x": 1}
    newer["alerts"][0]["newAlertField"] = True
    assert post_webhook(client, newer)["ignored"] == 1
    assert world.plain.calls == []


# Alertmanager client against a stand-in on 127.0.0.1 --------------------------------------


class FakeAlertmanager(BaseHTTPRequestHandler):
    """Alertmanager's v2 silence endpoints, answering from memory."""

    silences: ClassVar[dict[str, dict[str, Any]]] = {}
    requests: ClassVar[list[tuple[str, str, str | None, Any]]] = []
    delay: ClassVar[float] = 0.0

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, self.headers.get("Authorization"),
                              body))
        time.sleep(self.delay)
        return body

    def do_POST(self) -> None:
        body = self._record()
        if self.path != "/api/v2/silences" or not body.get("matchers"):
            self._send(400, {"message": "bad silence"})
            return
        silence_id = f"5f3c-{len(self.silences):04d}"
        self.silences[silence_id] = {**body, "id": silence_id, "status": {"state": "active"}}
        self._send(200, {"silenceID": silence_id})

    def do_DELETE(self) -> None:
        self._record()
        silence_id = self.path.rsplit("/", 1)[-1]
        found = self.silences.get(silence_id)
        if found is None:
            self._send(404, {"message": "silence not found"})
            return
        found["status"] = {"state": "expired"}
        self._send(200)

    def do_GET(self) -> None:
        self._record()
        self._send(200, list(self.silences.values()))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_alertmanager() -> Iterator[str]:
    FakeAlertmanager.silences = {}
    FakeAlertmanager.requests = []
    FakeAlertmanager.delay = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAlertmanager)
    # server_close() then waits for handlers still sleeping on a delay: a late one would
    # otherwise write into the next test's silences.
    server.daemon_threads = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_silence_create_list_and_expire(fake_alertmanager: str) -> None:
    client = AlertmanagerClient(fake_alertmanager, username="am", password="am-Secret-pw")
    try:
        before = datetime.now(UTC)
        silence_id = client.create_silence(ALPHA, comment="safe_restart op 1234",
                                           duration_seconds=600)
        method, path, auth, body = FakeAlertmanager.requests[0]
        assert (method, path) == ("POST", "/api/v2/silences")
        assert auth is not None and auth.startswith("Basic ")
        assert body["matchers"] == [{"name": "instance_id", "value": ALPHA, "isRegex": False,
                                     "isEqual": True}]
        assert body["createdBy"] == "ultrabase-doctor" and "1234" in body["comment"]
        ends = datetime.fromisoformat(body["endsAt"].replace("Z", "+00:00"))
        assert timedelta(seconds=590) < ends - before < timedelta(seconds=610)
        assert [s["id"] for s in client.active_silences(ALPHA)] == [silence_id]
        assert client.active_silences(BETA) == []
        client.expire_silence(silence_id)
        assert FakeAlertmanager.requests[-1][:2] == ("DELETE", f"/api/v2/silence/{silence_id}")
        assert client.active_silences(ALPHA) == []
        client.expire_silence("0000-gone")  # already gone: nothing to do
    finally:
        client.close()


def test_silence_errors_are_clear_and_keep_credentials_out(fake_alertmanager: str) -> None:
    password = "am-Secret-pw"
    url = fake_alertmanager.replace("http://", f"http://am:{password}@")
    client = AlertmanagerClient(url, timeout=0.3)
    try:
        with pytest.raises(AlertmanagerError, match="not an instance id"):
            client.create_silence("../x", comment="x", duration_seconds=60)
        with pytest.raises(AlertmanagerError, match="not a silence id"):
            client.expire_silence("../../api")
        FakeAlertmanager.delay = 1.0
        with pytest.raises(AlertmanagerError) as slow:
            client.create_silence(ALPHA, comment="x", duration_seconds=60)
        assert "Timeout" in str(slow.value) and password not in str(slow.value)
    finally:
        client.close()
    closed = AlertmanagerClient("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(AlertmanagerError, match="unreachable"):
        closed.silences()
    closed.close()
    static = {"discovery": {"sources": ["static"], "static": [{"id": ALPHA}]}}
    assert AlertmanagerClient.from_config(parse_config(static, environ={})) is None
    configured = AlertmanagerClient.from_config(parse_config(
        {**static, "alertmanager": {"url": "http://127.0.0.1:9093/", "username": "u"}},
        environ={"ULTRABASE_DOCTOR_ALERTMANAGER_PASSWORD": "pw-from-env"}))
    assert configured is not None and configured.url == "http://127.0.0.1:9093"
    assert "pw-from-env" not in repr(configured)
    configured.close()


def test_operations_get_the_alertmanager_client(tmp_path: Path, fake_alertmanager: str) -> None:
    am = AlertmanagerClient(fake_alertmanager)
    seen: list[int] = []

    def silenced(components: Sequence[str] | None) -> Body:
        def run(ctx: OperationContext) -> Mapping[str, Any]:
            assert ctx.alertmanager is not None
            with ctx.step("silence") as detail:
                detail["silence_id"] = ctx.alertmanager.create_silence(
                    ctx.instance.id, comment=f"op {ctx.op_id}", duration_seconds=60)
            seen.append(len(ctx.alertmanager.active_silences(ctx.instance.id)))
            ctx.alertmanager.expire_silence(detail["silence_id"])
            return {}
        return run

    world = World(tmp_path, alertmanager=am, bodies={"safe_restart": silenced})
    try:
        response = world.app.test_client().post(
            f"/api/instances/{ALPHA}/safe-restart?wait=true", json={}, headers=ADMIN)
        assert response.json["status"] == "succeeded", response.json
        assert seen == [1]
        assert [s["status"]["state"] for s in FakeAlertmanager.silences.values()] == ["expired"]
    finally:
        world.close()
        am.close()


def test_client_sends_no_basic_auth_without_username(fake_alertmanager: str) -> None:
    client = AlertmanagerClient(fake_alertmanager)
    client.silences()
    assert FakeAlertmanager.requests[-1][2] is None
    client.close()
    assert httpx.get(f"{fake_alertmanager}/api/v2/silences").status_code == 200


# wiring -----------------------------------------------------------------------------------


def static_config(tmp: Path, **actions: Any) -> Config:
    return parse_config({
        "discovery": {"sources": ["static"], "static": [{"id": ALPHA}]},
        "docker": {"base_url": f"unix://{tmp}/no-docker.sock", "timeout_seconds": 0.5},
        "store": {"path": str(tmp / "store.sqlite3")},
        "actions": {"backups_dir": str(tmp / "backups"), **actions},
    }, environ={})


def test_build_wires_the_real_bodies(tmp_path: Path) -> None:
    from actions.operations.backup import restore_body
    from actions.operations.restart import safe_restart_body
    from actions.service import build

    running = build(static_config(tmp_path))
    try:
        bodies = running.services.bodies
        assert bodies.safe_restart is safe_restart_body and bodies.restore is restore_body
        assert bodies.plan_details is not None
        client = running.app.test_client()
        assert client.get("/healthz").json["status"] == "ok"
        assert "/api/alerts" in client.get("/openapi.json").json["paths"]
    finally:
        running.close()


def test_exporter_and_action_api_in_one_process_share_one_action_store(
        tmp_path: Path) -> None:
    from actions.service import build
    from exporter.service import build as build_exporter

    config = static_config(tmp_path)
    exporter = build_exporter(config, schedule=False, store_type=ActionStore)
    try:
        running = build(config, exporter=exporter)
        try:
            assert running.services.store is exporter.services.store
            assert running.services.runner.store is exporter.services.store
        finally:
            running.close()
    finally:
        exporter.close()
    plain = build_exporter(config, schedule=False)
    try:
        with pytest.raises(TypeError, match="ActionStore"):
            build(config, exporter=plain)
    finally:
        plain.close()


def test_a_bad_rate_limit_is_a_config_error(tmp_path: Path) -> None:
    from actions.service import build
    from exporter.errors import ConfigError

    with pytest.raises(ConfigError, match=r"actions\.rate_limit"):
        build(static_config(tmp_path, rate_limit="often please"))


def test_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "doctor.yaml"
    config.write_text(json.dumps({
        "discovery": {"sources": ["static"], "static": [{"id": ALPHA}]},
        "docker": {"base_url": f"unix://{tmp_path}/no-docker.sock", "timeout_seconds": 0.5},
        "store": {"path": str(tmp_path / "store.sqlite3")},
        "actions": {"backups_dir": str(tmp_path / "backups"), "port": port}}))
    code = ("import sys\nfrom exporter.config import load_config\n"
            "from actions.service import serve\nsys.exit(serve(load_config(sys.argv[1])))\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert answer is not None and answer.json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert process.stdout is not None
        assert b"action API stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
