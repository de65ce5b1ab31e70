"""The test fleet itself: layout, health, every fault's symptom and heal, and teardown.

One shared 2-instance fleet serves the module; each fault is healed before the next test.
Traffic goes only to ports published on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import docker.errors
import httpx
import jwt
import psycopg
import pytest
import yaml

from fleet import engine, faults, ports, render
from fleet.credentials import new_credentials
from fleet.fleet import Fleet
from fleet.model import COMPONENTS, FleetError, Instance, Ports
from fleet.render import TEMPLATES, envsubst

pytestmark = [pytest.mark.integration, pytest.mark.fleets(2)]

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "ultrabase"
# The reference compose's healthchecks, and kong's own (kong health, from its image).
WITH_HEALTHCHECK = {"studio", "kong", "auth", "realtime", "storage", "imgproxy", "analytics",
                    "db", "vector", "supavisor"}
SUPABASE_ROLES = ("supabase_admin", "postgres", "supabase_auth_admin", "authenticator",
                  "supabase_storage_admin", "anon", "authenticated", "service_role")


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (quotes stripped)."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value.strip('"')
    return values


def registry(fleet: Fleet) -> dict[str, dict]:
    """instances.json as it is now."""
    return json.loads(fleet.registry_path.read_text())


def admin_headers(key: str) -> dict[str, str]:
    """Headers of a service-role call through Kong."""
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def container_env(instance: Instance, component: str) -> dict[str, str]:
    """The environment in force in a running container (docker inspect)."""
    pairs = engine.container(instance, component).attrs["Config"]["Env"]
    return {key: value for key, _, value in (pair.partition("=") for pair in pairs)}


# -- the fleet as created ---------------------------------------------------------------------


def test_every_container_runs_and_is_healthy(fleet: Fleet) -> None:
    for instance in fleet.instances:
        found = engine.containers(instance)
        assert set(found) == set(COMPONENTS)
        published = set()
        for component, item in found.items():
            assert item.name == instance.container_name(component)
            state = engine.state_of(item)
            assert state.status == "running", component
            assert item.labels["ultrabase-fleet"] == "1"
            if item.attrs["Config"].get("Healthcheck"):
                assert state.health == "healthy", component
            for container_port, binds in (item.attrs["NetworkSettings"]["Ports"] or {}).items():
                published |= {(component, container_port, b["HostIp"], int(b["HostPort"]))
                              for b in binds or []}
        with_check = {c for c, item in found.items() if item.attrs["Config"].get("Healthcheck")}
        assert with_check == WITH_HEALTHCHECK
        p = instance.ports
        assert published == {("kong", "8000/tcp", "127.0.0.1", p.kong_http),
                             ("kong", "8443/tcp", "127.0.0.1", p.kong_https),
                             ("db", "5432/tcp", "127.0.0.1", p.postgres_ext),
                             ("analytics", "4000/tcp", "127.0.0.1", p.analytics)}
        assert "db:service_healthy" in found["auth"].labels["com.docker.compose.depends_on"]
        assert "vector:service_healthy" in found["db"].labels["com.docker.compose.depends_on"]


def test_registry_env_compose_and_kong_agree(fleet: Fleet) -> None:
    records = registry(fleet)
    assert set(records) == set(fleet.ids)
    for instance in fleet.instances:
        record = records[instance.id]
        assert re.fullmatch(r"[0-9a-f]{8}", instance.id)
        assert record["id"] == instance.id and record["owner"] == "admin"
        assert record["status"] == "running"
        assert record["ports"] == instance.ports.as_dict()
        assert record["docker"] == {"compose_file": f"docker-compose-{instance.id}.yml",
                                    "env_file": f".env-{instance.id}",
                                    "volumes_dir": f"volumes-{instance.id}"}
        assert set(record) >= {"name", "created_at", "updated_at", "urls", "config"}
        creds = record["credentials"]
        assert creds == instance.credentials.registry_dict()
        assert len(creds["jwt_secret"]) >= 32
        for role in ("anon", "service_role"):
            claims = jwt.decode(creds[f"{role}_key"], creds["jwt_secret"], algorithms=["HS256"])
            assert claims["role"] == role and claims["iss"] == "supabase"
            assert claims["exp"] - claims["iat"] == 365 * 86400

        env = read_env(instance.env_file)
        assert set(env) == set(read_env(TEMPLATES / "env.template"))
        assert all("$" not in value for value in env.values())
        assert env["INSTANCE_ID"] == instance.id
        assert env["POSTGRES_PASSWORD"] == creds["postgres_password"]
        assert env["JWT_SECRET"] == creds["jwt_secret"]
        assert env["SERVICE_ROLE_KEY"] == creds["service_role_key"]
        assert env["KONG_HTTP_PORT"] == str(instance.ports.kong_http)

        text = instance.compose_file.read_text()
        assert "${" not in text
        compose = yaml.safe_load(text)
        assert compose["name"] == instance.project
        assert "volumes" not in compose
        services = compose["services"]
        assert {s: services[s]["container_name"] for s in services} == {
            c: instance.container_name(c) for c in COMPONENTS}
        assert "ports" not in services["supavisor"]
        assert services["auth"]["environment"]["GOTRUE_JWT_SECRET"] == creds["jwt_secret"]
        kong_env = services["kong"]["environment"]
        assert kong_env["SUPABASE_SERVICE_KEY"] == creds["service_role_key"]
        assert (f"./volumes-{instance.id}/api/kong.yml:/home/kong/temp.yml:ro"
                in services["kong"]["volumes"])
        assert (f"./volumes-{instance.id}/db/data:/var/lib/postgresql/data:Z"
                in services["db"]["volumes"])
        assert container_env(instance, "auth")["GOTRUE_JWT_SECRET"] == creds["jwt_secret"]
        assert container_env(instance, "kong")["SUPABASE_SERVICE_KEY"] == \
            creds["service_role_key"]

        kong = yaml.safe_load(instance.kong_file.read_text())
        names = [s["name"] for s in kong["services"]]
        assert len(names) == len(set(names))
        keys = {c["username"]: c["keyauth_credentials"][0]["key"]
                for c in kong["consumers"] if "keyauth_credentials" in c}
        assert keys == {"anon": creds["anon_key"], "service_role": creds["service_role_key"]}
        assert kong["basicauth_credentials"][0]["password"] == creds["dashboard_password"]
        assert f"realtime-dev.supabase-realtime-{instance.id}" in instance.kong_file.read_text()

        volumes = instance.volumes_dir
        assert (volumes / "db" / "data" / "PG_VERSION").is_file()
        for name in ("roles.sql", "jwt.sql", "realtime.sql", "logs.sql", "webhooks.sql"):
            assert (volumes / "db" / name).is_file()
        assert any((volumes / "storage").rglob("*.txt"))
        assert (volumes / "functions" / "main" / "index.ts").is_file()
        vector = (volumes / "logs" / "vector.yml").read_text()
        assert f"supabase-db-{instance.id}" in vector and "${INSTANCE_ID}" not in vector


def test_doctor_config_and_users_file(fleet: Fleet) -> None:
    from exporter.config import load_config
    from exporter.discovery.registry import read_registry

    assert fleet.up_result is not None
    path = fleet.config_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = yaml.safe_load(path.read_text())
    token_hash = hashlib.sha256(fleet.up_result.admin_token.encode()).hexdigest()
    assert raw == {
        "ultrabase": {"registry": str(fleet.root / "instances.json"),
                      "core_dir": str(fleet.root / "supabase-core"),
                      "users_file": str(fleet.root / "users.json")},
        "discovery": {"sources": ["ultrabase"]},
        "store": {"path": str(fleet.root / "store.sqlite3")},
        "api": {"tokens": [{"name": "fleet-admin", "token_sha256": token_hash,
                            "role": "admin", "instances": ["*"]}]},
    }
    config = load_config(path)
    assert config.ultrabase.core_dir == fleet.core_dir
    parsed = read_registry(fleet.registry_path)
    assert parsed.format == "keyed" and not parsed.problems
    assert {r.id for r in parsed.records} == set(fleet.ids)
    assert all(not r.problems for r in parsed.records)
    users = json.loads((fleet.root / "users.json").read_text())
    assert users["admin"]["role"] == "admin" and users["admin"]["projects"] == ["*"]


def test_template_keeps_the_reference_structure() -> None:
    if not REFERENCE.is_dir():
        pytest.skip(f"no reference files at {REFERENCE}")
    ours = yaml.safe_load((TEMPLATES / "docker-compose.yml").read_text())
    theirs = yaml.safe_load((REFERENCE / "docker-compose.yml").read_text())
    assert ours["name"] == theirs["name"]
    assert list(ours["services"]) == list(theirs["services"])
    for name, spec in theirs["services"].items():
        mine = ours["services"][name]
        assert mine["container_name"] == spec["container_name"]
        assert mine.get("restart") == spec.get("restart")
        assert mine.get("depends_on") == spec.get("depends_on")
        assert set(mine.get("environment", {})) - {"KONG_DNS_VALID_TTL"} == \
            set(spec.get("environment", {}))
        assert mine.get("healthcheck", {}).get("test") == spec.get("healthcheck", {}).get("test")
        own_mounts = [v for v in spec.get("volumes", []) if v.startswith("./volumes-")]
        assert all(m in mine["volumes"] for m in own_mounts)


def test_every_healthcheck_uses_the_chosen_interval() -> None:
    compose = (TEMPLATES / "docker-compose.yml").read_text()
    rendered = yaml.safe_load(envsubst(compose, {
        "FLEET_HEALTH_INTERVAL": "10s",
        "FLEET_DEPENDENCY_HEALTH_INTERVAL": render.dependency_health_interval("10s")}))
    intervals = {name: spec["healthcheck"]["interval"]
                 for name, spec in rendered["services"].items() if "healthcheck" in spec}
    assert set(intervals) == WITH_HEALTHCHECK
    # What the others wait for (depends_on: service_healthy) checks at most every 2 s.
    waited_for = {dep for spec in rendered["services"].values()
                  for dep, how in (spec.get("depends_on") or {}).items()
                  if how.get("condition") == "service_healthy"}
    assert waited_for == {"vector", "db", "analytics"}
    assert {intervals[name] for name in waited_for} == {"2s"}
    assert {intervals[name] for name in WITH_HEALTHCHECK - waited_for} == {"10s"}
    assert render.dependency_health_interval("1s") == "1s"


@pytest.mark.parametrize("ttl", [None, 30])
def test_kong_dns_ttl_is_set_only_when_asked(tmp_path: Path, ttl: int | None) -> None:
    """--kong-dns-ttl sets Kong's dns_valid_ttl; without it Kong keeps Docker's 600 s."""
    instance = Instance(id="feedbeef", name="x", created_at="2026-01-01T00:00:00Z",
                        ports=Ports(1, 2, 3, 4, 5), credentials=new_credentials(),
                        core_dir=tmp_path)
    values = render.template_values(instance, image_tags={c: "img" for c in COMPONENTS},
                                    root=tmp_path, secret_key_base="k" * 64, kong_dns_ttl=ttl)
    render.render_instance_files(instance, values)
    kong = yaml.safe_load(instance.compose_file.read_text())["services"]["kong"]["environment"]
    if ttl is None:
        assert "KONG_DNS_VALID_TTL" not in kong
    else:
        assert kong["KONG_DNS_VALID_TTL"] == "30"
    assert kong["KONG_LOG_LEVEL"] == "debug"


def test_up_refuses_a_bad_kong_dns_ttl(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="kong DNS TTL"):
        Fleet.up(tmp_path / "fleet", 1, kong_dns_ttl=0)
    assert not (tmp_path / "fleet").exists()


@pytest.mark.parametrize("interval", ["0s", "10", "1m", "2s; rm -rf /"])
def test_up_refuses_a_bad_health_interval(tmp_path: Path, interval: str) -> None:
    with pytest.raises(FleetError, match="health interval"):
        Fleet.up(tmp_path / "fleet", 1, health_interval=interval)
    assert not (tmp_path / "fleet").exists()


def test_gateway_serves_auth_rest_and_studio(fleet: Fleet) -> None:
    for instance in fleet.instances:
        creds, url = instance.credentials, instance.gateway_url
        health = httpx.get(f"{url}/auth/v1/health", headers={"apikey": creds.anon_key})
        assert health.status_code == 200 and health.json()["name"] == "GoTrue"
        assert httpx.get(f"{url}/auth/v1/health").status_code == 401
        assert httpx.get(f"{url}/rest/v1/", headers={"apikey": creds.anon_key}).status_code == 200
        studio = (creds.dashboard_username, creds.dashboard_password)
        assert httpx.get(f"{url}/", auth=studio).status_code == 200
        assert httpx.get(f"{url}/").status_code == 401
        headers = admin_headers(creds.service_role_key)
        email = f"fleet-probe-{uuid.uuid4().hex[:12]}@fleet.invalid"
        created = httpx.post(f"{url}/auth/v1/admin/users", headers=headers,
                             json={"email": email, "password": uuid.uuid4().hex,
                                   "email_confirm": True})
        assert created.status_code == 200, created.text
        deleted = httpx.delete(f"{url}/auth/v1/admin/users/{created.json()['id']}",
                               headers=headers)
        assert deleted.status_code == 200


def test_db_has_the_supabase_roles_and_schemas(fleet: Fleet) -> None:
    for instance in fleet.instances:
        with engine.db_connect(instance) as conn:
            roles = {r[0]: r[1:] for r in conn.execute(
                "SELECT rolname, rolcanlogin, rolsuper, rolinherit FROM pg_roles")}
            owners = dict(conn.execute(
                "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace").fetchall())
            members = {r[0] for r in conn.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'authenticator'")}
            # (supabase_admin's search_path has auth in it, as on the image: no "auth." shown)
            assert conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone() == \
                (True,)
        assert set(SUPABASE_ROLES) <= set(roles)
        assert roles["supabase_admin"][:2] == (True, True)
        assert roles["authenticator"] == (True, False, False)
        assert roles["anon"][0] is False and roles["service_role"][0] is False
        assert members == {"anon", "authenticated", "service_role"}
        # As supabase/postgres 15.1.1.78: supabase_admin is the only superuser and owns the
        # auth and storage schemas; postgres is demoted.
        assert roles["postgres"][:2] == (True, False)
        assert owners["auth"] == "supabase_admin"
        assert owners["storage"] == "supabase_admin"
        assert {"_analytics", "_realtime"} <= set(owners)
        for role in ("supabase_auth_admin", "authenticator", "supabase_storage_admin"):
            with engine.db_connect(instance, user=role):
                pass


# -- faults -----------------------------------------------------------------------------------


def test_fault_names() -> None:
    names = {spec.name for spec in Fleet.faults()}
    assert names == ({f"stop:{c}" for c in COMPONENTS} | {f"pause:{c}" for c in COMPONENTS}
                     | {"auth-db-password", "service-key-wrong-secret", "service-key-expired",
                        "kong-key-mismatch", "volume-missing", "port-taken",
                        "auth-schema-rights", "auth-empty-setting", "jwt-secret-short",
                        "recreate:auth", "recreate:rest", "alias-lost:rest"})


def test_auth_db_password(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    with fleet.broken(instance.id, "auth-db-password"):
        engine.wait_for(
            lambda: engine.component_state(instance, "auth").status in ("restarting", "exited"),
            20, "auth to be restarting")
        assert engine.component_state(instance, "auth").restart_count >= 1
        assert faults.AUTH_DB_ERROR in engine.logs(instance, "auth").replace('\\"', '"')
        assert f"FATAL:  {faults.AUTH_DB_ERROR}" in engine.logs(instance, "db")
        with pytest.raises(psycopg.OperationalError):
            engine.db_connect(instance, user="supabase_auth_admin").close()
    assert engine.component_state(instance, "auth").ok
    engine.db_connect(instance, user="supabase_auth_admin").close()


def test_auth_schema_rights(fleet: Fleet) -> None:
    instance = fleet.instances[1]
    with fleet.broken(instance.id, "auth-schema-rights"):
        assert engine.component_state(instance, "auth").restart_count >= 1
        logged = engine.logs(instance, "auth").replace('\\"', '"')
        assert ("running db migrations: Migrator: problem creating schema migrations: could not "
                'execute CREATE TABLE "schema_migrations"') in logged
        # The password is right: the role logs in, it just cannot use its schema.
        engine.db_connect(instance, user="supabase_auth_admin").close()
    assert engine.component_state(instance, "auth").ok
    with engine.db_connect(instance) as conn:
        row = conn.execute("SELECT has_schema_privilege('supabase_auth_admin', 'auth', "
                           "'USAGE, CREATE')").fetchone()
    assert row == (True,)


def test_auth_empty_setting(fleet: Fleet) -> None:
    instance = fleet.instances[1]
    before = instance.compose_file.read_bytes()
    with fleet.broken(instance.id, "auth-empty-setting"):
        assert container_env(instance, "auth")["GOTRUE_SMTP_PORT"] == ""
        logged = engine.logs(instance, "auth").replace('\\"', '"')
        assert ('level=fatal msg="Failed to load configuration: envconfig.Process: assigning '
                "GOTRUE_SMTP_PORT to Port: converting '' to type int.") in logged
    assert instance.compose_file.read_bytes() == before
    assert container_env(instance, "auth")["GOTRUE_SMTP_PORT"] == "2500"


def test_jwt_secret_short(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    creds = instance.credentials
    files = (fleet.registry_path, instance.env_file, instance.compose_file, instance.kong_file)
    before = {path: path.read_bytes() for path in files}
    with fleet.broken(instance.id, "jwt-secret-short"):
        now = registry(fleet)[instance.id]["credentials"]
        assert len(now["jwt_secret"]) == 18
        assert read_env(instance.env_file)["JWT_SECRET"] == now["jwt_secret"]
        for component, variable in (("auth", "GOTRUE_JWT_SECRET"), ("rest", "PGRST_JWT_SECRET"),
                                    ("db", "JWT_SECRET"), ("storage", "PGRST_JWT_SECRET")):
            assert container_env(instance, component)[variable] == now["jwt_secret"]
        assert container_env(instance, "kong")["SUPABASE_ANON_KEY"] == now["anon_key"]
        # Only the length is wrong: the keys are signed with the secret in force.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            assert jwt.decode(now["anon_key"], now["jwt_secret"], algorithms=["HS256"])
        listed = httpx.get(f"{instance.gateway_url}/auth/v1/admin/users",
                           headers=admin_headers(now["service_role_key"]))
        assert listed.status_code == 200  # GoTrue accepts any non-empty secret
        rest = engine.gateway_get(instance, "/rest/v1/", now["anon_key"])
        assert rest.status_code == 401
        assert rest.json()["message"] == "JWSError JWSInvalidSignature"
    assert {path: path.read_bytes() for path in files} == before
    assert container_env(instance, "rest")["PGRST_JWT_SECRET"] == creds.jwt_secret
    assert engine.gateway_get(instance, "/rest/v1/", creds.anon_key).status_code == 200


def test_kong_key_mismatch(fleet: Fleet) -> None:
    instance = fleet.instances[1]
    creds = instance.credentials
    before = instance.kong_file.read_bytes()
    with fleet.broken(instance.id, "kong-key-mismatch"):
        rejected = engine.gateway_get(instance, "/auth/v1/health", creds.service_role_key)
        assert rejected.status_code == 401
        assert rejected.json() == {"message": "Invalid authentication credentials"}
        assert engine.gateway_get(instance, "/auth/v1/health", creds.anon_key).status_code == 200
        assert creds.service_role_key not in instance.kong_file.read_text()
        assert read_env(instance.env_file)["SERVICE_ROLE_KEY"] == creds.service_role_key
        assert registry(fleet)[instance.id]["credentials"] == creds.registry_dict()
    assert instance.kong_file.read_bytes() == before
    assert engine.gateway_get(instance, "/auth/v1/health",
                              creds.service_role_key).status_code == 200


@pytest.mark.parametrize("fault", ["service-key-wrong-secret", "service-key-expired"])
def test_service_key_faults(fleet: Fleet, fault: str) -> None:
    instance = fleet.instances[0]
    creds = instance.credentials
    files = (fleet.registry_path, instance.env_file, instance.compose_file, instance.kong_file)
    before = {path: path.read_bytes() for path in files}
    with fleet.broken(instance.id, fault):
        bad = registry(fleet)[instance.id]["credentials"]["service_role_key"]
        assert bad != creds.service_role_key
        assert read_env(instance.env_file)["SERVICE_ROLE_KEY"] == bad
        for path in (instance.compose_file, instance.kong_file):
            assert bad in path.read_text() and creds.service_role_key not in path.read_text()
        assert container_env(instance, "kong")["SUPABASE_SERVICE_KEY"] == bad
        assert container_env(instance, "storage")["SERVICE_KEY"] == bad
        expected = jwt.ExpiredSignatureError if fault.endswith("expired") \
            else jwt.InvalidSignatureError
        with pytest.raises(expected):
            jwt.decode(bad, creds.jwt_secret, algorithms=["HS256"])
        answer = httpx.post(f"{instance.gateway_url}/auth/v1/admin/users",
                            headers=admin_headers(bad),
                            json={"email": f"never-{uuid.uuid4().hex[:8]}@fleet.invalid",
                                  "email_confirm": True})
        assert answer.headers.get("via", "").startswith("kong/")
        assert faults.rejected_by_gotrue(answer), answer.text
        assert answer.json()["error_code"] == "bad_jwt"
        if fault.endswith("expired"):
            assert "expired" in answer.json()["msg"]
    assert {path: path.read_bytes() for path in files} == before
    assert container_env(instance, "kong")["SUPABASE_SERVICE_KEY"] == creds.service_role_key
    listed = httpx.get(f"{instance.gateway_url}/auth/v1/admin/users",
                       headers=admin_headers(creds.service_role_key))
    assert listed.status_code == 200


@pytest.mark.parametrize("component", COMPONENTS)
def test_stop(fleet: Fleet, component: str) -> None:
    instance = fleet.instances[COMPONENTS.index(component) % 2]
    with fleet.broken(instance.id, f"stop:{component}"):
        assert engine.component_state(instance, component).status == "exited"
    assert engine.component_state(instance, component).ok


@pytest.mark.parametrize("component", ["kong", "auth", "db", "rest", "analytics"])
def test_pause(fleet: Fleet, component: str) -> None:
    instance = fleet.instances[1]
    with fleet.broken(instance.id, f"pause:{component}"):
        assert engine.component_state(instance, component).status == "paused"
        if component in ("kong", "auth"):
            with pytest.raises(httpx.TimeoutException):
                engine.gateway_get(instance, "/auth/v1/health", instance.credentials.anon_key,
                                   timeout=1.5)
    assert engine.component_state(instance, component).ok


def test_volume_missing(fleet: Fleet) -> None:
    instance = fleet.instances[1]
    storage = instance.volumes_dir / "storage"
    before = {p.relative_to(storage): p.read_bytes() for p in storage.rglob("*") if p.is_file()}
    assert before
    with fleet.broken(instance.id, "volume-missing"):
        assert not storage.exists()
        stashed = fleet.root / ".fleet" / "stash" / instance.id / "volume-missing" / "storage"
        assert {p.relative_to(stashed) for p in stashed.rglob("*") if p.is_file()} == set(before)
    assert {p.relative_to(storage): p.read_bytes()
            for p in storage.rglob("*") if p.is_file()} == before


def test_port_taken(fleet: Fleet) -> None:
    instance = fleet.instances[0]
    port = instance.ports.kong_http
    with fleet.broken(instance.id, "port-taken"):
        (pid,) = fleet.holder_pids()
        assert ports.is_holder(pid) and not ports.is_free(port)
        kong = engine.container(instance, "kong")
        assert engine.state_of(kong).status != "running"
        assert "address already in use" in kong.attrs["State"]["Error"]
        with pytest.raises(httpx.HTTPError):
            engine.gateway_get(instance, "/auth/v1/health", instance.credentials.anon_key)
    assert not ports.is_holder(pid)
    assert fleet.holder_pids() == ()
    assert engine.gateway_get(instance, "/auth/v1/health",
                              instance.credentials.anon_key).status_code == 200


def test_break_and_heal_are_idempotent(fleet: Fleet) -> None:
    instance_id = fleet.ids[1]
    assert fleet.break_(instance_id, "volume-missing").changed
    assert not fleet.break_(instance_id, "volume-missing").changed
    assert fleet.active_faults() == {instance_id: ("volume-missing",)}
    assert fleet.heal(instance_id, "volume-missing").changed
    assert not fleet.heal(instance_id, "volume-missing").changed
    assert fleet.active_faults() == {}


def test_key_faults_do_not_combine(fleet: Fleet) -> None:
    instance_id = fleet.ids[1]
    with fleet.broken(instance_id, "kong-key-mismatch"), \
            pytest.raises(FleetError, match="cannot be combined"):
        fleet.break_(instance_id, "service-key-expired")
    assert fleet.active_faults() == {}


def test_cli(fleet: Fleet) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120, check=False)

    listed = cli("faults")
    assert listed.returncode == 0
    assert {line.split("\t")[0] for line in listed.stdout.splitlines()} == \
        {spec.name for spec in Fleet.faults()}
    instance_id = fleet.ids[0]
    broke = cli("break", instance_id, "stop:meta", "--root", str(fleet.root))
    assert broke.returncode == 0, broke.stderr
    assert json.loads(broke.stdout)["changed"] is True
    healed = cli("heal", instance_id, "stop:meta", "--root", str(fleet.root))
    assert healed.returncode == 0, healed.stderr
    assert json.loads(healed.stdout) | {"seconds": 0} == {
        "instance_id": instance_id, "fault": "stop:meta", "action": "heal", "changed": True,
        "seconds": 0, "detail": ""}
    again = cli("up", "--instances", "1", "--root", str(fleet.root))
    assert again.returncode == 1 and "already exists" in again.stderr
    unknown = cli("break", instance_id, "no-such-fault", "--root", str(fleet.root))
    assert unknown.returncode == 1 and "unknown fault" in unknown.stderr


def test_down_removes_everything(fleet_factory: Callable[..., Fleet]) -> None:
    doomed = fleet_factory(1, shared_fleet=False)
    root, instance = doomed.root, doomed.instances[0]
    doomed.break_(instance.id, "port-taken")
    (pid,) = doomed.holder_pids()
    client = engine.client()
    # A container down does not know of, still attached to the instance's network.
    (network,) = client.networks.list(
        filters={"label": f"{engine.PROJECT_LABEL}={instance.project}"})
    stray = client.containers.run(
        doomed.image_tags["kong"], ["sleep", "300"], detach=True, network=network.name,
        volumes=list(render.host_mounts()), labels={"ultrabase-fleet": "1"})
    used = {client.images.get(tag).id for tag in set(doomed.image_tags.values())}
    doomed.down()
    assert not root.exists()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get(stray.id)
    assert not ports.is_holder(pid)
    # Plain listings (no inspect of each): other fleets' containers come and go meanwhile.
    assert client.api.containers(
        all=True, filters={"label": f"{engine.PROJECT_LABEL}={instance.project}"}) == []
    assert client.networks.list(filters={"label": f"ultrabase-fleet.root={root}"}) == []
    assert client.networks.list(
        filters={"label": f"{engine.PROJECT_LABEL}={instance.project}"}) == []
    others = client.api.containers(all=True, filters={"label": "ultrabase-fleet=1"})
    assert all((c.get("Labels") or {}).get(engine.WORKING_DIR_LABEL)
               != str(root / "supabase-core") for c in others)
    # Its images are gone, unless another fleet's containers (another lane's) use them.
    present = {image.id for image in client.images.list(filters={"label": "ultrabase-fleet=1"})}
    kept = used & present
    assert all(client.api.containers(all=True, filters={"ancestor": image_id})
               for image_id in kept), kept
    doomed.down()
