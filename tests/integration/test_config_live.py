"""Config edits, rollback, backups and restore on a private live fleet of one instance.

Everything runs through the real operation runner (store, lock, audit), the real compose
runner and the real diagnostics engine against real containers. Two failures are made on
purpose, and how is said where it happens:

- test_failed_health_is_rolled_back_to_healthy: quick_health is wrapped so it reports the
  instance unhealthy while the edited value is in the compose file (nothing else is faked:
  files, compose recreation and the rollback are real, and after the rollback the real
  quick_health decides);
- test_recreation_exposing_a_latent_fault_is_rolled_back: a realistic fault: the database
  password of supabase_auth_admin drifted (ALTER ROLE) while auth was running (the doctor
  reports it; auth keeps serving); the edit recreates auth, which now cannot log in and
  exits; the change is rolled back, and the error says the instance is still unhealthy
  after the rollback, because the cause was not the edit.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg
import pytest
import yaml
from psycopg import sql

from actions.backups import DB_DUMP, find_pg_dump
from actions.files import FileSet
from actions.operations.backup import restore_body
from actions.operations.config_edit import config_edit_body, current_config
from actions.operations.model import Operation
from actions.operations.runner import Body
from actions.service import ActionsRunning, build
from exporter.access import Principal
from exporter.config import parse_config
from exporter.discovery.files import read_env_file
from exporter.discovery.model import Instance
from exporter.engine import QuickHealth
from exporter.issues import make_issue
from fleet.fleet import Fleet

pytestmark = pytest.mark.integration

PRINCIPAL = Principal(name="config-live-test", role="admin", instances=None, source="token")
HEALTH_TIMEOUT = 60.0


@dataclass
class Live:
    """The fleet, its one instance, and the action services built on it."""

    fleet: Fleet
    iid: str
    running: ActionsRunning
    tmp: Path

    def instance(self) -> Instance:
        return self.running.services.engine.instance(self.iid, fresh=True)

    def run(self, kind: str, body: Body, inputs: dict[str, Any] | None = None) -> Operation:
        return self.running.services.runner.run_inline(kind, self.iid, PRINCIPAL,
                                                       inputs or {}, body)

    def files(self) -> dict[str, bytes]:
        paths = FileSet(self.instance()).paths()
        return {key: path.read_bytes() for key, path in sorted(paths.items())}

    @property
    def kong_url(self) -> str:
        return f"http://127.0.0.1:{self.fleet.instance(self.iid).ports.kong_http}/"

    def studio_status(self, user: str, password: str) -> int:
        """Studio's basic-auth through Kong on 127.0.0.1."""
        return httpx.get(self.kong_url, auth=(user, password), timeout=10).status_code

    def dashboard(self) -> tuple[str, str]:
        user, password = FileSet(self.instance()).get_kong_basicauth()
        assert user and password
        return user, password

    def container_env(self, service: str) -> dict[str, str]:
        name = self.fleet.instance(self.iid).container_name(service)
        attrs = docker.from_env().containers.get(name).attrs
        # An entry without "=" is a variable compose passes unset (an empty rendered value).
        pairs = (item.partition("=") for item in attrs["Config"]["Env"])
        return {key: value for key, sep, value in pairs if sep}

    def db(self) -> psycopg.Connection[Any]:
        inst = self.fleet.instance(self.iid)
        return psycopg.connect(host="127.0.0.1", port=inst.ports.postgres_ext,
                               user="supabase_admin",
                               password=inst.credentials.postgres_password,
                               dbname="postgres", autocommit=True, connect_timeout=5)


@pytest.fixture(scope="module")
def live(private_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Live]:
    fleet = private_fleet
    tmp = tmp_path_factory.mktemp("config-live")
    raw = yaml.safe_load(fleet.config_path.read_text())
    raw["actions"] = {"backups_dir": str(tmp / "backups"), "backup_retention": 20,
                      "health_timeout_seconds": HEALTH_TIMEOUT}
    running = build(parse_config(raw))
    try:
        yield Live(fleet, fleet.ids[0], running, tmp)
    finally:
        running.close()


def _no_secret_stored(live: Live, *secrets: str) -> None:
    entries = live.running.services.store.audit(100, 0, instance_id=live.iid)
    ops = [live.running.services.runner.get(e.operation_id) for e in entries if e.operation_id]
    stored = json.dumps([e.to_dict() for e in entries])
    stored += json.dumps([op.to_dict() for op in ops if op is not None])
    assert entries and ops
    for secret in secrets:
        assert secret not in stored


