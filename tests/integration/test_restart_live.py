"""Safe restart and restart-service on a private live fleet of one instance.

A healthy instance restarts with its users, row counts, PGDATA and containers intact, in
dependency order; a restart whose component cannot come up fails at the start step with a
clear report and leaves running what ran before.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from psycopg import sql

from actions.backups import BackupStore
from actions.compose import ComposeRunner
from actions.operations.model import Operation
from actions.operations.restart import restart_service_body, safe_restart_body
from actions.operations.runner import Body, OperationRunner
from actions.store import ActionStore
from exporter.access import Principal
from exporter.config import load_config
from exporter.dockerhost import DockerHost
from exporter.engine import DiagnosticsEngine
from fleet import engine as fleet_engine
from fleet.fleet import Fleet
from fleet.model import COMPONENTS, Instance

pytestmark = pytest.mark.integration

OPERATOR = Principal("restart-test", "operator", None, "token")
PIPELINE = ["backup", "capture_state", "silence", "stop", "verify_volumes", "start",
            "quick_health", "compare_state", "expire_silence"]


@pytest.fixture(scope="module")
def live(private_fleet: Fleet) -> Fleet:
    # Private: these tests stop the whole instance and break its auth.
    return private_fleet


class RecordingSilences:
    """Stands in for the Alertmanager client: records when silences come and go."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def create_silence(self, instance_id: str, *, comment: str,
                       duration_seconds: float) -> str:
        self.calls.append(("create", instance_id, time.time()))
        assert "ultrabase-doctor" in comment and duration_seconds > 0
        return "5f2e1c7a-0000-4000-8000-000000000001"

    def expire_silence(self, silence_id: str) -> None:
        self.calls.append(("expire", silence_id, time.time()))


@dataclass
class Harness:
    """The action side's real pieces over the live fleet, with adjustable timeouts."""

    fleet: Fleet
    tmp: Path
    silences: RecordingSilences

    @property
    def instance(self) -> Instance:
        return self.fleet.instances[0]

    def run(self, body: Body, *, health_timeout: float = 120.0,
            kind: str = "safe_restart") -> Operation:
        config = load_config(self.fleet.config_path)
        config = config.model_copy(update={"actions": config.actions.model_copy(update={
            "health_timeout_seconds": health_timeout, "stop_timeout_seconds": 10.0})})
        store = ActionStore(self.tmp / "store.sqlite3")
        host = DockerHost(config.docker.base_url, config.docker.timeout_seconds)
        diagnostics = DiagnosticsEngine(config, host, store)
        runner = OperationRunner(config, diagnostics, store, host,
                                 ComposeRunner.from_config(config),
                                 BackupStore(self.tmp / "backups"),
                                 cast(Any, self.silences))
        try:
            return runner.run_inline(kind, self.instance.id, OPERATOR, {}, body)
        finally:
            diagnostics.close()
            store.close()

    def store(self) -> ActionStore:
        return ActionStore(self.tmp / "store.sqlite3")


@pytest.fixture
def harness(live: Fleet, tmp_path: Path) -> Iterator[Harness]:
    live.wait_healthy(live.ids[0], 120)
    yield Harness(live, tmp_path, RecordingSilences())
    # Whatever a test did, the next one starts from a healthy instance.
    live.wait_healthy(live.ids[0], 120)


def containers(instance: Instance) -> dict[str, dict[str, Any]]:
    """component -> docker inspect of its container."""
    client = fleet_engine.client()
    return {name: client.api.inspect_container(c.id)
            for name, c in fleet_engine.containers(instance).items()}


def up(raw: Mapping[str, Any]) -> bool:
    state = raw["State"]
    return bool(state["Status"] == "running" and
                (state.get("Health") or {}).get("Status") in (None, "healthy"))


