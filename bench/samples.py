"""Realistic diagnostics in the checks' detail shapes: 13 components, 8 checks, and the
issues of a broken auth. bench.metrics fills its store with them; the metrics unit tests
render them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.checks import ALL_CHECKS
from exporter.checks.base import CheckResult
from exporter.diagnostic import Diagnostic, RecentEvent, UserTest
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
    # A healthy instance remembers the outage it came back from: a recent event.
    events = () if broken else (RecentEvent(
        code="DB_UNREACHABLE", component="db", check="logs",
        first_seen=(at - timedelta(minutes=6)).isoformat(),
        last_seen=(at - timedelta(minutes=5)).isoformat(), count=12,
        excerpt="the database system is starting up",
        ended="db runs and answers, as does all it needs"),)
    user_test = UserTest.of(all_details.get("auth_service", {}).get("synthetic_user"), at)
    return Diagnostic(instance_id=instance_id, timestamp=at, duration_seconds=2.5,
                      results=checks, issues=issues, root_cause=None, trigger=trigger,
                      recent_events=events, user_test=user_test)
