"""Typed instances: what discovery found, joined from files and the running containers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from exporter.dockerhost import ContainerSummary
from exporter.issues import Issue
from exporter.redaction import fingerprint
from exporter.safefs import within

# Compose service names of an Ultrabase instance, in startup order (DESIGN §4).
COMPONENTS: tuple[str, ...] = (
    "vector", "db", "analytics", "studio", "kong", "auth", "rest", "realtime", "meta",
    "functions", "supavisor", "imgproxy", "storage",
)
# The path a Studio "create user" takes; quick_health checks only these.
CRITICAL_PATH: tuple[str, ...] = ("db", "auth", "rest", "kong")

_CONTAINER_NAMES = {
    "realtime": "realtime-dev.supabase-realtime-{id}",
    "supavisor": "supabase-pooler-{id}",
    "functions": "supabase-edge-functions-{id}",
}


def ultrabase_container_name(component: str, instance_id: str) -> str:
    """The container name Ultrabase's template gives a component."""
    return _CONTAINER_NAMES.get(component, "supabase-{component}-{id}").format(
        component=component, id=instance_id)


@dataclass(frozen=True)
class Component:
    """One expected compose service and the container found for it, if any."""

    name: str
    container_name: str | None
    container: ContainerSummary | None = None

    @property
    def state(self) -> str:
        """Docker's state, or "missing"."""
        return self.container.state if self.container else "missing"

    @property
    def running(self) -> bool:
        """True when the container runs (paused or restarting does not count)."""
        return self.container is not None and self.container.state == "running"


@dataclass(frozen=True)
class Endpoints:
    """Where the host reaches the instance: always 127.0.0.1, never a container IP."""

    gateway_url: str | None = None
    gateway_https_url: str | None = None
    db_host: str = "127.0.0.1"
    db_port: int | None = None
    analytics_url: str | None = None


_SECRET_FIELDS = ("postgres_password", "jwt_secret", "anon_key", "service_role_key",
                  "dashboard_password")


@dataclass(frozen=True, repr=False)
class Credentials:
    """The instance's secrets as in force: runtime env first, files second."""

    postgres_password: str | None = None
    jwt_secret: str | None = None
    anon_key: str | None = None
    service_role_key: str | None = None
    dashboard_username: str | None = None
    dashboard_password: str | None = None
    # field -> where the value came from, e.g. "runtime:auth", "env_file", "registry"
    sources: Mapping[str, str] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Every secret value held, for redaction."""
        return [v for v in (getattr(self, f) for f in _SECRET_FIELDS) if v]

    def describe(self) -> dict[str, Any]:
        """Fingerprints and sources only: safe to print."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            shown = value if f.name == "dashboard_username" else fingerprint(value)
            out[f.name] = {"value": shown, "source": self.sources.get(f.name)}
        return out

    def __repr__(self) -> str:
        return f"Credentials({self.describe()})"


@dataclass(frozen=True)
class InstanceFiles:
    """The instance's files on the host (Ultrabase layout or a compose project dir)."""

    registry: Path | None = None
    env_file: Path | None = None
    compose_file: Path | None = None
    kong_file: Path | None = None
    volumes_dir: Path | None = None
    # name -> host directory that a container bind-mounts (db_data, storage, ...)
    volume_dirs: Mapping[str, Path] = field(default_factory=dict)
    # The directory the instance's files live under (supabase-core, or the compose project's
    # directory): nothing below it is reached through a symbolic link (exporter.safefs).
    root: Path | None = None

    def root_of(self, path: Path) -> Path:
        """Where to open `path` from: the root when path lies under it, else its directory."""
        return within(self.root, path)


@dataclass(frozen=True)
class RegistryState:
    """What the manager's registry says of the instance's life, and what the disk shows."""

    status: str | None = None  # creating, running, stopped, error (None: not said)
    updated_at: str | None = None
    # Whether the db's data directory exists (None: unknown, e.g. not a bind mount).
    data_dir_exists: bool | None = None


@dataclass(frozen=True)
class LayoutFacts:
    """What the instance's files declare about its exposure (no secrets)."""

    # compose service -> [(host_ip, host_port, container_port)] as the compose file asks
    # ("" host_ip: every interface; host_port 0: any free port)
    ports: Mapping[str, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)
    # "SETTING=placeholder" -> where a credential setting holds a published placeholder
    # (".env-<id>", "compose:analytics", ...)
    placeholders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, repr=False)
class Instance:
    """One Supabase instance as discovered."""

    id: str
    name: str
    owner: str | None
    source: str
    compose_project: str
    components: Mapping[str, Component]
    endpoints: Endpoints
    credentials: Credentials
    files: InstanceFiles
    problems: tuple[Issue, ...] = ()
    created_at: str | None = None
    # component -> the env its container runs with (holds secrets: never print it)
    runtime_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # False when Docker could not be read: components are then unknown, not missing.
    runtime_known: bool = True
    registry: RegistryState = field(default_factory=RegistryState)
    layout: LayoutFacts = field(default_factory=LayoutFacts)

    def component(self, name: str) -> Component:
        """The named component (a "missing" one when not expected)."""
        return self.components.get(name) or Component(name, None)

    def secrets(self) -> list[str]:
        """Every secret this instance holds, runtime env included."""
        found = self.credentials.secrets()
        for env in self.runtime_env.values():
            for key, value in env.items():
                if value and any(w in key for w in ("PASSWORD", "SECRET", "KEY", "PASS", "URI",
                                                    "URL", "DSN")):
                    found.append(value)
        return found

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description without secrets."""
        return {
            "id": self.id,
            "name": self.name,
            "owner": self.owner,
            "source": self.source,
            "compose_project": self.compose_project,
            "created_at": self.created_at,
            "runtime_known": self.runtime_known,
            "registry_status": self.registry.status,
            "components": {
                name: {"container": c.container_name, "state": c.state,
                       "health": c.container.health if c.container else None}
                for name, c in self.components.items()
            },
            "endpoints": {
                "gateway_url": self.endpoints.gateway_url,
                "gateway_https_url": self.endpoints.gateway_https_url,
                "db_host": self.endpoints.db_host,
                "db_port": self.endpoints.db_port,
                "analytics_url": self.endpoints.analytics_url,
            },
            "credentials": self.credentials.describe(),
            "files": {
                "env_file": _path(self.files.env_file),
                "compose_file": _path(self.files.compose_file),
                "kong_file": _path(self.files.kong_file),
                "volumes_dir": _path(self.files.volumes_dir),
                "volume_dirs": {k: str(v) for k, v in self.files.volume_dirs.items()},
            },
            "problems": [p.to_dict() for p in self.problems],
        }

    def __repr__(self) -> str:
        return f"Instance(id={self.id!r}, source={self.source!r}, project={self.compose_project!r})"


def _path(value: Path | None) -> str | None:
    return str(value) if value else None


@dataclass(frozen=True)
class Discovery:
    """Everything one discovery pass found."""

    instances: Mapping[str, Instance]
    problems: tuple[Issue, ...] = ()
    docker_ok: bool = True
    docker_error: str | None = None

    @property
    def complete(self) -> bool:
        """Docker and every source were read without a problem: what it did not find is gone."""
        return self.docker_ok and not self.problems
