"""Per-instance summary: identity, overall health and the diagnostic's time."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """Instance info, overall health and the time of the latest diagnostic."""
    diagnostics = snapshot.diagnostics
    return [
        gauge("ultrabase_instance_info",
              "Every instance the last discovery found (refreshed by each sweep), with its "
              "name and owner (\"\" when none); the value is always 1",
              ("instance_id", "instance_name", "owner"),
              (((i.id, i.name, i.owner), 1.0) for i in snapshot.instances)),
        gauge("ultrabase_instance_healthy",
              refresh.cached("1 if the instance has no issue of severity warning or above"),
              ("instance_id",),
              (((d.instance_id,), float(d.healthy)) for d in diagnostics)),
        gauge("ultrabase_diagnostic_timestamp_seconds",
              "Unix time at which the instance's latest cached diagnostic finished; "
              "time() minus this is its age",
              ("instance_id",),
              (((d.instance_id,), d.timestamp.timestamp()) for d in diagnostics)),
    ]
