"""The config editor: the field table, validation, masked reading, and the edit operation.

The operation runs with a plain context (the runner's attributes, steps recorded in a
list), a compose runner that records its calls and an engine whose quick_health is
scripted: what is tested here is the order backup → write → recreate → verify → roll back,
and that a rollback leaves every file byte-identical. That compose really recreates and
that the edit takes effect is tested on the live fleet (tests/integration/test_config_live).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from actions.backups import BackupStore
from actions.files import FileSet
from actions.operations import config_edit, health
from actions.operations.config_edit import (
    EDITABLE,
    MASK,
    config_edit_body,
    current_config,
    validate_changes,
)
from actions.operations.model import OperationError
from exporter.discovery.model import Instance
from exporter.dockerhost import ContainerDetails
from exporter.engine import QuickHealth
from exporter.issues import make_issue
from exporter.redaction import Redactor
from exporter.web.params import BadRequest
from tests.unit import layout
from tests.unit.actions.test_files import (
    IID,
    OTHER,
    instance_at,
    make_instance,
    snapshot,
    write_manager_registry,
)
from tests.unit.plaindocker import PlainDocker, containers_for

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO / "tests" / "data" / "ultrabase"
FLEET_TEMPLATES = REPO / "fleet" / "templates"


# --- a plain operation context -----------------------------------------------------------


class PlainCompose:
    """Records `up` calls; fails the first `fail` of them."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def up(self, instance: Instance, services: Sequence[str], *, recreate: bool = True) -> None:
        assert recreate
        self.calls.append(tuple(services))
        if self.fail:
            self.fail -= 1
            raise OperationError("compose up auth failed (exit 1): Error response from daemon")


class PlainEngine:
    """quick_health answers healthy(); auth is the unhealthy one otherwise."""

    def __init__(self, healthy: Callable[[], bool] = lambda: True) -> None:
        self.healthy = healthy
        self.calls = 0

    def quick_health(self, instance_id: str) -> QuickHealth:
        self.calls += 1
        ok = self.healthy()
        issues = () if ok else (make_issue(
            "CONTAINER_UNHEALTHY", check="container_status", component="auth",
            message="supabase-auth fails its healthcheck"),)
        return QuickHealth(instance_id, ok, issues, 0.01)


class CrashingDocker(PlainDocker):
    """auth's new container crash-loops while `crashing()` says so."""

    def __init__(self, iid: str, crashing: Callable[[], bool]) -> None:
        super().__init__(containers_for(iid))
        self.crashing = crashing

    def inspect(self, container_id: str) -> ContainerDetails | None:
        if container_id.endswith("-auth") and self.crashing():
            return ContainerDetails(container_id, {}, 3, 1, False, "", "", "")
        return super().inspect(container_id)

    def logs(self, container_id: str, since: float, tail: int) -> list[str]:
        return ['2026-01-01T00:00:00Z {"level":"fatal","msg":"running db migrations: boom"}']


@dataclass
class PlainContext:
    """What an operation body uses of the runner's OperationContext."""

    instance: Instance
    backups: BackupStore
    compose: PlainCompose = field(default_factory=PlainCompose)
    engine: PlainEngine = field(default_factory=PlainEngine)
    docker: PlainDocker | None = None
    config: Any = field(default_factory=lambda: SimpleNamespace(
        actions=SimpleNamespace(health_timeout_seconds=0.5)))
    redactor: Redactor = field(default_factory=Redactor)
    steps: list[list[Any]] = field(default_factory=list)
    op_id: str = "0" * 32

    def __post_init__(self) -> None:
        if self.docker is None:
            self.docker = PlainDocker(containers_for(self.instance.id))

    @contextmanager
    def step(self, name: str, **detail: Any) -> Iterator[dict[str, Any]]:
        collected = dict(detail)
        entry = [name, "running", collected]
        self.steps.append(entry)
        try:
            yield collected
        except BaseException:
            entry[1] = "failed"
            raise
        entry[1] = "ok"

    def note(self, **detail: Any) -> None:
        self.steps[-1][2].update(detail)

    def mark(self, name: str, status: str) -> None:
        for entry in reversed(self.steps):
            if entry[0] == name:
                entry[1] = status
                return

    def redact_also(self, *secrets: str) -> None:
        self.redactor = self.redactor.extend(secrets)

    def step_names(self) -> list[str]:
        return [f"{name}:{status}" for name, status, _ in self.steps]


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(config_edit, "_POLL_SECONDS", 0.05)


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    write_manager_registry(tmp_path, OTHER, IID)
    return make_instance(tmp_path, SITE_URL="http://127.0.0.1:8100",
                         SMTP_PASS="old-smtp-secret", SMTP_PORT="2500", JWT_EXPIRY="3600",
                         DISABLE_SIGNUP="false", ENABLE_EMAIL_AUTOCONFIRM="true")


