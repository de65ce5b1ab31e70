"""Prometheus metrics of the cached diagnostics (DESIGN §6), rendered from the store."""

from __future__ import annotations

from exporter.metrics.collector import UltrabaseCollector
from exporter.metrics.families import Refresh
from exporter.metrics.render import MetricsRenderer
from exporter.metrics.snapshot import MetricsSnapshot, MetricsSource

__all__ = ["MetricsRenderer", "MetricsSnapshot", "MetricsSource", "Refresh", "UltrabaseCollector"]
