"""Active issues: one series per distinct (code, severity, component) of each instance."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from exporter.metrics.families import Refresh, gauge
from exporter.metrics.snapshot import MetricsSnapshot


def families(snapshot: MetricsSnapshot, refresh: Refresh) -> list[Metric]:
    """ultrabase_issue_active (an issue found by two checks is one series: gauge dedupes)
    and ultrabase_port_exposed, one series per port PORT_EXPOSED names."""
    return [gauge(
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