@pytest.fixture
def store(tmp_path: Path) -> BackupStore:
    return BackupStore(tmp_path / "backups", retention=10)


def run(body: Callable[[Any], Any], ctx: PlainContext) -> Any:
    return body(ctx)


# --- the field table ---------------------------------------------------------------------


@pytest.mark.parametrize("templates", ["reference", "fleet"])
def test_every_place_in_the_table_exists_in_the_templates(templates: str) -> None:
    base = REFERENCE if templates == "reference" else FLEET_TEMPLATES
    env_text = (base / (".env.template" if templates == "reference" else "env.template")
                ).read_text()
    env_keys = set(dotenv_values(stream=io.StringIO(env_text), interpolate=False))
    compose = yaml.safe_load((base / "docker-compose.yml").read_text())["services"]
    kong = yaml.safe_load((base / "kong.yml").read_text())
    for spec in EDITABLE.values():
        for key in spec.env:
            assert key in env_keys, (spec.name, key)
        for service, key in spec.compose:
            assert key in compose[service]["environment"], (spec.name, service, key)
        for service, _ in spec.compose_if_present:
            assert service in compose
        if spec.kong:
            assert spec.kong in kong["basicauth_credentials"][0]
        for service in spec.recreate:
            assert service in compose
    assert set(EDITABLE) == {
        "name", "dashboard_username", "dashboard_password", "site_url", "disable_signup",
        "enable_email_autoconfirm", "jwt_expiry", "smtp_admin_email", "smtp_host",
        "smtp_port", "smtp_user", "smtp_pass", "smtp_sender_name"}


GOOD: dict[str, Any] = {
    "name": "Projeto Producao-2_b", "dashboard_username": "ops_admin", "dashboard_password":
    "N3w pa[ss]: #1! ~^", "site_url": "https://app.example.com/cb?x=$1&y='2'",
    "disable_signup": True, "enable_email_autoconfirm": False, "jwt_expiry": 7200,
    "smtp_admin_email": "noreply@mail.example.com", "smtp_host": "smtp.example.com",
    "smtp_port": 587, "smtp_user": "user$name", "smtp_pass": "s3cr$t'`\"x",
    "smtp_sender_name": 'Équipe "Ops"',
}


def test_good_values_pass() -> None:
    assert validate_changes(GOOD) == GOOD
    assert validate_changes({"smtp_host": "", "smtp_admin_email": ""}) == {
        "smtp_host": "", "smtp_admin_email": ""}


