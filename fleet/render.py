"""Rendering of the Ultrabase layout: registry, users, env, compose file, kong.yml, volumes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from fleet import images
from fleet.model import COMPONENTS, Instance

FLEET_DIR = Path(__file__).resolve().parent
TEMPLATES = FLEET_DIR / "templates"
# Files of the real manager's supabase-core the default fleet adapts: kong.yml with its
# duplicated rest-v1 service, functions/hello (fernandinhomartins40/ultabasereal d18077b).
MANAGER_TEMPLATES = TEMPLATES / "manager"
DBINIT = FLEET_DIR / "dbinit"
CONTAINER_FLEET_DIR = "/fleet"  # where FLEET_DIR is mounted inside every container
# Short, so faults and restarts show in Docker's health quickly; the reference uses 5-30s.
DEFAULT_HEALTH_INTERVAL = "5s"
HEALTH_INTERVAL = re.compile(r"^[1-9][0-9]{0,2}s$")
# vector, db and analytics: the rest start only once these are healthy (depends_on:
# service_healthy), and Docker (20.10, no start_interval) runs the first check one interval
# after the start, so each step of that chain costs an interval. Checking these three at
# most every 2 s makes `up` and whole-instance restarts about 9 s shorter at the default
# interval, for about 5 % of a core per instance.
DEPENDENCY_HEALTH_INTERVAL_MAX = 2


def dependency_health_interval(health_interval: str) -> str:
    """The interval of the healthchecks other services wait for: at most 2 s."""
    return f"{min(int(health_interval[:-1]), DEPENDENCY_HEALTH_INTERVAL_MAX)}s"

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# The fleet-only Kong setting, dropped when `up --kong-dns-ttl` is not given.
_UNSET_KONG_TTL = re.compile(r"^[ \t]*KONG_DNS_VALID_TTL:[ \t]*\n", re.MULTILINE)
_MOUNTS_LINE = re.compile(r"^(?P<indent>[ \t]*)- \$\{FLEET_HOST_MOUNTS\}[ \t]*$", re.MULTILINE)
VOLUME_SQL = ("realtime.sql", "webhooks.sql", "roles.sql", "jwt.sql", "logs.sql")
# Lines of the compose template only `up --manager-exact` keeps (without this prefix).
_MANAGER_LINE = re.compile(r"^(?P<indent>[ \t]*)#manager-exact: (?P<line>.*)\n", re.MULTILINE)
# The header comment of the compose template (the real file has none).
_HEADER = re.compile(r"\A(?:#[^\n]*\n)+")
# What the manager's address is in the urls and SITE_URL (MANAGER_EXTERNAL_IP).
MANAGER_EXTERNAL_IP = "127.0.0.1"
# The manager's generate.bash (ultabasereal d18077b supabase-core/generate.bash) exports
# these fixed values; every other template variable it does not export renders empty.
MANAGER_FIXED: Mapping[str, str] = {
    "POSTGRES_DB": "postgres", "POSTGRES_PORT": "5432",
    "ENABLE_EMAIL_SIGNUP": "true", "ENABLE_EMAIL_AUTOCONFIRM": "true",
    "SMTP_ADMIN_EMAIL": "your_email", "SMTP_HOST": "your_smtp_host", "SMTP_PORT": "2500",
    "SMTP_USER": "your_smtp_user", "SMTP_PASS": "your_smtp_pass",
    "SMTP_SENDER_NAME": "your_sender_name", "ENABLE_ANONYMOUS_USERS": "true",
    "JWT_EXPIRY": "3600", "DISABLE_SIGNUP": "false",
    "IMGPROXY_ENABLE_WEBP_DETECTION": "true", "FUNCTIONS_VERIFY_JWT": "false",
    "DOCKER_SOCKET_LOCATION": "/var/run/docker.sock",
    "LOGFLARE_API_KEY": "your_logflare_key", "LOGFLARE_LOGGER_BACKEND_API_KEY": "your_logflare_key",
    "PGRST_DB_SCHEMAS": "public,storage,graphql_public",
}


def envsubst(text: str, values: Mapping[str, str]) -> str:
    """Replace $NAME and ${NAME} as envsubst does: unknown names become empty strings."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ""), text)