def test_dashboard_password_edit_takes_effect(live: Live) -> None:
    user, old = live.dashboard()
    assert live.studio_status(user, old) == 200
    new = "N3w pa ss: #1!%*(x)"
    op = live.run("config_edit", config_edit_body({"dashboard_password": new}),
                  {"changes": {"dashboard_password": "********"}})
    assert op.status == "succeeded", op.error
    assert op.result["recreated"] == ["kong"]
    assert [s.name for s in op.steps] == ["plan", "backup", "baseline_health", "write_files",
                                          "recreate", "verify_health"]
    assert live.studio_status(user, new) == 200
    assert live.studio_status(user, old) == 401
    files = FileSet(live.instance())
    assert files.get_registry(("credentials", "dashboard_password")) == new
    assert files.get_env("DASHBOARD_PASSWORD") == new
    assert files.get_compose_env("kong", "DASHBOARD_PASSWORD") == new
    assert live.container_env("kong")["DASHBOARD_PASSWORD"] == new
    assert current_config(live.instance())["fields"]["dashboard_password"] == {
        **current_config(live.instance())["fields"]["dashboard_password"],
        "value": "********", "in_sync": True}
    _no_secret_stored(live, new, old)


def test_dollar_quotes_and_backquotes_reach_the_container_literally(live: Live) -> None:
    port = live.fleet.instance(live.iid).ports.kong_http
    changes = {
        "site_url": f"http://127.0.0.1:{port}/cb?a=$HOME&b=$$x&d='q'",
        "smtp_pass": "p$HOME ${X} `id` $(id) 'q' \"dq\" #h",
        "smtp_sender_name": 'Équipe "Ops" $USER',
    }
    op = live.run("config_edit", config_edit_body(changes))
    assert op.status == "succeeded", op.error
    assert op.result["recreated"] == ["auth"]
    env = live.container_env("auth")
    assert env["GOTRUE_SITE_URL"] == changes["site_url"]
    assert env["GOTRUE_SMTP_PASS"] == changes["smtp_pass"]
    assert env["GOTRUE_SMTP_SENDER_NAME"] == changes["smtp_sender_name"]
    env_file = live.instance().files.env_file
    assert env_file is not None
    written = read_env_file(env_file)
    assert written["SITE_URL"] == changes["site_url"]
    assert written["SMTP_PASS"] == changes["smtp_pass"]


