"""The registry's word as evidence: an instance being created, stopped by its owner or never
started is reported as such, with no alert-worthy issue and no repair (issue 12 item 3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.operations.repair import build_plan
from exporter.checks.base import CheckContext, Findings
from exporter.checks.disk import DiskUsageCheck
from exporter.checks.services import ServiceHealthCheck
from exporter.config import parse_config
from exporter.diagnostic import Diagnostic
from exporter.engine import DiagnosticsEngine
from exporter.issues import Issue, make_issue
from exporter.render import render_diagnostic
from tests.unit.checks.plainhost import context
from tests.unit.layout import instance_values, registry_record, write_instance, write_registry
from tests.unit.plaindocker import PlainDocker, containers_for, runtime_envs

IID = "abcd0001"
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _down_issues() -> tuple[Issue, ...]:
    """What the checks find on an instance none of whose containers exists."""
    return (
        make_issue("CONTAINER_MISSING", check="container_status", component="db",
                   message="no container for db"),
        make_issue("CONTAINER_MISSING", check="container_status", component="kong",
                   message="no container for kong"),
        make_issue("DB_UNREACHABLE", check="database_connection", component="db",
                   message="refused"),
        make_issue("GATEWAY_UNREACHABLE", check="api_endpoints", component="kong",
                   message="refused"),
        make_issue("PORT_NOT_LISTENING", check="network_connectivity", component="kong",
                   message="nothing listens"),
    )


class Fixed:
    """A check that reports given issues."""

    def __init__(self, name: str, issues: tuple[Issue, ...]) -> None:
        self.name = name
        self.issues = issues

    def run(self, ctx: CheckContext) -> Findings:
        return Findings(self.issues)


def _world(tmp: Path, *, status: str, data_dir: bool, running: bool,
           updated: datetime = NOW - timedelta(minutes=2)) -> tuple[DiagnosticsEngine, Path]:
    core = tmp / "supabase-core"
    values = instance_values(IID)
    write_instance(core, values)
    volumes = core / f"volumes-{IID}"
    (volumes / "functions").mkdir(parents=True)  # generate.bash makes it
    if data_dir:  # Docker makes these at the first start
        (volumes / "db" / "data").mkdir(parents=True)
        (volumes / "storage").mkdir()
    stamp = updated.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    write_registry(tmp / "instances.json",
                   {IID: registry_record(values, status=status, updated_at=stamp)})
    config = parse_config({"ultrabase": {"registry": str(tmp / "instances.json")},
                           "discovery": {"sources": ["ultrabase"]},
                           "diagnostics": {"timeout_seconds": 0.5}}, environ={})
    docker = PlainDocker(containers_for(IID) if running else [],
                         runtime_envs(IID, values) if running else {})
    checks = [Fixed("container_status", () if running else _down_issues()),
              DiskUsageCheck(docker_root=tmp / "docker")]
    engine = DiagnosticsEngine(config, docker, checks={c.name: c for c in checks},
                               clock=NOW.timestamp)
    return engine, core


def diagnose(tmp: Path, **world: Any) -> Diagnostic:
    """One on-demand diagnostic of the instance in the given world."""
    engine, _ = _world(tmp, **world)
    try:
        return engine.run(IID).diagnostic
    finally:
        engine.close()


@pytest.mark.parametrize(("status", "data_dir", "state"), [
    ("running", False, "INSTANCE_NOT_STARTED"),   # the manager wrote running, no up ever ran
    ("error", False, "INSTANCE_NOT_STARTED"),     # its first compose up failed
    ("creating", False, "INSTANCE_CREATING"),
    ("stopped", True, "INSTANCE_STOPPED"),        # Stop = compose down: data kept
])
def test_an_instance_not_meant_to_run_is_reported_as_such(tmp_path: Path, status: str,
                                                          data_dir: bool, state: str) -> None:
    engine, _ = _world(tmp_path, status=status, data_dir=data_dir, running=False)
    try:
        diagnostic = engine.run(IID).diagnostic
        instance = engine.instance(IID)
    finally:
        engine.close()
    assert diagnostic.root_cause is not None and diagnostic.root_cause.issue.code == state
    assert {i.code for i in diagnostic.root_cause.explains} >= {
        "CONTAINER_MISSING", "DB_UNREACHABLE", "GATEWAY_UNREACHABLE", "PORT_NOT_LISTENING"}
    # Nothing that alerts: every issue is info, the instance reads healthy.
    assert {i.severity for i in diagnostic.issues} == {"info"}
    assert diagnostic.healthy
    # Never VOLUME_MISSING for the folders Docker creates at the first start.
    assert "VOLUME_MISSING" not in {i.code for i in diagnostic.issues}
    plan = build_plan(diagnostic, instance)
    assert plan.actions == ()
    assert "start" in diagnostic.root_cause.issue.hint.lower()


def test_a_volume_lost_while_stopped_is_still_reported(tmp_path: Path) -> None:
    diagnostic = diagnose(tmp_path, status="stopped", data_dir=False, running=False)
    assert diagnostic.root_cause is not None
    assert diagnostic.root_cause.issue.code == "INSTANCE_STOPPED"
    lost = [i for i in diagnostic.issues if i.code == "VOLUME_MISSING"]
    assert {i.component for i in lost} >= {"db"} and lost[0].severity == "critical"
    assert not diagnostic.healthy


def test_a_creation_stuck_for_hours_is_diagnosed_as_usual(tmp_path: Path) -> None:
    engine, _ = _world(tmp_path, status="creating", data_dir=True, running=False,
                       updated=NOW - timedelta(hours=3))
    try:
        diagnostic = engine.run(IID).diagnostic
    finally:
        engine.close()
    assert diagnostic.root_cause is not None
    assert diagnostic.root_cause.issue.code not in ("INSTANCE_CREATING", "INSTANCE_STOPPED",
                                                    "INSTANCE_NOT_STARTED")
    assert not diagnostic.healthy


def test_missing_containers_with_data_are_a_fault_not_a_state(tmp_path: Path) -> None:
    diagnostic = diagnose(tmp_path, status="running", data_dir=True, running=False)
    assert diagnostic.root_cause is not None
    assert diagnostic.root_cause.issue.severity == "critical"
    assert not diagnostic.healthy


def test_a_running_instance_in_state_stopped_is_judged_as_running(tmp_path: Path) -> None:
    diagnostic = diagnose(tmp_path, status="stopped", data_dir=True, running=True)
    assert all(i.code != "INSTANCE_STOPPED" for i in diagnostic.issues)


def test_service_health_does_not_read_ok_when_every_component_is_missing(
        tmp_path: Path) -> None:
    engine, _ = _world(tmp_path, status="running", data_dir=False, running=False)
    try:
        instance = engine.instance(IID)
    finally:
        engine.close()
    findings = ServiceHealthCheck().run(context(instance, PlainDocker([], {}), now=NOW))
    assert findings.skipped and "no component" in findings.skipped
    assert not findings.issues


def test_registry_status_is_shown_in_discovery(tmp_path: Path) -> None:
    engine, _ = _world(tmp_path, status="creating", data_dir=False, running=False)
    try:
        shown = engine.instance(IID).to_dict()
    finally:
        engine.close()
    assert shown["registry_status"] == "creating"
    assert json.dumps(shown)


def test_the_terminal_says_the_state(tmp_path: Path) -> None:
    diagnostic = diagnose(tmp_path, status="stopped", data_dir=True, running=False)
    text = render_diagnostic(diagnostic)
    assert text.splitlines()[0].startswith(f"Instance {IID}: stopped by its owner (")
    assert "Root cause: INSTANCE_STOPPED" in text
