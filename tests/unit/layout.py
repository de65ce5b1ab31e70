"""Builds an Ultrabase directory layout from the real reference templates, for unit tests."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "ultrabase"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def envsubst(text: str, values: Mapping[str, str]) -> str:
    """Render like envsubst: unknown variables become empty strings; `$$` is kept."""
    text = text.replace("$$", "\0")
    out = _VAR.sub(lambda m: values.get(m.group(1) or m.group(2), ""), text)
    return out.replace("\0", "$$")


def instance_values(instance_id: str, **over: str) -> dict[str, str]:
    """Template variables of one instance (secrets are obviously fake)."""
    values = {
        "INSTANCE_ID": instance_id, "POSTGRES_PASSWORD": f"pg-pass-{instance_id}",
        "JWT_SECRET": f"jwt-secret-{instance_id}-0123456789abcdef0123",
        "ANON_KEY": f"anon-key-{instance_id}", "SERVICE_ROLE_KEY": f"service-key-{instance_id}",
        "SUPABASE_ANON_KEY": f"anon-key-{instance_id}",
        "SUPABASE_SERVICE_KEY": f"service-key-{instance_id}",
        "DASHBOARD_USERNAME": "supabase", "DASHBOARD_PASSWORD": f"dash-{instance_id}",
        "POSTGRES_PORT": "5432", "POSTGRES_DB": "postgres", "POSTGRES_PORT_EXT": "5433",
        "KONG_HTTP_PORT": "8100", "KONG_HTTPS_PORT": "8400", "ANALYTICS_PORT": "4100",
    }
    values.update(over)
    return values


def write_instance(core: Path, values: Mapping[str, str]) -> None:
    """Render .env-<id>, docker-compose-<id>.yml and volumes-<id>/api/kong.yml under core."""
    iid = values["INSTANCE_ID"]
    core.mkdir(parents=True, exist_ok=True)
    (core / f".env-{iid}").write_text(envsubst((DATA / ".env.template").read_text(), values))
    (core / f"docker-compose-{iid}.yml").write_text(
        envsubst((DATA / "docker-compose.yml").read_text(), values))
    api = core / f"volumes-{iid}" / "api"
    api.mkdir(parents=True, exist_ok=True)
    (api / "kong.yml").write_text(envsubst((DATA / "kong.yml").read_text(), values))


def registry_record(values: Mapping[str, str], **over: object) -> dict[str, object]:
    """A registry record in the current format for these values."""
    iid = values["INSTANCE_ID"]
    record: dict[str, object] = {
        "id": iid, "name": f"Project {iid}", "owner": "admin", "status": "running",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "ports": {"kong_http": int(values["KONG_HTTP_PORT"]),
                  "kong_https": int(values["KONG_HTTPS_PORT"]),
                  "postgres_ext": int(values["POSTGRES_PORT_EXT"]), "supavisor": 6500,
                  "analytics": int(values["ANALYTICS_PORT"])},
        "credentials": {"postgres_password": values["POSTGRES_PASSWORD"],
                        "jwt_secret": values["JWT_SECRET"], "anon_key": values["ANON_KEY"],
                        "service_role_key": values["SERVICE_ROLE_KEY"],
                        "dashboard_username": values["DASHBOARD_USERNAME"],
                        "dashboard_password": values["DASHBOARD_PASSWORD"]},
        "docker": {"compose_file": f"docker-compose-{iid}.yml", "env_file": f".env-{iid}",
                   "volumes_dir": f"volumes-{iid}"},
        "config": {"organization": "Org", "project": "Proj"},
    }
    record.update(over)
    return record


def write_registry(path: Path, records: Mapping[str, object]) -> None:
    """Write a registry in the current (keyed) format."""
    path.write_text(json.dumps(records, indent=2))
