"""Per-check outcome: success and duration of each check of each instance."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, gauge, number
from exporter.metrics.snapshot import MetricsSnapshot

_LABELS = ("instance_id", "check")


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_check_success and ultrabase_check_duration_seconds."""
    results = [((d.instance_id, name), r) for d in snapshot.diagnostics
               for name, r in d.results.items()]
    durations = ((labels, number(r.duration_seconds)) for labels, r in results)
    return [
        gauge("ultrabase_check_success",
              refresh.cached("1 if the check found nothing of severity warning or above "
                             "(a skipped check counts as success)"),
              _LABELS, ((labels, float(r.healthy)) for labels, r in results)),
        gauge("ultrabase_check_duration_seconds",
              refresh.cached("How long the check took in seconds"),
              _LABELS, ((labels, value) for labels, value in durations if value is not None)),
    ]
