"""Plain diagnostics in the checks' detail shapes, and plain in-memory metric sources.

Also used by bench/metrics.py to fill a store with realistic content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.checks import ALL_CHECKS
from exporter.checks.base import CheckResult
from exporter.diagnostic import Diagnostic
from exporter.issues import Issue, make_issue

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COMPONENTS = ("db", "auth", "rest", "kong", "realtime", "storage", "imgproxy", "meta",
              "functions", "analytics", "vector", "pooler", "studio")
VOLUMES = ("db-data", "db-config", "storage", "functions", "logs")
ENDPOINTS = ("auth", "rest", "storage", "studio")
KEY_EXPIRY = NOW + timedelta(days=300)


def _components(broken: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """container_status and service_health components; a broken instance's auth exited."""
    containers: dict[str, Any] = {}
    services: dict[str, Any] = {}
    for i, name in enumerate(COMPONENTS):
        down = broken and name == "auth"
        containers[name] = {"state": "exited" if down else "running",
                            "health": None if down else "healthy",
                            "restarts": 3 if down else (i % 2 or None),
                            "exit_code": 1 if down else None}
        services[name] = {"up": not down, "http_status": None if down else 200,
                          "latency_seconds": None if down else 0.004 + i / 1000,
                          "state": "exited" if down else "running",
                          "docker_health": containers[name]["health"], "probed": not down}
    return containers, services


def details(broken: bool = False) -> dict[str, dict[str, Any]]:
    """Every check's details as the checks write them."""
    containers, services = _components(broken)
    return {
        "container_status": {"components": containers},
        "service_health": {"components": services, "probe": {"ran_in": "kong", "error": None}},
        "database_connection": {
            "version": "PostgreSQL 15.8", "connections": 17, "max_connections": 100,
            "size_bytes": 48_123_456, "roles": {
                r: "ok" for r in ("supabase_auth_admin", "authenticator",
                                  "supabase_storage_admin", "supabase_admin")}},
        "api_endpoints": {"endpoints": {
            e: {"status": 502 if broken and e == "auth" else 200,
                "latency_seconds": 0.012 + i / 100, "origin": "upstream", "kong_error": None,
                "kong_message": None, "error": None}
            for i, e in enumerate(ENDPOINTS)}},
        "auth_service": {
            "jwt_secret": {"known": True, "fingerprint": "sha256:0a1b2c3d", "source": "env",
                           "weak": False},
            "keys": {role: {"present": True, "fingerprint": "sha256:4e5f",
                            "exp": int(KEY_EXPIRY.timestamp()), "iat": 1700000000,
                            "role": role, "expected_role": role, "role_valid": True,
                            "algorithm": "HS256", "signature_valid": True, "error": None}
                     for role in ("anon", "service_role")},
            "synthetic_user": {"ran": True, "created": not broken, "deleted": not broken,
                               "status": 502 if broken else 200, "latency_seconds": 0.05},
        },
        "disk_usage": {
            "filesystem": {"path": "/srv/ultrabase", "avail_bytes": 80_000_000_000,
                           "size_bytes": 200_000_000_000, "free_percent": 40.0},
            "volumes": {v: {"path": f"/srv/ultrabase/volumes/{v}", "exists": True,
                            "size_bytes": 1_000_000 * (i + 1), "complete": True}
                        for i, v in enumerate(VOLUMES)},
            "logs_bytes": {c: 10_000 for c in COMPONENTS},
        },
        "network_connectivity": {"ports": {"kong": "listening", "db": "listening"}},
        "logs": {"window_seconds": 900, "max_lines_per_component": 1000,
                 "log_lines": {c: {"info": 40 + i, "warning": 2, "error": 9 if broken else 0}
                               for i, c in enumerate(COMPONENTS)},
                 "patterns": [], "truncated": [], "unreadable": {}},
    }


def broken_issues() -> tuple[Issue, ...]:
    """What a broken instance shows; the same code from two checks on purpose."""
    return (
        make_issue("CONTAINER_NOT_RUNNING", check="container_status", component="auth",
                   message="auth exited (code 1)"),
        make_issue("AUTH_USER_CREATE_FAILED", check="auth_service", component="auth",
                   message="creating a user answered 502"),
        make_issue("DB_ROLE_PASSWORD_MISMATCH", check="logs", component="auth",
                   message="password authentication failed"),
        make_issue("DB_ROLE_PASSWORD_MISMATCH", check="database_connection", component="auth",
                   message="supabase_auth_admin cannot log in"),
        make_issue("DISK_SPACE_LOW", check="disk_usage", message="12% free"),
    )


def diagnostic(instance_id: str, *, broken: bool = False, at: datetime = NOW,
               trigger: str = "scheduled",
               results: Mapping[str, Mapping[str, Any]] | None = None) -> Diagnostic:
    """A full diagnostic of eight checks (results overrides details per check)."""
    issues = broken_issues() if broken else ()
    all_details = {**details(broken), **(results or {})}
    checks = {
        name: CheckResult(
            name=name, duration_seconds=0.1 + i / 10,
            status="failed" if any(x.check == name for x in issues) else "ok",
            issues=tuple(x for x in issues if x.check == name),
            details=all_details.get(name, {}))
        for i, name in enumerate(ALL_CHECKS)}
    return Diagnostic(instance_id=instance_id, timestamp=at, duration_seconds=2.5,
                      results=checks, issues=issues, root_cause=None, trigger=trigger)


@dataclass(frozen=True)
class Info:
    """An instance as the store lists it."""

    id: str
    name: str
    owner: str | None


@dataclass
class MemorySource:
    """A plain in-memory metrics source that counts its reads."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    infos: list[Info] = field(default_factory=list)
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    operations: dict[tuple[str, str], int] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    gen: int = 0
    latest_calls: int = 0
    error: Exception | None = None

    def save(self, diagnostic: Diagnostic) -> None:
        """Replace the instance's latest diagnostic and change the generation."""
        self.diagnostics = [d for d in self.diagnostics
                            if d.instance_id != diagnostic.instance_id] + [diagnostic]
        self.gen += 1

    def latest_all(self) -> Sequence[Diagnostic]:
        """The latest diagnostics."""
        self._fail()
        self.latest_calls += 1
        return list(self.diagnostics)

    def instances(self) -> Sequence[Info]:
        """The instances."""
        self._fail()
        return list(self.infos)

    def run_counts(self) -> Mapping[tuple[str, str], int]:
        """Runs by (trigger, result)."""
        self._fail()
        return dict(self.runs)

    def operation_counts(self) -> Mapping[tuple[str, str], int]:
        """Operations by (operation, result)."""
        self._fail()
        return dict(self.operations)

    def get_meta(self, key: str) -> str | None:
        """A meta value."""
        self._fail()
        return self.meta.get(key)

    def generation(self) -> int:
        """The generation."""
        self._fail()
        return self.gen

    def _fail(self) -> None:
        if self.error is not None:
            raise self.error


def fleet(count: int = 3, *, broken: Sequence[str] = ("inst-001",)) -> MemorySource:
    """A source with count instances (inst-000 ...), some broken, and some activity."""
    ids = [f"inst-{i:03d}" for i in range(count)]
    return MemorySource(
        diagnostics=[diagnostic(i, broken=i in broken) for i in ids],
        infos=[Info(i, f"Project {i}", None if n % 2 else f"owner{n}")
               for n, i in enumerate(ids)],
        runs={("scheduled", "healthy"): 10, ("on_demand", "unhealthy"): 2},
        operations={("safe_restart", "success"): 1},
        meta={"docker_ok": "1", "sweep_duration_seconds": "3.250"},
        gen=1)
