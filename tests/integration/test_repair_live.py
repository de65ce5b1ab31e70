"""Each repair fixes its fault end to end on a private live fleet.

break -> diagnose -> plan -> repair (through the operation runner) -> diagnose clean, for a
role password mismatch, an expired key, a key signed with another secret, a stopped auth,
a removed auth container and a rest whose name no longer resolves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.operations.model import Operation
from actions.operations.repair import (
    ACTS,
    ActFn,
    ConfirmationRequired,
    RepairError,
    RepairPlan,
    build_plan,
    repair_body,
    run_actions,
)
from actions.operations.runner import OperationRunner
from actions.store import ActionStore
from exporter.access import Principal
from exporter.config import Config, load_config
from exporter.diagnostic import Diagnostic
from exporter.discovery.files import read_compose_file, read_env_file, read_kong_file
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from exporter.jwtkeys import analyse_key
from fleet.fleet import Fleet

pytestmark = pytest.mark.integration

# Nothing in this module hangs by design, and its diagnostics after a repair are judged
# once on a shared 2-core host that may be saturated: a 3 s timeout left kong's in-network
# probe 1 s to reach rest. Latency verdicts are tested elsewhere.
TIMEOUT = 10.0
OPERATOR = Principal(name="repair-test", role="operator", instances=None, source="token")


@dataclass(frozen=True)
class World:
    """The fleet and the services an action process runs over it."""

    fleet: Fleet
    config: Config
    engine: DiagnosticsEngine
    runner: OperationRunner

    @property
    def iid(self) -> str:
        """The fleet's one instance."""
        return self.fleet.ids[0]