def db_counts(instance: Instance) -> tuple[int, dict[str, int]]:
    with fleet_engine.db_connect(instance) as conn:
        row = conn.execute("SELECT count(*) FROM auth.users").fetchone()
        tables = {str(s): int(str(n)) for s, n in conn.execute(
            "SELECT table_schema, count(*) FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' GROUP BY table_schema")}
    assert row is not None
    return int(str(row[0])), tables


def admin(instance: Instance) -> dict[str, str]:
    key = instance.credentials.service_role_key
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def create_user(instance: Instance) -> tuple[str, str]:
    email = f"restart-{uuid.uuid4().hex[:10]}@fleet.invalid"
    answer = httpx.post(f"{instance.gateway_url}/auth/v1/admin/users", headers=admin(instance),
                        json={"email": email, "password": uuid.uuid4().hex,
                              "email_confirm": True}, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"]), email


def user_email(instance: Instance, user_id: str) -> str | None:
    answer = httpx.get(f"{instance.gateway_url}/auth/v1/admin/users/{user_id}",
                       headers=admin(instance), timeout=10)
    return str(answer.json()["email"]) if answer.status_code == 200 else None


def pgdata(instance: Instance) -> Path:
    return instance.volumes_dir / "db" / "data"


def moment(text: str) -> str:
    """Docker's RFC 3339 UTC stamp with its fraction padded to 9 digits: sortable as text."""
    base, _, fraction = text.rstrip("Z").partition(".")
    return f"{base}.{fraction.ljust(9, '0')}"


def test_safe_restart_keeps_users_rows_and_pgdata(harness: Harness) -> None:
    instance = harness.instance
    user_id, email = create_user(instance)
    users, tables = db_counts(instance)
    entries = {p.name for p in pgdata(instance).iterdir()} - {"postmaster.pid"}
    before = containers(instance)

    op = harness.run(safe_restart_body(None))

    assert op.status == "succeeded", (op.failed_step, op.error)
    assert [s.name for s in op.steps] == PIPELINE
    assert all(s.status == "ok" and s.duration_seconds is not None for s in op.steps)
    # Data: the user made before is there, counts are equal, PGDATA is whole.
    assert user_email(instance, user_id) == email
    assert db_counts(instance) == (users, tables)
    assert op.result["state_before"]["db"] == op.result["state_after"]["db"]
    assert op.result["state_after"]["db"]["auth_users"] == users
    assert (pgdata(instance) / "PG_VERSION").read_text().strip() == "15"
    assert entries <= {p.name for p in pgdata(instance).iterdir()}
    # The same containers (nothing recreated), every one restarted and up again.
    after = containers(instance)
    assert {c: r["Id"] for c, r in after.items()} == {c: r["Id"] for c, r in before.items()}
    assert all(up(r) for r in after.values()), {c: r["State"]["Status"] for c, r in
                                                after.items()}
    for component in COMPONENTS:
        assert after[component]["State"]["StartedAt"] > before[component]["State"]["StartedAt"]
    # Stopped dependents first, started dependencies first.
    finished = {c: moment(r["State"]["FinishedAt"]) for c, r in after.items()}
    started = {c: moment(r["State"]["StartedAt"]) for c, r in after.items()}
    assert finished["storage"] <= finished["rest"] <= finished["db"] <= finished["vector"]
    assert finished["auth"] <= finished["analytics"] <= finished["db"]
    assert started["vector"] < started["db"] < started["analytics"] < started["auth"]
    assert started["rest"] <= started["storage"]
    # Silenced around the restart, audited, backed up.
    assert [c[0] for c in harness.silences.calls] == ["create", "expire"]
    assert harness.silences.calls[0][1] == instance.id
    with harness.store() as store:
        [entry] = store.audit(5, instance_id=instance.id)
        assert (entry.who, entry.role, entry.action, entry.result) == \
            ("restart-test", "operator", "safe_restart", "succeeded")
        assert [s["name"] for s in entry.steps] == PIPELINE
        assert store.operation_counts() == {("safe_restart", "succeeded"): 1}
        assert store.lock_holder(instance.id) is None
    [backup] = BackupStore(harness.tmp / "backups").list(instance.id)
    assert backup.id == op.result["backup_id"]


def test_restart_service_with_dependents_touches_only_those(harness: Harness) -> None:
    instance = harness.instance
    before = containers(instance)

    op = harness.run(restart_service_body("rest", with_dependents=True),
                     kind="restart_service")

    assert op.status == "succeeded", (op.failed_step, op.error)
    assert op.result["components"] == ["rest", "storage"]
    assert [s.name for s in op.steps] == PIPELINE
    after = containers(instance)
    restarted = {c for c in COMPONENTS
                 if after[c]["State"]["StartedAt"] != before[c]["State"]["StartedAt"]}
    assert restarted == {"rest", "storage"}
    assert all(up(r) for r in after.values())


def test_start_timeout_brings_back_everything(harness: Harness) -> None:
    instance = harness.instance
    user_id, email = create_user(instance)
    before = containers(instance)

    # Nothing with a healthcheck can report healthy within a second of its start.
    op = harness.run(safe_restart_body(None), health_timeout=1.0)

    assert op.status == "rolled_back", (op.failed_step, op.error)
    assert op.failed_step == "start"
    assert op.error is not None and op.error.startswith("start failed: ")
    assert "not up after 1s" in op.error and "brought back what was running" in op.error
    steps = {s.name: s for s in op.steps}
    assert steps["start"].status == "failed" and steps["rollback"].status == "ok"
    assert "quick_health" not in steps and "compare_state" not in steps
    assert steps["rollback"].detail["differs_from_before"] == []
    assert [c[0] for c in harness.silences.calls] == ["create", "expire"]
    after = containers(instance)
    assert {c: r["Id"] for c, r in after.items()} == {c: r["Id"] for c, r in before.items()}
    assert all(up(r) for r in after.values())
    assert user_email(instance, user_id) == email


def set_role_password(instance: Instance, role: str, password: str) -> None:
    with fleet_engine.db_connect(instance) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))


