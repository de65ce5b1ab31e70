"""Activity from the store: runs, operations, the last sweep's time, spent auto-repair budgets."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, Row, counter, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def _rows(counts: Mapping[tuple[str, str], int]) -> list[Row]:
    return [((str(a), str(b)), float(n)) for (a, b), n in counts.items()]


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """Diagnostic runs and operations so far, the last sweep's duration, spent budgets."""
    sweep = snapshot.sweep_duration_seconds
    return [
        counter("ultrabase_diagnostic_runs",
                "Diagnostic runs recorded in the store, by trigger (scheduled, on_demand, "
                "operation, event: a Docker container event, watch: the quick probe saw a "
                "change) and result; counted by both processes",
                ("trigger", "result"), _rows(snapshot.run_counts)),
        counter("ultrabase_operations",
                "Operations (safe restart, repair, config edit, backup) recorded in the "
                "store, by operation and result",
                ("operation", "result"), _rows(snapshot.operation_counts)),
        gauge("ultrabase_sweep_duration_seconds",
              "Seconds the last scheduled sweep over all instances took; sweeps run every "
              f"{refresh.sweep_interval_seconds:g} s",
              (), [] if sweep is None else [((), sweep)]),
        gauge("ultrabase_auto_repair_budget_exhausted",
              "For each instance with an Alertmanager-triggered repair in the last hour: 1 "
              "while they have reached actions.auto_repair_budget_per_hour "
              f"({refresh.auto_repair_budget}) and further auto-repair alerts are refused "
              "until the oldest leaves the hour, else 0",
              ("instance_id",), _exhausted(snapshot, refresh.auto_repair_budget)),
    ]


def _exhausted(snapshot: MetricsSnapshot, budget: int) -> list[Row]:
    return [((iid,), float(bool(budget) and use.used >= budget))
            for iid, use in snapshot.auto_repairs.items()]
