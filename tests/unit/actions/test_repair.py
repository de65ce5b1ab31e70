"""Repair planning on each fault's typical issue set, confirm gating, and the run loop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from actions.operations.model import OperationError
from actions.operations.repair import (
    ConfirmationRequired,
    Journal,
    RepairAction,
    RepairPlan,
    RepairSession,
    UnknownRepairAction,
    build_plan,
    plan_repairs,
    remaining_issues,
    repair_body,
    require_confirm,
    run_actions,
    select_actions,
)
from actions.operations.repair.acts import act_restart
from exporter.config import ActionsConfig
from exporter.diagnostic import Diagnostic
from exporter.discovery.model import COMPONENTS, Component, Instance, InstanceFiles
from exporter.dockerhost import ContainerDetails, ContainerSummary, DockerHost, details_of
from exporter.issues import Issue, make_issue
from exporter.redaction import Redactor
from exporter.rootcause import find_root_cause, order_issues
from tests.unit.checks.support import PG_PASSWORD, SECRET, make_instance

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FILES = InstanceFiles(registry=Path("/srv/instances.json"),
                      env_file=Path("/srv/supabase-core/.env-abc12345"),
                      compose_file=Path("/srv/supabase-core/docker-compose-abc12345.yml"),
                      kong_file=Path("/srv/supabase-core/volumes-abc12345/api/kong.yml"))


def issue(code: str, component: str | None = None, check: str = "container_status",
          **evidence: Any) -> Issue:
    return make_issue(code, check=check, message=f"{code.lower()} on {component}",
                      component=component, evidence=evidence)


def instance(states: Mapping[str, str | None] | None = None, **kwargs: Any) -> Instance:
    """Every Ultrabase component running, except as `states` says (None: no container)."""
    states = states or {}
    components = {}
    for name in COMPONENTS:
        state = states.get(name, "running")
        container = None if state is None else ContainerSummary(
            id=f"id-{name}", name=f"supabase-{name}-abc12345", image="img", state=state,
            status="Up 5 minutes (healthy)" if state == "running" else "Exited (1)",
            created=0)
        components[name] = Component(name, f"supabase-{name}-abc12345", container)
    base = make_instance(db_port=5432, **kwargs)
    return replace(base, components=components, files=FILES)


def diagnostic(*issues: Issue) -> Diagnostic:
    ordered = order_issues(issues)
    return Diagnostic(instance_id="abc12345", timestamp=NOW, duration_seconds=1.0,
                      results={}, issues=tuple(ordered), root_cause=find_root_cause(ordered))


def plan(*issues: Issue, inst: Instance | None = None) -> RepairPlan:
    return build_plan(diagnostic(*issues), inst or instance())


def ids(result: RepairPlan) -> list[str]:
    return [a.id for a in result.actions]


# Issue sets as the live fleet's faults produce them (tests/integration/test_repair_live.py).
ROLE_MISMATCH = (
    issue("DB_ROLE_PASSWORD_MISMATCH", "db", "database_connection",
          role="supabase_auth_admin", service="auth"),
    issue("AUTH_DB_CONNECTION_FAILED", "auth", "auth_service", user="supabase_auth_admin",
          outcome="auth_failed"),
    issue("COMPONENT_UNREACHABLE", "auth", "service_health"),
    issue("AUTH_UNHEALTHY", "auth", "auth_service"),
    issue("GATEWAY_UPSTREAM_ERROR", "auth", "api_endpoints"),
    issue("INTERNAL_LINK_DOWN", "auth", "network_connectivity"),
    issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
    issue("DB_ROLE_PASSWORD_MISMATCH", "db", "logs"),
)
AUTH_STOPPED = (
    issue("CONTAINER_NOT_RUNNING", "auth", state="exited"),
    issue("AUTH_UNHEALTHY", "auth", "auth_service"),
    issue("GATEWAY_UPSTREAM_ERROR", "auth", "api_endpoints"),
    issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
)
KEY_EXPIRED = (issue("JWT_KEY_EXPIRED", "auth", "auth_service"),
               issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
               issue("JWT_KEY_EXPIRED", "auth", "logs"))
KEY_WRONG_SECRET = (issue("JWT_SECRET_MISMATCH", "auth", "auth_service"),
                    issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"))
KONG_KEY = (issue("GATEWAY_KEY_REJECTED", "kong", "auth_service",
                  credential="service_role_key", kong_file_differs=True),
            issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
            issue("CONFIG_DRIFT", None, "discovery"))


# recreate:auth: the service is healthy, Kong proxies to its old address.
KONG_STALE = (issue("GATEWAY_UPSTREAM_STALE", "kong", "api_endpoints", upstream="auth",
                    kind="stale_address"),
              issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
              issue("GATEWAY_UPSTREAM_ERROR", "kong", "logs"),
              issue("LOG_ERROR_SPIKE", "kong", "logs"))


# alias-lost:rest: rest serves at its container name; kong cannot resolve "rest".
LINK_NAME_LOST = (
    replace(issue("INTERNAL_LINK_DOWN", "rest", "network_connectivity", ends_healthy=True,
                  **{"from": "kong", "to": "rest", "error": "dns"}),
            repair="recreate_container"),
    issue("COMPONENT_UNREACHABLE", "rest", "service_health", error="dns"),
    issue("GATEWAY_UPSTREAM_ERROR", "rest", "api_endpoints"))


# -- the plan per fault ---------------------------------------------------------------------


def test_a_link_that_lost_its_name_recreates_its_target_and_nothing_else() -> None:
    result = plan(*LINK_NAME_LOST)
    assert result.root_cause == "INTERNAL_LINK_DOWN"
    # The restarts the symptoms ask for would not bring the name back: only the recreation.
    assert ids(result) == ["recreate_container:rest"]
    assert result.actions[0].issue_codes == ("INTERNAL_LINK_DOWN",)
    assert {(c.code, c.component) for c in result.consequences} == {
        ("COMPONENT_UNREACHABLE", "rest"), ("GATEWAY_UPSTREAM_ERROR", "rest")}
    # A link down without that evidence is its target's symptom: no recreation for it.
    hung = (issue("INTERNAL_LINK_DOWN", "rest", "network_connectivity"), *LINK_NAME_LOST[1:])
    assert ids(plan(*hung)) == ["restart_component:rest"]



def test_a_restarted_kong_that_does_not_answer_yet_is_not_verified() -> None:
    """While kong starts, the stale route is not reported, but the gateway is unreachable."""
    (restart,) = plan(*KONG_STALE).actions
    starting = diagnostic(issue("GATEWAY_UNREACHABLE", "kong", "api_endpoints"))
    assert [i.code for i in remaining_issues(restart, starting)] == ["GATEWAY_UNREACHABLE"]
    assert remaining_issues(restart, diagnostic()) == []


def test_kong_holding_an_old_address_restarts_kong_and_nothing_else() -> None:
    result = plan(*KONG_STALE)
    assert result.root_cause == "GATEWAY_UPSTREAM_STALE"
    assert ids(result) == ["restart_component:kong"]
    restart = result.actions[0]
    assert restart.issue_codes == ("GATEWAY_UPSTREAM_STALE",)
    assert restart.verify_check == "api_endpoints"
    assert result.manual == ()
    assert [(c.code, c.component) for c in result.consequences] == [
        ("AUTH_USER_CREATE_FAILED", "auth")]


def test_role_password_mismatch_syncs_the_role_then_restarts_auth() -> None:
    result = plan(*ROLE_MISMATCH)
    assert ids(result) == ["sync_db_role_passwords:db", "restart_component:auth"]
    sync, restart = result.actions
    assert sync.roles == ("supabase_auth_admin",)
    assert set(sync.issue_codes) == {"DB_ROLE_PASSWORD_MISMATCH", "AUTH_DB_CONNECTION_FAILED"}
    assert sync.verify_checks == ("database_connection", "auth_service")
    assert not sync.needs_confirm
    # The restart carries auth's symptoms, so its verification requires them gone.
    assert {"AUTH_UNHEALTHY", "COMPONENT_UNREACHABLE"} <= set(restart.issue_codes)
    assert "container_status" in restart.verify_checks
    assert result.root_cause == "DB_ROLE_PASSWORD_MISMATCH"
    assert {(c.code, c.explained_by) for c in result.consequences} >= {
        ("AUTH_USER_CREATE_FAILED", "DB_ROLE_PASSWORD_MISMATCH[db]")}
    assert result.manual == ()


def test_role_mismatch_with_auth_exited_starts_auth_after_the_sync() -> None:
    exited = (*ROLE_MISMATCH, issue("CONTAINER_NOT_RUNNING", "auth", state="exited"))
    result = plan(*exited, inst=instance({"auth": "exited"}))
    assert ids(result) == ["sync_db_role_passwords:db", "start_container:auth"]


def test_role_mismatch_of_rest_does_not_explain_auth_faults() -> None:
    issues = (issue("DB_ROLE_PASSWORD_MISMATCH", "db", "database_connection",
                    role="authenticator", service="rest"),
              issue("COMPONENT_UNREACHABLE", "auth", "service_health"))
    result = plan(*issues)
    # auth hangs for its own reason: it is restarted; rest restarts after the sync.
    assert ids(result) == ["sync_db_role_passwords:db", "restart_component:auth",
                           "restart_component:rest"]
    assert result.actions[0].roles == ("authenticator",)


def test_auth_unhealthy_for_its_own_reason_is_restarted() -> None:
    result = plan(issue("COMPONENT_UNREACHABLE", "auth", "service_health"),
                  issue("AUTH_UNHEALTHY", "auth", "auth_service"),
                  issue("GATEWAY_UPSTREAM_ERROR", "auth", "api_endpoints"),
                  issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"))
    assert ids(result) == ["restart_component:auth"]
    assert result.actions[0].verify_check == "service_health"


def test_auth_crash_loop_from_a_refused_dsn_gets_no_restart() -> None:
    result = plan(issue("AUTH_DB_CONNECTION_FAILED", "auth", "auth_service",
                        user="supabase_auth_admin", outcome="rejected"),
                  issue("CONTAINER_CRASH_LOOP", "auth"),
                  issue("AUTH_UNHEALTHY", "auth", "auth_service"))
    assert result.actions == ()
    (item,) = result.manual
    assert item.code == "AUTH_DB_CONNECTION_FAILED"
    assert "another reason than its password" in item.hint
    assert "CONTAINER_CRASH_LOOP[auth]" in item.blocks


def test_db_running_but_refusing_is_manual_and_blocks_auth_restarts() -> None:
    result = plan(issue("DB_UNREACHABLE", "db", "database_connection"),
                  issue("AUTH_UNHEALTHY", "auth", "auth_service"),
                  issue("COMPONENT_UNHEALTHY", "rest", "service_health"))
    assert result.actions == ()
    assert [m.code for m in result.manual] == ["DB_UNREACHABLE"]
    assert "crash recovery" in result.manual[0].hint


def test_stopped_db_is_started_and_its_users_are_left_to_recover() -> None:
    result = plan(issue("DB_UNREACHABLE", "db", "database_connection", outcome="unreachable"),
                  issue("CONTAINER_NOT_RUNNING", "db", state="exited"),
                  issue("PORT_NOT_LISTENING", "db", "network_connectivity"),
                  issue("COMPONENT_UNHEALTHY", "rest", "service_health"),
                  issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
                  inst=instance({"db": "exited"}))
    assert ids(result) == ["start_container:db"]
    assert set(result.actions[0].issue_codes) == {"DB_UNREACHABLE", "CONTAINER_NOT_RUNNING",
                                                  "PORT_NOT_LISTENING"}
    assert ("COMPONENT_UNHEALTHY", "rest") in {(c.code, c.component)
                                               for c in result.consequences}


@pytest.mark.parametrize("issues", [KEY_EXPIRED, KEY_WRONG_SECRET],
                         ids=["expired", "wrong-secret"])
def test_bad_keys_are_regenerated_only_with_confirm(issues: tuple[Issue, ...]) -> None:
    result = plan(*issues)
    (action,) = result.actions
    assert action.id == "regenerate_jwt_keys" and action.component is None
    assert action.needs_confirm
    assert action.verify_checks == ("auth_service",)
    assert set(action.issue_codes) <= {"JWT_KEY_EXPIRED", "JWT_SECRET_MISMATCH"}
    assert "client apps" in action.description


def test_expiring_key_is_planned_as_a_confirmed_rotation() -> None:
    (action,) = plan(issue("JWT_KEY_EXPIRING", "auth", "auth_service")).actions
    assert (action.action, action.needs_confirm) == ("regenerate_jwt_keys", True)


def test_keys_are_not_regenerated_from_a_weak_secret() -> None:
    weak = instance(jwt_secret="short-secret")
    result = plan(*KEY_EXPIRED, inst=weak)
    assert result.actions == ()
    assert "weak" in result.manual[0].hint


def test_keys_are_not_regenerated_when_services_disagree_on_the_secret() -> None:
    split = instance(runtime_env={"auth": {"GOTRUE_JWT_SECRET": SECRET},
                                  "rest": {"PGRST_JWT_SECRET": SECRET + "-other"}})
    result = plan(*KEY_WRONG_SECRET, inst=split)
    assert result.actions == ()
    assert "disagree on the JWT secret" in result.manual[0].hint


def test_kong_key_mismatch_syncs_kong_yml() -> None:
    result = plan(*KONG_KEY)
    assert ids(result) == ["sync_gateway_keys:kong"]
    assert not result.actions[0].needs_confirm
    assert {c.code for c in result.consequences} == {"AUTH_USER_CREATE_FAILED", "CONFIG_DRIFT"}
    assert result.manual == ()


def test_kong_rejecting_a_key_its_file_agrees_with_is_restarted() -> None:
    stale = issue("GATEWAY_KEY_REJECTED", "kong", "api_endpoints", credential="anon_key",
                  kong_file_differs=False)
    assert ids(plan(stale)) == ["restart_component:kong"]


def test_stopped_auth_is_started_with_its_symptoms_deduplicated() -> None:
    result = plan(*AUTH_STOPPED, inst=instance({"auth": "exited"}))
    (action,) = result.actions
    assert action.id == "start_container:auth"
    assert action.issue_codes == ("CONTAINER_NOT_RUNNING", "AUTH_UNHEALTHY",
                                  "GATEWAY_UPSTREAM_ERROR")
    assert action.verify_check == "container_status"
    assert set(action.verify_checks) == {"container_status", "auth_service", "api_endpoints"}


def test_paused_auth_is_unpaused() -> None:
    (action,) = plan(*AUTH_STOPPED, inst=instance({"auth": "paused"})).actions
    assert action.action == "start_container"
    assert action.description.startswith("unpause")


def test_missing_container_is_recreated() -> None:
    result = plan(issue("CONTAINER_MISSING", "auth"),
                  issue("AUTH_UNHEALTHY", "auth", "auth_service"),
                  inst=instance({"auth": None}))
    (action,) = result.actions
    assert action.id == "recreate_container:auth"
    assert "--no-deps auth" in action.description


def test_missing_volume_is_manual_with_its_hint() -> None:
    result = plan(issue("VOLUME_MISSING", "storage", "disk_usage"))
    assert result.actions == ()
    (item,) = result.manual
    assert item.code == "VOLUME_MISSING"
    assert "Restore the directory from a backup" in item.hint


def test_missing_db_volume_blocks_starting_the_db() -> None:
    result = plan(issue("VOLUME_MISSING", "db", "disk_usage"),
                  issue("CONTAINER_NOT_RUNNING", "db"),
                  issue("DB_UNREACHABLE", "db", "database_connection"),
                  inst=instance({"db": "exited"}))
    assert result.actions == ()
    assert {"CONTAINER_NOT_RUNNING[db]", "DB_UNREACHABLE[db]"} <= set(result.manual[0].blocks)


def test_taken_port_is_manual_and_kong_is_not_started() -> None:
    result = plan(issue("PORT_CONFLICT", "kong", "network_connectivity"),
                  issue("CONTAINER_NOT_RUNNING", "kong", state="exited"),
                  issue("GATEWAY_UNREACHABLE", "kong", "api_endpoints"),
                  issue("AUTH_USER_CREATE_FAILED", "auth", "auth_service"),
                  inst=instance({"kong": "exited"}))
    assert result.actions == ()
    (item,) = result.manual
    assert item.code == "PORT_CONFLICT"
    assert {"CONTAINER_NOT_RUNNING[kong]", "GATEWAY_UNREACHABLE[kong]"} <= set(item.blocks)


def test_low_disk_is_manual() -> None:
    result = plan(issue("DISK_SPACE_LOW", None, "disk_usage"))
    assert result.actions == ()
    assert result.manual[0].code == "DISK_SPACE_LOW"


def test_config_drift_alone_is_manual() -> None:
    result = plan(issue("CONFIG_DRIFT", None, "discovery"))
    assert result.actions == ()
    assert "operator's decision" in result.manual[0].hint


def test_logs_and_info_issues_plan_nothing() -> None:
    result = plan(issue("JWT_SECRET_MISMATCH", "auth", "logs"),
                  make_issue("PORT_NOT_LISTENING", check="network_connectivity",
                             message="v6 only", component="kong", severity="info",
                             repair=None))
    assert result.actions == () and result.manual == () and result.consequences == ()


def test_healthy_diagnostic_plans_nothing() -> None:
    assert plan_repairs(diagnostic(), instance()) == []


# -- ordering and deduplication --------------------------------------------------------------


def test_root_cause_runs_first_then_dependency_order_and_restarts_last() -> None:
    result = plan(issue("CONTAINER_MISSING", "kong"),
                  issue("CONTAINER_NOT_RUNNING", "db", state="exited"),
                  issue("CONTAINER_NOT_RUNNING", "studio", state="exited"),
                  issue("CONTAINER_UNHEALTHY", "imgproxy"),
                  issue("JWT_KEY_EXPIRING", "auth", "auth_service"),
                  inst=instance({"kong": None, "db": "exited", "studio": "exited"}))
    assert result.root_cause == "CONTAINER_MISSING"
    assert ids(result) == ["recreate_container:kong", "start_container:db",
                           "start_container:studio", "regenerate_jwt_keys",
                           "restart_component:imgproxy"]


def test_one_action_per_action_and_component() -> None:
    both = (issue("GATEWAY_KEY_REJECTED", "kong", "api_endpoints", credential="anon_key",
                  kong_file_differs=True),
            issue("GATEWAY_KEY_REJECTED", "kong", "auth_service",
                  credential="service_role_key", kong_file_differs=True))
    (action,) = plan(*both).actions
    assert action.issue_codes == ("GATEWAY_KEY_REJECTED",)
    assert set(action.verify_checks) == {"api_endpoints", "auth_service"}
    result = plan(*KEY_EXPIRED, issue("JWT_SECRET_MISMATCH", "auth", "auth_service"),
                  issue("JWT_KEY_EXPIRING", "auth", "auth_service"))
    assert ids(result) == ["regenerate_jwt_keys"]
    assert len(result.actions[0].issue_codes) == 3


def test_plan_round_trips_through_stored_json() -> None:
    stored = Diagnostic.from_dict(diagnostic(*ROLE_MISMATCH).to_dict())
    assert ids(build_plan(stored, instance())) == ids(plan(*ROLE_MISMATCH))
    out = plan(*ROLE_MISMATCH).to_dict()
    assert out["actions"][0]["verify_checks"] == ["database_connection", "auth_service"]
    assert PG_PASSWORD not in str(out)


# -- choosing, confirming, verifying ------------------------------------------------------


def test_confirm_is_required_before_anything_runs() -> None:
    actions = plan(*KEY_EXPIRED, *AUTH_STOPPED, inst=instance({"auth": "exited"})).actions
    with pytest.raises(ConfirmationRequired) as refused:
        repair_body(actions, confirm=False)
    assert refused.value.status == 400
    assert "regenerate_jwt_keys" in str(refused.value) and "confirm" in str(refused.value)
    assert callable(repair_body(actions, confirm=True))
    safe = [a for a in actions if not a.needs_confirm]
    require_confirm(safe, False)  # nothing held: no error
    assert callable(repair_body(safe, confirm=False))


def test_select_actions_keeps_plan_order_and_refuses_unknown_ids() -> None:
    actions = plan(*ROLE_MISMATCH).actions
    chosen = select_actions(actions, ["restart_component:auth", "sync_db_role_passwords:db"])
    assert [a.id for a in chosen] == ["sync_db_role_passwords:db", "restart_component:auth"]
    assert select_actions(actions, None) == list(actions)
    with pytest.raises(UnknownRepairAction) as unknown:
        select_actions(actions, ["restart_component:kong"])
    assert unknown.value.status == 400


def test_remaining_issues_are_scoped_to_the_component_for_container_actions() -> None:
    (start,) = plan(*AUTH_STOPPED, inst=instance({"auth": "exited"})).actions
    after = diagnostic(issue("CONTAINER_NOT_RUNNING", "kong"),
                       issue("AUTH_UNHEALTHY", "auth", "logs"))
    assert remaining_issues(start, after) == []
    crashing = diagnostic(issue("CONTAINER_CRASH_LOOP", "auth"))
    assert [i.code for i in remaining_issues(start, crashing)] == ["CONTAINER_CRASH_LOOP"]
    (regen,) = plan(*KEY_EXPIRED).actions
    assert [i.code for i in remaining_issues(regen, diagnostic(*KEY_EXPIRED))] == [
        "JWT_KEY_EXPIRED"]


# -- the run loop, with plain stand-ins for the context --------------------------------------


@dataclass
class FakeEngine:
    """Answers verify runs with the next diagnostic of a script."""

    script: list[Diagnostic]
    runs: list[tuple[str, ...]] = field(default_factory=list)

    def instance(self, instance_id: str, fresh: bool = False) -> Instance:
        return instance()

    def run(self, instance_id: str, *, trigger: str, use_cache: bool,
            checks: Sequence[str]) -> Any:
        assert (trigger, use_cache) == ("operation", False)
        self.runs.append(tuple(checks))
        diag = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return SimpleNamespace(diagnostic=diag)


@dataclass
class FakeContext:
    """Records steps as the runner's context does."""

    engine: FakeEngine
    steps: list[tuple[str, str]] = field(default_factory=list)
    backups_made: list[str] = field(default_factory=list)
    marks: list[tuple[str, str]] = field(default_factory=list)
    redactor: Redactor = field(default_factory=lambda: Redactor([PG_PASSWORD]))

    def __post_init__(self) -> None:
        self.instance = instance()
        self.config = SimpleNamespace(actions=ActionsConfig(
            health_timeout_seconds=0.01, stop_timeout_seconds=1.0))
        self.backups = SimpleNamespace(create=self._backup)

    def _backup(self, inst: Instance, reason: str) -> Any:
        self.backups_made.append(reason)
        return SimpleNamespace(id=f"b{len(self.backups_made)}")

    @contextlib.contextmanager
    def step(self, name: str, **detail: Any) -> Iterator[dict[str, Any]]:
        try:
            yield dict(detail)
        except BaseException:
            self.steps.append((name, "failed"))
            raise
        self.steps.append((name, "ok"))

    def refresh(self) -> Instance:
        return self.instance

    def redact_also(self, *secrets: str) -> None:
        self.redactor = self.redactor.extend(secrets)

    def mark(self, name: str, status: str) -> None:
        self.marks.append((name, status))