def test_component_that_cannot_come_up_fails_with_a_clear_report(harness: Harness) -> None:
    instance, fleet = harness.instance, harness.fleet
    user_id, email = create_user(instance)
    users, tables = db_counts(instance)
    before = containers(instance)
    # auth's DB password changes under it: the running auth keeps its sessions and stays
    # healthy, so the state is captured healthy; the restarted auth cannot log in.
    set_role_password(instance, "supabase_auth_admin", secrets.token_hex(16))
    try:
        op = harness.run(safe_restart_body(None), health_timeout=60.0)
        after = containers(instance)
    finally:
        fleet.heal(instance.id, "auth-db-password")

    assert op.status == "failed" and op.failed_step == "start", op.error
    assert op.error is not None
    assert op.error.startswith("start failed: auth: crash-looping")
    assert "password authentication failed" in op.error
    assert "brought back what was running except: auth" in op.error
    steps = {s.name: s for s in op.steps}
    assert steps["rollback"].status == "failed"
    assert steps["rollback"].detail["differs_from_before"] == ["auth"]
    assert [c[0] for c in harness.silences.calls] == ["create", "expire"]
    assert instance.credentials.postgres_password not in repr(op.to_dict())
    # What ran runs again (auth under its restart policy), nothing was removed.
    assert {c: r["Id"] for c, r in after.items()} == {c: r["Id"] for c, r in before.items()}
    assert all(up(r) for c, r in after.items() if c != "auth")
    assert after["auth"]["State"]["Status"] in ("running", "restarting")
    assert after["auth"]["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # Healed, the instance holds the same data.
    assert user_email(instance, user_id) == email
    assert db_counts(instance) == (users, tables)
    assert (pgdata(instance) / "PG_VERSION").read_text().strip() == "15"