def host_mounts(runtime: images.PythonRuntime | None = None) -> tuple[str, ...]:
    """Read-only bind mounts the fleet's images run on: the host's /usr outside PATH (at
    images.HOST_PREFIX), the Python install the stand-ins use, and the fleet's own files."""
    mounts = [f"/usr:{images.HOST_PREFIX}/usr:ro"]
    mounts += [f"{path}:{path}:ro"
               for path in images.runtime_mounts(runtime or images.HostTools.python())]
    mounts.append(f"{FLEET_DIR}:{CONTAINER_FLEET_DIR}:ro")
    return tuple(mounts)


def image_variable(component: str) -> str:
    """The template variable naming a component's image (FLEET_IMAGE_KONG)."""
    return f"FLEET_IMAGE_{component.upper()}"


def _expand_mounts(text: str, mounts: Iterable[str]) -> str:
    items = tuple(mounts)
    return _MOUNTS_LINE.sub(
        lambda m: "\n".join(f"{m.group('indent')}- {item}" for item in items), text)


def _fleet_values(instance: Instance, *, image_tags: Mapping[str, str], root: Path,
                  health_interval: str, kong_dns_ttl: int | None) -> dict[str, str]:
    """The fleet's own variables: images, host mounts, intervals, labels."""
    return {
        **{image_variable(c): image_tags[c] for c in COMPONENTS},
        "FLEET_PYTHON": images.RUNTIME_PYTHON,
        "FLEET_ROOT": str(root),
        "FLEET_HEALTH_INTERVAL": health_interval,
        "FLEET_DEPENDENCY_HEALTH_INTERVAL": dependency_health_interval(health_interval),
        "FLEET_KONG_DNS_VALID_TTL": "" if kong_dns_ttl is None else f'"{kong_dns_ttl}"',
        "FLEET_PUBLISH_IP": "" if instance.manager_exact else "127.0.0.1:",
    }


def _instance_values(instance: Instance) -> dict[str, str]:
    """The instance's id, secrets and host ports under their template names."""
    creds, ports = instance.credentials, instance.ports
    return {
        "INSTANCE_ID": instance.id,
        "POSTGRES_PASSWORD": creds.postgres_password,
        "JWT_SECRET": creds.jwt_secret,
        "ANON_KEY": creds.anon_key,
        "SERVICE_ROLE_KEY": creds.service_role_key,
        "SUPABASE_ANON_KEY": creds.anon_key,
        "SUPABASE_SERVICE_KEY": creds.service_role_key,
        "DASHBOARD_USERNAME": creds.dashboard_username,
        "DASHBOARD_PASSWORD": creds.dashboard_password,
        "POSTGRES_PORT_EXT": str(ports.postgres_ext),
        "KONG_HTTP_PORT": str(ports.kong_http),
        "KONG_HTTPS_PORT": str(ports.kong_https),
        "ANALYTICS_PORT": str(ports.analytics),
    }


def manager_values(instance: Instance) -> dict[str, str]:
    """What generate.bash exports for one instance (from the manager's MANAGER_* values);
    envsubst renders every other variable empty, as on a real host."""
    public = f"http://{MANAGER_EXTERNAL_IP}:{instance.ports.kong_http}"
    return {
        **MANAGER_FIXED,
        **_instance_values(instance),
        "API_EXTERNAL_URL": public,
        "SITE_URL": f"http://{MANAGER_EXTERNAL_IP}:3000",
        "SUPABASE_PUBLIC_URL": public,
        "STUDIO_DEFAULT_ORGANIZATION": instance.organization,
        "STUDIO_DEFAULT_PROJECT": instance.name,
    }


