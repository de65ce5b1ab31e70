"""Active issues, one series per distinct (code, severity, component) of each instance, the
exposed ports PORT_EXPOSED names, and recent events: faults live evidence shows over, by
when they were last seen."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_issue_active (an issue found by two checks is one series: gauge dedupes)
    and ultrabase_port_exposed, one series per port PORT_EXPOSED names, and
    ultrabase_recent_event_timestamp_seconds."""
    return [_recent_events(snapshot, refresh), gauge(
        "ultrabase_port_exposed",
        refresh.cached("1 for each host port of the instance published on every interface "
                       "(PORT_EXPOSED); port \"0\" when Docker picks it"),
        ("instance_id", "component", "port", "container_port"),
        (((d.instance_id, i.component or "", str(p.get("host_port", "")),
           str(p.get("container_port", ""))), 1.0)
         for d in snapshot.diagnostics for i in d.issues if i.code == "PORT_EXPOSED"
         for p in i.evidence.get("ports", []) if isinstance(p, dict))), gauge(
        "ultrabase_issue_active",
        refresh.cached("1 for each issue the instance has (component \"\" when the issue "
                       "is about the whole instance)"),
        ("instance_id", "code", "severity", "component"),
        (((d.instance_id, i.code, i.severity, i.component or ""), 1.0)
         for d in snapshot.diagnostics for i in d.issues))]


def _recent_events(snapshot: MetricsSnapshot, refresh: Refresh) -> Metric:
    # Newest first in the diagnostic, so the first series of a label set is the latest.
    rows = []
    for d in snapshot.diagnostics:
        for event in d.recent_events:
            stamp = _epoch(event.last_seen)
            if stamp is not None:
                rows.append(((d.instance_id, event.code, event.component or ""), stamp))
    return gauge(
        "ultrabase_recent_event_timestamp_seconds",
        refresh.cached("Unix time a fault that live checks show over was last seen; a recent "
                       "event, never an active issue"),
        ("instance_id", "code", "component"), rows)


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
