"""Typed values the fleet hands out: instances, ports, credentials and results."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Compose service names of one instance, in the template's order.
COMPONENTS: tuple[str, ...] = (
    "studio", "kong", "auth", "rest", "realtime", "storage", "imgproxy", "meta",
    "functions", "analytics", "db", "vector", "supavisor",
)

# Container names that do not follow supabase-<component>-<id>.
_CONTAINER_PREFIX: dict[str, str] = {
    "realtime": "realtime-dev.supabase-realtime",
    "supavisor": "supabase-pooler",
    "functions": "supabase-edge-functions",
}


class FleetError(RuntimeError):
    """A fleet operation failed; the message says what and where."""


@dataclass(frozen=True)
class Ports:
    """Host ports of one instance (only kong, db and analytics are published)."""

    kong_http: int
    kong_https: int
    postgres_ext: int
    supavisor: int
    analytics: int

    def as_dict(self) -> dict[str, int]:
        """The registry's `ports` object."""
        return {
            "kong_http": self.kong_http, "kong_https": self.kong_https,
            "postgres_ext": self.postgres_ext, "supavisor": self.supavisor,
            "analytics": self.analytics,
        }


@dataclass(frozen=True, repr=False)
class Credentials:
    """Secrets of one instance as created (faults may change what the files hold)."""

    postgres_password: str
    jwt_secret: str
    anon_key: str
    service_role_key: str
    dashboard_username: str
    dashboard_password: str
    logflare_api_key: str
    # Only the real manager generates one (32 characters, kept in the registry alone).
    vault_enc_key: str = ""

    def __repr__(self) -> str:
        return "Credentials(<redacted>)"

    def registry_dict(self) -> dict[str, str]:
        """The registry's `credentials` object."""
        return {
            "postgres_password": self.postgres_password, "jwt_secret": self.jwt_secret,
            "anon_key": self.anon_key, "service_role_key": self.service_role_key,
            "dashboard_username": self.dashboard_username,
            "dashboard_password": self.dashboard_password,
        }

    def manager_registry_dict(self) -> dict[str, str]:
        """The `credentials` object as the real manager saves it (two keys more)."""
        return {**self.registry_dict(), "vault_enc_key": self.vault_enc_key,
                "logflare_api_key": self.logflare_api_key}


@dataclass(frozen=True)
class Instance:
    """One instance of the fleet and where its files live."""

    id: str
    name: str
    created_at: str
    ports: Ports
    credentials: Credentials
    core_dir: Path
    # Who created it in the manager, and its organization (the manager's create form).
    owner: str = "admin"
    organization: str = "Fleet Organization"
    # Files written exactly as the real manager writes them (`up --manager-exact`).
    manager_exact: bool = False

    @property
    def project(self) -> str:
        """The compose project name."""
        return f"supabase-{self.id}"

    @property
    def compose_file(self) -> Path:
        """The rendered compose file."""
        return self.core_dir / f"docker-compose-{self.id}.yml"

    @property
    def env_file(self) -> Path:
        """The rendered env file."""
        return self.core_dir / f".env-{self.id}"

    @property
    def volumes_dir(self) -> Path:
        """The instance's bind-mount root."""
        return self.core_dir / f"volumes-{self.id}"

    @property
    def kong_file(self) -> Path:
        """The rendered Kong declarative config."""
        return self.volumes_dir / "api" / "kong.yml"

    @property
    def gateway_url(self) -> str:
        """Kong's HTTP URL on the host loopback."""
        return f"http://127.0.0.1:{self.ports.kong_http}"

    def container_name(self, component: str) -> str:
        """The container name of a compose service, as the template names it."""
        if component not in COMPONENTS:
            raise FleetError(f"unknown component {component!r}")
        return f"{_CONTAINER_PREFIX.get(component, f'supabase-{component}')}-{self.id}"


@dataclass(frozen=True)
class UpResult:
    """What `up` prints: instance ids, the doctor config path and the admin token."""

    root: Path
    instances: tuple[str, ...]
    config: Path
    admin_token: str
    seconds: float

    def as_json(self) -> dict[str, object]:
        """The CLI's JSON output."""
        return {"instances": list(self.instances), "config": str(self.config),
                "admin_token": self.admin_token}


@dataclass(frozen=True)
class Expectation:
    """What a diagnosis of an instance with a fault in must conclude: its root cause."""

    codes: frozenset[str]  # the root cause's code is one of these
    component: str | None  # the root cause's component (None: the instance as a whole)
    repair: str | None  # the repair the root cause offers; None: no repair helps

    def __post_init__(self) -> None:
        if not self.codes:
            raise FleetError("an expectation names at least one root-cause code")
        if self.component is not None and self.component not in COMPONENTS:
            raise FleetError(f"unknown component {self.component!r}")

    def root(self) -> str:
        """The expected root cause as CODE[component] (codes joined by /)."""
        where = f"[{self.component}]" if self.component else ""
        return "/".join(sorted(self.codes)) + where

    def as_json(self) -> dict[str, object]:
        """The CLI's JSON output."""
        return {"codes": sorted(self.codes), "component": self.component,
                "repair": self.repair}


@dataclass(frozen=True)
class FaultSpec:
    """A named fault, what it does and what the doctor must make of it."""

    name: str
    description: str
    expect: Expectation | None = None


@dataclass(frozen=True)
class FaultResult:
    """Outcome of a break or heal."""

    instance_id: str
    fault: str
    action: str  # "break" or "heal"
    changed: bool  # False when the fault was already in (break) or out (heal)
    seconds: float
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        """The CLI's JSON output."""
        return {"instance_id": self.instance_id, "fault": self.fault, "action": self.action,
                "changed": self.changed, "seconds": round(self.seconds, 2),
                "detail": self.detail}
