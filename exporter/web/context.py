"""The services a running app holds, and how handlers reach them."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from exporter.config import Config
from exporter.engine import DiagnosticsEngine
from exporter.logs import LogAnalyzer
from exporter.metrics.render import MetricsRenderer
from exporter.scheduler import DiagnosticScheduler
from exporter.store import Store
from exporter.watch.status import WatchStatus

EXTENSION = "ultrabase_doctor"


@dataclass(frozen=True)
class Services:
    """Everything the exporter's handlers call; built once by the service."""

    config: Config
    engine: DiagnosticsEngine
    store: Store
    renderer: MetricsRenderer
    analyzer: LogAnalyzer
    scheduler: DiagnosticScheduler | None = None
    watch: WatchStatus | None = None  # the event stream's and the quick probe's states


def services() -> Services:
    """The current app's services."""
    found: Services = current_app.extensions[EXTENSION]
    return found