def recording_act(log: list[str]) -> Any:
    def act(runner: Any, action: RepairAction, journal: Journal,
            detail: dict[str, Any]) -> None:
        log.append(f"act {action.id} after backup {detail['backup_id']}")
        journal.services.append((f"recreate for {action.id}",
                                 lambda: log.append(f"undo services {action.id}")))
        journal.data.append((f"restore files for {action.id}",
                             lambda: log.append(f"undo data {action.id}")))
    return act


def test_run_stops_at_the_first_failed_verification_and_rolls_it_back() -> None:
    actions = plan(*ROLE_MISMATCH).actions
    # The sync verifies, the restart's issues never go away.
    engine = FakeEngine([diagnostic(), diagnostic(issue("AUTH_UNHEALTHY", "auth",
                                                        "auth_service"))])
    ctx = FakeContext(engine)
    log: list[str] = []
    acts = {"sync_db_role_passwords": recording_act(log),
            "restart_component": recording_act(log)}
    with pytest.raises(OperationError) as failed:
        run_actions(ctx, actions, acts)  # type: ignore[arg-type]
    message = str(failed.value)
    assert message.startswith("repair restart_component:auth failed: verification failed")
    assert "AUTH_UNHEALTHY[auth]" in message
    assert "done before it and kept: sync_db_role_passwords:db" in message
    assert not failed.value.rolled_back  # the sync stays done: not back where it started
    # Only the failed action is undone: its data before its services.
    assert log == ["act sync_db_role_passwords:db after backup b1",
                   "act restart_component:auth after backup b2",
                   "undo data restart_component:auth",
                   "undo services restart_component:auth"]
    assert ctx.steps == [("repair sync_db_role_passwords:db", "ok"),
                         ("repair restart_component:auth", "failed"),
                         ("rollback restart_component:auth", "ok")]
    assert ctx.marks == [("repair restart_component:auth", "rolled_back")]