@pytest.fixture(scope="module")
def world(private_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    fleet = private_fleet
    work = tmp_path_factory.mktemp("repair")
    loaded = load_config(fleet.config_path)
    config = loaded.model_copy(update={
        "diagnostics": loaded.diagnostics.model_copy(update={"timeout_seconds": TIMEOUT}),
        "actions": loaded.actions.model_copy(update={
            "backups_dir": work / "backups", "health_timeout_seconds": 60.0,
            "stop_timeout_seconds": 5.0}),
    })
    host = DockerHost(config.docker.base_url, TIMEOUT)
    store = ActionStore(work / "store.db")
    engine = DiagnosticsEngine(config, host, store)
    runner = OperationRunner(config, engine, store, host, ComposeRunner.from_config(config),
                             BackupStore(work / "backups"), None)
    try:
        yield World(fleet, config, engine, runner)
    finally:
        engine.close()
        store.close()


@pytest.fixture(autouse=True)
def _healthy_before(world: World) -> None:
    """Each test starts from a serving instance, whatever the one before left settling."""
    world.fleet.wait_healthy(world.iid, 120)


def diagnose(world: World) -> Diagnostic:
    world.engine.instance(world.iid, fresh=True)
    return world.engine.run(world.iid, trigger="operation", use_cache=False).diagnostic


def live_problems(diagnostic: Diagnostic) -> list[str]:
    """Warnings or worse from the live checks (logs describe the past, not the present)."""
    return [f"{i.code}[{i.component}] {i.check}: {i.message}" for i in diagnostic.issues
            if i.severity != "info" and i.check != "logs"]


def plan_now(world: World) -> tuple[Diagnostic, RepairPlan]:
    diagnostic = diagnose(world)
    return diagnostic, build_plan(diagnostic, world.engine.instance(world.iid, fresh=True))


def repair(world: World, plan: RepairPlan, *, confirm: bool = False) -> Operation:
    inputs = {"actions": [a.id for a in plan.actions], "confirm": confirm}
    return world.runner.run_inline("repair", world.iid, OPERATOR, inputs,
                                   repair_body(plan.actions, confirm=confirm))


def failing_after(action: str) -> dict[str, ActFn]:
    """The real acts, with `action` failing once it has done its work."""
    real = ACTS[action]

    def act(*args: Any) -> None:
        real(*args)
        raise RepairError("injected failure after the act")

    return {**ACTS, action: act}


def repair_failing(world: World, plan: RepairPlan, action: str) -> Operation:
    """Run the plan with `action` failing after its act (to see the live rollback)."""
    acts = failing_after(action)
    return world.runner.run_inline(
        "repair", world.iid, OPERATOR, {"actions": [a.id for a in plan.actions]},
        lambda ctx: run_actions(ctx, plan.actions, acts))


def assert_repaired(world: World, operation: Operation) -> Diagnostic:
    text = json.dumps(operation.to_dict())
    assert operation.status == "succeeded", (operation.error, operation.steps)
    for secret in world.engine.instance(world.iid, fresh=True).secrets():
        assert secret not in text
    after = diagnose(world)
    assert live_problems(after) == []
    synthetic = after.results["auth_service"].details["synthetic_user"]
    assert synthetic["created"] and synthetic["deleted"], synthetic
    return after


def test_role_password_mismatch_is_synced_then_auth_restarted(world: World) -> None:
    world.fleet.break_(world.iid, "auth-db-password")
    try:
        before, plan = plan_now(world)
        assert before.root_cause is not None
        assert before.root_cause.issue.code == "DB_ROLE_PASSWORD_MISMATCH"
        assert [a.id for a in plan.actions] == ["sync_db_role_passwords:db",
                                               "restart_component:auth"]
        # A failure after the sync sets the role's previous password hash back.
        failed = repair_failing(world, plan, "sync_db_role_passwords")
        assert failed.status == "rolled_back", failed.error
        assert failed.error is not None
        assert failed.error.startswith("repair sync_db_role_passwords:db failed: injected")
        assert "not run: restart_component:auth" in failed.error
        assert [(s.name, s.status) for s in failed.steps] == [
            ("repair sync_db_role_passwords:db", "rolled_back"),
            ("rollback sync_db_role_passwords:db", "ok")]
        still = world.engine.run(world.iid, trigger="operation", use_cache=False,
                                 checks=["database_connection"]).diagnostic
        assert any(i.code == "DB_ROLE_PASSWORD_MISMATCH" for i in still.issues)

        operation = repair(world, plan)
        steps = [s.name for s in operation.steps]
        assert steps == ["repair sync_db_role_passwords:db", "repair restart_component:auth"]
        sync = operation.steps[0].detail
        assert set(sync["roles"]) == {"supabase_auth_admin"}
        assert sync["roles"]["supabase_auth_admin"]["source"] == "runtime:auth"
        assert_repaired(world, operation)
    finally:
        # The fault's own undo finds the password already right; it must stay a no-op.
        world.fleet.heal(world.iid, "auth-db-password")
    assert live_problems(diagnose(world)) == []


@pytest.mark.parametrize("fault", ["service-key-expired", "service-key-wrong-secret"])
def test_bad_service_key_is_regenerated_everywhere_with_confirm(world: World,
                                                                fault: str) -> None:
    world.fleet.break_(world.iid, fault)
    try:
        _, plan = plan_now(world)
        assert [a.id for a in plan.actions] == ["regenerate_jwt_keys"]
        assert plan.actions[0].needs_confirm
        with pytest.raises(ConfirmationRequired):
            repair(world, plan, confirm=False)
        old = world.engine.instance(world.iid).credentials
        operation = repair(world, plan, confirm=True)
        assert_repaired(world, operation)
        assert_keys_consistent(world, old.anon_key, old.service_role_key)
    finally:
        world.fleet.heal(world.iid, fault)


def assert_keys_consistent(world: World, old_anon: str | None, old_service: str | None
                           ) -> None:
    """Registry, env file, compose file and kong.yml hold the same new, valid keys."""
    assert old_anon and old_service
    instance = world.engine.instance(world.iid, fresh=True)
    files = instance.files
    assert files.env_file and files.compose_file and files.kong_file and files.registry
    env = read_env_file(files.env_file)
    anon, service = env["ANON_KEY"], env["SERVICE_ROLE_KEY"]
    assert anon != old_anon and service != old_service
    record = json.loads(files.registry.read_text(encoding="utf-8"))[instance.id]
    assert (record["credentials"]["anon_key"],
            record["credentials"]["service_role_key"]) == (anon, service)
    compose = read_compose_file(files.compose_file).env
    assert (compose["kong"]["SUPABASE_ANON_KEY"],
            compose["kong"]["SUPABASE_SERVICE_KEY"]) == (anon, service)
    assert (compose["storage"]["ANON_KEY"], compose["storage"]["SERVICE_KEY"]) == (anon,
                                                                                  service)
    assert compose["studio"]["SUPABASE_SERVICE_KEY"] == service
    assert compose["functions"]["SUPABASE_SERVICE_ROLE_KEY"] == service
    healthcheck = yaml.safe_load(files.compose_file.read_text(encoding="utf-8"))[
        "services"]["realtime"]["healthcheck"]["test"]
    assert f"Authorization: Bearer {anon}" in healthcheck
    for path in (files.env_file, files.compose_file, files.kong_file, files.registry):
        text = Path(path).read_text(encoding="utf-8")
        assert old_service not in text and old_anon not in text, path
    kong = read_kong_file(files.kong_file, compose["kong"]).keys
    assert (kong["anon"], kong["service_role"]) == (anon, service)
    # What runs agrees with the files, and both keys verify against auth's own secret.
    assert (instance.credentials.anon_key, instance.credentials.service_role_key) == (
        anon, service)
    secret = instance.runtime_env["auth"]["GOTRUE_JWT_SECRET"]
    for name, key in (("anon", anon), ("service_role", service)):
        analysis = analyse_key(name, key, secret)
        assert analysis.signature_valid and analysis.role_valid, name


def test_failed_key_regeneration_restores_files_and_services(world: World) -> None:
    world.fleet.break_(world.iid, "service-key-expired")
    try:
        _, plan = plan_now(world)
        instance = world.engine.instance(world.iid, fresh=True)
        paths = [p for p in (instance.files.registry, instance.files.env_file,
                             instance.files.compose_file, instance.files.kong_file) if p]
        before = {p: p.read_bytes() for p in paths}
        bad_key = instance.credentials.service_role_key
        failed = repair_failing(world, plan, "regenerate_jwt_keys")
        assert failed.status == "rolled_back", failed.error
        assert failed.error is not None and "restore the files from the backup" in failed.error
        assert {p: p.read_bytes() for p in paths} == before
        # The recreated services run with the restored files' key again.
        assert world.engine.instance(world.iid, fresh=True).credentials.service_role_key \
            == bad_key
        assert "JWT_KEY_EXPIRED" in {i.code for i in diagnose(world).issues}
    finally:
        world.fleet.heal(world.iid, "service-key-expired")


def test_stopped_auth_is_started(world: World) -> None:
    world.fleet.break_(world.iid, "stop:auth")
    try:
        _, plan = plan_now(world)
        assert [a.id for a in plan.actions] == ["start_container:auth"]
        operation = repair(world, plan)
        assert operation.steps[0].detail["state_before"] == "exited"
        assert_repaired(world, operation)
    finally:
        world.fleet.heal(world.iid, "stop:auth")


def test_removed_auth_container_is_recreated(world: World) -> None:
    instance = world.engine.instance(world.iid, fresh=True)
    client = world.engine.docker.client
    name = instance.components["auth"].container_name
    assert name
    # The container only: its bind-mounted data is never touched.
    client.containers.get(name).remove(force=True)
    before, plan = plan_now(world)
    assert any(i.code == "CONTAINER_MISSING" and i.component == "auth"
               for i in before.issues)
    assert [a.id for a in plan.actions] == ["recreate_container:auth"]
    operation = repair(world, plan)
    assert_repaired(world, operation)
    assert client.containers.get(name).status == "running"


def test_a_name_lost_from_the_network_comes_back_with_the_recreation(world: World) -> None:
    """alias-lost:rest: rest serves but its name does not resolve; the one action recreates
    it with compose (its aliases come back) and restarts kong, which may hold the name
    error for 30 s."""
    world.fleet.break_(world.iid, "alias-lost:rest")
    try:
        before, plan = plan_now(world)
        assert before.root_cause is not None
        assert before.root_cause.chain[0].get("link") == "kong->rest", live_problems(before)
        assert [a.id for a in plan.actions] == ["recreate_container:rest"]
        operation = repair(world, plan)
        assert operation.steps[0].detail["kong_restarted"]
        assert_repaired(world, operation)
    finally:
        world.fleet.heal(world.iid, "alias-lost:rest")


def test_recreated_auth_is_reached_again_once_kong_restarts(world: World) -> None:
    """recreate:auth: GoTrue is healthy at a new address Kong does not know; restarting kong,
    the one action offered, brings the gateway route back. Last in the module: the fault
    leaves a free address below auth's new one, where a later start would move auth."""
    world.fleet.break_(world.iid, "recreate:auth")
    try:
        before, plan = plan_now(world)
        assert before.root_cause is not None
        assert (before.root_cause.issue.code, before.root_cause.issue.component) == (
            "GATEWAY_UPSTREAM_STALE", "kong"), live_problems(before)
        assert [a.id for a in plan.actions] == ["restart_component:kong"]
        operation = repair(world, plan)
        assert operation.steps[0].detail["state_before"].startswith("running")
        assert_repaired(world, operation)
    finally:
        world.fleet.heal(world.iid, "recreate:auth")
