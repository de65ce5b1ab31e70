"""The fault matrix: the real engine over a live fleet of 3, one instance broken at a time."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.operations.repair import build_plan
from bench.accuracy import (
    TIMEOUT,
    first_run_with_live_checks_passing,
    live_failing,
    make_engine,
    serious,
    sweep,
)
from exporter.diagnostic import Diagnostic
from exporter.engine import DiagnosticsEngine
from fleet import faults
from fleet.fleet import Fleet
from fleet.model import Expectation
from tests.integration.conftest import FleetFactory

pytestmark = [pytest.mark.integration, pytest.mark.fleets(3)]

# The engine's probe timeout is bench.accuracy.TIMEOUT; the hung-auth bound below scales
# with it.


@pytest.fixture(scope="module")
def live(fleet_factory: FleetFactory) -> Fleet:
    return fleet_factory(3)


@pytest.fixture
def engine(live: Fleet) -> Iterator[DiagnosticsEngine]:
    made = make_engine(live)
    try:
        yield made
    finally:
        made.close()


def healed_run(engine: DiagnosticsEngine, instance_id: str) -> Diagnostic:
    """The first run after a heal whose live checks pass (all but the logs), or fail."""
    diagnostic = first_run_with_live_checks_passing(engine, instance_id)
    failing = live_failing(diagnostic)
    assert not failing, f"live checks {failing} still fail after the heal"
    return diagnostic


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


# The faults this module runs; what each must be diagnosed as (root cause code and
# component, the repair it offers, None: no repair helps) is the fault's own
# FaultSpec.expect in the fleet's catalogue, which bench.accuracy runs in full.
MATRIX = ["stop:auth", "auth-db-password", "service-key-wrong-secret", "service-key-expired",
          "kong-key-mismatch", "stop:db", "stop:kong", "pause:kong", "volume-missing",
          "port-taken", "auth-schema-rights", "auth-empty-setting", "jwt-secret-short",
          "recreate:auth", "recreate:rest", "alias-lost:rest"]
# Repairs no issue of the diagnostic may offer.
NEVER_OFFERED = {"auth-schema-rights": {"sync_db_role_passwords"}}


def expectation(fault: str) -> Expectation:
    expect = faults.get(fault).spec.expect
    assert expect is not None, f"{fault} states no expectation"
    return expect


@pytest.mark.parametrize("fault", MATRIX)
def test_fault_is_diagnosed_with_its_root_cause(live: Fleet, engine: DiagnosticsEngine,
                                                fault: str) -> None:
    expect = expectation(fault)
    target = live.ids[0]
    with live.broken(target, fault):
        results = sweep(engine)
        plan = build_plan(results[target], engine.instance(target, fresh=True))
    diagnostic = results[target]
    assert not diagnostic.healthy
    root = diagnostic.root_cause
    assert root is not None, serious(diagnostic)
    assert root.issue.code in expect.codes, serious(diagnostic)
    assert root.issue.component == expect.component, serious(diagnostic)
    assert root.issue.repair == expect.repair, serious(diagnostic)
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
    if fault.startswith("alias-lost:"):
        assert root.issue.evidence["ends_healthy"] is True, root.issue.evidence
        assert root.chain[0]["link"] == "kong->rest", root.chain
        # Restarting rest would not bring its name back: only the recreation is offered.
        assert [a.id for a in plan.actions] == ["recreate_container:rest"], plan.to_dict()
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
    healed = healed_run(engine, target)
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