def test_first_action_failing_is_reported_as_rolled_back_and_later_ones_skipped() -> None:
    actions = plan(*ROLE_MISMATCH).actions
    ctx = FakeContext(FakeEngine([diagnostic()]))

    def broken(runner: Any, action: RepairAction, journal: Journal,
               detail: dict[str, Any]) -> None:
        journal.data.append(("set supabase_auth_admin's password back", lambda: None))
        raise RuntimeError(f"server closed the connection ({PG_PASSWORD})")

    with pytest.raises(OperationError) as failed:
        run_actions(ctx, actions, {"sync_db_role_passwords": broken})  # type: ignore[arg-type]
    message = str(failed.value)
    assert failed.value.rolled_back
    assert "not run: restart_component:auth" in message
    assert "set supabase_auth_admin's password back" in message
    assert PG_PASSWORD not in message
    assert ctx.engine.runs == []  # never verified what failed to act


def test_successful_run_verifies_each_action_with_its_checks() -> None:
    actions = plan(*ROLE_MISMATCH).actions
    engine = FakeEngine([diagnostic()])
    ctx = FakeContext(engine)
    log: list[str] = []
    acts = {"sync_db_role_passwords": recording_act(log),
            "restart_component": recording_act(log)}
    result = run_actions(ctx, actions, acts)  # type: ignore[arg-type]
    assert result["succeeded"] == [a.id for a in actions]
    assert engine.runs == [a.verify_checks for a in actions]
    assert ctx.backups_made == [f"before repair {a.id}" for a in actions]
    assert not any(line.startswith("undo") for line in log)


