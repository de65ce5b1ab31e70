"""Activity counters from the store: diagnostic runs, operations and the last sweep's time."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, Row, counter, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def _rows(counts: Mapping[tuple[str, str], int]) -> list[Row]:
    return [((str(a), str(b)), float(n)) for (a, b), n in counts.items()]


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """Diagnostic runs and operations so far, and the last sweep's duration."""
    sweep = snapshot.sweep_duration_seconds
    return [
        counter("ultrabase_diagnostic_runs",
                "Diagnostic runs recorded in the store, by trigger (scheduled, on_demand, "
                "operation) and result; counted by both processes",
                ("trigger", "result"), _rows(snapshot.run_counts)),
        counter("ultrabase_operations",
                "Operations (safe restart, repair, config edit, backup) recorded in the "
                "store, by operation and result",
                ("operation", "result"), _rows(snapshot.operation_counts)),
        gauge("ultrabase_sweep_duration_seconds",
              "Seconds the last scheduled sweep over all instances took; sweeps run every "
              f"{refresh.sweep_interval_seconds:g} s",
              (), [] if sweep is None else [((), sweep)]),
    ]