@pytest.mark.parametrize(("name", "value"), [
    ("name", ""), ("name", "   "), ("name", "x" * 101), ("name", "a\nb"), ("name", 5),
    ("dashboard_username", "has space"), ("dashboard_username", "a:b"),
    ("dashboard_password", "short"), ("dashboard_password", "with$dollar"),
    ("dashboard_password", "with`tick`"), ("dashboard_password", 'with"quote'),
    ("dashboard_password", "back\\slash"), ("dashboard_password", "nul\x00inside"),
    ("dashboard_password", "it's a quote"), ("dashboard_password", "<b>markup</b>"),
    ("dashboard_password", "amp&ersand1"), ("dashboard_password", "x" * 101),
    ("name", "<img src=x onerror=alert(1)>"), ("name", "Projeto Produção"), ("name", "x"),
    ("name", "x" * 51), ("name", "tab\there"), ("dashboard_username", "ab"),
    ("dashboard_username", "ops.admin@x"),
    ("site_url", "ftp://x"), ("site_url", "https://"), ("site_url", "https://a b"),
    ("site_url", "https://x:99999/"), ("site_url", "https://x\n"),
    ("disable_signup", "true"), ("disable_signup", 1), ("jwt_expiry", 59),
    ("jwt_expiry", 604801), ("jwt_expiry", True), ("jwt_expiry", "3600"),
    ("smtp_admin_email", "not-an-email"), ("smtp_host", "bad host"), ("smtp_host", "-x"),
    ("smtp_port", 0), ("smtp_port", 70000), ("smtp_pass", "line\nbreak"),
    ("smtp_sender_name", "x" * 129), ("nonexistent", "x"),
])
def test_bad_values_are_refused(name: str, value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_changes({name: value})
    assert caught.value.status == 400
    assert name in str(caught.value)
    if isinstance(value, str) and len(value) > 8 and name != "nonexistent":
        assert value not in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BadRequest) as caught:
        validate_changes({"jwt_expiry": 1, "smtp_port": 0, "bogus": 1})
    message = str(caught.value)
    assert "jwt_expiry" in message and "smtp_port" in message and "bogus" in message
    with pytest.raises(BadRequest):
        validate_changes({})


# --- reading -----------------------------------------------------------------------------


def test_current_config_reads_every_place_and_masks_secrets(instance: Instance) -> None:
    config = current_config(instance)
    fields = config["fields"]
    assert config["editable"] is True
    assert fields["site_url"]["value"] == "http://127.0.0.1:8100"
    assert fields["jwt_expiry"]["value"] == 3600
    assert fields["disable_signup"]["value"] is False
    assert fields["name"]["value"] == f"Project {IID}"
    assert fields["dashboard_password"]["value"] == MASK
    assert fields["smtp_pass"]["value"] == MASK
    assert all(f["in_sync"] for f in fields.values())
    assert "kong_file:basicauth.password" in fields["dashboard_password"]["places"]
    text = json.dumps(config)
    assert f"dash-{IID}" not in text and "old-smtp-secret" not in text


def test_current_config_shows_drift_but_never_secret_values(tmp_path: Path) -> None:
    write_manager_registry(tmp_path, IID)
    make_instance(tmp_path, SITE_URL="http://a")
    inst = instance_at(tmp_path, IID, runtime_env={
        "kong": {"DASHBOARD_PASSWORD": "runtime-only-secret"},
        "auth": {"GOTRUE_SITE_URL": "http://b"}})
    fields = current_config(inst)["fields"]
    assert fields["site_url"]["in_sync"] is False
    assert fields["site_url"]["values"]["runtime:auth.GOTRUE_SITE_URL"] == "http://b"
    assert fields["dashboard_password"]["in_sync"] is False
    assert "values" not in fields["dashboard_password"]
    assert "runtime-only-secret" not in json.dumps(fields)


def test_other_sources_are_not_editable(tmp_path: Path, store: BackupStore) -> None:
    write_manager_registry(tmp_path, IID)
    make_instance(tmp_path)
    inst = instance_at(tmp_path, IID, source="compose")
    assert current_config(inst)["editable"] is False
    before = snapshot(inst)
    with pytest.raises(OperationError, match="Ultrabase layout"):
        run(config_edit_body({"site_url": "https://x.example"}), PlainContext(inst, store))
    assert snapshot(inst) == before


# --- the edit operation ------------------------------------------------------------------