def test_journal_undo_keeps_going_after_a_failed_step() -> None:
    done: list[str] = []

    def fail() -> None:
        raise OSError("disk gone")

    journal = Journal(data=[("first data", lambda: done.append("d1")), ("bad", fail)],
                      services=[("service", lambda: done.append("s1"))])
    outcome = journal.undo()
    assert [o["what"] for o in outcome] == ["bad", "first data", "service"]
    assert [o["ok"] for o in outcome] == [False, True, True]
    assert done == ["d1", "s1"]


# -- a container action that moves one of Kong's upstreams -----------------------------------


class FakeContainer:
    """An inspect-shaped container whose restart takes the address Docker would give."""

    def __init__(self, service: str, address: str, next_address: str) -> None:
        self.service, self.next_address = service, next_address
        self.restarts = 0
        self.attrs: dict[str, Any] = {
            "Id": service, "State": {"Status": "running"},
            "NetworkSettings": {"Networks": {"supabase-abc12345_default": {
                "IPAddress": address}}}}

    def restart(self) -> None:
        self.restarts += 1
        self.attrs["NetworkSettings"]["Networks"]["supabase-abc12345_default"][
            "IPAddress"] = self.next_address


class FakeHost(DockerHost):
    """The engine's listing and inspect of these containers; restart through the API."""

    def __init__(self, *items: FakeContainer) -> None:
        super().__init__("unix:///nonexistent", client=cast(Any, SimpleNamespace(
            api=SimpleNamespace(restart=self._restart))))
        self.items = {c.service: c for c in items}

    def list_containers(self) -> list[ContainerSummary]:
        return [ContainerSummary(c.service, f"supabase-{c.service}", "img", "running", "Up",
                                 0, {"com.docker.compose.project": "supabase-abc12345",
                                     "com.docker.compose.service": c.service})
                for c in self.items.values()]

    def inspect(self, container_id: str) -> ContainerDetails | None:
        item = self.items.get(container_id)
        return details_of(item.attrs) if item else None

    def _restart(self, container_id: str, timeout: int) -> None:
        self.items[container_id].restart()


AUTH_UNHEALTHY_ONLY = (issue("AUTH_UNHEALTHY", "auth", "auth_service"),)


@pytest.mark.parametrize(("auth_after", "kong_restarts"),
                         [("172.18.0.12", 1), ("172.18.0.9", 0)])
def test_restarting_an_upstream_that_moves_restarts_kong(auth_after: str,
                                                         kong_restarts: int) -> None:
    auth = FakeContainer("auth", "172.18.0.9", auth_after)
    kong = FakeContainer("kong", "172.18.0.8", "172.18.0.8")
    ctx = FakeContext(FakeEngine([diagnostic()]))
    ctx.docker = FakeHost(auth, kong)
    ctx.compose = None
    (action,) = plan(*AUTH_UNHEALTHY_ONLY).actions
    detail: dict[str, Any] = {}
    act_restart(RepairSession(ctx), action, Journal(), detail)  # type: ignore[arg-type]
    assert auth.restarts == 1 and kong.restarts == kong_restarts
    if kong_restarts:
        assert detail["kong_restarted"] == ("auth moved from 172.18.0.9 to 172.18.0.12; kong "
                                            "restarted to resolve it again")
    else:
        assert "kong_restarted" not in detail

