"""Log line counts by component and level, from the logs check's window."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.checks.base import entries
from exporter.checks.logs import LOGS
from exporter.metrics.families import Refresh, Row, details, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_log_lines."""
    return [gauge("ultrabase_log_lines",
                  refresh.cached("Log lines the component wrote in the logs check's window, "
                                 "by level"),
                  ("instance_id", "component", "level"), _lines(snapshot))]


def _lines(snapshot: MetricsSnapshot) -> Iterator[Row]:
    for d in snapshot.diagnostics:
        for component, levels in entries(details(d, LOGS).get("log_lines")):
            for level, count in levels.items():
                value = number(count)
                if value is not None:
                    yield (d.instance_id, component, str(level)), value