def test_edit_writes_every_place_and_recreates_only_what_reads_it(
        instance: Instance, store: BackupStore) -> None:
    ctx = PlainContext(instance, store)
    result = run(config_edit_body({"dashboard_password": "Fresh-pass1 #x",
                                   "name": "Renamed", "jwt_expiry": 900}), ctx)
    assert result["changed"] == ["dashboard_password", "name", "jwt_expiry"]
    assert ctx.compose.calls == [("auth", "kong", "rest")]
    assert result["recreated"] == ["auth", "kong", "rest"]
    assert ctx.step_names() == ["plan:ok", "backup:ok", "baseline_health:ok",
                                "write_files:ok", "recreate:ok", "verify_health:ok"]
    files = FileSet(instance)
    assert files.get_registry(("credentials", "dashboard_password")) == "Fresh-pass1 #x"
    assert files.get_registry(("name",)) == "Renamed"
    assert files.get_env("DASHBOARD_PASSWORD") == "Fresh-pass1 #x"
    assert files.get_compose_env("kong", "DASHBOARD_PASSWORD") == "Fresh-pass1 #x"
    assert files.get_kong_basicauth() == ("supabase", "Fresh-pass1 #x")
    assert files.get_compose_env("auth", "GOTRUE_JWT_EXP") == "900"
    assert files.get_compose_env("rest", "PGRST_APP_SETTINGS_JWT_EXP") == "900"
    assert files.get_compose_env("db", "JWT_EXP") == "3600"  # initdb only: left alone
    assert [b.id for b in store.list(IID)] == [result["backup_id"]]
    assert "Fresh-pass1 #x" not in ctx.redactor.text("now Fresh-pass1 #x")


def test_secrets_of_the_edit_are_redacted_in_steps(instance: Instance,
                                                   store: BackupStore) -> None:
    ctx = PlainContext(instance, store)
    run(config_edit_body({"smtp_pass": "very-secret-smtp"}), ctx)
    assert "very-secret-smtp" not in ctx.redactor.text("x very-secret-smtp y")
    assert "very-secret-smtp" not in json.dumps(ctx.steps, default=str)


def test_name_only_recreates_nothing(instance: Instance, store: BackupStore) -> None:
    ctx = PlainContext(instance, store)
    result = run(config_edit_body({"name": "Only a name"}), ctx)
    assert ctx.compose.calls == [] and result["recreated"] == []
    assert "recreate:ok" not in ctx.step_names()


def test_same_values_change_nothing_and_take_no_backup(instance: Instance,
                                                       store: BackupStore) -> None:
    before = snapshot(instance)
    ctx = PlainContext(instance, store)
    result = run(config_edit_body({"jwt_expiry": 3600, "disable_signup": False}), ctx)
    assert result["changed"] == [] and ctx.compose.calls == []
    assert store.list(IID) == [] and snapshot(instance) == before


def test_unhealthy_after_edit_is_rolled_back_byte_identical(instance: Instance,
                                                            store: BackupStore) -> None:
    before = snapshot(instance)
    # Unhealthy only between the edit's recreation and the rollback's.
    compose = PlainCompose()
    ctx = PlainContext(instance, store, compose=compose,
                       engine=PlainEngine(lambda: len(compose.calls) != 1))
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"site_url": "https://new.example", "smtp_port": 25}), ctx)
    assert caught.value.rolled_back is True
    message = str(caught.value)
    assert "rolled back" in message and "supabase-auth fails its healthcheck" in message
    assert snapshot(instance) == before
    assert compose.calls == [("auth",), ("auth",)]
    assert ctx.step_names() == [
        "plan:ok", "backup:ok", "baseline_health:ok", "write_files:rolled_back",
        "recreate:rolled_back",
        "verify_health:failed", "rollback_files:ok", "rollback_recreate:ok",
        "rollback_verify:ok"]


def test_crashing_container_is_rolled_back_with_its_reason(instance: Instance,
                                                           store: BackupStore) -> None:
    before = snapshot(instance)
    compose = PlainCompose()
    docker = CrashingDocker(IID, crashing=lambda: len(compose.calls) == 1)
    ctx = PlainContext(instance, store, compose=compose, docker=docker)
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"disable_signup": True}), ctx)
    assert caught.value.rolled_back is True
    assert "auth keeps restarting (3 restarts, last exit code 1)" in str(caught.value)
    assert "running db migrations" in str(caught.value)
    assert snapshot(instance) == before
    assert ctx.engine.calls == 2  # baseline, then after the rollback: the crash came first