def template_values(instance: Instance, *, image_tags: Mapping[str, str], root: Path,
                    secret_key_base: str, health_interval: str = DEFAULT_HEALTH_INTERVAL,
                    kong_dns_ttl: int | None = None) -> dict[str, str]:
    """Every variable the env, compose and kong templates use, for one instance.

    kong_dns_ttl sets Kong's dns_valid_ttl (kong.conf.default:1294), a fleet-only knob: the
    Ultrabase template does not set it, so Kong keeps Docker's answers for their TTL, 600 s.
    An instance made with --manager-exact gets generate.bash's values instead of the
    fleet's (secret_key_base is then unused: the manager leaves SECRET_KEY_BASE empty).
    """
    fleet = _fleet_values(instance, image_tags=image_tags, root=root,
                          health_interval=health_interval, kong_dns_ttl=kong_dns_ttl)
    if instance.manager_exact:
        return {**manager_values(instance), **fleet}
    creds = instance.credentials
    public = f"http://127.0.0.1:{instance.ports.kong_http}"
    return {
        **_instance_values(instance),
        "POSTGRES_HOST": "db",
        "POSTGRES_DB": "postgres",
        "POSTGRES_PORT": "5432",
        "PGRST_DB_SCHEMAS": "public,storage,graphql_public",
        "SITE_URL": public,
        "ADDITIONAL_REDIRECT_URLS": "",
        "JWT_EXPIRY": "3600",
        "DISABLE_SIGNUP": "false",
        "API_EXTERNAL_URL": public,
        "MAILER_URLPATHS_CONFIRMATION": "/auth/v1/verify",
        "MAILER_URLPATHS_INVITE": "/auth/v1/verify",
        "MAILER_URLPATHS_RECOVERY": "/auth/v1/verify",
        "MAILER_URLPATHS_EMAIL_CHANGE": "/auth/v1/verify",
        "ENABLE_EMAIL_SIGNUP": "true",
        "ENABLE_EMAIL_AUTOCONFIRM": "true",
        "SMTP_ADMIN_EMAIL": "admin@fleet.invalid",
        "SMTP_HOST": "supabase-mail",
        "SMTP_PORT": "2500",
        "SMTP_USER": "fake_mail_user",
        "SMTP_PASS": "fake_mail_password",
        "SMTP_SENDER_NAME": "fake_sender",
        "ENABLE_ANONYMOUS_USERS": "false",
        "ENABLE_PHONE_SIGNUP": "true",
        "ENABLE_PHONE_AUTOCONFIRM": "true",
        "STUDIO_DEFAULT_ORGANIZATION": "Fleet Organization",
        "STUDIO_DEFAULT_PROJECT": instance.name,
        "STUDIO_PORT": "3000",
        "SUPABASE_PUBLIC_URL": public,
        "IMGPROXY_ENABLE_WEBP_DETECTION": "true",
        "FUNCTIONS_VERIFY_JWT": "false",
        "LOGFLARE_LOGGER_BACKEND_API_KEY": creds.logflare_api_key,
        "LOGFLARE_API_KEY": creds.logflare_api_key,
        "DOCKER_SOCKET_LOCATION": "/var/run/docker.sock",
        "AUTH_PORT": "9999",
        "REST_PORT": "3000",
        "REALTIME_PORT": "4000",
        "META_PORT": "8080",
        "SECRET_KEY_BASE": secret_key_base,
        "VAULT_ENC_KEY": "your-encryption-key-32-chars-min",
        "POOLER_TENANT_ID": "your-tenant-id",
        "POOLER_DEFAULT_POOL_SIZE": "20",
        "POOLER_MAX_CLIENT_CONN": "100",
        "POOLER_PROXY_PORT_TRANSACTION": "6543",
        **fleet,
    }


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file atomically (temp file in the same dir, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compose_text(instance: Instance, values: Mapping[str, str]) -> str:
    """The instance's rendered compose file."""
    text = _expand_mounts((TEMPLATES / "docker-compose.yml").read_text(), host_mounts())
    if instance.manager_exact:
        text = _MANAGER_LINE.sub(lambda m: f"{m.group('indent')}{m.group('line')}\n",
                                 _HEADER.sub("", text))
    else:
        text = _MANAGER_LINE.sub("", text)
    return _UNSET_KONG_TTL.sub("", envsubst(text, values))


def render_instance_files(instance: Instance, values: Mapping[str, str]) -> None:
    """The instance's env file, compose file and volumes dir, as the manager creates them.

    With --manager-exact as generate.bash leaves them: files 0644, no db/data or storage
    folder (Docker creates both at the first start), db/init/data.sql and functions/hello.
    """
    exact = instance.manager_exact
    mode = 0o644 if exact else 0o600
    write_text(instance.env_file, envsubst((TEMPLATES / "env.template").read_text(), values),
               mode=mode)
    write_text(instance.compose_file, compose_text(instance, values), mode=mode)
    volumes = instance.volumes_dir
    kong = (MANAGER_TEMPLATES if exact else TEMPLATES) / "kong.yml"
    write_text(instance.kong_file, envsubst(kong.read_text(), values), mode=mode)
    write_text(volumes / "logs" / "vector.yml",
               envsubst((TEMPLATES / "vector.yml").read_text(), values))
    (volumes / "db").mkdir(parents=True, exist_ok=True)
    for name in VOLUME_SQL:
        shutil.copyfile(DBINIT / "volume" / name, volumes / "db" / name)
    write_text(volumes / "functions" / "main" / "index.ts",
               (TEMPLATES / "functions-main.ts").read_text())
    if exact:
        write_text(volumes / "db" / "init" / "data.sql", "")
        write_text(volumes / "functions" / "hello" / "index.ts",
                   (MANAGER_TEMPLATES / "functions-hello.ts").read_text())
        return
    (volumes / "db" / "data").mkdir(parents=True, exist_ok=True)
    write_text(volumes / "storage" / "stub" / "stub" / "fleet" / "hello.txt",
               f"stored object of instance {instance.id}\n")


def registry_record(instance: Instance, status: str = "running",
                    updated_at: str | None = None) -> dict[str, object]:
    """One record of instances.json in the current (keyed) format.

    An instance made with --manager-exact gets the real manager's record
    (generateInstanceConfig): the vault and logflare keys, `api` without a path, the owner
    in `config` too, and `updated_at` as last saved.
    """
    ports, creds = instance.ports, instance.credentials
    exact = instance.manager_exact
    db_url = (f"postgresql://postgres:{creds.postgres_password}"
              f"@127.0.0.1:{ports.postgres_ext}/postgres")
    return {
        "id": instance.id,
        "name": instance.name,
        "owner": instance.owner,
        "status": status,
        "created_at": instance.created_at,
        "updated_at": updated_at or instance.created_at,
        "ports": ports.as_dict(),
        "credentials": creds.manager_registry_dict() if exact else creds.registry_dict(),
        "urls": {
            "studio": instance.gateway_url,
            "api": instance.gateway_url if exact else f"{instance.gateway_url}/rest/v1",
            "db": db_url,
        },
        "docker": {
            "compose_file": instance.compose_file.name,
            "env_file": instance.env_file.name,
            "volumes_dir": instance.volumes_dir.name,
        },
        "config": ({"organization": instance.organization, "project": instance.name,
                    "owner": instance.owner} if exact else
                   {"organization": instance.organization, "project": instance.name}),
    }


def manager_json(data: object) -> str:
    """JSON as the manager saves it: JSON.stringify(data, null, 2), no trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def write_registry(path: Path, records: Mapping[str, Mapping[str, object]], *,
                   manager_exact: bool = False) -> None:
    """instances.json, an object keyed by instance id, indented like the manager writes it
    (--manager-exact: with its mode and without a final newline too)."""
    text = manager_json(records)
    write_text(path, text if manager_exact else text + "\n",
               mode=0o644 if manager_exact else 0o600)


# A bcrypt hash of the user's password, in the format the manager's bcrypt 5 writes; the
# doctor never reads it, so any well-formed one serves.
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def write_users(path: Path, instances: Iterable[Instance] = (), *,
                manager_exact: bool = False) -> None:
    """The manager's users.json: the reference admin record; with --manager-exact also each
    non-admin owner, whose `projects` list the instances it created (POST /api/instances
    adds them), written like the manager's saveUsers."""
    if not manager_exact:
        write_text(path, (TEMPLATES / "users.json").read_text(), mode=0o600)
        return
    users: dict[str, dict[str, object]] = json.loads((TEMPLATES / "users.json").read_text())
    for instance in instances:
        if instance.owner == "admin":
            continue
        user = users.setdefault(instance.owner, {
            "id": instance.owner,
            "password_hash": "$2b$12$" + "".join(
                secrets.choice(_BCRYPT_ALPHABET) for _ in range(53)),
            "role": "user", "projects": [], "created_at": instance.created_at})
        projects = user["projects"]
        assert isinstance(projects, list)
        projects.append(instance.id)
    write_text(path, manager_json(users), mode=0o644)


def write_doctor_config(path: Path, root: Path, admin_token: str) -> None:
    """The ultrabase-doctor config for this fleet (mode 0600)."""
    config = {
        "ultrabase": {
            "registry": str(root / "instances.json"),
            "core_dir": str(root / "supabase-core"),
            "users_file": str(root / "users.json"),
        },
        "discovery": {"sources": ["ultrabase"]},
        "store": {"path": str(root / "store.sqlite3")},
        "api": {"tokens": [{
            "name": "fleet-admin",
            "token_sha256": hashlib.sha256(admin_token.encode()).hexdigest(),
            "role": "admin",
            "instances": ["*"],
        }]},
    }
    write_text(path, yaml.safe_dump(config, sort_keys=False), mode=0o600)
