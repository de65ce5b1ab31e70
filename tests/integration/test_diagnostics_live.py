"""The fault matrix: the real engine over a live fleet of 3, one instance broken at a time."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.operations.repair import build_plan
from exporter.config import Config, load_config
from exporter.diagnostic import Diagnostic
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from fleet.fleet import Fleet
from tests.integration.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.fleets(3)]

# The default: 3 s left the in-network probe 1 s per target, too little on a saturated
# shared host (a healthy rest timed out). The hung-auth bound below scales with it.
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def live(fleet_factory: FleetFactory) -> Fleet:
    return fleet_factory(3)


def make_engine(fleet: Fleet, **diagnostics: Any) -> DiagnosticsEngine:
    config = load_config(fleet.config_path)
    settings = {"timeout_seconds": TIMEOUT, **diagnostics}
    thresholds = settings.pop("thresholds", None)
    diag = config.diagnostics.model_copy(update=settings)
    if thresholds:
        diag = diag.model_copy(update={"thresholds": diag.thresholds.model_copy(
            update=thresholds)})
    tuned: Config = config.model_copy(update={"diagnostics": diag})
    return DiagnosticsEngine(tuned, DockerHost(config.docker.base_url, TIMEOUT))


@pytest.fixture
def engine(live: Fleet) -> Iterator[DiagnosticsEngine]:
    made = make_engine(live)
    try:
        yield made
    finally:
        made.close()


def sweep(engine: DiagnosticsEngine) -> dict[str, Diagnostic]:
    return {d.instance_id: d for d in engine.sweep("on_demand")}


def serious(diagnostic: Diagnostic) -> list[str]:
    return [f"{i.code}[{i.component}]: {i.message}" for i in diagnostic.issues
            if i.severity in ("critical", "warning")]


def first_run_with_live_checks_passing(engine: DiagnosticsEngine, instance_id: str,
                                       within: float = 60.0) -> Diagnostic:
    """Diagnose until every live check (all but the logs) passes; that run, or fail."""
    deadline = time.monotonic() + within
    while True:
        diagnostic = engine.run(instance_id, trigger="operation", use_cache=False,
                                limited=False).diagnostic
        failing = [name for name, r in diagnostic.results.items()
                   if name != "logs" and r.status not in ("ok", "skipped")]
        if not failing:
            return diagnostic
        assert time.monotonic() < deadline, f"live checks {failing} still fail after the heal"
        time.sleep(1.0)


def assert_others_clean(live: Fleet, results: dict[str, Diagnostic], broken: str) -> None:
    for iid in live.ids:
        if iid != broken:
            assert serious(results[iid]) == [], f"false positive on healthy {iid}"


def test_healthy_fleet_reports_nothing(live: Fleet, engine: DiagnosticsEngine) -> None:
    results = sweep(engine)
    assert sorted(results) == sorted(live.ids)
    for iid, diagnostic in results.items():
        assert serious(diagnostic) == [], iid
        assert diagnostic.healthy and diagnostic.root_cause is None
        assert {r.status for r in diagnostic.results.values()} <= {"ok", "skipped"}
        synthetic = diagnostic.results["auth_service"].details["synthetic_user"]
        assert synthetic["created"] and synthetic["deleted"]


MATRIX = [
    ("stop:auth", {"CONTAINER_NOT_RUNNING"}, "auth"),
    ("auth-db-password", {"DB_ROLE_PASSWORD_MISMATCH"}, None),
    ("service-key-wrong-secret", {"JWT_SECRET_MISMATCH"}, "auth"),
    ("service-key-expired", {"JWT_KEY_EXPIRED"}, "auth"),
    ("kong-key-mismatch", {"GATEWAY_KEY_REJECTED"}, "kong"),
    ("stop:db", {"DB_UNREACHABLE"}, "db"),
    ("stop:kong", {"CONTAINER_NOT_RUNNING"}, "kong"),
    # Docker's proxy still accepts on a paused container's port: hung, never a conflict.
    ("pause:kong", {"CONTAINER_NOT_RUNNING"}, "kong"),
    ("volume-missing", {"VOLUME_MISSING"}, None),
    ("port-taken", {"PORT_CONFLICT"}, "kong"),
    ("auth-schema-rights", {"AUTH_MIGRATION_FAILED"}, "auth"),
    ("auth-empty-setting", {"AUTH_CONFIG_INVALID"}, "auth"),
    ("jwt-secret-short", {"JWT_SECRET_WEAK"}, "auth"),
    # A new address while Kong's DNS cache holds the old one: the service is healthy.
    ("recreate:auth", {"GATEWAY_UPSTREAM_STALE"}, "kong"),
    ("recreate:rest", {"GATEWAY_UPSTREAM_STALE"}, "kong"),
]
# The repair the root cause must offer, where the matrix pins it (None: no repair helps,
# the operator must fix it), and the repairs no issue of the diagnostic may offer.
ROOT_REPAIR = {"auth-db-password": "sync_db_role_passwords", "auth-schema-rights": None,
               "auth-empty-setting": None, "jwt-secret-short": None,
               "recreate:auth": "restart_component", "recreate:rest": "restart_component"}
NEVER_OFFERED = {"auth-schema-rights": {"sync_db_role_passwords"}}


@pytest.mark.parametrize(("fault", "codes", "component"), MATRIX,
                         ids=[m[0] for m in MATRIX])
def test_fault_is_diagnosed_with_its_root_cause(live: Fleet, engine: DiagnosticsEngine,
                                                fault: str, codes: set[str],
                                                component: str | None) -> None:
    target = live.ids[0]
    with live.broken(target, fault):
        results = sweep(engine)
        plan = build_plan(results[target], engine.instance(target, fresh=True))
    diagnostic = results[target]
    assert not diagnostic.healthy
    root = diagnostic.root_cause
    assert root is not None, serious(diagnostic)
    assert root.issue.code in codes, serious(diagnostic)
    if component:
        assert root.issue.component == component, serious(diagnostic)
    if fault in ROOT_REPAIR:
        assert root.issue.repair == ROOT_REPAIR[fault], serious(diagnostic)
    offered = {i.repair for i in diagnostic.issues}
    assert not offered & NEVER_OFFERED.get(fault, set()), serious(diagnostic)
    if fault == "auth-empty-setting":
        assert "GOTRUE_SMTP_PORT is set but empty" in root.issue.message
    if fault == "jwt-secret-short":
        # The doctor sends the anon key as supabase-js does and sees PostgREST refuse it.
        assert any(i.code == "REST_JWT_REJECTED" and i.component == "rest"
                   for i in root.explains), serious(diagnostic)
    if fault.startswith("recreate:"):
        upstream = fault.split(":", 1)[1]
        evidence = root.issue.evidence
        assert evidence["upstream"] == upstream, serious(diagnostic)
        assert evidence["in_network_probe"]["http_status"] < 500, evidence
        # Kong's own log names the old address; the listing gives the new one.
        assert evidence["kong_address"] is not None, evidence
        assert evidence["kong_address"].rsplit(":", 1)[0] != evidence["upstream_address"]
        # The service is not blamed: only kong is restarted.
        assert [a.id for a in plan.actions] == ["restart_component:kong"], plan.to_dict()
        assert not [i for i in diagnostic.issues if i.component == upstream
                    and i.check != "logs" and i.severity == "critical"], serious(diagnostic)
    assert_others_clean(live, results, target)
    if fault == "stop:db":
        attributed = {i.component for i in root.explains}
        assert {"auth", "rest"} & attributed, serious(diagnostic)
    if fault == "stop:kong":
        assert any(i.code == "GATEWAY_UNREACHABLE" for i in diagnostic.issues)
    if fault.startswith("pause:"):
        assert "PORT_CONFLICT" not in {i.code for i in diagnostic.issues}, serious(diagnostic)
    # Healed: the first run whose live checks pass reads healthy; the outage's log lines
    # are recent events, not issues (nor repairs).
    healed = first_run_with_live_checks_passing(engine, target)
    assert healed.healthy and serious(healed) == [], serious(healed)
    assert healed.root_cause is None


def test_paused_auth_costs_one_timeout(live: Fleet, engine: DiagnosticsEngine) -> None:
    target = live.ids[0]
    with live.broken(target, "pause:auth"):
        started = time.monotonic()
        results = sweep(engine)
        elapsed = time.monotonic() - started
    diagnostic = results[target]
    root = diagnostic.root_cause
    assert root is not None
    auth_codes = {i.code for i in diagnostic.issues if i.component == "auth"}
    assert auth_codes & {"COMPONENT_UNREACHABLE", "AUTH_UNHEALTHY"}, serious(diagnostic)
    assert root.issue.component == "auth", serious(diagnostic)
    assert diagnostic.duration_seconds <= TIMEOUT * 3 + 2
    assert elapsed <= TIMEOUT * 3 + 4
    for iid in live.ids[1:]:
        # The healthy instances are not held back by the hung one.
        assert results[iid].duration_seconds < diagnostic.duration_seconds
    assert_others_clean(live, results, target)


def test_disk_threshold_above_usage_is_reported(live: Fleet) -> None:
    engine = make_engine(live, thresholds={"disk_low_free_percent": 99.99,
                                           "disk_critical_free_percent": 0.0})
    try:
        diagnostic = engine.sweep("on_demand", [live.ids[1]])[0]
    finally:
        engine.close()
    assert diagnostic.root_cause is not None
    assert diagnostic.root_cause.issue.code == "DISK_SPACE_LOW"


def _instance_secrets(registry: Path) -> list[str]:
    records = json.loads(registry.read_text())
    found: list[str] = []
    for record in records.values():
        creds = record["credentials"]
        found += [creds[k] for k in ("postgres_password", "jwt_secret", "anon_key",
                                     "service_role_key", "dashboard_password")]
    return found


@pytest.mark.parametrize("fault", [None, "auth-db-password", "service-key-wrong-secret"])
def test_no_secret_in_results_or_logs(live: Fleet, engine: DiagnosticsEngine,
                                      caplog: pytest.LogCaptureFixture,
                                      fault: str | None) -> None:
    target = live.ids[1]
    caplog.set_level(logging.DEBUG)
    if fault:
        with live.broken(target, fault):
            secrets = _instance_secrets(live.registry_path)
            text = json.dumps(engine.sweep("on_demand", [target])[0].to_dict())
    else:
        secrets = _instance_secrets(live.registry_path)
        text = json.dumps(engine.sweep("on_demand", [target])[0].to_dict())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in text
        assert secret not in logged
