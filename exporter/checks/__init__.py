"""The eight check families, one module each, in the order results are shown."""

from __future__ import annotations

from collections.abc import Mapping

from exporter.checks.auth import AuthServiceCheck
from exporter.checks.base import Check, CheckContext, CheckResult, Findings
from exporter.checks.containers import ContainerStatusCheck
from exporter.checks.database import DatabaseConnectionCheck
from exporter.checks.disk import DiskUsageCheck
from exporter.checks.endpoints import ApiEndpointsCheck
from exporter.checks.logs import LogsCheck
from exporter.checks.network import NetworkConnectivityCheck
from exporter.checks.services import ServiceHealthCheck
from exporter.logs.cache import LogCache

__all__ = ["ALL_CHECKS", "Check", "CheckContext", "CheckResult", "Findings", "checks_by_name"]


def checks_by_name() -> Mapping[str, Check]:
    """A fresh instance of every check, keyed by its public name.

    The logs check keeps parsed log entries between sweeps: built once per engine, its cache
    lives as long as the engine.
    """
    checks: list[Check] = [
        ContainerStatusCheck(), ServiceHealthCheck(), DatabaseConnectionCheck(),
        ApiEndpointsCheck(), AuthServiceCheck(), DiskUsageCheck(),
        NetworkConnectivityCheck(), LogsCheck(LogCache()),
    ]
    return {c.name: c for c in checks}


ALL_CHECKS: tuple[str, ...] = (
    "container_status", "service_health", "database_connection", "api_endpoints",
    "auth_service", "disk_usage", "network_connectivity", "logs",
)