def test_failed_health_is_rolled_back_to_healthy(live: Live,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    before = live.files()
    auth_before = live.container_env("auth")["GOTRUE_SITE_URL"]
    marker = "rollback-probe.example"
    instance = live.instance()
    assert instance.files.compose_file is not None
    compose_file = instance.files.compose_file
    runner = live.running.services.runner
    real = runner.engine.quick_health

    def judged(instance_id: str) -> QuickHealth:
        # The induced failure: unhealthy while the edited value is in the compose file.
        if marker in compose_file.read_text():
            issue = make_issue("CONTAINER_UNHEALTHY", check="container_status",
                               component="auth",
                               message="induced by the test: the new site_url is rejected")
            return QuickHealth(instance_id, False, (issue,), 0.0)
        return real(instance_id)

    monkeypatch.setattr(runner.engine, "quick_health", judged)
    short = runner.config.model_copy(update={"actions": runner.config.actions.model_copy(
        update={"health_timeout_seconds": 8.0})})
    monkeypatch.setattr(runner, "config", short)
    op = live.run("config_edit", config_edit_body({"site_url": f"https://{marker}/"}))
    assert op.status == "rolled_back", op.error
    assert op.error is not None
    assert "rolled back" in op.error and "the new site_url is rejected" in op.error
    assert "still not healthy" not in op.error
    assert live.files() == before
    assert live.container_env("auth")["GOTRUE_SITE_URL"] == auth_before
    steps = {s.name: s.status for s in op.steps}
    assert steps["write_files"] == "rolled_back" and steps["rollback_verify"] == "ok"
    assert steps["rollback_recreate"] == "ok"


def test_recreation_exposing_a_latent_fault_is_rolled_back(live: Live) -> None:
    before = live.files()
    inst = live.fleet.instance(live.iid)
    enabled = current_config(live.instance())["fields"]["enable_email_autoconfirm"]["value"]
    with live.db() as conn:
        # The drift: the role's password changes under a running auth, which keeps working
        # until it is recreated and has to log in again.
        conn.execute(sql.SQL("ALTER ROLE supabase_auth_admin WITH PASSWORD {}").format(
            sql.Literal("drifted-" + os.urandom(8).hex())))
    try:
        # The doctor sees the drift, but auth still runs: the edit is judged against this.
        found = live.running.services.engine.quick_health(live.iid).issues
        assert "DB_ROLE_PASSWORD_MISMATCH" in {i.code for i in found}
        assert live.container_env("auth")  # running
        op = live.run("config_edit",
                      config_edit_body({"enable_email_autoconfirm": not enabled}))
        assert op.status == "rolled_back", op.error
        assert op.error is not None
        assert "auth keeps restarting" in op.error or "auth exited" in op.error
        assert "password authentication failed" in op.error
        assert "still not healthy after the rollback" in op.error
        assert live.files() == before
    finally:
        with live.db() as conn:
            conn.execute(sql.SQL("ALTER ROLE supabase_auth_admin WITH PASSWORD {}").format(
                sql.Literal(inst.credentials.postgres_password)))
        docker.from_env().containers.get(inst.container_name("auth")).restart(timeout=5)
        live.fleet.wait_healthy(live.iid, timeout=90)


def test_backup_with_pg_dump_and_restore_round_trip(live: Live) -> None:
    inst = live.fleet.instance(live.iid)
    with live.db() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.doctor_marker (note text)")
        conn.execute("INSERT INTO public.doctor_marker VALUES ('before the backup')")
    store = live.running.services.backups
    user, password = live.dashboard()
    at_backup = live.files()
    backup = store.create(live.instance(), "integration round trip", db_dump=True)
    assert backup.has_db_dump and DB_DUMP in backup.files
    dump = store.db_dump_path(live.iid, backup.id)
    assert dump is not None and stat.S_IMODE(dump.stat().st_mode) == 0o600
    store.verify(live.iid, backup.id)
    _restore_dump_into_scratch_db(live, dump)

    changed = "Other pass: 42"
    op = live.run("config_edit", config_edit_body({"dashboard_password": changed,
                                                   "name": "Renamed by the test"}))
    assert op.status == "succeeded", op.error
    assert live.files() != at_backup
    assert live.studio_status(user, password) == 401

    op = live.run("restore", restore_body(backup.id), {"backup_id": backup.id})
    assert op.status == "succeeded", op.error
    assert op.result["recreated"] == ["kong"]
    assert live.files() == at_backup
    assert live.studio_status(user, password) == 200
    assert live.studio_status(user, changed) == 401
    pre = store.get(live.iid, op.result["pre_restore_backup"])
    assert "before restoring" in pre.reason
    assert inst.credentials.postgres_password not in json.dumps(
        [b.to_dict() for b in store.list(live.iid)])


def _restore_dump_into_scratch_db(live: Live, dump: Path) -> None:
    """pg_restore the dump into a new database of the same server; the marker is there."""
    inst = live.fleet.instance(live.iid)
    pg_restore = str(Path(find_pg_dump()).with_name("pg_restore"))
    listing = subprocess.run([pg_restore, "--list", str(dump)], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    assert "TABLE DATA public doctor_marker" in listing
    assert "TABLE DATA auth users" in listing
    with live.db() as conn:
        conn.execute("DROP DATABASE IF EXISTS doctor_restore_check")
        conn.execute("CREATE DATABASE doctor_restore_check")
    try:
        subprocess.run(
            [pg_restore, "--host=127.0.0.1", f"--port={inst.ports.postgres_ext}",
             "--username=supabase_admin", "--dbname=doctor_restore_check", "--no-owner",
             "--exit-on-error", "--no-password", str(dump)],
            env={"PATH": os.defpath, "PGPASSWORD": inst.credentials.postgres_password},
            capture_output=True, check=True, timeout=120)
        with psycopg.connect(host="127.0.0.1", port=inst.ports.postgres_ext,
                             user="supabase_admin", password=inst.credentials.postgres_password,
                             dbname="doctor_restore_check", connect_timeout=5) as conn:
            rows = conn.execute("SELECT note FROM public.doctor_marker").fetchall()
        assert rows == [("before the backup",)]
    finally:
        with live.db() as conn:
            conn.execute("DROP DATABASE IF EXISTS doctor_restore_check")
