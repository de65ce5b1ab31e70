"""`fleet up --manager-exact` renders what the real Ultrabase manager writes (no Docker).

The reference is the manager's own supabase-core templates (tests/data/ultrabase, copies of
fernandinhomartins40/ultabasereal d18077b's) put through envsubst with
exactly the variables generate.bash exports, as the manager runs it.
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import jwt
import yaml

from exporter.config import parse_config
from exporter.discovery import discover
from fleet import render
from fleet.credentials import MANAGER_ISSUER, manager_credentials, new_credentials
from fleet.fleet import manager_time
from fleet.model import COMPONENTS, Instance, Ports
from tests.unit.plaindocker import PlainDocker

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "ultrabase"
# The fleet's own additions to every service (images, stand-ins, host mounts).
FLEET_KEYS = {"image", "init", "command", "entrypoint", "healthcheck", "volumes"}


def _instance(core: Path, n: int, exact: bool = True) -> Instance:
    now = datetime(2026, 12, 6, 3, 2, 45, 161000, tzinfo=UTC)
    owner, org = (("admin", "Default Organization") if n == 0 else ("alice", "Alice Org"))
    return Instance(
        id=f"{n:x}e0cafe{n:x}"[:8], name=f"Loja Online {n}", created_at=manager_time(now),
        ports=Ports(8165 + n, 8450 + n, 5552 + n, 6500 + n, 4176 + n),
        credentials=manager_credentials(now) if exact else new_credentials(now),
        core_dir=core, owner=owner, organization=org, manager_exact=exact)


def _render(tmp: Path, exact: bool = True) -> tuple[Instance, Instance]:
    core = tmp / "supabase-core"
    instances = (_instance(core, 0, exact), _instance(core, 1, exact))
    for instance in instances:
        values = render.template_values(instance, image_tags={c: "img" for c in COMPONENTS},
                                        root=tmp, secret_key_base="k" * 64)
        render.render_instance_files(instance, values)
    render.write_registry(tmp / "instances.json",
                          {i.id: render.registry_record(i, "creating") for i in instances},
                          manager_exact=exact)
    render.write_users(tmp / "users.json", instances, manager_exact=exact)
    return instances


def test_env_and_kong_files_are_the_managers_byte_for_byte(tmp_path: Path) -> None:
    for instance in _render(tmp_path):
        exported = render.manager_values(instance)
        assert instance.env_file.read_text() == render.envsubst(
            (REFERENCE / ".env.template").read_text(), exported)
        assert instance.kong_file.read_text() == render.envsubst(
            (REFERENCE / "kong.yml").read_text(), exported)
        env = instance.env_file.read_text()
        for empty in ("STUDIO_PORT", "AUTH_PORT", "REST_PORT", "REALTIME_PORT", "META_PORT"):
            assert f"\n{empty}=\n" in env
        assert "LOGFLARE_API_KEY=your_logflare_key" in env
        assert instance.kong_file.read_text().count("- name: rest-v1\n") == 2


def test_compose_file_has_the_managers_ports_nulls_and_mounts(tmp_path: Path) -> None:
    first, second = _render(tmp_path)
    for instance in (first, second):
        ours = yaml.safe_load(instance.compose_file.read_text())
        theirs = yaml.safe_load(render.envsubst((REFERENCE / "docker-compose.yml").read_text(),
                                                render.manager_values(instance)))
        assert ours["name"] == theirs["name"] == instance.project
        assert ours["volumes"] == theirs["volumes"]
        for name, spec in theirs["services"].items():
            mine = ours["services"][name]
            assert mine.get("ports") == spec.get("ports"), name
            assert mine.get("environment") == spec.get("environment"), name
            assert set(spec) - FLEET_KEYS <= set(mine), name
            assert all(v in mine.get("volumes", []) for v in spec.get("volumes", [])), name
        text = instance.compose_file.read_text()
        assert f"- {instance.ports.kong_http}:8000/tcp" in text
        assert f'- "{instance.ports.postgres_ext}:5432"' in text
        pooler = ours["services"]["supavisor"]
        assert pooler["ports"] == ["5432:5432", ":6543"]
        assert "./volumes/pooler/pooler.exs:/etc/pooler/pooler.exs:ro" in pooler["volumes"]
        assert pooler["environment"]["SECRET_KEY_BASE"] is None
        assert ours["services"]["auth"]["environment"]["GOTRUE_SMS_AUTOCONFIRM"] is None
        assert ours["services"]["realtime"]["environment"]["PORT"] is None
        assert not text.startswith("#")
        assert "127.0.0.1:" not in "".join(str(p) for s in ours["services"].values()
                                           for p in s.get("ports", []))


def test_volumes_and_modes_as_generate_bash_leaves_them(tmp_path: Path) -> None:
    for instance in _render(tmp_path):
        volumes = instance.volumes_dir
        assert not (volumes / "db" / "data").exists()
        assert not (volumes / "storage").exists()
        assert (volumes / "db" / "init" / "data.sql").read_text() == ""
        assert (volumes / "functions" / "hello" / "index.ts").is_file()
        for path in (instance.env_file, instance.compose_file, instance.kong_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_registry_and_users_as_the_manager_saves_them(tmp_path: Path) -> None:
    first, second = _render(tmp_path)
    path = tmp_path / "instances.json"
    text = path.read_text()
    assert not text.endswith("\n") and stat.S_IMODE(path.stat().st_mode) == 0o644
    records = json.loads(text)
    record = records[second.id]
    assert list(record) == ["id", "name", "owner", "status", "created_at", "updated_at",
                            "ports", "credentials", "urls", "docker", "config"]
    assert record["owner"] == "alice" and record["status"] == "creating"
    assert record["config"] == {"organization": "Alice Org", "project": second.name,
                                "owner": "alice"}
    assert record["created_at"] == "2026-12-06T03:02:45.161Z"
    assert record["urls"]["api"] == second.gateway_url
    creds = record["credentials"]
    assert len(creds["jwt_secret"]) == 64 and len(creds["postgres_password"]) == 16
    assert len(creds["vault_enc_key"]) == 32 and len(creds["logflare_api_key"]) == 24
    assert creds["dashboard_username"] == creds["dashboard_password"] == "admin"
    for role in ("anon", "service_role"):
        claims = jwt.decode(creds[f"{'anon' if role == 'anon' else 'service_role'}_key"],
                            creds["jwt_secret"], algorithms=["HS256"])
        assert claims["iss"] == MANAGER_ISSUER and claims["role"] == role
        assert claims["exp"] - claims["iat"] == 365 * 86400
    users = json.loads((tmp_path / "users.json").read_text())
    assert users["alice"]["role"] == "user" and users["alice"]["projects"] == [second.id]
    assert users["admin"]["projects"] == ["*"]
    assert first.id not in users["alice"]["projects"]


def test_the_default_fleet_stays_clean(tmp_path: Path) -> None:
    instance, _ = _render(tmp_path, exact=False)
    compose = yaml.safe_load(instance.compose_file.read_text())
    assert "ports" not in compose["services"]["supavisor"]
    assert "volumes" not in compose
    assert compose["services"]["kong"]["ports"][0].startswith("127.0.0.1:")
    assert (instance.volumes_dir / "db" / "data").is_dir()
    assert stat.S_IMODE(instance.env_file.stat().st_mode) == 0o600
    assert (tmp_path / "instances.json").read_text().endswith("\n")
    assert instance.kong_file.read_text().count("- name: rest-v1\n") == 1


def test_discovery_reads_the_managers_layout_and_its_exposure(tmp_path: Path) -> None:
    """The doctor's discovery on the rendered files: the registry's status, the declared
    ports on every interface (the pooler's 5432 and :6543), the placeholder logflare keys and
    the admin/admin login, with no problem and no secret in its output."""
    first, second = _render(tmp_path)
    config = parse_config({"ultrabase": {"registry": str(tmp_path / "instances.json"),
                                         "users_file": str(tmp_path / "users.json")},
                           "discovery": {"sources": ["ultrabase"]}}, environ={})
    found = discover(config, PlainDocker([]))
    assert set(found.instances) == {first.id, second.id}
    instance = found.instances[second.id]
    assert instance.problems == () and instance.owner == "alice"
    assert instance.registry.status == "creating"
    assert instance.registry.data_dir_exists is False
    assert instance.layout.ports["supavisor"] == (("", 5432, 5432), ("", 0, 6543))
    assert instance.layout.ports["kong"] == (("", second.ports.kong_http, 8000),
                                             ("", second.ports.kong_https, 8443))
    assert set(instance.layout.placeholders) == {
        "LOGFLARE_API_KEY=your_logflare_key",
        "LOGFLARE_LOGGER_BACKEND_API_KEY=your_logflare_key"}
    assert "compose:analytics" in instance.layout.placeholders[
        "LOGFLARE_API_KEY=your_logflare_key"]
    assert (instance.credentials.dashboard_username,
            instance.credentials.dashboard_password) == ("admin", "admin")
    shown = json.dumps(instance.to_dict())
    for secret in (second.credentials.jwt_secret, second.credentials.postgres_password,
                   second.credentials.service_role_key, second.credentials.vault_enc_key):
        assert secret not in shown
