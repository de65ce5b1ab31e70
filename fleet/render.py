"""Rendering of the Ultrabase layout: registry, users, env, compose file, kong.yml, volumes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from fleet import images
from fleet.model import COMPONENTS, Instance

FLEET_DIR = Path(__file__).resolve().parent
TEMPLATES = FLEET_DIR / "templates"
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


def template_values(instance: Instance, *, image_tags: Mapping[str, str], root: Path,
                    secret_key_base: str, health_interval: str = DEFAULT_HEALTH_INTERVAL,
                    kong_dns_ttl: int | None = None) -> dict[str, str]:
    """Every variable the env, compose and kong templates use, for one instance.

    kong_dns_ttl sets Kong's dns_valid_ttl (kong.conf.default:1294), a fleet-only knob: the
    Ultrabase template does not set it, so Kong keeps Docker's answers for their TTL, 600 s.
    """
    creds, ports = instance.credentials, instance.ports
    public = f"http://127.0.0.1:{ports.kong_http}"
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
        "POSTGRES_HOST": "db",
        "POSTGRES_DB": "postgres",
        "POSTGRES_PORT": "5432",
        "POSTGRES_PORT_EXT": str(ports.postgres_ext),
        "KONG_HTTP_PORT": str(ports.kong_http),
        "KONG_HTTPS_PORT": str(ports.kong_https),
        "ANALYTICS_PORT": str(ports.analytics),
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
        **{image_variable(c): image_tags[c] for c in COMPONENTS},
        "FLEET_PYTHON": images.RUNTIME_PYTHON,
        "FLEET_ROOT": str(root),
        "FLEET_HEALTH_INTERVAL": health_interval,
        "FLEET_DEPENDENCY_HEALTH_INTERVAL": dependency_health_interval(health_interval),
        "FLEET_KONG_DNS_VALID_TTL": "" if kong_dns_ttl is None else f'"{kong_dns_ttl}"',
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


def render_instance_files(instance: Instance, values: Mapping[str, str]) -> None:
    """The instance's env file, compose file and volumes dir, as the manager creates them."""
    compose = _expand_mounts((TEMPLATES / "docker-compose.yml").read_text(), host_mounts())
    write_text(instance.env_file, envsubst((TEMPLATES / "env.template").read_text(), values),
               mode=0o600)
    write_text(instance.compose_file, _UNSET_KONG_TTL.sub("", envsubst(compose, values)),
               mode=0o600)
    volumes = instance.volumes_dir
    write_text(instance.kong_file, envsubst((TEMPLATES / "kong.yml").read_text(), values),
               mode=0o600)
    write_text(volumes / "logs" / "vector.yml",
               envsubst((TEMPLATES / "vector.yml").read_text(), values))
    (volumes / "db" / "data").mkdir(parents=True, exist_ok=True)
    for name in VOLUME_SQL:
        shutil.copyfile(DBINIT / "volume" / name, volumes / "db" / name)
    write_text(volumes / "functions" / "main" / "index.ts",
               (TEMPLATES / "functions-main.ts").read_text())
    write_text(volumes / "storage" / "stub" / "stub" / "fleet" / "hello.txt",
               f"stored object of instance {instance.id}\n")


def registry_record(instance: Instance) -> dict[str, object]:
    """One record of instances.json in the current (keyed) format."""
    ports, creds = instance.ports, instance.credentials
    return {
        "id": instance.id,
        "name": instance.name,
        "owner": "admin",
        "status": "running",
        "created_at": instance.created_at,
        "updated_at": instance.created_at,
        "ports": ports.as_dict(),
        "credentials": creds.registry_dict(),
        "urls": {
            "studio": instance.gateway_url,
            "api": f"{instance.gateway_url}/rest/v1",
            "db": f"postgresql://postgres:{creds.postgres_password}"
                  f"@127.0.0.1:{ports.postgres_ext}/postgres",
        },
        "docker": {
            "compose_file": instance.compose_file.name,
            "env_file": instance.env_file.name,
            "volumes_dir": instance.volumes_dir.name,
        },
        "config": {"organization": "Fleet Organization", "project": instance.name},
    }


def write_registry(path: Path, records: Mapping[str, Mapping[str, object]]) -> None:
    """instances.json, an object keyed by instance id, indented like the manager writes it."""
    write_text(path, json.dumps(records, indent=2, ensure_ascii=False) + "\n", mode=0o600)


def write_users(path: Path) -> None:
    """The manager's users.json (the reference admin record)."""
    write_text(path, (TEMPLATES / "users.json").read_text(), mode=0o600)


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
