"""The action services every front end works with (the JSON API, the console, the CLI).

Built once by ``actions.service.build``; the routes find them on the app
(``actions.blueprints.common.services``), the CLI holds them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actions.alertmanager import AlertmanagerClient
from actions.backups import BackupStore
from actions.operations.repair import RepairAction
from actions.operations.runner import Body, OperationRunner
from actions.store import ActionStore
from exporter.config import Config
from exporter.diagnostic import Diagnostic
from exporter.discovery import Instance
from exporter.engine import DiagnosticsEngine
from exporter.logs import LogAnalyzer
from exporter.metrics.render import MetricsRenderer


@dataclass(frozen=True)
class Bodies:
    """The operation bodies and planners the routes hand to the runner (swappable in tests)."""

    safe_restart: Callable[[Sequence[str] | None], Body]
    restart_service: Callable[[str, bool], Body]
    plan_repairs: Callable[[Diagnostic, Instance], list[RepairAction]]
    repair: Callable[[Sequence[RepairAction], bool], Body]
    config_edit: Callable[[Mapping[str, Any]], Body]
    validate_changes: Callable[[Mapping[str, Any]], dict[str, Any]]
    current_config: Callable[[Instance], dict[str, Any]]
    backup: Callable[[str, bool], Body]
    restore: Callable[[str], Body]
    # The plan's extras for GET repair-plan: root cause, manual items, consequences.
    plan_details: Callable[[Diagnostic, Instance], Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class ActionServices:
    """Everything the action routes call; built once by the service."""

    config: Config
    engine: DiagnosticsEngine
    store: ActionStore
    runner: OperationRunner
    backups: BackupStore
    renderer: MetricsRenderer
    bodies: Bodies
    alertmanager: AlertmanagerClient | None = None
    # Reads container logs for the console (the exporter's, when both run in one process).
    analyzer: LogAnalyzer | None = None