def test_still_unhealthy_after_rollback_says_so(instance: Instance,
                                                store: BackupStore) -> None:
    before = snapshot(instance)
    compose = PlainCompose()
    ctx = PlainContext(instance, store, compose=compose,
                       engine=PlainEngine(lambda: not compose.calls))
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"site_url": "https://new.example"}), ctx)
    assert caught.value.rolled_back is True
    assert "still not healthy after the rollback" in str(caught.value)
    assert snapshot(instance) == before


def test_issues_present_before_the_change_do_not_fail_it(instance: Instance,
                                                         store: BackupStore) -> None:
    ctx = PlainContext(instance, store, engine=PlainEngine(lambda: False))
    result = run(config_edit_body({"smtp_user": "mailer"}), ctx)
    assert result["recreated"] == ["auth"]
    verify = next(d for name, _, d in ctx.steps if name == "verify_health")
    assert verify["quick_health"] == "as before the change"
    assert verify["pre_existing_issues"] == ["CONTAINER_UNHEALTHY"]


def test_compose_failure_is_rolled_back(instance: Instance, store: BackupStore) -> None:
    before = snapshot(instance)
    ctx = PlainContext(instance, store, compose=PlainCompose(fail=1))
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"smtp_host": "smtp.example.org"}), ctx)
    assert caught.value.rolled_back is True
    assert "compose up auth failed" in str(caught.value)
    assert snapshot(instance) == before


def test_failed_rollback_names_the_backup(instance: Instance, store: BackupStore) -> None:
    compose = PlainCompose()
    ctx = PlainContext(instance, store, compose=compose,
                       engine=PlainEngine(lambda: not compose.calls))
    real_load = store.load

    def corrupt_load(instance_id: str, backup_id: str) -> Any:
        raise OperationError("disk gone")

    store.load = corrupt_load  # type: ignore[method-assign]
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"site_url": "https://new.example"}), ctx)
    store.load = real_load  # type: ignore[method-assign]
    assert caught.value.rolled_back is False
    backup_id = store.list(IID)[0].id
    assert re.search(f"restore backup {backup_id} by hand", str(caught.value))


def test_file_changed_by_the_manager_meanwhile_is_not_overwritten(
        instance: Instance, store: BackupStore) -> None:
    assert instance.files.env_file is not None
    env_file = instance.files.env_file
    real_create = store.create

    def create_then_manager_edits(*args: Any, **kwargs: Any) -> Any:
        backup = real_create(*args, **kwargs)
        env_file.write_text(env_file.read_text() + "MANAGER_WAS_HERE=1\n")
        return backup

    store.create = create_then_manager_edits  # type: ignore[method-assign]
    before_registry = instance.files.registry.read_bytes() if instance.files.registry else b""
    ctx = PlainContext(instance, store)
    with pytest.raises(OperationError) as caught:
        run(config_edit_body({"site_url": "https://new.example", "name": "nn"}), ctx)
    assert caught.value.rolled_back is False
    assert "not applied" in str(caught.value)
    assert "MANAGER_WAS_HERE=1" in env_file.read_text()
    assert instance.files.registry is not None
    assert instance.files.registry.read_bytes() == before_registry
    assert ctx.compose.calls == []


def test_registry_other_records_untouched_by_an_edit(instance: Instance,
                                                     store: BackupStore) -> None:
    assert instance.files.registry is not None
    text = instance.files.registry.read_text()
    other = json.loads(text)[OTHER]
    run(config_edit_body({"dashboard_username": "new_user"}), PlainContext(instance, store))
    after = instance.files.registry.read_text()
    assert json.loads(after)[OTHER] == other
    # Everything before this instance's record (the other record) is the same text.
    assert after.split(f'"{IID}": {{', 1)[0] == text.split(f'"{IID}": {{', 1)[0]
    assert layout.instance_values(OTHER)["POSTGRES_PASSWORD"] in after
